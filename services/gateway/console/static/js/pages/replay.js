// Replay (backtest): a rule's saved version, or the draft in the editor, over the stored
// events of the last N days, nothing run. Streams ReplayRule, shows its progress, then the
// summary ("this draft would have fired 42 times…, 3 more than the live rule") and a paged
// table of the events either side fired on, each compared with what the live rule executed.

import { ApiError, streamOnce } from '../api.js';
import { h, replace } from '../dom.js';
import { count, enumName, seconds, timeEl } from '../format.js';
import { stacked } from '../stacked.js';
import { errorBox, tableWrap } from '../widgets.js';

const PAGE_SIZE = 20;
const DIFFS = {
  REPLAY_DIFF_SAME: { label: 'same as live', tone: 'ok' },
  REPLAY_DIFF_ADDED: { label: 'added', tone: 'info' },
  REPLAY_DIFF_REMOVED: { label: 'removed', tone: 'warn' },
  REPLAY_DIFF_CHANGED: { label: 'changed', tone: 'bad' },
};
const actionType = (t) => enumName(t, 'ACTION_TYPE_');
const times = (n) => `${count(n)} time${Number(n) === 1 ? '' : 's'}`;
const shown = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

// The sentence a replay comes down to; `what` is "This draft" or "Version 3".
export function summarySentence(what, days, summary, comparing) {
  const would = Number(summary.wouldFire || 0);
  const live = Number(summary.liveFired || 0);
  const period = `in the last ${days === 7 ? 'week' : `${days} day${days === 1 ? '' : 's'}`}`;
  const head = `${what} would have fired ${times(would)} ${period}`;
  if (!comparing) return `${head}.`;
  const delta = would - live;
  const versus = delta === 0 ? 'as many as the live rule' : `${count(Math.abs(delta))} ${delta > 0 ? 'more' : 'fewer'} than the live rule`;
  return `${head}, ${versus} (${count(live)}).`;
}

