// Engagement: interactions by type, the trend, the authenticated ratio, top products
// with what is paired with them, shares by platform and rate-limit rejections.

import { ApiError, get, listAll } from '../api.js';
import { h, replace } from '../dom.js';
import { barChart, columnChart, lineChart } from '../chart.js';
import { count, day, enumName, percent } from '../format.js';
import { errorBox, tableWrap } from '../widgets.js';

const PLATFORM_COLOURS = {
  SHARE_PLATFORM_LINKEDIN: '#0a66c2', SHARE_PLATFORM_FACEBOOK: '#1877f2', SHARE_PLATFORM_TWITTER: '#333', SHARE_PLATFORM_WHATSAPP: '#25a244',
};
const SHARE_POSTS_SCANNED = 20;

function section(id, title) {
  const body = h('div', { class: 'section-body' }, h('p', { class: 'muted' }, 'Loading…'));
  const el = h('section', { class: `card ${id}`, 'aria-labelledby': `${id}-heading` }, h('h2', { id: `${id}-heading` }, title), body);
  return { el, body };
}

async function fill(target, build) {
  try {
    replace(target.body, await build());
  } catch (err) {
    replace(target.body, errorBox(err));
  }
}

const DAY_MS = 86400000;

// The UTC day or ISO week (Monday) that holds `date`, as the tracking service groups them.
function periodStart(date, granularity) {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  return granularity === 'week' ? new Date(day.getTime() - ((day.getUTCDay() + 6) % 7) * DAY_MS) : day;
}

// One entry per period of [start, end], the reported ones where they exist and zeros
// elsewhere: the service reports only periods that had events, and a period's axis
// should run over the whole range asked for.
export function everyPeriod(start, end, granularity, reported, startOf, zero) {
  const byStart = new Map(reported.map((r) => [new Date(startOf(r)).getTime(), r]));
  const step = granularity === 'week' ? 7 * DAY_MS : DAY_MS;
  const periods = [];
  for (let t = periodStart(start, granularity).getTime(); t <= end.getTime(); t += step) {
    const x = new Date(t);
    periods.push({ ...(byStart.get(t) || zero(x)), x });
  }
  return periods;
}

