// Batches: filling batches with fill bars and countdowns, live through WatchBatch.

import { get, listAll, post, stream } from '../api.js';
import { h, replace, toast, uuid } from '../dom.js';
import { countdown, fillBar, tickCountdowns, updateFillBar } from '../fillbar.js';
import { count, enumName, timeEl } from '../format.js';
import { errorBox, liveBadge, statusBadge, tableWrap } from '../widgets.js';

const BATCH = 'loom.batch.v1.BatchService';
const STATUSES = ['FILLING', 'CONFIRMED', 'IN_PRODUCTION', 'COMPLETED', 'CANCELLED'];
// Browsers allow six connections per host over HTTP/1.1: leave room for API calls.
const MAX_LIVE_STREAMS = 4;
const RELIST_MS = 30000;

export const batchStatus = (status) => enumName(status, 'BATCH_STATUS_');

function batchCard(batch) {
  const card = h('article', { class: 'card batch', dataset: { batchId: batch.batchId }, 'aria-label': `Batch ${batch.category} ${batch.batchId}` },
    h('header', {},
      h('h3', {}, h('a', { href: `#/batches/${encodeURIComponent(batch.batchId)}` }, batch.category || 'batch'), ' ',
        h('span', { class: 'muted mono' }, batch.batchId.slice(0, 8))),
      h('div', { class: 'badges' })),
    fillBar(batch),
    h('p', { class: 'meta' }));
  updateCard(card, batch);
  return card;
}

function updateCard(card, batch) {
  card.batch = batch;
  updateFillBar(card.querySelector('.fillbar-wrap'), batch);
  const badges = card.querySelector('.badges');
  const live = badges.querySelector('.live');
  replace(badges, statusBadge(batchStatus(batch.status)), batch.needsReview ? h('span', { class: 'badge warn' }, 'needs review') : null, live);
  replace(card.querySelector('.meta'),
    batch.status === 'BATCH_STATUS_FILLING' ? [countdown(batch.windowCloseTime), ' · '] : null,
    'window closes ', timeEl(batch.windowCloseTime), ' · ', `${count(batch.orderCount)} orders`,
    batch.unitPrice ? ` · ${batch.unitPrice} per unit` : '');
  tickCountdowns(card);
}