// options: {ruleId, version: the saved version, draft: () => the editor's rule or null (with a reason shown),
// onDraftViolations: shows the service's objections to the draft ([{field, description}], fields under "draft."),
// earlier: an earlier version to start with (from the versions page)}
export function replayPanel(ctx, { ruleId = '', version = 0, draft = null, onDraftViolations = () => {}, earlier = 0 }) {
  const days = h('input', { id: 'replay-days', type: 'number', min: 1, max: 365, step: 1, value: 7, 'aria-describedby': 'replay-days-hint' });
  const facts = h('select', { id: 'replay-facts' },
    h('option', { value: 'REPLAY_FACTS_AS_RECORDED' }, 'as each event recorded them'),
    h('option', { value: 'REPLAY_FACTS_CURRENT' }, 'recorded, plus missing facts fetched now'));
  const onlyDiff = h('input', { type: 'checkbox', name: 'onlyDifferences' });
  const older = ruleId && version > 1;
  const earlierInput = older ? h('input', { type: 'number', id: 'replay-version', min: 1, max: version - 1, step: 1,
    value: earlier && earlier < version ? earlier : version - 1, 'aria-label': 'Earlier version number', class: 'version-number' }) : null;
  const subjects = [
    ruleId ? { value: 'saved', label: `the saved version (${version})` } : null,
    older ? { value: 'version', label: 'an earlier version:' } : null,
    draft ? { value: 'draft', label: 'the form as it stands (a draft)' } : null,
  ].filter(Boolean);
  const start = older && earlier && earlier < version ? 'version' : subjects[0]?.value;
  const which = h('fieldset', { class: 'choices replay-subject' }, h('legend', {}, 'Replay'),
    subjects.map((s) => h('span', { class: 'check' },
      h('label', { class: 'check' }, h('input', { type: 'radio', name: 'replay-subject', value: s.value, checked: s.value === start }), ` ${s.label}`),
      s.value === 'version' ? earlierInput : null)));
  earlierInput?.addEventListener('focus', () => { which.querySelector('input[value="version"]').checked = true; });
  const run = h('button', { type: 'submit' }, 'Replay');
  const cancel = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Stop');
  const progress = h('progress', { 'aria-label': 'Replay progress', hidden: true });
  const status = h('p', { class: 'muted', role: 'status' });
  const result = h('div', { class: 'replay-result' });
  let controller = null;

  const form = h('form', { class: 'replay-form' },
    subjects.length > 1 ? which : null,
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'replay-days' }, 'Period: the last N days'), days,
        h('div', { class: 'hint', id: 'replay-days-hint' }, 'Stored events whose time falls in the period.')),
      h('div', { class: 'field' }, h('label', { for: 'replay-facts' }, 'Facts'), facts)),
    h('label', { class: 'check' }, onlyDiff, ' Only events where the outcome differs from the live rule'),
    h('div', { class: 'row controls' }, run, cancel, progress),
    status);

  cancel.addEventListener('click', () => controller?.abort());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const n = Math.round(Number(days.value));
    if (!(n >= 1 && n <= 365)) {
      days.setAttribute('aria-invalid', 'true');
      status.textContent = 'Choose a period from 1 to 365 days.';
      return days.focus();
    }
    days.removeAttribute('aria-invalid');
    const subject = form.querySelector('input[name="replay-subject"]:checked')?.value || subjects[0]?.value;
    const body = { facts: facts.value, onlyDifferences: onlyDiff.checked };
    if (ruleId) body.ruleId = ruleId;
    if (subject === 'draft') {
      const rule = draft();
      if (!rule) {
        status.textContent = 'The form has problems (shown above); fix them to replay it.';
        return;
      }
      body.draft = rule;
    }
    let what = subject === 'draft' ? 'This draft' : `Version ${version}`;
    if (subject === 'version') {
      const k = Math.round(Number(earlierInput.value));
      if (!(k >= 1 && k < version)) {
        earlierInput.setAttribute('aria-invalid', 'true');
        status.textContent = `Choose a version from 1 to ${version - 1}.`;
        return earlierInput.focus();
      }
      earlierInput.removeAttribute('aria-invalid');
      body.version = k;
      what = `Version ${k}`;
    }
    const end = new Date();
    body.endTime = end.toISOString();
    body.startTime = new Date(end.getTime() - n * 86400000).toISOString();
    const failed = await replay(body, { what, days: n });
    if (subject === 'draft' && failed?.violations?.length) onDraftViolations(failed.violations);
  });

  // Runs one replay and shows it; returns the error when it failed.
  async function replay(body, { what, days: n }) {
    controller = new AbortController();
    const results = [];
    let summary = null;
    run.disabled = true;
    cancel.hidden = false;
    progress.hidden = false;
    replace(result);
    status.textContent = 'Replaying…';
    try {
      await streamOnce('POST', '/v1/rules:replay', body, {
        signal: controller.signal,
        onMessage: (message) => {
          results.push(...(message.results || []));
          if (message.summary) summary = message.summary;
          else status.textContent = `Replaying… ${count(results.length)} event${results.length === 1 ? '' : 's'} with a result so far.`;
        },
      });
      if (!summary) throw new ApiError(0, { message: 'the replay ended without its summary' });
      status.textContent = `Replayed ${count(summary.eventsScanned)} stored event${Number(summary.eventsScanned) === 1 ? '' : 's'} in ${seconds(summary.durationSeconds)}.`;
      replace(result, summaryView(summary, what, n, !!ruleId), resultsTable(results, !!ruleId));
    } catch (err) {
      if (err.name === 'AbortError') status.textContent = `Stopped after ${count(results.length)} event${results.length === 1 ? '' : 's'} with a result.`;
      else {
        status.textContent = 'The replay failed.';
        replace(result, errorBox(err));
        return err;
      }
    } finally {
      run.disabled = false;
      cancel.hidden = true;
      progress.hidden = true;
      controller = null;
    }
  }

  ctx.onCleanup(() => controller?.abort());
  if (start === 'version') setTimeout(() => which.scrollIntoView({ block: 'center' }));
  return h('section', { class: 'card replay', 'aria-labelledby': 'replay-heading' },
    h('h2', { id: 'replay-heading' }, 'Replay over stored events'),
    h('p', { class: 'muted' }, ruleId
      ? 'What this rule would have done with the events of a past period, compared with what the live rule did. Nothing runs, nothing is sent.'
      : 'What this draft would have done with the events of a past period. Nothing runs, nothing is sent.'),
    form, result);
}

function summaryView(summary, what, days, comparing) {
  const stat = (label, value, key) => h('div', { class: 'stat', dataset: { stat: key } },
    h('span', { class: 'stat-label' }, label), h('span', { class: 'stat-value' }, count(value)));
  return h('div', { class: 'replay-summary' },
    h('p', { class: 'replay-sentence' }, summarySentence(what, days, summary, comparing)),
    h('div', { class: 'stats' },
      stat('Events scanned', summary.eventsScanned, 'scanned'),
      stat('Would fire', summary.wouldFire, 'would'),
      comparing ? [
        stat('Live fired', summary.liveFired, 'live'),
        stat('Same', summary.same, 'same'),
        stat('Added', summary.added, 'added'),
        stat('Removed', summary.removed, 'removed'),
        stat('Changed', summary.changed, 'changed'),
      ] : null));
}

