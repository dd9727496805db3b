// Condition trees as the rules service stores them, and what the builder needs to
// edit them: the vocabulary (facts, types, operators), values that fit an operator,
// and the compact form, read exactly as the service reads it.

import { get } from './api.js';

let vocabulary = null;

const actionName = (type) => String(type).replace('ACTION_TYPE_', '').toLowerCase();
const valuesOf = (action, parameter, entity = '') => (action?.allowedValues || [])
  .find((a) => a.parameter === parameter && (a.entity || '') === entity)?.values || [];

// The rules service's GetVocabulary answer in the shape the builder and the action forms read:
// {eventTypes, eventEntities: {source: [roots]}, groups: [{root, fetched, facts}], facts: Map,
//  operators, operatorsByType: {type: [ops]}, compactAliases, actions: {name: {required, optional}},
//  entities, statusTargets: {entity: [{status, from}]}, jobs ([names], or null when the scheduler did not answer)}.
export function fromReply(reply) {
  const actions = Object.fromEntries((reply.actions || []).map((a) => [actionName(a.type), a]));
  const update = actions.update_status;
  const entities = valuesOf(update, 'entity').map((v) => v.value);
  const groups = (reply.factGroups || []).map((g) => ({
    root: g.root, fetched: !!g.fetched,
    facts: (g.facts || []).map((f) => ({ path: f.path, type: f.type, ...(f.options?.length ? { options: f.options } : {}), ...(f.description ? { description: f.description } : {}) })),
  }));
  const facts = new Map();
  for (const group of groups) for (const fact of group.facts) facts.set(fact.path, { ...fact, root: group.root, fetched: group.fetched });
  return {
    eventTypes: reply.eventTypes || [],
    eventEntities: Object.fromEntries((reply.eventSources || []).map((s) => [s.source, s.entities || []])),
    groups,
    facts,
    operators: reply.operators || [],
    operatorsByType: Object.fromEntries((reply.operatorsByType || []).map((o) => [o.type, o.operators || []])),
    compactAliases: Object.fromEntries((reply.compactAliases || []).map((a) => [a.alias, a.fact])),
    actions: Object.fromEntries(Object.entries(actions).map(([name, a]) => [name, { required: a.requiredParameters || [], optional: a.optionalParameters || [] }])),
    entities,
    statusTargets: Object.fromEntries(entities.map((e) => [e, valuesOf(update, 'status', e).map((v) => ({ status: v.value, from: v.reachedFrom || [] }))])),
    jobs: (reply.unavailable || []).includes('jobs') ? null : valuesOf(actions.trigger_workflow, 'job').map((v) => v.value),
    placeholderRoots: reply.placeholderRoots || [],
  };
}

export async function loadVocabulary() {
  if (vocabulary) return vocabulary;
  vocabulary = fromReply(await get('/v1/rules:vocabulary'));
  return vocabulary;
}

export const OPERATOR_LABELS = {
  equal: 'is', not_equal: 'is not', greater_than: 'greater than', greater_than_inclusive: 'at least',
  less_than: 'less than', less_than_inclusive: 'at most', between: 'between', in: 'is one of', not_in: 'is none of',
  contains: 'contains', starts_with: 'starts with', matches: 'matches pattern', exists: 'presence',
};

export const isLeaf = (node) => !!node && typeof node === 'object' && !Array.isArray(node) && 'fact' in node;
export const groupKey = (node) => ['all', 'any', 'not'].find((k) => node && typeof node === 'object' && k in node);

export function factOf(vocab, path) {
  return vocab.facts.get(path) || { path, type: 'text', root: String(path).split('.')[0], unknown: true };
}

export function operatorsFor(vocab, path) {
  return vocab.operatorsByType[factOf(vocab, path).type] || vocab.operators;
}

// Why the builder cannot show this node (null when it can): the service would reject it anyway.
export function unbuildable(node) {
  if (!node || typeof node !== 'object' || Array.isArray(node)) return 'a condition is an object';
  if (isLeaf(node)) {
    const extra = Object.keys(node).filter((k) => !['fact', 'operator', 'value'].includes(k));
    return extra.length ? `unknown keys in a leaf: ${extra.join(', ')}` : null;
  }
  const key = groupKey(node);
  if (!key) return 'a compact condition (see the compact form)';
  if (Object.keys(node).length !== 1) return `a node holds exactly one of all/any/not, not ${Object.keys(node).join(', ')}`;
  if (key === 'not') return unbuildable(node.not);
  if (!Array.isArray(node[key])) return `${key} holds a list of conditions`;
  for (const child of node[key]) {
    const problem = unbuildable(child);
    if (problem) return problem;
  }
  return null;
}

// A value of the right shape when the fact or operator changes, keeping what still fits.
export function fitValue(vocab, path, operator, value) {
  const fact = factOf(vocab, path);
  const scalar = Array.isArray(value) ? value[0] : value;
  const sample = fact.options?.[0] ?? (fact.type === 'number' ? 0 : '');
  const ofType = (v) => {
    if (fact.type === 'number') return typeof v === 'number' || (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) ? v : sample;
    if (fact.options) return fact.options.includes(v) ? v : sample;
    return typeof v === 'string' ? v : sample;
  };
  if (operator === 'exists') return typeof value === 'boolean' ? value : true;
  if (operator === 'in' || operator === 'not_in') return Array.isArray(value) && value.length ? value.map(ofType) : [ofType(scalar)];
  if (operator === 'between') {
    const low = Number(ofType(scalar)) || 0;
    return Array.isArray(value) && value.length === 2 ? value.map((v) => Number(ofType(v)) || 0) : [low, low];
  }
  if (operator === 'matches' || operator === 'starts_with' || operator === 'contains') return typeof scalar === 'string' ? scalar : String(scalar ?? '');
  return ofType(scalar);
}

