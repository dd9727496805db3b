// Create or edit a rule: the condition builder, a form per action, a sample event that
// previews the actions' templates, and a dry run of the rule as edited (saved or not) against it.
// Server-side field violations are shown next to the part of the form they name.

import { get, patch, post } from '../api.js';
import { h, replace, toast, uuid } from '../dom.js';
import { conditionBuilder } from '../builder.js';
import { actionForm, defaultParams } from '../actions.js';
import { loadVocabulary } from '../conditions.js';
import { dryRun, factsOf, madeUpEvent, recentEvent } from '../sample.js';
import { errorBox } from '../widgets.js';
import { replayPanel } from './replay.js';
import { executionLog, ruleTrace, ruleType } from './rules.js';

const RULES = 'loom.rules.v1.RulesService';
const TYPES = ['AUTO_ASSIGNMENT', 'STATUS_UPDATE', 'NOTIFICATION', 'WORKFLOW'];
const NEW_RULE = {
  name: '', description: '', type: 'RULE_TYPE_NOTIFICATION', active: true, priority: 10, eventTypes: ['batch.confirmed'],
  conditions: { all: [{ fact: 'batch.fill_percentage', operator: 'greater_than_inclusive', value: 75 }] },
  actions: [{ type: 'ACTION_TYPE_SEND_EMAIL', params: defaultParams('ACTION_TYPE_SEND_EMAIL') }],
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

export function renderRuleEditor(main, ctx) {
  const ruleId = ctx.params.id || null;
  const canSave = ctx.can(`${RULES}/${ruleId ? 'UpdateRule' : 'CreateRule'}`);
  replace(main, h('p', {}, h('a', { href: '#/rules' }, '← All rules')), h('h1', {}, ruleId ? 'Edit rule' : 'New rule'),
    h('p', { class: 'muted' }, 'Loading…'));

  const load = ruleId ? get(`/v1/rules/${encodeURIComponent(ruleId)}`).then((r) => r.rule) : Promise.resolve(structuredClone(NEW_RULE));
  Promise.all([load, loadVocabulary()]).then(([rule, vocab]) => build(rule, vocab))
    .catch((err) => replace(main, h('p', {}, h('a', { href: '#/rules' }, '← All rules')), errorBox(err)));

  function build(rule, vocab) {
    const general = h('div', { class: 'form-error', role: 'alert' });
    const field = (name, label, control, hint) => h('div', { class: 'field', dataset: { field: name } },
      h('label', { for: `rule-${name}` }, label), control, hint ? h('div', { class: 'hint', id: `rule-${name}-hint` }, hint) : null,
      h('div', { class: 'violation', id: `rule-${name}-error`, 'aria-live': 'polite' }));
    const input = (name, attrs) => h('input', { id: `rule-${name}`, name, 'aria-describedby': `rule-${name}-error`, ...attrs });

    const listened = new Set(rule.eventTypes || []);
    const eventBoxes = h('fieldset', { class: 'field event-types', dataset: { field: 'eventtypes' } },
      h('legend', {}, 'Event types'),
      h('p', { class: 'hint' }, 'The events this rule listens to; none listens to every event.'),
      ['order', 'batch'].map((source) => h('div', { class: 'choices' }, vocab.eventTypes.filter((t) => t.startsWith(`${source}.`)).map((t) =>
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'eventtypes', value: t, checked: listened.has(t) }), ` ${t}`)))),
      h('div', { class: 'violation', 'aria-live': 'polite' }));
    const eventTypes = () => [...eventBoxes.querySelectorAll('input:checked')].map((b) => b.value);

    const builder = conditionBuilder({ tree: rule.conditions, vocab, eventTypes });
    const actions = [];
    const sample = samplePanel(ctx, vocab, eventTypes, ruleId, () => actions.forEach((a) => a.showPreview()), () => collect());
    // The scheduler's jobs, as the rules service found them; without the scheduler the
    // job picker offers the job already named (and says so).
    const jobs = Promise.resolve(vocab.jobs || []);
    const actionsList = h('ol', { class: 'action-list' });
    function addAction(action) {
      const form = actionForm({
        action, vocab, jobs, facts: () => factsOf(sample.event()),
        onRemove: (item) => {
          actions.splice(actions.findIndex((a) => a.element === item), 1);
          item.remove();
          actions.forEach((a, i) => a.renumber(i));
          actionsList.nextElementSibling?.focus?.();
        },
      });
      actions.push(form);
      actionsList.append(form.element);
      form.renumber(actions.length - 1);
      return form;
    }
    (rule.actions || []).forEach(addAction);
    eventBoxes.addEventListener('change', () => { builder.redraw(); sample.offer(); });

    const form = h('form', { class: 'rule-form card', novalidate: true, 'aria-label': 'Rule' },
      general,
      field('name', 'Name', input('name', { value: rule.name || '', required: true })),
      field('description', 'Description', input('description', { value: rule.description || '' })),
      h('div', { class: 'row' },
        field('type', 'Type', h('select', { id: 'rule-type', name: 'type', 'aria-describedby': 'rule-type-error' },
          TYPES.map((t) => h('option', { value: `RULE_TYPE_${t}`, selected: rule.type === `RULE_TYPE_${t}` }, ruleType(`RULE_TYPE_${t}`))))),
        field('priority', 'Priority', input('priority', { type: 'number', value: rule.priority ?? 0, step: 1, 'aria-describedby': 'rule-priority-hint rule-priority-error' }), 'higher runs first')),
      eventBoxes,
      h('div', { class: 'row' },
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'active', checked: !!rule.active }), ' Active'),
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'stopProcessing', checked: !!rule.stopProcessing }),
          ' Stop lower-priority rules when this one matches')),
      h('fieldset', { class: 'field conditions' }, h('legend', {}, 'Conditions'), builder.element),
      h('fieldset', { class: 'field', dataset: { field: 'actions' } },
        h('legend', {}, 'Actions, in order'),
        actionsList,
        h('div', { class: 'violation', 'aria-live': 'polite' }),
        h('button', { type: 'button', class: 'secondary', onclick: () => {
          const added = addAction({ type: 'ACTION_TYPE_SEND_EMAIL', params: defaultParams('ACTION_TYPE_SEND_EMAIL') });
          added.element.querySelector('select')?.focus();
        } }, 'Add action')),
      canSave ? h('button', { type: 'submit' }, ruleId ? 'Save new version' : 'Create rule') : h('p', { class: 'muted' }, 'Your role may not change rules.'));

    function clearViolations() {
      form.querySelectorAll('.violation').forEach((v) => { v.textContent = ''; });
      form.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
      form.querySelectorAll('.has-violation').forEach((el) => el.classList.remove('has-violation'));
      replace(general);
    }

    // Puts a message at the most specific form part its field path names, and marks the control it names.
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
      const rest = wanted.slice(bestLength + 1);
      const own = (el) => el.closest('[data-field]') === best;
      const slot = [...best.querySelectorAll('.violation')].find(own);
      const text = rest ? `${rest}: ${message}` : message;
      slot.textContent = slot.textContent ? `${slot.textContent} · ${text}` : text;
      const control = [...best.querySelectorAll(rest ? `[data-part="${rest.split('.')[0]}"]` : 'input, select, textarea')].find(own)
        || [...best.querySelectorAll('input, select, textarea')].find(own);
      const target = control?.matches('input, select, textarea') ? control : control?.querySelector('input, select, textarea');
      target?.setAttribute('aria-invalid', 'true');
      if (target && slot.id === '') slot.id = `violation-${uuid()}`;
      target?.setAttribute('aria-describedby', [target.getAttribute('aria-describedby'), slot.id].filter(Boolean).join(' '));
    }

    function collect() {
      const data = new FormData(form);
      const problems = [];
      if (builder.problem()) problems.push(['conditions', builder.problem()]);
      actions.forEach((a, i) => a.invalid() && problems.push([`actions.${i}.params.params`, 'not valid JSON']));
      const body = {
        name: data.get('name').trim(),
        description: data.get('description').trim(),
        type: data.get('type'),
        priority: Number(data.get('priority') || 0),
        eventTypes: eventTypes(),
        active: data.get('active') === 'on',
        stopProcessing: data.get('stopProcessing') === 'on',
        conditions: builder.tree,
        actions: actions.map((a) => a.value()),
      };
      return { body, problems };
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearViolations();
      const { body, problems } = collect();
      if (problems.length) {
        problems.forEach(([path, message]) => showViolation(path, message));
        form.querySelector('[aria-invalid="true"]')?.focus();
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
        const first = form.querySelector('.has-violation');
        first?.scrollIntoView({ block: 'center' });
        (first?.querySelector('[aria-invalid="true"]') || general).focus?.();
      } finally {
        button.disabled = false;
      }
    });

    const sections = [h('p', {}, h('a', { href: '#/rules' }, '← All rules')),
      h('h1', {}, ruleId ? `Rule: ${rule.name}` : 'New rule'),
      ruleId ? h('p', { class: 'muted' }, `Version ${rule.version} · last changed by ${rule.updatedBy || rule.createdBy || '—'}`,
        ctx.can(`${RULES}/ListRuleVersions`) ? [' · ', h('a', { href: `#/rules/${encodeURIComponent(ruleId)}/versions` }, 'Version history')] : null) : null,
      form, sample.element];
    if (ctx.can(`${RULES}/ReplayRule`)) {
      // The draft is the form as it stands, checked as a save would be.
      const draft = () => {
        clearViolations();
        const { body, problems } = collect();
        problems.forEach(([path, message]) => showViolation(path, message));
        return problems.length ? null : body;
      };
      const onDraftViolations = (violations) => {
        violations.forEach((v) => showViolation(v.field.replace(/^draft\.?/, ''), v.description));
        form.querySelector('[aria-invalid="true"]')?.focus();
      };
      const earlier = Number(ctx.query.get('replayVersion')) || 0;
      sections.push(replayPanel(ctx, { ruleId: ruleId || '', version: rule.version, draft, onDraftViolations, earlier }));
    }
    if (ruleId && ctx.can(`${RULES}/ListExecutions`)) {
      const log = h('section', { class: 'card', 'aria-labelledby': 'log-heading' });
      sections.push(log);
      executionLog(log, ctx, { ruleId });
    }
    replace(main, sections);
  }
}

