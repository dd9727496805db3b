// Action forms: each action type's parameters as fields, template placeholders offered
// from the vocabulary, and a live preview rendered against the sample event.

import { append, h, replace } from './dom.js';
import { render } from './conditions.js';

export const ACTION_LABELS = {
  ACTION_TYPE_SEND_EMAIL: 'send email', ACTION_TYPE_UPDATE_STATUS: 'update status',
  ACTION_TYPE_ASSIGN_SUPPLIER: 'assign supplier', ACTION_TYPE_TRIGGER_WORKFLOW: 'trigger workflow',
};
const PARAM_LABELS = {
  entity: 'Entity', id: 'Id', status: 'New status', reason: 'Reason', supplier_id: 'Supplier id', priority: 'Priority',
  recipient: 'Recipient', subject: 'Subject', body: 'Body', job: 'Job', params: 'Job parameters (JSON object)',
};
const TEMPLATED = new Set(['id', 'reason', 'supplier_id', 'recipient', 'subject', 'body']);
const PARAM_ORDER = ['entity', 'id', 'status', 'supplier_id', 'priority', 'reason', 'recipient', 'subject', 'body', 'job', 'params'];

export function defaultParams(type) {
  return {
    ACTION_TYPE_UPDATE_STATUS: { entity: 'order', id: '{{order.id}}', status: 'confirmed' },
    ACTION_TYPE_ASSIGN_SUPPLIER: { entity: 'order', id: '{{order.id}}', supplier_id: '{{best_supplier_id}}' },
    ACTION_TYPE_SEND_EMAIL: { recipient: 'ops@loom.example', subject: 'Batch {{batch.id}}', body: 'Batch {{batch.id}} is {{batch.status}}.' },
    ACTION_TYPE_TRIGGER_WORKFLOW: { job: 'orchestrate-batches' },
  }[type] || {};
}

const specOf = (vocab, type) => vocab.actions[String(type).replace('ACTION_TYPE_', '').toLowerCase()] || { required: [], optional: [] };