export function newLeaf(vocab, path) {
  const operator = operatorsFor(vocab, path)[0];
  return { fact: path, operator, value: fitValue(vocab, path, operator, undefined) };
}

// --- the compact form, as the rules service reads it (services/rules/domain/conditions.py) ---

const COMPARISON = /^\s*(<=|>=|<|>|==|=|!=)\s*(-?\d+(?:\.\d+)?)\s*(%|percent|days?|hours?|units?|pcs)?\s*$/i;
const COMPARISON_OPERATORS = { '<': 'less_than', '<=': 'less_than_inclusive', '>': 'greater_than', '>=': 'greater_than_inclusive', '=': 'equal', '==': 'equal', '!=': 'not_equal' };

function compactKeyToPath(vocab, key) {
  if (key in vocab.compactAliases) return vocab.compactAliases[key];
  const scalars = vocab.groups.filter((g) => g.facts.length === 1 && g.facts[0].path === g.root).map((g) => g.root);
  if (key.includes('.') || scalars.includes(key)) return key;
  const roots = vocab.groups.map((g) => g.root).sort((a, b) => b.length - a.length);
  const root = roots.find((r) => key.startsWith(`${r}_`));
  return root ? `${root}.${key.slice(root.length + 1)}` : key;
}

function compactValue(value) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (keys.length && keys.every((k) => k === 'min' || k === 'max')) {
      if ('min' in value && 'max' in value) return ['between', [value.min, value.max]];
      return 'min' in value ? ['greater_than_inclusive', value.min] : ['less_than_inclusive', value.max];
    }
    if (keys.length === 1) return [keys[0], value[keys[0]]];
    return ['range', value];
  }
  if (Array.isArray(value)) return ['in', value];
  if (typeof value === 'string') {
    const m = COMPARISON.exec(value);
    if (m) return [COMPARISON_OPERATORS[m[1]], Number(m[2])];
  }
  return ['equal', value];
}

// {"order_status": "placed", "batch.fill_percentage": ">= 75"} -> the tree the service stores.
export function fromCompact(vocab, compact) {
  return {
    all: Object.keys(compact).sort().map((key) => {
      const [operator, value] = compactValue(compact[key]);
      return { fact: compactKeyToPath(vocab, key), operator, value };
    }),
  };
}

const SYMBOLS = { less_than: '<', less_than_inclusive: '<=', greater_than: '>', greater_than_inclusive: '>=', not_equal: '!=' };

function compactOf(leaf) {
  const { operator, value } = leaf;
  if (operator === 'in' && Array.isArray(value) && value.length) return value;
  if (operator === 'between' && Array.isArray(value)) return { min: value[0], max: value[1] };
  if (operator in SYMBOLS && typeof value === 'number') return `${SYMBOLS[operator]} ${value}`;
  if (operator === 'equal' && (value === null || typeof value !== 'object') && !(typeof value === 'string' && COMPARISON.test(value))) return value;
  return { [operator]: value };
}

// The compact form of a tree, or {reason} when it has none that reads back to the very same tree.
export function toCompact(vocab, tree) {
  if (!tree || !Array.isArray(tree.all) || Object.keys(tree).length !== 1) return { reason: 'only a single "all" group of conditions has a compact form' };
  if (!tree.all.every(isLeaf)) return { reason: 'nested groups have no compact form' };
  const compact = {};
  for (const leaf of tree.all) {
    if (leaf.fact in compact) return { reason: `${leaf.fact} appears twice` };
    compact[leaf.fact] = compactOf(leaf);
  }
  if (!sameJson(fromCompact(vocab, compact), tree)) return { reason: 'conditions must be in the order of their facts (A to Z) to have a compact form' };
  return { compact };
}

export function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// --- templates, rendered as the rules service renders them (services/rules/domain/templates.py) ---

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

export function lookup(facts, path) {
  let found = facts;
  for (const part of String(path).split('.')) {
    if (!found || typeof found !== 'object' || Array.isArray(found) || !(part in found)) return undefined;
    found = found[part];
  }
  return found;
}

const text = (v) => (typeof v === 'boolean' ? String(v) : typeof v === 'object' ? JSON.stringify(v) : String(v));

// {value, missing: [names]}: a whole-string placeholder keeps the fact's type, inline ones become text.
export function render(template, facts) {
  const missing = [];
  const value = (name) => {
    const v = lookup(facts, name);
    if (v === undefined || v === null) missing.push(name);
    return v;
  };
  const walk = (t) => {
    if (typeof t === 'string') {
      const whole = /^\{\{\s*([^{}]*?)\s*\}\}$/.exec(t);
      if (whole) return value(whole[1]) ?? t;
      return t.replace(PLACEHOLDER, (m, name) => { const v = value(name); return v === undefined || v === null ? m : text(v); });
    }
    if (Array.isArray(t)) return t.map(walk);
    if (t && typeof t === 'object') return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, walk(v)]));
    return t;
  };
  return { value: walk(template), missing };
}
