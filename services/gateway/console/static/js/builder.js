// The visual condition builder: nested all / any / not groups of {fact, operator, value}
// rows, with an advanced view (the JSON tree and the compact form) that round-trips
// exactly. The tree is the one source of truth; every control edits it in place.
// Each row carries the field path the rules service names in its violations
// (conditions.all.1, conditions.any.0.not), so errors land next to their row.

import { h, replace } from './dom.js';
import {
  OPERATOR_LABELS, factOf, fitValue, fromCompact, groupKey, isLeaf, newLeaf, operatorsFor, sameJson, toCompact, unbuildable,
} from './conditions.js';

const GROUP_LABELS = { all: 'all of', any: 'any of' };
let ids = 0;
const nextId = (stem) => `${stem}-${++ids}`;

function describe(node) {
  if (isLeaf(node)) return `${node.fact} ${OPERATOR_LABELS[node.operator] || node.operator} ${JSON.stringify(node.value)}`;
  const key = groupKey(node);
  return key === 'not' ? 'not' : `${key} group`;
}

// options: {tree, vocab, eventTypes: () => [...] (the rule's), onChange(tree)}
// The stored tree comes back from JSONB with its keys in storage order: shown as people write it.
function canonical(node) {
  if (isLeaf(node) && !unbuildable(node)) return { fact: node.fact, operator: node.operator, value: node.value ?? null };
  const key = groupKey(node);
  if (key === 'not' && Object.keys(node).length === 1) return { not: canonical(node.not) };
  if (key && Object.keys(node).length === 1 && Array.isArray(node[key])) return { [key]: node[key].map(canonical) };
  return node;
}

