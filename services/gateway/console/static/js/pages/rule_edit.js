// Create or edit a rule. Server-side field violations are shown next to the part
// of the form (or the condition / action) they name.

import { get, patch, post } from '../api.js';
import { h, replace, toast, uuid } from '../dom.js';
import { errorBox } from '../widgets.js';
import { executionLog, ruleType } from './rules.js';

const RULES = 'loom.rules.v1.RulesService';
const TYPES = ['AUTO_ASSIGNMENT', 'STATUS_UPDATE', 'NOTIFICATION', 'WORKFLOW'];
const ACTIONS = ['UPDATE_STATUS', 'ASSIGN_SUPPLIER', 'SEND_EMAIL', 'TRIGGER_WORKFLOW'];
const EVENT_TYPES = ['order.placed', 'order.status_changed', 'order.supplier_assigned', 'order.cancelled', 'order.refunded',
  'batch.opened', 'batch.confirmed', 'batch.nearing_target', 'batch.closing_soon', 'batch.needs_review', 'batch.cancelled',
  'batch.status_changed'];
const ACTION_EXAMPLES = {
  UPDATE_STATUS: { entity: 'order', id: '{{order.id}}', status: 'confirmed' },
  ASSIGN_SUPPLIER: { entity: 'order', id: '{{order.id}}', supplier_id: '{{best_supplier_id}}', priority: 1 },
  SEND_EMAIL: { recipient: 'ops@example.com', subject: 'Batch {{batch.id}}', body: 'Batch {{batch.id}} is {{batch.status}}.' },
  TRIGGER_WORKFLOW: { job: 'orchestrate-batches', params: {} },
};
const NEW_RULE = {
  name: '', description: '', type: 'RULE_TYPE_NOTIFICATION', active: true, priority: 10, eventTypes: ['batch.confirmed'],
  conditions: { all: [{ fact: 'batch.fill_percentage', operator: 'greater_than_inclusive', value: 75 }] },
  actions: [{ type: 'ACTION_TYPE_SEND_EMAIL', params: ACTION_EXAMPLES.SEND_EMAIL }],
  stopProcessing: false,
};

