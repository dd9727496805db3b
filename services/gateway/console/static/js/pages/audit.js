// Audit: the audit trails of the four services (every state-changing call, accepted or
// refused) merged into one list, newest first, with filters. Each service pages its own
// trail; a record is shown only once every service that may still hold a newer one has
// been read back that far, so "Show older" never slips a record in above those shown.

import { get } from '../api.js';
import { h, replace } from '../dom.js';
import { timeEl } from '../format.js';
import { errorBox, tableWrap } from '../widgets.js';

export const AUDIT_SOURCES = ['batch', 'rules', 'tracking', 'scheduler'];
const PAGE_SIZE = 50;
const CODES = ['OK', 'INVALID_ARGUMENT', 'UNAUTHENTICATED', 'PERMISSION_DENIED', 'NOT_FOUND', 'FAILED_PRECONDITION',
  'ALREADY_EXISTS', 'RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL'];

const at = (event) => Date.parse(event.eventTime);

// The records every source has been read past, newest first: sources with more pages hold
// back what is older than the oldest record they have given so far.
export function mergeReady(sources) {
  const all = sources.flatMap((s) => s.events).sort((a, b) => at(b) - at(a) || (a.auditEventId < b.auditEventId ? 1 : -1));
  const open = sources.filter((s) => s.nextPageToken);
  if (!open.length) return all;
  const cutoff = Math.max(...open.map((s) => (s.events.length ? at(s.events[s.events.length - 1]) : Infinity)));
  return all.filter((e) => at(e) >= cutoff);
}

// datetime-local (the browser's zone) <-> RFC 3339.
const toInstant = (local) => (local ? new Date(local).toISOString() : '');
function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function codeBadge(code) {
  const tone = code === 'OK' ? 'ok' : ['UNAUTHENTICATED', 'PERMISSION_DENIED'].includes(code) ? 'bad' : 'warn';
  return h('span', { class: `badge ${tone}`, dataset: { code } }, code);
}

function row(event) {
  return h('tr', { dataset: { service: event.service, code: event.code } },
    h('td', {}, timeEl(event.eventTime, { seconds: true })),
    h('td', {}, event.service),
    h('td', {}, h('code', {}, event.method)),
    h('td', { class: 'mono small' }, event.resourceId || h('span', { class: 'muted' }, '—')),
    h('td', {}, event.subject || h('span', { class: 'muted' }, 'anonymous')),
    h('td', {}, event.role),
    h('td', {}, codeBadge(event.code)),
    h('td', { class: 'mono small' }, event.requestId),
    h('td', { class: 'mono small' }, event.clientIpHash || '—'));
}

export function renderAudit(main, ctx) {
  const filters = {
    subject: ctx.query.get('subject') || '',
    method: ctx.query.get('method') || '',
    code: ctx.query.get('code') || '',
    startTime: ctx.query.get('startTime') || '',
    endTime: ctx.query.get('endTime') || '',
  };
  const form = h('form', { class: 'filters', 'aria-label': 'Audit filters' },
    h('label', {}, 'Subject ', h('input', { name: 'subject', value: filters.subject, size: 14 })),
    h('label', {}, 'Method ', h('input', { name: 'method', value: filters.method, placeholder: 'e.g. PlaceOrder', size: 14 })),
    h('label', {}, 'Status ', h('select', { name: 'code' },
      h('option', { value: '' }, 'any'), CODES.map((c) => h('option', { value: c, selected: c === filters.code }, c)))),
    h('label', {}, 'From ', h('input', { type: 'datetime-local', name: 'startTime', value: toLocal(filters.startTime) })),
    h('label', {}, 'To ', h('input', { type: 'datetime-local', name: 'endTime', value: toLocal(filters.endTime) })),
    h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const name of ['subject', 'method', 'code']) if (data.get(name)) q.set(name, data.get(name).trim());
    for (const name of ['startTime', 'endTime']) if (data.get(name)) q.set(name, toInstant(data.get(name)));
    ctx.navigate(`#/audit${q.toString() ? `?${q}` : ''}`);
  });

  const status = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  const body = h('tbody');
  const older = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show older');
  const table = h('table', { class: 'audit' },
    h('caption', { class: 'visually-hidden' }, 'Audit records of every service, newest first'),
    h('thead', {}, h('tr', {}, ['Time', 'Service', 'Method', 'Resource', 'Subject', 'Role', 'Status', 'Request id', 'Client']
      .map((t) => h('th', { scope: 'col' }, t)))),
    body);
  replace(main, h('h1', {}, 'Audit'), form,
    h('section', { class: 'card', 'aria-label': 'Audit records' }, status, tableWrap('Audit records', table), older));

  const sources = AUDIT_SOURCES.map((service) => ({ service, events: [], nextPageToken: '', started: false }));
  const query = Object.fromEntries(Object.entries(filters).filter(([, v]) => v));

  async function more() {
    older.disabled = true;
    const due = sources.filter((s) => !s.started || s.nextPageToken);
    const replies = await Promise.allSettled(due.map((s) => get(`/v1/${s.service}/auditEvents`,
      { ...query, pageSize: PAGE_SIZE, pageToken: s.nextPageToken })));
    const failed = [];
    replies.forEach((reply, i) => {
      const source = due[i];
      source.started = true;
      if (reply.status === 'fulfilled') {
        source.events.push(...(reply.value.auditEvents || []));
        source.nextPageToken = reply.value.nextPageToken || '';
      } else {
        source.nextPageToken = '';
        failed.push([source.service, reply.reason]);
      }
    });
    const shown = mergeReady(sources);
    replace(body, shown.map(row));
    replace(status, shown.length ? `${shown.length} records` : 'No records match.',
      failed.map(([service, err]) => h('div', {}, `${service}: `, errorBox(err))));
    older.hidden = !sources.some((s) => s.nextPageToken);
    older.disabled = false;
  }
  older.addEventListener('click', more);
  more();
}
