// Sample events for previews and dry runs, shaped like the batch service's outbox events
// (the cross-service event contract: {"order": {...}, "batch": {...}, "supplier": {...}}).
//
// "Realistic" means, in this order: the latest event of that type the rules service
// received (ListEvents); else the newest order or batch the batch service holds in the
// state the event type implies, written as that event would carry it; else a made-up but
// consistent example.

import { get, post } from './api.js';
import { uuid } from './dom.js';

const RULES = 'loom.rules.v1.RulesService';

// What each event type says about its entities' state.
const SHAPES = {
  'order.placed': { order: 'placed', batch: 'filling', fill: 42 },
  'order.status_changed': { order: 'confirmed', batch: 'confirmed', fill: 80 },
  'order.supplier_assigned': { order: 'placed', batch: 'filling', fill: 42 },
  'order.cancelled': { order: 'cancelled', batch: 'filling', fill: 30 },
  'order.refunded': { order: 'refunded', batch: 'cancelled', fill: 35 },
  'batch.opened': { batch: 'filling', fill: 0 },
  'batch.confirmed': { batch: 'confirmed', fill: 80 },
  'batch.nearing_target': { batch: 'filling', fill: 65 },
  'batch.closing_soon': { batch: 'filling', fill: 45 },
  'batch.needs_review': { batch: 'filling', fill: 55, review: true },
  'batch.cancelled': { batch: 'cancelled', fill: 30 },
  'batch.status_changed': { batch: 'in_production', fill: 90 },
};

const shapeOf = (type) => SHAPES[type] || { order: 'placed', batch: 'filling', fill: 50 };
const percentage = (current, target) => (target ? ((current * 100) / target).toFixed(2) : '0.00');
const lower = (value, prefix) => String(value || '').replace(prefix, '').toLowerCase();

function madeUp(type) {
  const shape = shapeOf(type);
  const target = 200;
  const current = Math.round((shape.fill / 100) * target);
  const batch = {
    id: uuid(), status: shape.batch, category: 't_shirts', current_quantity: current, target_quantity: target, capacity: 400,
    fill_percentage: percentage(current, target), window_closes_at: new Date(Date.now() + 3 * 86400000).toISOString(),
    supplier_id: uuid(), needs_review: !!shape.review, supplier_order_number: shape.batch === 'confirmed' ? 'SO-000042' : '',
  };
  const data = { batch };
  if (type.startsWith('order.')) {
    data.order = {
      id: uuid(), buyer_id: 'buyer-1', status: shape.order, category: batch.category, quantity: 40, batch_id: batch.id,
      supplier_id: batch.supplier_id, unit_price: '5.75', total_price: '230.00',
    };
  } else {
    data.supplier = { id: batch.supplier_id, name: 'Mill One', capacity: 400, moq: 200, rating: '4.5', lead_time_days: 12, contact_email: 'mill@loom.example' };
  }
  return data;
}

const batchFacts = (b) => ({
  id: b.batchId, status: lower(b.status, 'BATCH_STATUS_'), category: b.category, current_quantity: Number(b.currentQuantity || 0),
  target_quantity: Number(b.targetQuantity || 0), capacity: Number(b.capacity || 0),
  fill_percentage: percentage(Number(b.currentQuantity || 0), Number(b.targetQuantity || 0)),
  window_closes_at: b.windowCloseTime, supplier_id: b.supplierId, needs_review: !!b.needsReview, supplier_order_number: b.supplierOrderNumber || '',
});
const orderFacts = (o) => ({
  id: o.orderId, buyer_id: o.buyerId, status: lower(o.status, 'ORDER_STATUS_'), category: o.category, quantity: Number(o.quantity || 0),
  batch_id: o.batchId, supplier_id: o.supplierId, unit_price: o.price?.unitPrice || '', total_price: o.price?.total || '',
});
const supplierFacts = (s) => ({
  id: s.supplierId, name: s.name, capacity: Number(s.capacity || 0), moq: Number(s.moq || 0), rating: String(s.rating ?? ''),
  lead_time_days: s.leadTimeDays || 0, contact_email: s.contactEmail || '',
});