export function conditionBuilder({ tree, vocab, eventTypes, onChange = () => {} }) {
  let root = canonical(structuredClone(tree ?? { all: [] }));
  const canvas = h('div', { class: 'builder-canvas' });
  const notice = h('p', { class: 'hint builder-notice', role: 'status' });
  const jsonArea = h('textarea', { id: nextId('conditions-json'), rows: 10, spellcheck: false, class: 'code conditions-json' });
  const compactArea = h('textarea', { id: nextId('conditions-compact'), rows: 4, spellcheck: false, class: 'code conditions-compact' });
  const jsonError = h('div', { class: 'violation', 'aria-live': 'polite' });
  const compactNote = h('div', { class: 'hint', 'aria-live': 'polite' });
  const advanced = h('details', { class: 'advanced' },
    h('summary', {}, 'Advanced: conditions as JSON or in the compact form'),
    h('label', { for: jsonArea.id }, 'Conditions (JSON)'), jsonArea, jsonError,
    h('label', { for: compactArea.id }, 'Conditions (compact form)'),
    h('div', { class: 'hint' }, 'One key per fact, all must hold: {"order.status": "placed", "batch.fill_percentage": ">= 75"}.'),
    compactArea, compactNote);
  const element = h('div', { class: 'builder', dataset: { field: 'conditions' } },
    h('div', { class: 'violation', 'aria-live': 'polite' }), notice, canvas, advanced);

  function changed({ from } = {}) {
    if (from !== 'json') {
      jsonArea.value = JSON.stringify(root, null, 2);
      jsonArea.removeAttribute('aria-invalid');
      jsonError.textContent = '';
    }
    if (from !== 'compact') {
      const compact = unbuildable(root) ? { reason: 'fix the JSON first' } : toCompact(vocab, root);
      compactArea.value = compact.compact ? JSON.stringify(compact.compact, null, 2) : '';
      compactArea.placeholder = compact.reason ? `No compact form: ${compact.reason}.` : '';
      compactNote.textContent = compact.reason ? `No compact form: ${compact.reason}.` : '';
    }
    onChange(root);
  }

  // --- rows ----------------------------------------------------------------------------

  function factSelect(leaf, label) {
    const types = eventTypes();
    const carried = new Set(types.length
      ? types.map((t) => vocab.eventEntities[t.split('.')[0]] || []).reduce((a, b) => a.filter((x) => b.includes(x)))
      : []);
    const where = (group) => {
      if (group.root === 'event') return 'every event';
      if (carried.has(group.root)) return 'in the event';
      if (group.fetched) return 'fetched from the batch service';
      return types.length ? 'not in these events' : 'in some events';
    };
    const select = h('select', { class: 'fact', 'aria-label': label, dataset: { part: 'fact' } },
      vocab.groups.map((group) => h('optgroup', { label: `${group.root} — ${where(group)}` },
        group.facts.map((fact) => h('option', { value: fact.path, selected: fact.path === leaf.fact }, `${fact.path} (${fact.type})`)))),
      vocab.facts.has(leaf.fact) ? null : h('optgroup', { label: 'unknown' }, h('option', { value: leaf.fact, selected: true }, String(leaf.fact))));
    select.addEventListener('change', () => {
      leaf.fact = select.value;
      const ops = operatorsFor(vocab, leaf.fact);
      if (!ops.includes(leaf.operator)) leaf.operator = ops[0];
      leaf.value = fitValue(vocab, leaf.fact, leaf.operator, leaf.value);
      rerender(at(select));
    });
    return select;
  }

  function operatorSelect(leaf, label) {
    const ops = operatorsFor(vocab, leaf.fact);
    const select = h('select', { class: 'operator', 'aria-label': label, dataset: { part: 'operator' } },
      ops.map((op) => h('option', { value: op, selected: op === leaf.operator }, OPERATOR_LABELS[op] || op)),
      ops.includes(leaf.operator) ? null : h('option', { value: leaf.operator, selected: true }, `${leaf.operator} (not for ${factOf(vocab, leaf.fact).type})`));
    select.addEventListener('change', () => {
      leaf.operator = select.value;
      leaf.value = fitValue(vocab, leaf.fact, leaf.operator, leaf.value);
      rerender(at(select));
    });
    return select;
  }

  function valueInput(leaf, label) {
    const fact = factOf(vocab, leaf.fact);
    const set = (value) => { leaf.value = value; changed(); };
    const number = (v) => (v.trim() === '' ? null : Number(v));
    const input = (attrs, read, shown) => {
      const el = h('input', { class: 'value', 'aria-label': label, dataset: { part: 'value' }, value: shown ?? '', ...attrs });
      el.addEventListener('input', () => set(read(el.value)));
      return el;
    };
    if (leaf.operator === 'exists') {
      const select = h('select', { class: 'value', 'aria-label': label, dataset: { part: 'value' } },
        h('option', { value: 'true', selected: leaf.value !== false }, 'is present'),
        h('option', { value: 'false', selected: leaf.value === false }, 'is absent'));
      select.addEventListener('change', () => set(select.value === 'true'));
      return select;
    }
    if (leaf.operator === 'between') {
      const [low, high] = Array.isArray(leaf.value) ? leaf.value : [null, null];
      const lowInput = h('input', { type: 'number', step: 'any', class: 'value', 'aria-label': `${label}: from`, value: low ?? '' });
      const highInput = h('input', { type: 'number', step: 'any', class: 'value', 'aria-label': `${label}: to`, value: high ?? '' });
      const update = () => set([number(lowInput.value), number(highInput.value)]);
      lowInput.addEventListener('input', update);
      highInput.addEventListener('input', update);
      return h('span', { class: 'range', dataset: { part: 'value' } }, lowInput, ' and ', highInput);
    }
    if (leaf.operator === 'in' || leaf.operator === 'not_in') {
      const values = Array.isArray(leaf.value) ? leaf.value : [];
      if (fact.options) {
        const boxes = fact.options.map((option) => h('label', { class: 'check' },
          h('input', { type: 'checkbox', value: option, checked: values.includes(option) }), ` ${option}`));
        const group = h('fieldset', { class: 'choices', dataset: { part: 'value' } }, h('legend', { class: 'visually-hidden' }, label), boxes);
        group.addEventListener('change', () => set([...group.querySelectorAll('input:checked')].map((b) => b.value)));
        return group;
      }
      const read = (v) => v.split(',').map((x) => x.trim()).filter(Boolean).map((x) => (fact.type === 'number' && !Number.isNaN(Number(x)) ? Number(x) : x));
      return input({ type: 'text', placeholder: 'values, separated by commas' }, read, values.join(', '));
    }
    if (fact.options && ['equal', 'not_equal'].includes(leaf.operator)) {
      const select = h('select', { class: 'value', 'aria-label': label, dataset: { part: 'value' } },
        fact.options.map((option) => h('option', { value: option, selected: option === leaf.value }, option)),
        fact.options.includes(leaf.value) ? null : h('option', { value: String(leaf.value), selected: true }, String(leaf.value)));
      select.addEventListener('change', () => set(select.value));
      return select;
    }
    if (fact.type === 'number' && !['contains', 'starts_with', 'matches'].includes(leaf.operator)) {
      return input({ type: 'number', step: 'any' }, number, leaf.value);
    }
    if (fact.type === 'date' && leaf.operator === 'starts_with') {
      return input({ type: 'date' }, (v) => v, leaf.value);
    }
    return input({ type: 'text', placeholder: leaf.operator === 'matches' ? 'regular expression' : '' }, (v) => v, leaf.value);
  }

  function controls(parent, index, node, name, path, parentPath) {
    const buttons = h('span', { class: 'row-controls' });
    if (!parent) return buttons;
    const key = groupKey(parent);
    const replaceSelf = (next) => {
      if (key === 'not') parent.not = next;
      else parent[key][index] = next;
      rerender({ path, selector: 'button.secondary' });
    };
    if (groupKey(node) !== 'not') {
      buttons.append(h('button', { type: 'button', class: 'secondary small', onclick: () => replaceSelf({ not: node }) }, 'Negate', h('span', { class: 'visually-hidden' }, ` ${name}`)));
    } else {
      buttons.append(h('button', { type: 'button', class: 'secondary small', onclick: () => replaceSelf(node.not) }, 'Remove “not”', h('span', { class: 'visually-hidden' }, ` from ${name}`)));
    }
    if (key !== 'not') {
      buttons.append(h('button', { type: 'button', class: 'secondary small', onclick: () => { parent[key].splice(index, 1); rerender({ path, selector: 'button.secondary', fallback: parentPath }); } },
        'Remove', h('span', { class: 'visually-hidden' }, ` ${name}`)));
    }
    return buttons;
  }

  function leafRow(leaf, path, name, parent, index, parentPath) {
    return h('li', { class: 'leaf cond-row', dataset: { field: path } },
      h('div', { class: 'cond-line' },
        factSelect(leaf, `${name}: fact`), operatorSelect(leaf, `${name}: operator`), valueInput(leaf, `${name}: value`),
        controls(parent, index, leaf, name, path, parentPath)),
      h('div', { class: 'violation', 'aria-live': 'polite' }));
  }

  function groupBox(node, path, name, parent, index, parentPath) {
    const key = groupKey(node);
    if (key === 'not') {
      return h('li', { class: 'group not cond-row', dataset: { field: path } },
        h('div', { class: 'cond-line' }, h('strong', { class: 'group-kind' }, 'not'), h('span', { class: 'muted small' }, 'the condition below must not hold'),
          controls(parent, index, node, name, path, parentPath)),
        h('div', { class: 'violation', 'aria-live': 'polite' }),
        h('ul', { class: 'cond-children' }, child(node.not, `${path}.not`, `${name}, negated`, node, 0, path)));
    }
    const kind = h('select', { class: 'group-kind', 'aria-label': `${name}: match` },
      Object.entries(GROUP_LABELS).map(([k, label]) => h('option', { value: k, selected: k === key }, `Match ${label} these`)));
    kind.addEventListener('change', () => {
      const children = node[key];
      delete node[key];
      node[kind.value] = children;
      rerender(at(kind));
    });
    const fresh = () => newLeaf(vocab, defaultFact());
    return h('li', { class: `group ${key} cond-row`, dataset: { field: path } },
      h('div', { class: 'cond-line' }, kind, controls(parent, index, node, name, path, parentPath)),
      h('div', { class: 'violation', 'aria-live': 'polite' }),
      h('ul', { class: 'cond-children' }, node[key].map((c, i) => child(c, `${path}.${key}.${i}`, `${name}, condition ${i + 1}`, node, i, path))),
      node[key].length ? null : h('p', { class: 'muted small empty-group' }, key === 'all' ? 'No conditions: always matches.' : 'No conditions: never matches.'),
      h('div', { class: 'row group-add' },
        h('button', { type: 'button', class: 'secondary small', onclick: () => { node[key].push(fresh()); rerender({ path: `${path}.${key}.${node[key].length - 1}`, selector: 'select.fact' }); } },
          'Add condition', h('span', { class: 'visually-hidden' }, ` to ${name}`)),
        h('button', { type: 'button', class: 'secondary small', onclick: () => { node[key].push({ any: [fresh()] }); rerender({ path: `${path}.${key}.${node[key].length - 1}.any.0`, selector: 'select.fact' }); } },
          'Add group', h('span', { class: 'visually-hidden' }, ` to ${name}`))));
  }

  function child(node, path, name, parent, index, parentPath) {
    return isLeaf(node) ? leafRow(node, path, name, parent, index, parentPath) : groupBox(node, path, name, parent, index, parentPath);
  }

  function defaultFact() {
    const types = eventTypes();
    const source = types.length ? types[0].split('.')[0] : 'order';
    const entity = (vocab.eventEntities[source] || ['order'])[0];
    return [...vocab.facts.keys()].find((p) => p.startsWith(`${entity}.`) && p !== `${entity}.id`) || [...vocab.facts.keys()][0];
  }

  // Where focus returns after a redraw: the same control of the same row.
  const at = (el) => ({ path: el.closest('[data-field]').dataset.field, selector: `.${el.className.split(' ')[0]}` });

  // Redraws the tree and puts focus where the change happened (a redraw replaces every
  // control), or on the group's "Add condition" when the row is gone.
  function rerender(focus) {
    draw();
    changed();
    if (!focus) return;
    const row = (path) => canvas.querySelector(`[data-field="${CSS.escape(path)}"]`);
    const target = row(focus.path)?.querySelector(focus.selector)
      || (focus.fallback && row(focus.fallback)?.querySelector(':scope > .group-add button'));
    target?.focus();
  }

  function draw() {
    const problem = unbuildable(root);
    if (problem) {
      notice.textContent = `The builder cannot show these conditions (${problem}); edit them in the advanced view.`;
      replace(canvas);
      return;
    }
    notice.textContent = '';
    const wrapped = isLeaf(root)
      ? h('ul', { class: 'cond-root' }, leafRow(root, 'conditions', 'Condition', null, 0),
        h('li', {}, h('button', { type: 'button', class: 'secondary small', onclick: () => { root = { all: [root] }; rerender({ path: 'conditions.all.0', selector: 'select.fact' }); } }, 'Put in a group')))
      : h('ul', { class: 'cond-root' }, groupBox(root, 'conditions', 'Conditions', null, 0));
    replace(canvas, wrapped);
  }

  jsonArea.addEventListener('input', () => {
    let parsed;
    try {
      parsed = JSON.parse(jsonArea.value || '{}');
    } catch (err) {
      jsonError.textContent = `Not valid JSON: ${err.message}`;
      jsonArea.setAttribute('aria-invalid', 'true');
      return;
    }
    jsonError.textContent = '';
    jsonArea.removeAttribute('aria-invalid');
    // A compact form typed here is read as the service reads it.
    root = parsed && typeof parsed === 'object' && !Array.isArray(parsed) && !isLeaf(parsed) && !groupKey(parsed) && Object.keys(parsed).length
      ? fromCompact(vocab, parsed) : parsed;
    draw();
    changed({ from: 'json' });
  });
  compactArea.addEventListener('input', () => {
    let parsed;
    try {
      parsed = JSON.parse(compactArea.value || '{}');
    } catch (err) {
      compactNote.textContent = `Not valid JSON: ${err.message}`;
      return;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      compactNote.textContent = 'The compact form is an object of fact: value.';
      return;
    }
    compactNote.textContent = '';
    root = fromCompact(vocab, parsed);
    draw();
    changed({ from: 'compact' });
  });

  draw();
  changed();
  return {
    element,
    get tree() { return root; },
    // Problems found before asking the service: the JSON view does not parse.
    problem: () => (jsonArea.getAttribute('aria-invalid') === 'true' ? jsonError.textContent : null),
    redraw: () => { draw(); changed(); },
    same: (other) => sameJson(root, other),
    describe,
  };
}
