// Small inline-SVG charts. Each chart is a <figure> with an accessible name, a
// <title> per mark (hover/long-press shows the value) and a visually hidden table
// of the same numbers for screen readers.

import { h, s } from './dom.js';

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function dataTable(caption, head, rows) {
  return h('div', { class: 'visually-hidden' }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

function figure(label, svg, table, legend) {
  return h('figure', { class: 'chart' },
    svg, legend, table, h('figcaption', { class: 'visually-hidden' }, label));
}

function legendOf(items) {
  if (!items?.length) return null;
  return h('ul', { class: 'legend', 'aria-hidden': 'true' },
    items.map((i) => h('li', {}, h('span', { class: 'swatch', style: { background: i.color } }), i.label)));
}

// Horizontal bars: [{label, value, color?, note?}].
export function barChart(label, items, { format = String, color = '#1565c0' } = {}) {
  const rowHeight = 26;
  const labelWidth = 130;
  const width = 420;
  const height = Math.max(items.length, 1) * rowHeight + 4;
  const max = Math.max(1, ...items.map((i) => Number(i.value) || 0));
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart-svg' },
    s('title', {}, label),
    items.map((item, index) => {
      const y = index * rowHeight + 2;
      const barWidth = ((Number(item.value) || 0) / max) * (width - labelWidth - 70);
      return s('g', { class: 'bar', 'data-label': item.label, 'data-value': item.value },
        s('title', {}, `${item.label}: ${format(item.value)}${item.note ? ` (${item.note})` : ''}`),
        s('text', { x: labelWidth - 6, y: y + rowHeight / 2 + 4, 'text-anchor': 'end', class: 'axis-label' }, item.label),
        s('rect', { x: labelWidth, y: y + 3, width: Math.max(barWidth, 1), height: rowHeight - 8, rx: 2, fill: item.color || color }),
        s('text', { x: labelWidth + barWidth + 6, y: y + rowHeight / 2 + 4, class: 'value-label' }, format(item.value)));
    }));
  if (!items.length) svg.append(s('text', { x: 10, y: 18, class: 'axis-label' }, 'no data'));
  return figure(label, svg, dataTable(label, ['', 'value'], items.map((i) => [i.label, format(i.value)])));
}

// Vertical columns over a sequence, one colour each: [{label, value, color, title}].
// With no items it says `empty` in words instead of drawing axes around nothing.
export function columnChart(label, items, { format = String, legend = [], yLabel = '', empty = 'no data' } = {}) {
  if (!items.length) return h('figure', { class: 'chart empty' }, h('p', { class: 'muted' }, empty), h('figcaption', { class: 'visually-hidden' }, label));
  const width = 480;
  const height = 170;
  const left = 46;
  const bottom = 22;
  const top = 8;
  const plotWidth = width - left - 6;
  const plotHeight = height - top - bottom;
  const max = niceMax(Math.max(0, ...items.map((i) => Number(i.value) || 0)));
  const slot = plotWidth / Math.max(items.length, 1);
  const barWidth = Math.max(2, Math.min(28, slot * 0.7));
  const ticks = [0, 0.5, 1].map((f) => f * max);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart-svg' },
    s('title', {}, label),
    ticks.map((t) => {
      const y = top + plotHeight - (t / max) * plotHeight;
      return s('g', { class: 'gridline' },
        s('line', { x1: left, x2: width - 6, y1: y, y2: y }),
        s('text', { x: left - 4, y: y + 4, 'text-anchor': 'end', class: 'axis-label' }, format(t)));
    }),
    yLabel ? s('text', { x: 2, y: top + 8, class: 'axis-label' }, yLabel) : null,
    items.map((item, index) => {
      const value = Number(item.value) || 0;
      const barHeight = Math.max(1, (value / max) * plotHeight);
      const x = left + index * slot + (slot - barWidth) / 2;
      return s('rect', {
        class: 'column', x, y: top + plotHeight - barHeight, width: barWidth, height: barHeight, fill: item.color,
        'data-value': value,
      }, s('title', {}, item.title || `${item.label}: ${format(value)}`));
    }),
    [items[0], items[items.length - 1]].map((item, i) => s('text', {
      x: i ? width - 6 : left, y: height - 6, 'text-anchor': i ? 'end' : 'start', class: 'axis-label',
    }, item.label)));
  return figure(label, svg, dataTable(label, ['', 'value'], items.map((i) => [i.label, format(i.value)])), legendOf(legend));
}