export function renderEngagement(main, ctx) {
  const days = Number(ctx.query.get('days') || 30);
  const granularity = ctx.query.get('granularity') === 'week' ? 'week' : 'day';
  const end = new Date();
  const start = new Date(end.getTime() - days * 86400000);
  const range = { startTime: start.toISOString(), endTime: end.toISOString() };

  const form = h('form', { class: 'filters', 'aria-label': 'Engagement range' },
    h('label', {}, 'Period ', h('select', { name: 'days' },
      [7, 30, 90].map((d) => h('option', { value: d, selected: d === days }, `last ${d} days`)))),
    h('label', {}, 'Trend by ', h('select', { name: 'granularity' },
      ['day', 'week'].map((g) => h('option', { value: g, selected: g === granularity }, g)))));
  form.addEventListener('change', () => {
    const data = new FormData(form);
    ctx.navigate(`#/engagement?${new URLSearchParams({ days: data.get('days'), granularity: data.get('granularity') })}`);
  });

  const summary = section('summary', 'Interactions by type');
  const trend = section('trend', `Trend by ${granularity}`);
  const top = section('top-products', 'Top products');
  const shares = section('shares', 'Shares by platform');
  const limits = section('rate-limits', 'Share rate-limit rejections');
  replace(main, h('h1', {}, 'Engagement'), form,
    h('div', { class: 'grid two' }, summary.el, trend.el, top.el, shares.el, limits.el));

  fill(summary, async () => {
    const reply = await get('/v1/engagement/summary', range);
    const byType = (reply.byType || []).slice().sort((a, b) => Number(b.count) - Number(a.count));
    const ratio = Number(reply.authenticatedRatio || 0);
    return [
      h('div', { class: 'stats' },
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'interactions'), h('span', { class: 'stat-value', dataset: { stat: 'total' } }, count(reply.total))),
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'sessions'), h('span', { class: 'stat-value' }, count(reply.uniqueSessions))),
        h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'signed in'),
          h('span', { class: 'stat-value', dataset: { stat: 'authenticated-ratio' } }, percent(ratio, 1)),
          h('meter', { min: 0, max: 1, value: ratio, 'aria-label': 'Authenticated share of interactions' }))),
      barChart('Interactions by type', byType.map((t) => ({ label: enumName(t.type, 'INTERACTION_TYPE_'), value: Number(t.count) })), { format: count }),
    ];
  });

  fill(trend, async () => {
    const reply = await get('/v1/engagement/trend', { ...range, granularity: `GRANULARITY_${granularity.toUpperCase()}` });
    const points = everyPeriod(start, end, granularity, reply.points || [], (p) => p.periodStart,
      (x) => ({ count: 0, authenticated: 0, authenticatedRatio: 0, x }));
    return lineChart(`Interactions per ${granularity}`, [
      { name: 'interactions', color: '#1565c0', points: points.map((p) => ({ x: p.x, y: Number(p.count || 0) })) },
      { name: 'signed in', color: '#8e24aa', points: points.map((p) => ({ x: p.x, y: Number(p.authenticated || 0) })) },
    ], {
      format: count,
      xFormat: (d) => day(d),
      ratio: { name: 'signed-in share', color: '#999', points: points.map((p) => ({ x: p.x, y: Number(p.authenticatedRatio || 0) })) },
    });
  });

  fill(top, async () => {
    const reply = await get('/v1/products:top', { ...range, limit: 10 });
    const products = reply.products || [];
    if (!products.length) return h('p', { class: 'muted' }, 'No interactions in this period.');
    const popularity = await Promise.all(products.map((p) => get(`/v1/products/${encodeURIComponent(p.productId)}/popularity`, { pairedLimit: 3 })
      .then((r) => r.popularity)
      .catch((err) => (err instanceof ApiError && err.status === 404 ? null : Promise.reject(err)))));
    return tableWrap('Top products', h('table', { class: 'top-products' },
      h('thead', {}, h('tr', {}, ['Product', 'Interactions', 'Score', 'Often paired with'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, products.map((p, i) => {
        const pop = popularity[i];
        return h('tr', {},
          h('td', { class: 'mono' }, p.productId),
          h('td', { class: 'num' }, count(p.count)),
          h('td', { class: 'num' }, pop ? Number(pop.score || 0).toFixed(1) : h('span', { class: 'muted' }, 'not scored')),
          h('td', {}, pop?.paired?.length
            ? h('ul', { class: 'plain' }, pop.paired.map((q) => h('li', {}, h('span', { class: 'mono' }, q.productId), ` ${Number(q.percentage || 0).toFixed(0)}%`)))
            : h('span', { class: 'muted' }, '—')));
      }))));
  });

  fill(shares, async () => {
    const posts = await listAll('/v1/posts', { pageSize: 100 }, 'posts', { maxPages: 5 });
    const shared = posts.filter((p) => Number(p.shareCount) > 0).sort((a, b) => Number(b.shareCount) - Number(a.shareCount));
    const scanned = shared.slice(0, SHARE_POSTS_SCANNED);
    const stats = await Promise.all(scanned.map((p) => get(`/v1/posts/${encodeURIComponent(p.postId)}/shareStats`, range)));
    const byPlatform = new Map(Object.keys(PLATFORM_COLOURS).map((k) => [k, 0]));
    for (const st of stats) for (const pc of st.byPlatform || []) byPlatform.set(pc.platform, (byPlatform.get(pc.platform) || 0) + Number(pc.count));
    return [
      barChart('Shares by platform', [...byPlatform].map(([platform, n]) => ({
        label: enumName(platform, 'SHARE_PLATFORM_'), value: n, color: PLATFORM_COLOURS[platform],
      })), { format: count }),
      h('p', { class: 'muted small' }, shared.length > scanned.length
        ? `From the ${scanned.length} most shared of ${shared.length} shared posts.`
        : `${shared.length} shared post${shared.length === 1 ? '' : 's'}.`),
    ];
  });

  fill(limits, async () => {
    const reply = await get('/v1/rateLimits/stats', range);
    const byDay = reply.byDay || [];
    return [
      h('div', { class: 'stats' }, h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, 'rejected shares'),
        h('span', { class: `stat-value ${Number(reply.rejected) ? 'bad' : ''}`, dataset: { stat: 'rejected' } }, count(reply.rejected)))),
      columnChart('Rejected shares per day (UTC)', everyPeriod(start, end, 'day', byDay, (d) => `${d.day}T00:00:00Z`,
        (x) => ({ day: x.toISOString().slice(0, 10), rejected: 0, accepted: 0 })).map((d) => ({
        label: day(d.day), value: Number(d.rejected || 0), color: '#c62828',
        title: `${d.day}: ${count(d.rejected)} rejected, ${count(d.accepted)} accepted`,
      })), { format: count }),
    ];
  });
}