async function fromBatchService(type, can, signal) {
  const shape = shapeOf(type);
  const BATCH = 'loom.batch.v1.BatchService';
  if (type.startsWith('order.')) {
    if (!can(`${BATCH}/ListOrders`) || !can(`${BATCH}/GetBatch`)) return null;
    const { orders = [] } = await get('/v1/orders', { status: `ORDER_STATUS_${shape.order.toUpperCase()}`, pageSize: 1 }, signal);
    if (!orders.length) return null;
    const { batch } = await get(`/v1/batches/${encodeURIComponent(orders[0].batchId)}`, {}, signal);
    return { order: orderFacts(orders[0]), batch: batchFacts(batch) };
  }
  if (!can(`${BATCH}/ListBatches`) || !can(`${BATCH}/GetSupplier`)) return null;
  const { batches = [] } = await get('/v1/batches', {
    status: `BATCH_STATUS_${shape.batch.toUpperCase()}`, needsReview: !!shape.review, pageSize: 1,
  }, signal);
  if (!batches.length) return null;
  const { supplier } = await get(`/v1/suppliers/${encodeURIComponent(batches[0].supplierId)}`, {}, signal);
  return { batch: batchFacts(batches[0]), supplier: supplierFacts(supplier) };
}

const BATCH_SERVICE_WAIT_MS = 4000;

// A consistent made-up event of that type, at once: {event, origin}.
export function madeUpEvent(type) {
  return { event: { type, source: 'batch', data: madeUp(type) }, origin: 'a made-up example' };
}

async function latestStored(type, can, signal) {
  if (!can(`${RULES}/ListEvents`)) return null;
  const { events = [] } = await get('/v1/events', { eventType: type, pageSize: 1 }, signal);
  if (!events.length) return null;
  const [latest] = events;
  const when = latest.occurredTime ? new Date(latest.occurredTime).toLocaleString() : 'an unknown time';
  return {
    event: { type, source: latest.source || 'batch', data: latest.data || {} },
    origin: `data of the latest ${type} event received (${when})`,
  };
}

// The latest stored event of that type, else the newest stored order or batch in the state the
// event type implies, as that event would carry it: {event, origin}, or null when there is none
// or the services do not answer.
export async function recentEvent(type, can) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), BATCH_SERVICE_WAIT_MS);
  try {
    const stored = await latestStored(type, can, controller.signal).catch(() => null);
    if (stored) return stored;
    const data = await fromBatchService(type, can, controller.signal);
    return data && {
      event: { type, source: 'batch', data },
      origin: `data of the newest ${type.startsWith('order.') ? 'order' : 'batch'} in that state, from the batch service`,
    };
  } catch {
    return null; // the batch service is down or refuses: the made-up example stays
  } finally {
    clearTimeout(timer);
  }
}

// Dry-runs the rule as the editor holds it (saved or not) against the event: the rule's trace
// ({mine}, templates rendered) and how many other active rules would match it too.
export async function dryRun(event, draft, ruleId) {
  const reply = await post('/v1/events:evaluate', { event, dryRun: true, draft: { ...draft, name: draft.name || 'unsaved rule', ruleId: ruleId || '' } });
  const id = ruleId || 'draft';
  const rules = reply.rules || [];
  return { mine: rules.find((r) => r.ruleId === id), others: rules.filter((r) => r.ruleId !== id && r.matched).length };
}

// The facts templates and conditions see: the event's data plus the event itself.
export function factsOf(event) {
  return {
    ...(event.data || {}),
    event: { id: event.eventId || 'sample-event', type: event.type, source: event.source || 'batch', occurred_time: event.occurredTime || new Date().toISOString() },
  };
}