// The events either side fired on, a page at a time, filterable by how they compare.
function resultsTable(results, comparing) {
  const filter = h('select', { id: 'replay-filter' }, h('option', { value: '' }, 'every outcome'),
    Object.entries(DIFFS).map(([value, { label }]) => h('option', { value }, label)));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Replay result pages' });
  const body = h('div', {});
  let page = 0;

  function draw() {
    const rows = filter.value ? results.filter((r) => r.diff === filter.value) : results;
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    page = Math.min(page, pages - 1);
    const slice = rows.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
    replace(body, rows.length ? tableWrap('Replayed events', stacked(h('table', { class: 'replay-results' },
      h('thead', {}, h('tr', {}, ['Event', 'Would match', 'Actions it would run', comparing ? 'Against the live rule' : null]
        .filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, slice.map((r) => resultRow(r, comparing)))))) : h('p', { class: 'muted' }, 'No event to show.'));
    const first = rows.length ? page * PAGE_SIZE + 1 : 0;
    replace(pager,
      h('button', { type: 'button', class: 'secondary small', disabled: page === 0, onclick: () => { page -= 1; draw(); } }, 'Previous page'),
      h('span', { class: 'muted small', 'aria-live': 'polite' }, `${count(first)}–${count(first ? first + slice.length - 1 : 0)} of ${count(rows.length)}`),
      h('button', { type: 'button', class: 'secondary small', disabled: page >= pages - 1, onclick: () => { page += 1; draw(); } }, 'Next page'));
  }
  filter.addEventListener('change', () => { page = 0; draw(); });
  draw();
  return h('div', { class: 'replay-table' },
    h('div', { class: 'title-row' }, h('h3', {}, 'Events'),
      comparing ? h('label', {}, 'Show ', filter) : null),
    body, pager);
}

function resultRow(r, comparing) {
  const diff = DIFFS[r.diff];
  const live = r.diff === 'REPLAY_DIFF_SAME' ? r.actions : r.liveActions || [];
  return h('tr', { dataset: { eventId: r.eventId, diff: diff?.label || '' } },
    h('td', {}, h('div', {}, r.eventType), h('div', { class: 'muted small mono' }, r.eventId.slice(0, 8)),
      h('div', { class: 'small' }, timeEl(r.occurredTime))),
    h('td', { class: 'would' }, r.wouldMatch ? 'yes' : 'no'),
    h('td', {}, actionList(r.actions || [], r.diff === 'REPLAY_DIFF_CHANGED' ? live : null)),
    comparing ? h('td', {}, diff ? h('span', { class: `badge ${diff.tone}`, dataset: { status: diff.label } }, diff.label) : null,
      r.diff === 'REPLAY_DIFF_ADDED' ? h('div', { class: 'muted small' }, 'The live rule did not fire.') : null,
      r.diff === 'REPLAY_DIFF_SAME' ? h('div', { class: 'muted small' }, 'The live rule ran the same actions.') : null,
      ['REPLAY_DIFF_REMOVED', 'REPLAY_DIFF_CHANGED'].includes(r.diff)
        ? [h('div', { class: 'small' }, 'The live rule ran:'), actionList(live, r.diff === 'REPLAY_DIFF_CHANGED' ? r.actions : null)] : null) : null);
}

// Actions with their rendered parameters; a parameter that differs from `other`'s is marked.
function actionList(actions, other) {
  if (!actions.length) return h('span', { class: 'muted' }, 'none');
  return h('ol', { class: 'rendered-actions' }, actions.map((a, i) => h('li', {},
    h('strong', {}, actionType(a.type)),
    other && other[i]?.type !== a.type ? h('span', { class: 'differs' }, ' (differs)') : null,
    h('dl', { class: 'facts compact params' }, Object.entries(a.params || {}).map(([k, v]) => {
      const differs = other && shown(other[i]?.params?.[k]) !== shown(v);
      return [h('dt', {}, k), h('dd', { class: differs ? 'differs' : null, dataset: { param: k } }, shown(v),
        differs ? h('span', { class: 'visually-hidden' }, ' (differs)') : null)];
    })))));
}
