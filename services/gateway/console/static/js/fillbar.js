// A batch's fill bar: the whole bar is the supplier's capacity; the target (MOQ)
// and the 50/60/75% review/nearing/confirm thresholds of the target are marked.

import { h } from './dom.js';
import { span } from './format.js';

export const THRESHOLDS = [
  { fraction: 0.5, label: '50', meaning: 'flagged for review if the window closes from here' },
  { fraction: 0.6, label: '60', meaning: 'nearing target' },
  { fraction: 0.75, label: '75', meaning: 'confirms' },
];

function band(fill) {
  if (fill >= 75) return 'confirm';
  if (fill >= 60) return 'nearing';
  if (fill >= 50) return 'review';
  return 'low';
}

function numbers(batch) {
  const current = Number(batch.currentQuantity || 0);
  const target = Number(batch.targetQuantity || 0);
  const capacity = Math.max(Number(batch.capacity || 0), target, current, 1);
  const fill = target ? (current / target) * 100 : 0;
  return { current, target, capacity, fill };
}

const at = (quantity, capacity) => `${Math.min(100, (quantity / capacity) * 100)}%`;

// When the capacity dwarfs the target, the 50/60/75 % marks sit a few pixels apart and their
// labels would print over each other ("506075"). Labels are laid out from the highest
// threshold down and a label that would touch the one to its right is hidden (its mark
// keeps its title); this runs whenever the bar's width changes.
const GAP_PX = 3;
function declutter(bar) {
  let leftEdge = Infinity;
  for (const label of [...bar.querySelectorAll('.threshold .mark-label')].reverse()) {
    label.classList.remove('crowded');
    const box = label.getBoundingClientRect();
    if (box.right + GAP_PX > leftEdge) label.classList.add('crowded');
    else leftEdge = box.left;
  }
}
const resized = typeof ResizeObserver === 'undefined' ? null : new ResizeObserver((entries) => entries.forEach((e) => declutter(e.target)));

export function fillBar(batch, { large = false } = {}) {
  const bar = h('div', { class: `fillbar${large ? ' large' : ''}`, role: 'meter', 'aria-valuemin': '0' },
    h('div', { class: 'fill' }),
    THRESHOLDS.map((t) => h('div', { class: 'mark threshold', dataset: { fraction: t.fraction }, title: `${t.label}% of target: ${t.meaning}` },
      h('span', { class: 'mark-label' }, t.label))),
    h('div', { class: 'mark target', title: 'target (supplier MOQ)' }, h('span', { class: 'mark-label' }, 'target')));
  resized?.observe(bar);
  const caption = h('div', { class: 'fill-caption' });
  const wrapper = h('div', { class: 'fillbar-wrap' }, bar, caption);
  updateFillBar(wrapper, batch);
  return wrapper;
}

export function updateFillBar(wrapper, batch) {
  const { current, target, capacity, fill } = numbers(batch);
  const bar = wrapper.querySelector('.fillbar');
  bar.dataset.band = band(fill);
  bar.dataset.current = current;
  bar.dataset.target = target;
  bar.dataset.capacity = capacity;
  bar.setAttribute('aria-valuemax', String(capacity));
  bar.setAttribute('aria-valuenow', String(current));
  bar.setAttribute('aria-label', `Fill of batch ${batch.batchId}`);
  bar.setAttribute('aria-valuetext', `${current} of target ${target} (${fill.toFixed(0)}%), capacity ${capacity}`);
  bar.querySelector('.fill').style.width = at(current, capacity);
  for (const mark of bar.querySelectorAll('.threshold')) mark.style.left = at(Number(mark.dataset.fraction) * target, capacity);
  bar.querySelector('.target').style.left = at(target, capacity);
  if (bar.isConnected) declutter(bar);
  wrapper.querySelector('.fill-caption').replaceChildren(
    h('strong', { class: 'fill-numbers' }, `${current} / ${target}`),
    ` (${fill.toFixed(fill < 10 ? 1 : 0)}% of target) · capacity ${capacity}`,
  );
}

// A countdown to the window's close, refreshed by tickCountdowns().
export function countdown(closeTime) {
  return h('span', { class: 'countdown', dataset: { closes: closeTime || '' } }, '');
}

export function tickCountdowns(root = document) {
  for (const el of root.querySelectorAll('.countdown')) {
    const closes = el.dataset.closes;
    if (!closes) {
      el.textContent = '';
      continue;
    }
    const ms = new Date(closes).getTime() - Date.now();
    el.textContent = ms > 0 ? `closes in ${span(ms)}` : 'window closed';
    el.dataset.urgent = ms > 0 && ms < 24 * 3600 * 1000 ? 'true' : 'false';
  }
}
