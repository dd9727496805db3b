// Formatting in the viewer's locale and time zone.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dateTimeSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'medium' });
const dayOnly = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const number = new Intl.NumberFormat();

export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

export function time(iso, { seconds = false } = {}) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '—' : (seconds ? dateTimeSeconds : dateTime).format(d);
}

export function day(isoOrDate) {
  const d = typeof isoOrDate === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(isoOrDate)
    ? new Date(`${isoOrDate}T00:00:00Z`)
    : new Date(isoOrDate);
  return dayOnly.format(d);
}

// A <time> element: the local time as text, the instant in `datetime` and the title.
export function timeEl(iso, options) {
  const el = document.createElement('time');
  el.textContent = time(iso, options);
  if (iso) {
    el.dateTime = iso;
    el.title = `${new Date(iso).toISOString()} (UTC)`;
  }
  return el;
}

export function count(n) {
  return number.format(Number(n || 0));
}

export function percent(ratio, digits = 0) {
  return `${(Number(ratio || 0) * 100).toFixed(digits)}%`;
}

export function seconds(value) {
  const s = Number(value || 0);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s % 60)} s`;
}

// "2 d 3 h", "5 h 12 min", "42 s"; negative spans read "closed".
export function span(ms) {
  if (ms <= 0) return 'closed';
  const total = Math.floor(ms / 1000);
  const d = Math.floor(total / 86400);
  const hrs = Math.floor((total % 86400) / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${min} min`;
  if (min) return `${min} min ${sec} s`;
  return `${sec} s`;
}

export function relative(iso) {
  if (!iso) return '';
  const ms = new Date(iso).getTime() - Date.now();
  return ms >= 0 ? `in ${span(ms)}` : `${span(-ms)} ago`;
}

// 'BATCH_STATUS_AWAITING_SUPPLIER' with prefix 'BATCH_STATUS_' -> 'awaiting supplier'.
export function enumName(value, prefix) {
  if (!value) return 'unspecified';
  return String(value).replace(prefix, '').toLowerCase().replace(/_/g, ' ');
}