// options: {action, vocab, jobs: Promise<[name]>, facts: () => sample facts, onRemove}
export function actionForm({ action, vocab, jobs, facts, onRemove }) {
  let type = action.type;
  let params = structuredClone(action.params || {});
  let number = 1;
  let lastTemplateField = null;
  const body = h('div', { class: 'action-fields' });
  const preview = h('div', { class: 'preview', 'aria-live': 'polite' });
  const typeSelect = h('select', { class: 'action-type' },
    Object.entries(ACTION_LABELS).map(([value, label]) => h('option', { value, selected: value === type }, label)));
  const placeholder = h('select', { class: 'placeholder-picker' });
  const item = h('li', { class: 'action field' },
    h('div', { class: 'action-part row', dataset: { part: 'type' } },
      h('label', { class: 'action-heading' }, h('span', { class: 'action-number' }), ' ', typeSelect),
      h('button', { type: 'button', class: 'secondary small remove-action', onclick: () => onRemove(item) }, 'Remove', h('span', { class: 'visually-hidden action-name' })),
      h('div', { class: 'violation', 'aria-live': 'polite' })),
    body,
    h('div', { class: 'row placeholder-row' }, h('label', {}, 'Insert placeholder ', placeholder)),
    h('div', { class: 'preview-wrap' }, h('span', { class: 'hint' }, 'Preview with the sample event'), preview),
    h('div', { class: 'violation', 'aria-live': 'polite' }));

  append(placeholder, [h('option', { value: '' }, '— choose a fact —'),
    vocab.groups.map((g) => h('optgroup', { label: g.root }, g.facts.map((f) => h('option', { value: f.path }, `{{${f.path}}}`))))]);
  placeholder.addEventListener('change', () => {
    const target = lastTemplateField || body.querySelector('.templated');
    if (!placeholder.value || !target) return;
    const text = `{{${placeholder.value}}}`;
    const at = target.selectionStart ?? target.value.length;
    target.value = target.value.slice(0, at) + text + target.value.slice(target.selectionEnd ?? at);
    target.dispatchEvent(new Event('input', { bubbles: true }));
    target.focus();
    target.setSelectionRange(at + text.length, at + text.length);
    placeholder.value = '';
  });

  function control(name, value) {
    const label = `Action ${number} ${PARAM_LABELS[name].toLowerCase()}`;
    const set = (v) => {
      if (v === '' || v === undefined) delete params[name];
      else params[name] = v;
      if (name === 'entity') draw(); else showPreview();
    };
    if (name === 'entity') {
      const select = h('select', { 'aria-label': label }, vocab.entities.map((e) => h('option', { value: e, selected: e === value }, e)));
      select.addEventListener('change', () => {
        params.id = `{{${select.value}.id}}`;
        const statuses = vocab.statusTargets[select.value] || [];
        if (params.status !== undefined && !statuses.some((s) => s.status === params.status)) params.status = statuses[0]?.status;
        set(select.value);
      });
      return select;
    }
    if (name === 'status') {
      const targets = vocab.statusTargets[params.entity] || [];
      const select = h('select', { 'aria-label': label },
        targets.map((t) => h('option', { value: t.status, selected: t.status === value }, t.from.length ? `${t.status} (from ${t.from.join(', ')})` : t.status)),
        value === undefined || targets.some((t) => t.status === value) ? null : h('option', { value, selected: true }, `${value} (not allowed)`));
      select.addEventListener('change', () => set(select.value));
      if (value === undefined && targets.length) params.status = targets[0].status;
      return select;
    }
    if (name === 'job') {
      const select = h('select', { 'aria-label': label }, h('option', { value, selected: true }, value || '—'));
      jobs.then((names) => {
        replace(select, names.map((n) => h('option', { value: n, selected: n === value }, n)),
          names.includes(value) || !value ? null : h('option', { value, selected: true }, `${value} (unknown job)`));
        if (!value && names.length) set(names[0]);
      }).catch(() => {});
      select.addEventListener('change', () => set(select.value));
      return select;
    }
    if (name === 'priority') {
      const input = h('input', { type: 'number', step: 1, 'aria-label': label, value: value ?? '' });
      input.addEventListener('input', () => set(input.value === '' ? '' : Number(input.value)));
      return input;
    }
    if (name === 'params') {
      const area = h('textarea', { rows: 2, class: 'code', spellcheck: false, 'aria-label': label }, value === undefined ? '' : JSON.stringify(value));
      area.addEventListener('input', () => {
        try {
          set(area.value.trim() ? JSON.parse(area.value) : '');
          area.removeAttribute('aria-invalid');
        } catch {
          area.setAttribute('aria-invalid', 'true');
        }
      });
      return area;
    }
    const attrs = { 'aria-label': label, class: 'templated', value: value ?? '', spellcheck: name === 'body' || name === 'subject' };
    const input = name === 'body' ? h('textarea', { ...attrs, rows: 3 }, value ?? '') : h('input', { type: 'text', ...attrs });
    input.addEventListener('input', () => set(input.value));
    input.addEventListener('focus', () => { lastTemplateField = input; });
    return input;
  }

  function draw() {
    const spec = specOf(vocab, type);
    const names = PARAM_ORDER.filter((n) => spec.required.includes(n) || spec.optional.includes(n) || n in params);
    lastTemplateField = null;
    replace(body, names.map((name) => {
      const optional = !spec.required.includes(name);
      const known = name in PARAM_LABELS;
      return h('div', { class: 'action-part param', dataset: { part: `params.${name}` } },
        h('span', { class: 'param-label', 'aria-hidden': 'true' }, known ? PARAM_LABELS[name] : name, optional ? h('span', { class: 'muted small' }, ' (optional)') : null),
        known ? control(name, params[name]) : h('code', {}, JSON.stringify(params[name])),
        h('div', { class: 'violation', 'aria-live': 'polite' }));
    }));
    item.querySelector('.placeholder-row').hidden = !names.some((n) => TEMPLATED.has(n));
    showPreview();
  }

  function showPreview() {
    const { value, missing } = render(params, facts());
    replace(preview,
      h('dl', { class: 'facts compact' }, Object.entries(value).sort(([a], [b]) => PARAM_ORDER.indexOf(a) - PARAM_ORDER.indexOf(b)).map(([k, v]) => [
        h('dt', {}, PARAM_LABELS[k] || k), h('dd', { dataset: { param: k } }, typeof v === 'string' ? v : JSON.stringify(v))])),
      missing.length ? h('p', { class: 'warn-text small' }, `No value in the sample event for ${[...new Set(missing)].map((m) => `{{${m}}}`).join(', ')}.`) : null);
  }

  typeSelect.addEventListener('change', () => {
    type = typeSelect.value;
    params = structuredClone(defaultParams(type));
    draw();
  });

  draw();
  return {
    element: item,
    value: () => ({ type, params: structuredClone(params) }),
    invalid: () => !!body.querySelector('[aria-invalid="true"]'),
    showPreview,
    renumber(i) {
      number = i + 1;
      item.dataset.field = `actions.${i}`;
      for (const part of item.querySelectorAll('.action-part')) part.dataset.field = `actions.${i}.${part.dataset.part}`;
      item.querySelector('.action-number').textContent = `Action ${number}`;
      item.querySelector('.action-name').textContent = ` action ${number}`;
      typeSelect.setAttribute('aria-label', `Action ${number} type`);
      placeholder.setAttribute('aria-label', `Action ${number}: insert a placeholder into the last field edited`);
      for (const el of body.querySelectorAll('[aria-label]')) el.setAttribute('aria-label', el.getAttribute('aria-label').replace(/^Action \d+/, `Action ${number}`));
    },
  };
}
