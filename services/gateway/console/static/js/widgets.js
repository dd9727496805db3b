// Small pieces shared by the pages.

import { h } from './dom.js';

const TONES = {
  filling: 'info', confirmed: 'ok', 'in production': 'ok', completed: 'ok', cancelled: 'muted', refunded: 'muted',
  succeeded: 'ok', success: 'ok', running: 'info', failed: 'bad', 'dead lettered': 'bad', interrupted: 'warn',
  skipped: 'muted', partial: 'warn', pending: 'info', placed: 'info', 'awaiting supplier': 'warn',
};

export function statusBadge(text) {
  return h('span', { class: `badge ${TONES[text] || ''}`, dataset: { status: text } }, text);
}

export function liveBadge() {
  return h('span', { class: 'badge live', dataset: { state: 'connecting' }, 'aria-live': 'off' }, 'connecting');
}

// An error from the API as the user should see it: what happened, and where.
export function errorBox(err) {
  const lines = [h('strong', {}, err.message || String(err))];
  if (err.status) lines.push(h('span', { class: 'muted' }, ` (HTTP ${err.status}${err.code !== undefined ? `, code ${err.code}` : ''})`));
  if (err.retryAfter) lines.push(h('div', {}, `Try again in ${err.retryAfter} s.`));
  if (err.violations?.length) {
    lines.push(h('ul', {}, err.violations.map((v) => h('li', {}, h('code', {}, v.field), ': ', v.description))));
  }
  return h('div', { class: 'error', role: 'alert' }, lines);
}

export function denied(what, role) {
  return h('div', { class: 'card' }, h('h1', {}, what), h('p', {}, `The ${role} role cannot see this page. Sign in with another token.`));
}

// A table that may scroll sideways on a narrow screen: a labelled region keyboard users can
// focus and scroll.
export function tableWrap(label, ...table) {
  return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': label }, table);
}