// The sample event: one of the rule's own event types, with the newest matching data; it
// feeds the actions' previews and the dry run of the rule as edited (`draft()`: collect()).
function samplePanel(ctx, vocab, eventTypes, ruleId, onSample, draft) {
  const typeSelect = h('select', { id: 'sample-type' });
  const origin = h('p', { class: 'hint', role: 'status' });
  const area = h('textarea', { id: 'sample-data', rows: 8, spellcheck: false, class: 'code', 'aria-describedby': 'sample-error' });
  const problem = h('div', { class: 'violation', id: 'sample-error', 'aria-live': 'polite' });
  const result = h('div', { class: 'trace', 'aria-live': 'polite' });
  let current = { type: '', source: 'batch', data: {} };
  let loaded = 0;
  let edited = false;

  function show(type, { event, origin: from }, pending) {
    current = event;
    area.value = JSON.stringify(event.data, null, 2);
    area.removeAttribute('aria-invalid');
    problem.textContent = '';
    origin.textContent = `Sample ${type} event: ${from}${pending ? ' (looking for stored data…)' : ''}. Edit it freely.`;
    onSample();
  }
  async function load(type) {
    const ticket = ++loaded;
    edited = false;
    show(type, madeUpEvent(type), true);
    const recent = await recentEvent(type, ctx.can);
    if (ticket !== loaded || edited) return;
    show(type, recent || madeUpEvent(type), false);
  }
  // Offers the rule's own event types (all of them when it listens to every event).
  function offer() {
    const own = eventTypes();
    const types = own.length ? own : vocab.eventTypes;
    const keep = types.includes(typeSelect.value) ? typeSelect.value : types[0];
    replace(typeSelect, types.map((t) => h('option', { value: t, selected: t === keep }, t)));
    if (keep !== current.type) load(keep);
  }
  typeSelect.addEventListener('change', () => load(typeSelect.value));
  area.addEventListener('input', () => {
    edited = true;
    try {
      current = { ...current, data: JSON.parse(area.value || '{}') };
      area.removeAttribute('aria-invalid');
      problem.textContent = '';
      onSample();
    } catch (err) {
      area.setAttribute('aria-invalid', 'true');
      problem.textContent = `Not valid JSON: ${err.message}`;
    }
  });

  const canRun = ctx.can(`${RULES}/EvaluateEvent`);
  const run = h('button', { type: 'button' }, 'Dry run this rule');
  run.addEventListener('click', async () => {
    if (area.getAttribute('aria-invalid') === 'true') return area.focus();
    const { body, problems } = draft();
    if (problems.length) return replace(result, h('p', { class: 'error-text' }, `Fix the rule first: ${problems.map(([f, m]) => `${f}: ${m}`).join('; ')}`));
    const event = { eventId: uuid(), occurredTime: new Date().toISOString(), ...current, type: typeSelect.value };
    replace(result, h('p', { class: 'muted' }, 'Evaluating…'));
    try {
      const { mine, others } = await dryRun(event, body, ruleId);
      replace(result,
        mine ? ruleTrace(mine) : h('p', {}, 'This rule was not evaluated.'),
        h('p', { class: 'muted small' }, `${others} other rule${others === 1 ? '' : 's'} would match this event too.`));
    } catch (err) {
      replace(result, errorBox(err));
    }
  });

  const element = h('section', { class: 'card sample', 'aria-labelledby': 'sample-heading' },
    h('h2', { id: 'sample-heading' }, 'Sample event and dry run'),
    h('p', { class: 'muted' }, 'Previews the actions above and dry-runs this rule as edited, saved or not: nothing runs, nothing is sent.'),
    h('div', { class: 'row' }, h('label', { for: 'sample-type' }, 'Event type '), typeSelect),
    origin,
    h('label', { for: 'sample-data' }, 'Sample event data (JSON)'), area, problem,
    canRun ? run : null, result);
  offer();
  return { element, offer, event: () => ({ ...current, type: typeSelect.value }) };
}