// Lines over time: series [{name, color, points: [{x: Date, y}]}]; an optional
// secondary series drawn against a 0-1 scale on the right (e.g. a ratio).
export function lineChart(label, series, { format = String, ratio = null, xFormat = String } = {}) {
  const width = 520;
  const height = 200;
  const left = 46;
  const right = ratio ? 40 : 8;
  const top = 10;
  const bottom = 24;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const allPoints = series.flatMap((sr) => sr.points).concat(ratio ? ratio.points : []);
  const xs = allPoints.map((p) => p.x.getTime());
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const max = niceMax(Math.max(0, ...series.flatMap((sr) => sr.points.map((p) => p.y))));
  const xOf = (d) => left + (xMax === xMin ? plotWidth / 2 : ((d.getTime() - xMin) / (xMax - xMin)) * plotWidth);
  const yOf = (v, scale = max) => top + plotHeight - (v / scale) * plotHeight;
  const path = (points, scale) => points
    .map((p, i) => `${i ? 'L' : 'M'}${xOf(p.x).toFixed(1)},${yOf(p.y, scale).toFixed(1)}`).join(' ');
  const markers = (sr, scale, fmt) => sr.points.map((p) => s('circle', {
    cx: xOf(p.x), cy: yOf(p.y, scale), r: 3, fill: sr.color, class: 'point', 'data-series': sr.name, 'data-value': p.y,
  }, s('title', {}, `${sr.name}, ${xFormat(p.x)}: ${fmt(p.y)}`)));
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart-svg' },
    s('title', {}, label),
    [0, 0.5, 1].map((f) => s('g', { class: 'gridline' },
      s('line', { x1: left, x2: width - right, y1: yOf(f * max), y2: yOf(f * max) }),
      s('text', { x: left - 4, y: yOf(f * max) + 4, 'text-anchor': 'end', class: 'axis-label' }, format(f * max)),
      ratio ? s('text', { x: width - right + 4, y: yOf(f, 1) + 4, class: 'axis-label' }, `${Math.round(f * 100)}%`) : null)),
    allPoints.length ? null : s('text', { x: left + 10, y: top + plotHeight / 2, class: 'axis-label' }, 'no data'),
    series.map((sr) => s('path', { d: path(sr.points, max), stroke: sr.color, fill: 'none', 'stroke-width': 2, class: 'series' })),
    ratio ? s('path', {
      d: path(ratio.points, 1), stroke: ratio.color, fill: 'none', 'stroke-width': 1.5, 'stroke-dasharray': '4 3', class: 'series',
    }) : null,
    series.map((sr) => markers(sr, max, format)),
    ratio ? markers(ratio, 1, (v) => `${Math.round(v * 100)}%`) : null,
    allPoints.length ? [xMin, xMax].map((x, i) => s('text', {
      x: i ? width - right : left, y: height - 6, 'text-anchor': i ? 'end' : 'start', class: 'axis-label',
    }, xFormat(new Date(x)))) : null);
  const legend = legendOf([...series, ...(ratio ? [ratio] : [])].map((sr) => ({ label: sr.name, color: sr.color })));
  const names = [...series, ...(ratio ? [ratio] : [])];
  const rows = (names[0]?.points || []).map((p, i) => [xFormat(p.x), ...names.map((sr) => String(sr.points[i]?.y ?? ''))]);
  return figure(label, svg, dataTable(label, ['period', ...names.map((sr) => sr.name)], rows), legend);
}
