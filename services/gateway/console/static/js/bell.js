// The notification bell in the header: the signed-in caller's unread count, kept live by
// WatchNotifications (Server-Sent Events through the gateway, reconnecting when the stream
// drops), and a panel listing their inbox (what is addressed to them or to their role;
// the service decides) with mark read and mark all read.

import { get, post, stream } from './api.js';
import { h, replace, s, uuid } from './dom.js';
import { timeEl } from './format.js';
import { errorBox } from './widgets.js';

const INBOX = '/v1/inbox/notifications';
const PANEL_SIZE = 20;
let active = null; // {key, close()}

// Shows the bell for these claims (null: signed out). The stream is kept across pages and
// restarted only when the signed-in token changes.
export function showBell(claims, key, allowed) {
  if (active?.key === key && claims && allowed) return;
  active?.close();
  active = claims && allowed ? mount(key) : null;
}

function icon() {
  return s('svg', { viewBox: '0 0 24 24', width: 20, height: 20, 'aria-hidden': 'true', focusable: 'false', class: 'bell-icon' },
    s('path', { d: 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1z', fill: 'currentColor' }));
}

function mount(key) {
  const countEl = h('span', { class: 'bell-count', 'aria-hidden': 'true', hidden: true });
  const button = h('button', { type: 'button', class: 'bell-button', id: 'bell-button', 'aria-expanded': 'false', 'aria-controls': 'bell-panel',
    'aria-label': 'Notifications' }, icon(), countEl);
  const list = h('ul', { class: 'inbox-list' });
  const status = h('p', { class: 'muted small', role: 'status' });
  const markAll = h('button', { type: 'button', class: 'secondary small' }, 'Mark all read');
  const panel = h('section', { class: 'bell-panel', id: 'bell-panel', hidden: true, 'aria-labelledby': 'bell-heading', tabindex: -1 },
    h('div', { class: 'title-row' }, h('h2', { id: 'bell-heading' }, 'Notifications'), markAll), status, list);
  // Announces arrivals to screen readers without moving focus.
  const announcer = h('span', { class: 'visually-hidden', role: 'status', 'aria-live': 'polite' });
  const element = h('div', { class: 'bell', dataset: { state: 'connecting' } }, button, panel, announcer);
  const who = document.getElementById('who');
  who.parentNode.insertBefore(element, who);

  let unread = 0;
  function setCount(n) {
    unread = Math.max(0, Number(n) || 0);
    countEl.textContent = unread > 99 ? '99+' : String(unread);
    countEl.hidden = unread === 0;
    element.dataset.unread = String(unread);
    button.setAttribute('aria-label', `Notifications, ${unread} unread`);
  }
  setCount(0);

  function item(n) {
    const read = !!n.readTime;
    const mark = h('button', { type: 'button', class: 'secondary small', 'aria-label': `Mark read: ${n.subject}`, hidden: read }, 'Mark read');
    const li = h('li', { class: read ? 'read' : 'unread', dataset: { notificationId: n.notificationId } },
      h('div', { class: 'inbox-subject' }, read ? null : h('span', { class: 'visually-hidden' }, 'Unread: '), n.subject),
      n.body ? h('div', { class: 'inbox-body small' }, n.body) : null,
      h('div', { class: 'muted small' }, timeEl(n.createTime), ' · to ', n.recipientUser || `every ${n.recipientRole}`),
      mark);
    mark.addEventListener('click', async () => {
      mark.disabled = true;
      try {
        const reply = await post(`${INBOX}/${encodeURIComponent(n.notificationId)}:markRead`, { requestId: uuid() });
        setCount(reply.unreadCount);
        li.replaceWith(item(reply.notification));
        (list.querySelector('li.unread button') || markAll).focus();
      } catch (err) {
        mark.disabled = false;
        replace(status, errorBox(err));
      }
    });
    return li;
  }

  async function load() {
    status.textContent = 'Loading…';
    try {
      const reply = await get(INBOX, { pageSize: PANEL_SIZE });
      setCount(reply.unreadCount);
      const items = reply.notifications || [];
      replace(list, items.map(item));
      status.textContent = items.length ? `${unread} unread${reply.nextPageToken ? `; the newest ${items.length} shown` : ''}.` : 'No notifications.';
    } catch (err) {
      replace(status, errorBox(err));
    }
  }

  markAll.addEventListener('click', async () => {
    markAll.disabled = true;
    try {
      await post(`${INBOX}:markAllRead`, { requestId: uuid() });
      await load(); // the list and the count after it, from one answer
    } catch (err) {
      replace(status, errorBox(err));
    } finally {
      markAll.disabled = false;
    }
  });

  function open(show) {
    panel.hidden = !show;
    button.setAttribute('aria-expanded', String(show));
    if (show) {
      load();
      panel.focus();
    }
  }
  button.addEventListener('click', () => open(panel.hidden));
  element.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) {
      open(false);
      button.focus();
    }
  });
  const outside = (e) => {
    if (!panel.hidden && !element.contains(e.target)) open(false);
  };
  document.addEventListener('click', outside);

  const watch = stream(`${INBOX}:watch`, {}, {
    onMessage: (message) => {
      setCount(message.unreadCount);
      element.dataset.counted = 'true'; // the stream's first message (the count) has arrived
      const n = message.notification;
      if (!n) return;
      announcer.textContent = `New notification: ${n.subject}`;
      if (!panel.hidden && !list.querySelector(`li[data-notification-id="${CSS.escape(n.notificationId)}"]`)) {
        list.prepend(item(n));
        status.textContent = `${unread} unread.`;
      }
    },
    onStatus: (state) => { element.dataset.state = state; },
  });

  return {
    key,
    close() {
      watch.close();
      document.removeEventListener('click', outside);
      element.remove();
    },
  };
}
