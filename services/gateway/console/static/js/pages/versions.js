// A rule's version history: every saved version, a readable diff between any two of them
// (the service's change list plus the two versions line by line, unified or side by side,
// conditions and actions marked apart), and rollback: a new version equal to an old one.

import { get, listAll, post } from '../api.js';
import { h, replace, uuid } from '../dom.js';
import { timeEl } from '../format.js';
import { diffLines, sideBySide } from '../linediff.js';
import { ruleLines, sectionOf } from '../ruletext.js';
import { stacked } from '../stacked.js';
import { errorBox, tableWrap } from '../widgets.js';

const RULES = 'loom.rules.v1.RulesService';
const SECTION_LABELS = { conditions: 'Conditions', actions: 'Actions', settings: 'Settings' };
const KIND_LABELS = { CHANGE_KIND_ADDED: 'added', CHANGE_KIND_REMOVED: 'removed', CHANGE_KIND_CHANGED: 'changed' };
const KIND_TONES = { added: 'info', removed: 'warn', changed: 'bad' };
const MARKS = { same: ' ', added: '+', removed: '−', changed: '~' };
const shown = (v) => (v === undefined ? '—' : JSON.stringify(v));

export function renderVersions(main, ctx) {
  const ruleId = ctx.params.id;
  const path = `/v1/rules/${encodeURIComponent(ruleId)}`;
  const back = h('p', {}, h('a', { href: `#/rules/${encodeURIComponent(ruleId)}` }, '← The rule'));
  const heading = h('h1', {}, 'Version history');
  const notice = h('p', { class: 'notice', role: 'status', tabindex: -1 });
  const historyCard = h('section', { class: 'card', 'aria-labelledby': 'history-heading' },
    h('h2', { id: 'history-heading' }, 'Versions'), h('p', { class: 'muted' }, 'Loading…'));
  const compare = h('section', { class: 'card compare', 'aria-labelledby': 'compare-heading' });
  const dialog = rollbackDialog();
  replace(main, back, heading, notice, historyCard, compare, dialog.element);
  const canRollBack = ctx.can(`${RULES}/RollbackRule`);
  const canReplay = ctx.can(`${RULES}/ReplayRule`);
  let versions = [];
  let highlight = 0;

  async function load(selection) {
    try {
      versions = (await listAll(`${path}/versions`, { pageSize: 100 }, 'versions')).sort((a, b) => b.version - a.version);
    } catch (err) {
      replace(historyCard, h('h2', { id: 'history-heading' }, 'Versions'), errorBox(err));
      return;
    }
    const current = versions[0];
    heading.textContent = `Version history: ${current.name}`;
    back.firstChild.textContent = `← Rule: ${current.name}`;
    replace(historyCard, h('h2', { id: 'history-heading' }, 'Versions'),
      h('p', { class: 'muted' }, `${versions.length} version${versions.length === 1 ? '' : 's'}, newest first. Rolling back saves a new version; nothing is deleted.`),
      tableWrap('Versions of the rule', stacked(h('table', { class: 'versions' },
        h('thead', {}, h('tr', {}, ['Version', 'Saved', 'By', 'What it holds', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, versions.map((v) => versionRow(v, v === current)))))));
    const from = Number(selection?.from) || (versions[1] || current).version;
    const to = Number(selection?.to) || current.version;
    comparison(from, to);
  }

  function versionRow(v, isCurrent) {
    const number = v.version;
    return h('tr', { class: number === highlight ? 'new' : null, dataset: { version: number } },
      h('td', { class: 'num' }, h('strong', {}, `v${number}`), isCurrent ? [' ', h('span', { class: 'badge ok' }, 'current')] : null),
      h('td', {}, timeEl(v.updateTime || v.createTime)),
      h('td', { class: 'small' }, v.updatedBy || v.createdBy || '—'),
      h('td', { class: 'small' }, summary(v)),
      h('td', {}, h('div', { class: 'version-actions' },
        isCurrent ? null : h('button', { type: 'button', class: 'secondary small', 'aria-label': `Compare version ${number} with the current version`,
          onclick: () => { comparison(number, versions[0].version); compare.scrollIntoView({ block: 'start' }); } }, 'Compare with current'),
        isCurrent || !canReplay ? null : h('a', { class: 'button secondary small', href: `#/rules/${encodeURIComponent(ruleId)}?replayVersion=${number}`,
          'aria-label': `Replay version ${number} over stored events` }, 'Replay'),
        isCurrent || !canRollBack ? null : h('button', { type: 'button', class: 'small', 'aria-label': `Roll back to version ${number}`,
          onclick: (e) => confirmRollback(v, e.currentTarget) }, 'Roll back'))));
  }

  function summary(v) {
    const conditions = v.conditions ? 'conditions' : 'no conditions';
    const actions = (v.actions || []).length;
    return `${v.active ? 'active' : 'inactive'} · priority ${v.priority || 0} · ${conditions} · ${actions} action${actions === 1 ? '' : 's'}`;
  }

  async function confirmRollback(version, opener) {
    const current = versions[0];
    const yes = await dialog.ask({
      title: `Roll back to version ${version.version}?`,
      text: `This saves version ${current.version + 1} of ${current.name} with the definition of version ${version.version} `
        + '(conditions, actions, priority, activity, guards). The versions in between stay in the history.',
      opener,
    });
    if (!yes) return;
    try {
      const reply = await post(`${path}:rollback`, { requestId: uuid(), version: version.version });
      highlight = reply.rule.version;
      notice.textContent = `Version ${reply.rule.version} saved: the definition of version ${version.version}.`;
      await load({ from: current.version, to: reply.rule.version });
      notice.focus();
    } catch (err) {
      replace(notice, errorBox(err));
    }
  }

  // The comparison card: pickers, the service's change list, the line view.
  function comparison(from, to) {
    const options = (selected) => versions.map((v) => h('option', { value: v.version, selected: v.version === selected }, `version ${v.version}`));
    const fromSelect = h('select', { id: 'compare-from' }, options(from));
    const toSelect = h('select', { id: 'compare-to' }, options(to));
    const view = h('fieldset', { class: 'choices view-mode' }, h('legend', { class: 'visually-hidden' }, 'Show the lines'),
      ['unified', 'side by side'].map((mode, i) => h('label', { class: 'check' },
        h('input', { type: 'radio', name: 'diff-view', value: mode, checked: i === 0 }), ` ${mode}`)));
    const changes = h('div', { class: 'changes', 'aria-live': 'polite' });
    const lines = h('div', { class: 'line-view' });
    replace(compare,
      h('h2', { id: 'compare-heading' }, 'Compare versions'),
      h('div', { class: 'row' },
        h('label', { for: 'compare-from' }, 'From'), fromSelect,
        h('label', { for: 'compare-to' }, 'to'), toSelect, view),
      changes, lines);

    let ticket = 0;
    async function show() {
      const a = Number(fromSelect.value);
      const b = Number(toSelect.value);
      remember(a, b);
      const mine = ++ticket;
      replace(changes, h('p', { class: 'muted' }, 'Comparing…'));
      try {
        const reply = await get(`${path}/versions:diff`, { fromVersion: a, toVersion: b });
        if (mine !== ticket) return;
        replace(changes, changeList(reply));
      } catch (err) {
        replace(changes, errorBox(err));
      }
      drawLines();
    }
    function drawLines() {
      const left = versions.find((v) => v.version === Number(fromSelect.value));
      const right = versions.find((v) => v.version === Number(toSelect.value));
      const mode = compare.querySelector('input[name="diff-view"]:checked').value;
      replace(lines, left && right ? lineView(left, right, mode) : null);
    }
    fromSelect.addEventListener('change', show);
    toSelect.addEventListener('change', show);
    view.addEventListener('change', drawLines);
    show();
  }

  // Keeps the compared pair in the address, so a reload or a shared link shows it again.
  function remember(from, to) {
    history.replaceState(null, '', `#/rules/${encodeURIComponent(ruleId)}/versions?from=${from}&to=${to}`);
  }

  load({ from: ctx.query.get('from'), to: ctx.query.get('to') });
}

// What the service says changed, grouped into conditions, actions and settings.
function changeList(reply) {
  const changes = reply.changes || [];
  const title = `Version ${reply.fromVersion} → version ${reply.toVersion}`;
  if (!changes.length) {
    return h('p', { class: 'identical' }, `${title}: the two versions define the same rule.`);
  }
  const groups = Object.keys(SECTION_LABELS).map((section) => [section, changes.filter((c) => sectionOf(c.path) === section)])
    .filter(([, list]) => list.length);
  return h('div', {},
    h('p', {}, `${title}: ${changes.length} change${changes.length === 1 ? '' : 's'}, in ${groups.map(([s]) => SECTION_LABELS[s].toLowerCase()).join(' and ')}.`),
    groups.map(([section, list]) => h('div', { class: `change-group ${section}`, dataset: { section } },
      h('h3', {}, SECTION_LABELS[section]),
      h('ul', { class: 'change-list' }, list.map((c) => {
        const kind = KIND_LABELS[c.kind] || 'changed';
        return h('li', { dataset: { path: c.path, kind } },
          h('span', { class: `badge ${KIND_TONES[kind]}` }, kind), ' ', h('code', {}, c.path), ': ',
          kind !== 'added' ? h('del', { class: 'before' }, h('span', { class: 'visually-hidden' }, 'was '), shown(c.before)) : null,
          kind === 'changed' ? ' → ' : null,
          kind !== 'removed' ? h('ins', { class: 'after' }, h('span', { class: 'visually-hidden' }, 'now '), shown(c.after)) : null);
      })))));
}

// The two versions as readable lines: unified (one column, − and + lines) or side by side.
function lineView(left, right, mode) {
  const key = (line) => `${line.section}\u0000${line.text}`;
  const lines = diffLines(ruleLines(left), ruleLines(right), key);
  const label = (kind) => ({ same: 'unchanged', added: 'added', removed: 'removed', changed: 'changed' }[kind]);
  const mark = (kind) => h('td', { class: 'mark' }, h('span', { 'aria-hidden': 'true' }, MARKS[kind]), h('span', { class: 'visually-hidden' }, label(kind)));
  const text = (line) => h('td', { class: `text ${line ? line.section : 'empty'}` }, line ? line.text : '');
  if (mode === 'side by side') {
    return tableWrap(`Version ${left.version} and version ${right.version} side by side`, h('table', { class: 'line-diff side-by-side' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Change')),
        h('th', { scope: 'col' }, `Version ${left.version}`), h('th', { scope: 'col' }, `Version ${right.version}`))),
      h('tbody', {}, sideBySide(lines).map((row) => h('tr', { class: row.kind, dataset: { section: (row.right || row.left).section } },
        mark(row.kind), text(row.left), text(row.right))))));
  }
  return tableWrap(`Version ${left.version} to version ${right.version}, unified`, h('table', { class: 'line-diff unified' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Change')),
      h('th', { scope: 'col' }, `Version ${left.version} → ${right.version}`))),
    h('tbody', {}, lines.map((row) => h('tr', { class: row.kind, dataset: { section: (row.right || row.left).section } },
      mark(row.kind), text(row.right || row.left))))));
}

// A modal confirmation; ask() resolves true when confirmed. Focus returns to the opener.
function rollbackDialog() {
  const title = h('h2', { id: 'rollback-title' });
  const text = h('p', { id: 'rollback-text' });
  const confirm = h('button', { type: 'submit', value: 'yes' }, 'Roll back');
  const element = h('dialog', { class: 'confirm', 'aria-labelledby': 'rollback-title', 'aria-describedby': 'rollback-text' },
    h('form', { method: 'dialog' }, title, text,
      h('div', { class: 'row' }, confirm, h('button', { type: 'submit', value: 'no', class: 'secondary' }, 'Cancel'))));
  return {
    element,
    ask({ title: t, text: body, opener }) {
      title.textContent = t;
      text.textContent = body;
      element.returnValue = '';
      element.showModal();
      confirm.focus();
      return new Promise((resolve) => {
        element.addEventListener('close', () => {
          opener?.focus?.();
          resolve(element.returnValue === 'yes');
        }, { once: true });
      });
    },
  };
}