export function renderBatches(main, ctx) {
  const filters = {
    status: ctx.query.get('status') ?? 'FILLING',
    category: ctx.query.get('category') || '',
    review: ctx.query.get('review') === '1',
  };
  const form = h('form', { class: 'filters', 'aria-label': 'Batch filters' },
    h('label', {}, 'Status ',
      h('select', { name: 'status' },
        h('option', { value: '' }, 'any'),
        STATUSES.map((st) => h('option', { value: st, selected: st === filters.status }, enumName(st, ''))))),
    h('label', {}, 'Category ', h('input', { name: 'category', value: filters.category, placeholder: 'e.g. t_shirts', size: 12 })),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'review', checked: filters.review }), ' needs review only'),
    h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('change', (e) => e.target.name !== 'category' && form.requestSubmit());
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    q.set('status', data.get('status'));
    if (data.get('category')) q.set('category', data.get('category').trim());
    if (data.get('review')) q.set('review', '1');
    ctx.navigate(`#/batches?${q}`);
  });

  const status = h('p', { class: 'muted', role: 'status' }, 'Loading…');
  const grid = h('div', { class: 'grid batches' });
  replace(main, h('h1', {}, 'Batches'), form, status, grid);

  const watches = new Map();
  ctx.onCleanup(() => watches.forEach((w) => w.close()));

  function watch(batch) {
    const card = grid.querySelector(`[data-batch-id="${CSS.escape(batch.batchId)}"]`);
    const badge = liveBadge();
    card.querySelector('.badges').append(badge);
    watches.set(batch.batchId, stream(`/v1/batches/${encodeURIComponent(batch.batchId)}:watch`, {}, {
      onMessage: (msg) => msg.batch && updateCard(card, msg.batch),
      onStatus: (st) => { badge.dataset.state = st; badge.textContent = st === 'live' ? 'live' : st; },
      onError: (err) => { badge.dataset.state = 'closed'; badge.title = err.message; },
    }));
  }

  async function load() {
    try {
      const batches = await listAll('/v1/batches', {
        status: filters.status ? `BATCH_STATUS_${filters.status}` : '',
        category: filters.category,
        needsReview: filters.review,
        pageSize: 100,
      }, 'batches', { maxPages: 5 });
      const byId = new Map(batches.map((b) => [b.batchId, b]));
      for (const card of [...grid.children]) {
        if (!byId.has(card.dataset.batchId)) {
          card.remove();
          watches.get(card.dataset.batchId)?.close();
          watches.delete(card.dataset.batchId);
        }
      }
      for (const batch of batches) {
        const existing = grid.querySelector(`[data-batch-id="${CSS.escape(batch.batchId)}"]`);
        if (existing) updateCard(existing, batch);
        else grid.append(batchCard(batch));
      }
      status.textContent = batches.length
        ? `${batches.length} batch${batches.length === 1 ? '' : 'es'}${batches.length > MAX_LIVE_STREAMS ? ` · live updates for the ${MAX_LIVE_STREAMS} closing soonest` : ''}`
        : 'No batches match these filters.';
      const soonest = batches
        .filter((b) => b.status === 'BATCH_STATUS_FILLING')
        .sort((a, b) => new Date(a.windowCloseTime) - new Date(b.windowCloseTime))
        .slice(0, MAX_LIVE_STREAMS);
      for (const batch of soonest) if (!watches.has(batch.batchId)) watch(batch);
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  load();
  ctx.every(RELIST_MS, load);
  ctx.every(1000, () => tickCountdowns(grid));
}

export function renderBatch(main, ctx) {
  const batchId = ctx.params.id;
  const path = `/v1/batches/${encodeURIComponent(batchId)}`;
  const heading = h('h1', {}, 'Batch ', h('span', { class: 'mono' }, batchId));
  const summary = h('section', { class: 'card', 'aria-label': 'Batch summary' }, h('p', {}, 'Loading…'));
  const review = h('section', { class: 'card review', 'aria-label': 'Resolve review', hidden: true });
  const orders = h('section', { class: 'card', 'aria-labelledby': 'orders-heading' },
    h('h2', { id: 'orders-heading' }, 'Orders'), h('p', { class: 'muted' }, 'Loading…'));
  replace(main, h('p', {}, h('a', { href: '#/batches' }, '← All batches')), heading, summary, review, orders);

  let bar = null;
  const badge = liveBadge();

  function showSummary(batch) {
    if (!bar) {
      bar = fillBar(batch, { large: true });
      replace(summary,
        h('div', { class: 'badges' }, badge),
        bar,
        h('dl', { class: 'facts' }));
    }
    updateFillBar(bar, batch);
    const facts = summary.querySelector('.facts');
    const fact = (k, ...v) => [h('dt', {}, k), h('dd', {}, ...v)];
    replace(facts,
      fact('Status', statusBadge(batchStatus(batch.status)), batch.needsReview ? h('span', { class: 'badge warn' }, 'needs review') : ''),
      fact('Category', batch.category),
      fact('Supplier', h('span', { class: 'mono' }, batch.supplierId)),
      fact('Unit price', batch.unitPrice || '—'),
      fact('Window', timeEl(batch.windowOpenTime), ' → ', timeEl(batch.windowCloseTime), ' ',
        batch.status === 'BATCH_STATUS_FILLING' ? countdown(batch.windowCloseTime) : ''),
      fact('Styles', `${batch.styleCount || 0} of ${batch.styleLimit || '∞'}`),
      fact('Orders', count(batch.orderCount)),
      batch.supplierOrderNumber ? fact('Supplier order', h('span', { class: 'mono' }, batch.supplierOrderNumber)) : null,
      fact('Updated', timeEl(batch.updateTime, { seconds: true })));
    tickCountdowns(summary);
    showReview(batch);
  }

  function showReview(batch) {
    const canResolve = ctx.can(`${BATCH}/ResolveReview`);
    review.hidden = !(batch.needsReview && batch.status === 'BATCH_STATUS_FILLING' && canResolve);
    if (review.hidden || review.childElementCount) return;
    const error = h('div', { class: 'form-error', role: 'alert' });
    const form = h('form', {},
      h('h2', {}, 'Resolve review'),
      h('p', {}, 'The window closed between 50% and 75% of target. Confirm the batch with the supplier, or cancel it and refund every order.'),
      h('fieldset', {}, h('legend', {}, 'Decision'),
        h('label', { class: 'check' }, h('input', { type: 'radio', name: 'decision', value: 'REVIEW_DECISION_CONFIRM', required: true }), ' Confirm batch'),
        h('label', { class: 'check' }, h('input', { type: 'radio', name: 'decision', value: 'REVIEW_DECISION_CANCEL' }), ' Cancel batch and refund orders')),
      h('label', {}, 'Note ', h('textarea', { name: 'note', rows: 2 })),
      error,
      h('button', { type: 'submit' }, 'Resolve'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      form.querySelector('button').disabled = true;
      try {
        const reply = await post(`${path}:resolveReview`, { requestId: uuid(), decision: data.get('decision'), note: data.get('note') });
        toast(`Batch ${batchStatus(reply.batch.status)}${reply.ordersRefunded ? `, ${reply.ordersRefunded} orders refunded` : ''}.`);
        replace(review);
        showSummary(reply.batch);
        loadOrders();
      } catch (err) {
        replace(error, errorBox(err));
        form.querySelector('button').disabled = false;
      }
    });
    replace(review, form);
  }

  async function loadOrders() {
    try {
      const list = await listAll('/v1/orders', { batchId, pageSize: 100 }, 'orders', { maxPages: 10 });
      replace(orders, h('h2', { id: 'orders-heading' }, `Orders (${list.length})`),
        list.length ? tableWrap('Orders of this batch', h('table', {},
          h('thead', {}, h('tr', {}, ['Order', 'Buyer', 'Quantity', 'Status', 'Total', 'Placed'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.map((o) => h('tr', {},
            h('td', { class: 'mono' }, o.orderId.slice(0, 8)),
            h('td', {}, o.buyerId),
            h('td', { class: 'num' }, count(o.quantity)),
            h('td', {}, statusBadge(enumName(o.status, 'ORDER_STATUS_'))),
            h('td', { class: 'num' }, o.price?.total ? `${o.price.total} ${o.price.currency || ''}` : '—'),
            h('td', {}, timeEl(o.createTime))))))) : h('p', { class: 'muted' }, 'No orders.'));
    } catch (err) {
      replace(orders, h('h2', { id: 'orders-heading' }, 'Orders'), errorBox(err));
    }
  }

  let lastQuantity = null;
  get(path).then((reply) => {
    showSummary(reply.batch);
    lastQuantity = reply.batch.currentQuantity;
    const watchStream = stream(`${path}:watch`, {}, {
      onMessage: (msg) => {
        if (!msg.batch) return;
        showSummary(msg.batch);
        if (msg.batch.currentQuantity !== lastQuantity) {
          lastQuantity = msg.batch.currentQuantity;
          loadOrders();
        }
      },
      onStatus: (st) => { badge.dataset.state = st; badge.textContent = st; },
      onError: (err) => { badge.dataset.state = 'closed'; badge.title = err.message; },
    });
    ctx.onCleanup(() => watchStream.close());
  }).catch((err) => replace(summary, errorBox(err)));
  loadOrders();
  ctx.every(1000, () => tickCountdowns(summary));
}
