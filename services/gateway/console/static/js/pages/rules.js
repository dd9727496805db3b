// Rules: list with active toggles, the execution log, and a dry-run panel.

import { get, listAll, post } from '../api.js';
import { h, replace, toast, uuid } from '../dom.js';
import { enumName, timeEl } from '../format.js';
import { errorBox, statusBadge, tableWrap } from '../widgets.js';
import { loadVocabulary } from '../conditions.js';
import { madeUpEvent, recentEvent } from '../sample.js';

const RULES = 'loom.rules.v1.RulesService';
export const ruleType = (t) => enumName(t, 'RULE_TYPE_');
const executionStatus = (s) => enumName(s, 'EXECUTION_STATUS_');
const actionType = (t) => enumName(t, 'ACTION_TYPE_');
// The gateway sends the enum's zero value, not nothing, for a rule that has never run.
const hasRun = (rule) => !!rule.lastExecutionStatus && rule.lastExecutionStatus !== 'EXECUTION_STATUS_UNSPECIFIED';

function activeSwitch(rule, ctx, onChange) {
  const input = h('input', {
    type: 'checkbox', role: 'switch', checked: !!rule.active, disabled: !ctx.can(`${RULES}/SetRuleActive`),
    'aria-label': `Active: ${rule.name}`, class: 'switch',
  });
  input.addEventListener('change', async () => {
    const wanted = input.checked;
    input.disabled = true;
    try {
      const reply = await post(`/v1/rules/${encodeURIComponent(rule.ruleId)}:setActive`, { requestId: uuid(), active: wanted });
      input.checked = !!reply.rule.active;
      toast(`${reply.rule.name} is now ${reply.rule.active ? 'active' : 'inactive'} (version ${reply.rule.version}).`);
      onChange?.(reply.rule);
    } catch (err) {
      input.checked = !wanted;
      toast(`Could not change ${rule.name}: ${err.message}`, 'error');
    } finally {
      input.disabled = false;
    }
  });
  return h('label', { class: 'switch-label' }, input, h('span', { class: 'switch-text', 'aria-hidden': 'true' }));
}