// Field paths compare equal across naming styles: rule.actions[1].params == actions.1.params.
export function normalizePath(field) {
  return String(field)
    .replace(/\[(\d+)\]/g, '.$1')
    .replace(/\//g, '.')
    .split('.')
    .filter(Boolean)
    .map((part) => part.replace(/_/g, '').toLowerCase())
    .filter((part, index) => !(index === 0 && part === 'rule'))
    .join('.');
}

// Anchors of a condition tree, path -> node label, as typed (tree or compact form).
function conditionNodes(value, path = 'conditions') {
  const nodes = [];
  if (Array.isArray(value)) {
    value.forEach((child, i) => nodes.push(...conditionNodes(child, `${path}.${i}`)));
  } else if (value && typeof value === 'object') {
    if ('fact' in value || 'operator' in value) {
      nodes.push({ path, label: `${value.fact ?? '?'} ${value.operator ?? '?'} ${JSON.stringify(value.value)}`, leaf: true });
    } else {
      for (const [key, child] of Object.entries(value)) {
        if (['all', 'any', 'not'].includes(key)) {
          nodes.push({ path: `${path}.${key}`, label: key, leaf: false });
          nodes.push(...conditionNodes(child, `${path}.${key}`));
        } else {
          nodes.push({ path: `${path}.${key}`, label: `${key}: ${JSON.stringify(child)}`, leaf: true });
        }
      }
    }
  }
  return nodes;
}

export function renderRuleEditor(main, ctx) {
  const ruleId = ctx.params.id || null;
  const canSave = ctx.can(`${RULES}/${ruleId ? 'UpdateRule' : 'CreateRule'}`);
  replace(main, h('p', {}, h('a', { href: '#/rules' }, '← All rules')), h('h1', {}, ruleId ? 'Edit rule' : 'New rule'),
    h('p', { class: 'muted' }, 'Loading…'));

  const load = ruleId ? get(`/v1/rules/${encodeURIComponent(ruleId)}`).then((r) => r.rule) : Promise.resolve(structuredClone(NEW_RULE));
  load.then((rule) => build(rule)).catch((err) => replace(main, h('p', {}, h('a', { href: '#/rules' }, '← All rules')), errorBox(err)));

  function build(rule) {
    const general = h('div', { class: 'form-error', role: 'alert' });
    const field = (name, label, control, hint) => h('div', { class: 'field', dataset: { field: name } },
      h('label', { for: `rule-${name}` }, label), control, hint ? h('div', { class: 'hint' }, hint) : null,
      h('div', { class: 'violation', id: `rule-${name}-error`, 'aria-live': 'polite' }));
    const input = (name, attrs) => h('input', { id: `rule-${name}`, name, 'aria-describedby': `rule-${name}-error`, ...attrs });

    const conditions = h('textarea', {
      id: 'rule-conditions', name: 'conditions', rows: 8, spellcheck: false, class: 'code', 'aria-describedby': 'rule-conditions-error',
    }, JSON.stringify(rule.conditions ?? {}, null, 2));
    const outline = h('ul', { class: 'condition-outline', 'aria-label': 'Conditions as parsed' });
    const actionsList = h('ol', { class: 'action-list' });

    const form = h('form', { class: 'rule-form card', novalidate: true },
      general,
      field('name', 'Name', input('name', { value: rule.name || '', required: true })),
      field('description', 'Description', input('description', { value: rule.description || '' })),
      h('div', { class: 'row' },
        field('type', 'Type', h('select', { id: 'rule-type', name: 'type', 'aria-describedby': 'rule-type-error' },
          TYPES.map((t) => h('option', { value: `RULE_TYPE_${t}`, selected: rule.type === `RULE_TYPE_${t}` }, ruleType(`RULE_TYPE_${t}`))))),
        field('priority', 'Priority', input('priority', { type: 'number', value: rule.priority ?? 0, step: 1 }), 'higher runs first')),
      field('eventtypes', 'Event types', input('eventtypes', { value: (rule.eventTypes || []).join(', '), list: 'event-types' }),
        'comma-separated; empty listens to every event'),
      h('datalist', { id: 'event-types' }, EVENT_TYPES.map((t) => h('option', { value: t }))),
      h('div', { class: 'row' },
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'active', checked: !!rule.active }), ' Active'),
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'stopProcessing', checked: !!rule.stopProcessing }),
          ' Stop lower-priority rules when this one matches')),
      h('div', { class: 'field', dataset: { field: 'conditions' } },
        h('label', { for: 'rule-conditions' }, 'Conditions (JSON)'),
        h('div', { class: 'hint' }, 'An all / any / not tree of {fact, operator, value}, or the compact form {"order.status": "awaiting_supplier"}.'),
        conditions,
        h('div', { class: 'violation', id: 'rule-conditions-error', 'aria-live': 'polite' }),
        outline),
      h('fieldset', { class: 'field', dataset: { field: 'actions' } },
        h('legend', {}, 'Actions, in order'),
        actionsList,
        h('div', { class: 'violation', 'aria-live': 'polite' }),
        h('button', { type: 'button', class: 'secondary', onclick: () => { addAction({ type: 'ACTION_TYPE_SEND_EMAIL', params: ACTION_EXAMPLES.SEND_EMAIL }); } }, 'Add action')),
      canSave ? h('button', { type: 'submit' }, ruleId ? 'Save new version' : 'Create rule') : h('p', { class: 'muted' }, 'Your role may not change rules.'));

    function addAction(action) {
      const index = actionsList.children.length;
      const typeSelect = h('select', { 'aria-label': 'Action type', class: 'action-type' },
        ACTIONS.map((t) => h('option', { value: `ACTION_TYPE_${t}`, selected: action.type === `ACTION_TYPE_${t}` }, t.toLowerCase().replace('_', ' '))));
      const params = h('textarea', { rows: 4, spellcheck: false, class: 'code action-params', 'aria-label': 'Action parameters (JSON)' },
        JSON.stringify(action.params || {}, null, 2));
      typeSelect.addEventListener('change', () => {
        params.value = JSON.stringify(ACTION_EXAMPLES[typeSelect.value.replace('ACTION_TYPE_', '')], null, 2);
      });
      const item = h('li', { class: 'action field' },
        h('div', { class: 'action-part', dataset: { part: 'type' } },
          h('div', { class: 'row' }, typeSelect,
            h('button', { type: 'button', class: 'secondary small', 'aria-label': 'Remove this action', onclick: () => { item.remove(); renumber(); } }, 'Remove')),
          h('div', { class: 'violation', 'aria-live': 'polite' })),
        h('div', { class: 'action-part', dataset: { part: 'params' } }, params, h('div', { class: 'violation', 'aria-live': 'polite' })),
        h('div', { class: 'violation', 'aria-live': 'polite' }));
      actionsList.append(item);
      renumber();
      return index;
    }
    function renumber() {
      [...actionsList.children].forEach((li, i) => {
        li.dataset.field = `actions.${i}`;
        for (const part of li.querySelectorAll('.action-part')) part.dataset.field = `actions.${i}.${part.dataset.part}`;
        li.querySelector('.action-type').setAttribute('aria-label', `Action ${i + 1} type`);
        li.querySelector('.action-params').setAttribute('aria-label', `Action ${i + 1} parameters (JSON)`);
      });
    }
    (rule.actions || []).forEach(addAction);

    function refreshOutline() {
      let parsed;
      try {
        parsed = JSON.parse(conditions.value || '{}');
      } catch {
        return;
      }
      replace(outline, conditionNodes(parsed).map((node) => h('li', {
        class: node.leaf ? 'leaf' : 'group', dataset: { field: node.path },
        style: { marginLeft: `${(node.path.split('.').length - 2) * 0.75}rem` },
      }, h('code', {}, node.label), h('span', { class: 'violation' }))));
    }
    conditions.addEventListener('input', refreshOutline);
    refreshOutline();

    function clearViolations() {
      form.querySelectorAll('.violation').forEach((v) => { v.textContent = ''; });
      form.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
      form.querySelectorAll('.has-violation').forEach((el) => el.classList.remove('has-violation'));
      replace(general);
    }

    // Puts a message at the most specific form part its field path names.
    function showViolation(fieldPath, message) {
      const wanted = normalizePath(fieldPath);
      let best = null;
      let bestLength = -1;
      for (const el of form.querySelectorAll('[data-field]')) {
        const anchor = normalizePath(el.dataset.field);
        if ((wanted === anchor || wanted.startsWith(`${anchor}.`)) && anchor.length > bestLength) {
          best = el;
          bestLength = anchor.length;
        }
      }
      if (!best) {
        general.append(h('div', { class: 'error' }, h('code', {}, fieldPath || 'rule'), ': ', message));
        return;
      }
      best.classList.add('has-violation');
      const slot = [...best.querySelectorAll('.violation')].find((v) => v.closest('[data-field]') === best);
      const text = wanted === normalizePath(best.dataset.field) ? message : `${fieldPath}: ${message}`;
      slot.textContent = slot.textContent ? `${slot.textContent} · ${text}` : text;
      best.querySelector('input, select, textarea')?.setAttribute('aria-invalid', 'true');
    }

    function collect() {
      const data = new FormData(form);
      const problems = [];
      const parse = (text, path) => {
        try {
          return JSON.parse(text || '{}');
        } catch (err) {
          problems.push([path, `not valid JSON: ${err.message}`]);
          return undefined;
        }
      };
      const body = {
        name: data.get('name').trim(),
        description: data.get('description').trim(),
        type: data.get('type'),
        priority: Number(data.get('priority') || 0),
        eventTypes: data.get('eventtypes').split(',').map((t) => t.trim()).filter(Boolean),
        active: data.get('active') === 'on',
        stopProcessing: data.get('stopProcessing') === 'on',
        conditions: parse(conditions.value, 'conditions'),
        actions: [...actionsList.children].map((li, i) => ({
          type: li.querySelector('.action-type').value,
          params: parse(li.querySelector('.action-params').value, `actions.${i}.params`),
        })),
      };
      return { body, problems };
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearViolations();
      const { body, problems } = collect();
      if (problems.length) {
        problems.forEach(([path, message]) => showViolation(path, message));
        return;
      }
      const button = form.querySelector('button[type=submit]');
      button.disabled = true;
      try {
        const reply = ruleId
          ? await patch(`/v1/rules/${encodeURIComponent(ruleId)}`, { ...body, ruleId }, { requestId: uuid() })
          : await post('/v1/rules', { requestId: uuid(), rule: body });
        toast(`Saved ${reply.rule.name}, version ${reply.rule.version}.`);
        ctx.navigate(`#/rules/${encodeURIComponent(reply.rule.ruleId)}`, { replace: !ruleId });
      } catch (err) {
        if (err.violations?.length) err.violations.forEach((v) => showViolation(v.field, v.description));
        else replace(general, errorBox(err));
        form.querySelector('.has-violation')?.scrollIntoView({ block: 'center' });
      } finally {
        button.disabled = false;
      }
    });

    const sections = [h('p', {}, h('a', { href: '#/rules' }, '← All rules')),
      h('h1', {}, ruleId ? `Rule: ${rule.name}` : 'New rule'),
      ruleId ? h('p', { class: 'muted' }, `Version ${rule.version} · last changed by ${rule.updatedBy || rule.createdBy || '—'}`) : null,
      form];
    if (ruleId && ctx.can(`${RULES}/ListExecutions`)) {
      const log = h('section', { class: 'card', 'aria-labelledby': 'log-heading' });
      sections.push(log);
      executionLog(log, ctx, { ruleId });
    }
    replace(main, sections);
  }
}
