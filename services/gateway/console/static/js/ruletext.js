// A rule version as readable lines, for comparing versions line by line: its settings,
// its conditions as an indented outline ("all of", "batch.fill_percentage at least 75",
// decision-table rows) and its actions with their parameters. Each line knows its
// section, so a diff can say whether conditions, actions or settings changed.

import { OPERATOR_LABELS, groupKey, isLeaf } from './conditions.js';
import { enumName } from './format.js';

const GROUP_LABELS = { all: 'all of', any: 'any of', not: 'not' };
const INDENT = '  ';
const value = (v) => (typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v ?? null));
const plain = (v) => (typeof v === 'string' ? v : JSON.stringify(v ?? null));
const yesNo = (b) => (b ? 'yes' : 'no');

// [{section: 'settings' | 'conditions' | 'actions', text}]
export function ruleLines(rule) {
  const lines = [];
  const add = (section, text) => lines.push({ section, text });
  add('settings', `name: ${rule.name || ''}`);
  if (rule.description) add('settings', `description: ${rule.description}`);
  add('settings', `type: ${enumName(rule.type, 'RULE_TYPE_')}`);
  add('settings', `active: ${yesNo(rule.active)}`);
  add('settings', `priority: ${rule.priority || 0}`);
  add('settings', `listens to: ${(rule.eventTypes || []).join(', ') || 'every event'}`);
  add('settings', `stops lower-priority rules: ${yesNo(rule.stopProcessing)}`);
  add('settings', `runs for events other rules caused: ${yesNo(rule.triggeredByRules)}`);
  add('settings', `executions per minute at most: ${rule.maxExecutionsPerMinute || 'no limit'}`);
  add('conditions', 'conditions:');
  if (rule.conditions === null || rule.conditions === undefined) add('conditions', `${INDENT}always`);
  else condition(rule.conditions, 1, (text) => add('conditions', text));
  add('actions', 'actions:');
  (rule.actions || []).forEach((action, i) => {
    add('actions', `${INDENT}${i + 1}. ${enumName(action.type, 'ACTION_TYPE_')}`);
    for (const [key, v] of Object.entries(action.params || {})) add('actions', `${INDENT.repeat(3)}${key}: ${plain(v)}`);
  });
  return lines;
}

function condition(node, depth, add) {
  const pad = INDENT.repeat(depth);
  if (isLeaf(node)) {
    add(`${pad}${node.fact} ${OPERATOR_LABELS[node.operator] || node.operator} ${node.operator === 'exists' ? yesNo(node.value) : value(node.value)}`);
    return;
  }
  const key = groupKey(node);
  if (key) {
    add(`${pad}${GROUP_LABELS[key]}`);
    for (const child of key === 'not' ? [node.not] : node[key] || []) condition(child, depth + 1, add);
    return;
  }
  if (node && typeof node === 'object' && node.table) {
    table(node.table, depth, add);
    return;
  }
  for (const line of JSON.stringify(node, null, 2).split('\n')) add(`${pad}${line}`);
}

function table(t, depth, add) {
  const pad = INDENT.repeat(depth);
  const inputs = t.inputs || [];
  add(`${pad}decision table, hit policy ${t.hit_policy || t.hitPolicy || 'UNIQUE'}${t.aggregation ? ` (${t.aggregation})` : ''}`);
  (t.rules || []).forEach((row, i) => {
    const when = (row.when || []).map((cell, j) => `${inputs[j] ?? `input ${j + 1}`} ${cell === null || cell === '-' ? 'any' : plain(cell)}`);
    const then = Object.entries(row.then || {}).map(([k, v]) => `${k} = ${plain(v)}`);
    add(`${pad}${INDENT}row ${i + 1}: ${when.join(', ') || 'always'} → ${then.join(', ')}`);
  });
}

// What a server-side change path is about: "conditions.all[0].value" -> 'conditions'.
export function sectionOf(path) {
  const head = String(path).split(/[.[]/)[0];
  return head === 'conditions' || head === 'actions' ? head : 'settings';
}