export function renderRules(main, ctx) {
  const listStatus = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  const table = tableWrap('Rules table');
  const logSection = h('section', { class: 'card', 'aria-labelledby': 'log-heading' });
  const dryRun = ctx.can(`${RULES}/EvaluateEvent`) ? dryRunPanel(ctx) : null;
  replace(main,
    h('div', { class: 'title-row' }, h('h1', {}, 'Rules'),
      ctx.can(`${RULES}/CreateRule`) ? h('a', { class: 'button', href: '#/rules/new' }, 'New rule') : null),
    h('section', { class: 'card', 'aria-label': 'Rules by priority' }, listStatus, table),
    dryRun, logSection);

  async function load() {
    try {
      const rules = await listAll('/v1/rules', { pageSize: 100 }, 'rules');
      listStatus.textContent = rules.length ? `${rules.length} rule${rules.length === 1 ? '' : 's'}, highest priority first` : 'No rules yet.';
      // The dry run starts with what the first active rule listens to.
      dryRun?.suggest(rules.find((r) => r.active && r.eventTypes?.length)?.eventTypes[0]);
      replace(table, rules.length ? h('table', { class: 'rules' },
        h('thead', {}, h('tr', {}, ['Priority', 'Name', 'Type', 'Listens to', 'Last execution', 'Active'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rules.map((rule) => h('tr', { dataset: { ruleId: rule.ruleId } },
          h('td', { class: 'num' }, rule.priority || 0),
          h('td', {}, h('a', { href: `#/rules/${encodeURIComponent(rule.ruleId)}` }, rule.name), h('div', { class: 'muted small' }, ctx.can(`${RULES}/ListRuleVersions`)
            ? h('a', { href: `#/rules/${encodeURIComponent(rule.ruleId)}/versions` }, `v${rule.version}`, h('span', { class: 'visually-hidden' }, `, versions of ${rule.name}`)) : `v${rule.version}`)),
          h('td', {}, ruleType(rule.type)),
          h('td', { class: 'small' }, (rule.eventTypes || []).join(', ') || 'every event'),
          h('td', { class: 'last-execution' }, hasRun(rule)
            ? [statusBadge(executionStatus(rule.lastExecutionStatus)), ' ', h('span', { class: 'small' }, timeEl(rule.lastExecutionTime))]
            : h('span', { class: 'muted' }, 'never')),
          h('td', {}, activeSwitch(rule, ctx))))),
      ) : null);
    } catch (err) {
      replace(listStatus, errorBox(err));
    }
  }
  load();
  if (ctx.can(`${RULES}/ListExecutions`)) executionLog(logSection, ctx, {});
  else logSection.hidden = true;
}

// The execution log with per-action results; of one rule when ruleId is given.
export function executionLog(section, ctx, { ruleId = '' }) {
  const statusSelect = h('select', { name: 'status' }, h('option', { value: '' }, 'any'),
    ['SUCCESS', 'PARTIAL', 'FAILED', 'RUNNING'].map((st) => h('option', { value: `EXECUTION_STATUS_${st}` }, st.toLowerCase())));
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  replace(section,
    h('div', { class: 'title-row' }, h('h2', { id: 'log-heading' }, 'Execution log'),
      h('label', {}, 'Status ', statusSelect),
      h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    body);
  statusSelect.addEventListener('change', () => load());

  async function load() {
    try {
      const reply = await get('/v1/executions', { ruleId, status: statusSelect.value, pageSize: 50 });
      const executions = reply.executions || [];
      replace(body, executions.length ? tableWrap('Executions', h('table', { class: 'executions' },
        h('thead', {}, h('tr', {}, ['Started', 'Rule', 'Event', 'Status', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, executions.map((ex) => h('tr', {},
          h('td', {}, timeEl(ex.startTime, { seconds: true })),
          h('td', {}, h('a', { href: `#/rules/${encodeURIComponent(ex.ruleId)}` }, ex.ruleId.slice(0, 8)), ` v${ex.ruleVersion}`),
          h('td', {}, ex.eventType, h('div', { class: 'muted small mono' }, ex.eventId.slice(0, 8))),
          h('td', {}, statusBadge(executionStatus(ex.status))),
          h('td', {}, actionResults(ex.actions || []))))))) : h('p', { class: 'muted' }, 'No executions yet.'));
    } catch (err) {
      replace(body, errorBox(err));
    }
  }
  load();
  ctx.every(15000, load);
}

function actionResults(actions) {
  if (!actions.length) return h('span', { class: 'muted' }, 'none');
  const ok = actions.filter((a) => a.status === 'ACTION_STATUS_SUCCEEDED').length;
  return h('details', {},
    h('summary', {}, `${ok} of ${actions.length} succeeded`),
    h('ol', { class: 'actions' }, actions.map((a) => h('li', {},
      h('strong', {}, actionType(a.type)), ' ', statusBadge(enumName(a.status, 'ACTION_STATUS_')),
      a.attempts ? h('span', { class: 'muted small' }, ` ${a.attempts} attempt${a.attempts === 1 ? '' : 's'}`) : null,
      a.durationMs ? h('span', { class: 'muted small' }, ` · ${Number(a.durationMs).toFixed(1)} ms`) : null,
      a.error ? h('div', { class: 'error-text' }, a.error) : null,
      a.params ? h('pre', { class: 'params' }, JSON.stringify(a.params, null, 1)) : null))));
}

// Evaluate every active rule against a sample event (editable) without running anything.
export function dryRunPanel(ctx) {
  const typeSelect = h('select', { id: 'dry-run-type' });
  const origin = h('p', { class: 'hint', role: 'status' });
  const textarea = h('textarea', { id: 'dry-run-event', rows: 10, spellcheck: false, class: 'code' });
  const result = h('div', { class: 'trace', 'aria-live': 'polite' });
  let touched = false;
  let loaded = 0;
  const show = (type, { event, origin: from }) => {
    textarea.value = JSON.stringify(event, null, 2);
    origin.textContent = `Sample ${type} event: ${from}.`;
  };
  async function load(type) {
    const ticket = ++loaded;
    if (!touched) show(type, madeUpEvent(type));
    const recent = await recentEvent(type, ctx.can);
    if (recent && ticket === loaded && !touched) show(type, recent);
  }
  loadVocabulary().then((vocab) => {
    replace(typeSelect, vocab.eventTypes.map((t) => h('option', { value: t, selected: t === typeSelect.dataset.wanted }, t)));
    load(typeSelect.value);
  }).catch((err) => origin.replaceWith(errorBox(err)));
  typeSelect.addEventListener('change', () => { touched = false; load(typeSelect.value); });
  textarea.addEventListener('input', () => { touched = true; });
  const form = h('form', {},
    h('div', { class: 'row' }, h('label', { for: 'dry-run-type' }, 'Sample of '), typeSelect), origin,
    h('label', { for: 'dry-run-event' }, 'Event (JSON: type, source, data)'),
    textarea,
    h('button', { type: 'submit' }, 'Evaluate (dry run)'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let event;
    try {
      event = JSON.parse(textarea.value);
    } catch (err) {
      replace(result, h('div', { class: 'error', role: 'alert' }, `The event is not valid JSON: ${err.message}`));
      return;
    }
    event = { eventId: uuid(), source: 'console', occurredTime: new Date().toISOString(), ...event };
    replace(result, h('p', { class: 'muted' }, 'Evaluating…'));
    try {
      const reply = await post('/v1/events:evaluate', { event, dryRun: true });
      replace(result, traces(reply));
    } catch (err) {
      replace(result, errorBox(err));
    }
  });
  const element = h('section', { class: 'card', 'aria-labelledby': 'dry-run-heading' },
    h('h2', { id: 'dry-run-heading' }, 'Dry run'),
    h('p', { class: 'muted' }, 'Shows which rules would match the event and why, and what their actions would do; nothing runs.'),
    form, result);
  return Object.assign(element, {
    suggest(type) {
      if (!type || touched || typeSelect.dataset.wanted) return;
      typeSelect.dataset.wanted = type;
      if (typeSelect.options.length) {
        typeSelect.value = type;
        load(type);
      }
    },
  });
}

// One rule's trace: matched or not, each condition with its actual value, the actions rendered.
export function ruleTrace(rt) {
  return h('article', { class: `rule-trace ${rt.matched ? 'matched' : 'unmatched'}`, dataset: { ruleId: rt.ruleId } },
    h('h3', {}, h('span', { 'aria-hidden': 'true' }, rt.matched ? '✓ ' : '✗ '), rt.ruleName,
      h('span', { class: 'visually-hidden' }, rt.matched ? ' would match' : ' would not match'),
      h('span', { class: 'muted small' }, ` v${rt.ruleVersion} · priority ${rt.priority || 0}`)),
    rt.skippedReason ? h('p', { class: 'muted' }, `Skipped: ${rt.skippedReason}`) : null,
    rt.conditions ? h('ul', { class: 'condition-tree' }, conditionTrace(rt.conditions)) : null,
    rt.actions?.length ? [h('h4', {}, 'Actions it would run'), h('ol', { class: 'rendered-actions' }, rt.actions.map((a) => h('li', {},
      h('strong', {}, actionType(a.type)),
      h('dl', { class: 'facts compact params' }, Object.entries(a.params || {}).map(([k, v]) => [
        h('dt', {}, k), h('dd', { dataset: { param: k } }, typeof v === 'string' ? v : JSON.stringify(v))])),
      a.error ? h('div', { class: 'error-text' }, a.error) : null)))] : null);
}

function traces(reply) {
  const rules = reply.rules || [];
  return [
    h('p', {}, `${rules.filter((r) => r.matched).length} of ${rules.length} rules would match.`),
    rules.map(ruleTrace),
    reply.fetchedFacts && Object.keys(reply.fetchedFacts).length
      ? [h('h3', {}, 'Facts fetched from services'), h('pre', { class: 'params' }, JSON.stringify(reply.fetchedFacts, null, 1))] : null,
  ];
}

const show = (v) => (v === undefined ? '—' : JSON.stringify(v));

function conditionTrace(node) {
  const leaf = !!node.fact;
  return h('li', { class: node.passed ? 'passed' : 'failed', dataset: { passed: String(!!node.passed) } },
    h('span', { class: 'verdict', 'aria-label': node.passed ? 'passed' : 'failed' }, node.passed ? '✓' : '✗'), ' ',
    leaf
      ? [h('code', {}, node.fact), ` ${node.operator} `, h('code', {}, show(node.expected)), ' — actual ',
        node.factPresent ? h('code', { class: 'actual' }, show(node.actual)) : h('em', {}, 'missing')]
      : h('strong', {}, node.operator),
    node.error ? h('span', { class: 'error-text' }, ` (${node.error})`) : null,
    node.children?.length ? h('ul', {}, node.children.map(conditionTrace)) : null);
}
