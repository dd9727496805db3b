// The console's shell: sign-in state, role-aware navigation and a hash router.

import { can, loadAccess } from './access.js';
import { showBell } from './bell.js';
import { dismissToast, h, replace } from './dom.js';
import { timeZone } from './format.js';
import * as session from './session.js';
import { renderAudit } from './pages/audit.js';
import { renderBatch, renderBatches } from './pages/batches.js';
import { renderEngagement } from './pages/engagement.js';
import { renderJobs } from './pages/jobs.js';
import { renderRuleEditor } from './pages/rule_edit.js';
import { renderRules } from './pages/rules.js';
import { renderSignIn } from './pages/signin.js';
import { renderVersions } from './pages/versions.js';
import { denied } from './widgets.js';

const ROUTES = [
  { path: /^\/batches$/, page: 'batches', title: 'Batches', needs: 'loom.batch.v1.BatchService/ListBatches', render: renderBatches },
  { path: /^\/batches\/(?<id>[^/]+)$/, page: 'batches', title: 'Batch', needs: 'loom.batch.v1.BatchService/GetBatch', render: renderBatch },
  { path: /^\/rules$/, page: 'rules', title: 'Rules', needs: 'loom.rules.v1.RulesService/ListRules', render: renderRules },
  { path: /^\/rules\/new$/, page: 'rules', title: 'New rule', needs: 'loom.rules.v1.RulesService/CreateRule', render: renderRuleEditor },
  { path: /^\/rules\/(?<id>[^/]+)\/versions$/, page: 'rules', title: 'Rule versions', needs: 'loom.rules.v1.RulesService/ListRuleVersions', render: renderVersions },
  { path: /^\/rules\/(?<id>[^/]+)$/, page: 'rules', title: 'Rule', needs: 'loom.rules.v1.RulesService/GetRule', render: renderRuleEditor },
  { path: /^\/jobs$/, page: 'jobs', title: 'Jobs', needs: 'loom.scheduler.v1.SchedulerService/ListJobs', render: renderJobs },
  { path: /^\/engagement$/, page: 'engagement', title: 'Engagement', needs: 'loom.tracking.v1.TrackingService/GetEngagementSummary', render: renderEngagement },
  { path: /^\/audit$/, page: 'audit', title: 'Audit', needs: 'loom.batch.v1.BatchService/ListAuditEvents', render: renderAudit },
];
const NAV_NEEDS = Object.fromEntries(ROUTES.filter((r) => !r.path.source.includes('<')).map((r) => [r.page, r.needs]));

const main = document.getElementById('main');
let cleanups = [];
let signInMessage = '';
let expiryTimer;
// A page that navigates after an action (save, then show the saved rule) keeps its toast.
let keepToast = false;

function navigate(hash, { replace: replaceEntry = false } = {}) {
  keepToast = true;
  if (replaceEntry) {
    history.replaceState(null, '', hash);
    render();
  } else if (location.hash === hash) {
    render();
  } else {
    location.hash = hash;
  }
}

function teardown() {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

function showChrome(claims) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.hidden = !claims;
  who.hidden = !claims;
  showBell(claims, session.token(), !!claims && can(claims.role, 'loom.rules.v1.RulesService/WatchNotifications'));
  if (!claims) return;
  document.getElementById('who-label').textContent = `${claims.sub} · ${claims.role}`;
  for (const link of nav.querySelectorAll('a')) link.hidden = !can(claims.role, NAV_NEEDS[link.dataset.page]);
  clearTimeout(expiryTimer);
  if (claims.exp) {
    expiryTimer = setTimeout(() => expire('Your token expired; sign in again.'), Math.min(claims.exp * 1000 - Date.now(), 2 ** 31 - 1));
  }
}

function expire(message) {
  // Several calls in flight may be refused at once: the first one signs out, the rest have nothing to do.
  if (!session.token()) return;
  session.signOut();
  signInMessage = message;
  navigate(`#/signin?next=${encodeURIComponent(location.hash.startsWith('#/signin') ? '#/' : location.hash)}`);
}

function render() {
  teardown();
  if (!keepToast) dismissToast();
  keepToast = false;
  const [rawPath, rawQuery] = location.hash.replace(/^#/, '').split('?');
  const path = rawPath || '/';
  const query = new URLSearchParams(rawQuery || '');
  const claims = session.current();
  showChrome(claims);

  if (path === '/signin' || !claims) {
    document.title = 'Sign in · Loom console';
    const next = query.get('next') || (path === '/signin' ? '' : location.hash);
    renderSignIn(main, { navigate, message: signInMessage, next });
    signInMessage = '';
    return;
  }
  if (path === '/') {
    const first = ROUTES.find((r) => NAV_NEEDS[r.page] === r.needs && can(claims.role, r.needs));
    if (first) navigate(`#/${first.page}`, { replace: true });
    else replace(main, denied('Nothing to show', claims.role));
    return;
  }
  const route = ROUTES.find((r) => r.path.test(path));
  for (const link of document.querySelectorAll('#nav a')) {
    if (route && link.dataset.page === route.page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!route) {
    replace(main, h('div', { class: 'card' }, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the console'))));
    return;
  }
  document.title = `${route.title} · Loom console`;
  if (!can(claims.role, route.needs)) {
    replace(main, denied(route.title, claims.role));
    return;
  }
  const params = Object.fromEntries(Object.entries(route.path.exec(path).groups || {}).map(([k, v]) => [k, decodeURIComponent(v)]));
  const ctx = {
    role: claims.role,
    subject: claims.sub,
    params,
    query,
    navigate,
    can: (method) => can(claims.role, method),
    onCleanup: (fn) => cleanups.push(fn),
    every: (ms, fn) => {
      const id = setInterval(fn, ms);
      cleanups.push(() => clearInterval(id));
    },
  };
  route.render(main, ctx);
}

async function start() {
  document.getElementById('time-zone').textContent = timeZone;
  document.getElementById('sign-out').addEventListener('click', () => {
    session.signOut();
    navigate('#/signin');
  });
  window.addEventListener('loom:unauthenticated', () => expire('The gateway refused the token (expired or invalid); sign in again.'));
  window.addEventListener('hashchange', render);
  try {
    await loadAccess();
  } catch (err) {
    replace(main, h('div', { class: 'error', role: 'alert' }, err.message));
    return;
  }
  render();
}

start();
