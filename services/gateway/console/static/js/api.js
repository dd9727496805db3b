// The gateway's public JSON API: canonical protobuf JSON over the routes the protos declare.

import { token } from './session.js';

const BAD_REQUEST = 'type.googleapis.com/google.rpc.BadRequest';

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.details = body?.details || [];
    this.retryAfter = retryAfter;
    // [{field, description}] from google.rpc.BadRequest details.
    this.violations = this.details
      .filter((d) => d['@type'] === BAD_REQUEST)
      .flatMap((d) => d.fieldViolations || [])
      .map((v) => ({ field: v.field || '', description: v.description || v.reason || '' }));
  }
}

export function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === '' || value === false) continue;
    params.append(key, String(value));
  }
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

function headers(extra = {}) {
  const t = token();
  return { accept: 'application/json', ...(t ? { authorization: `Bearer ${t}` } : {}), ...extra };
}

function unauthenticated() {
  window.dispatchEvent(new CustomEvent('loom:unauthenticated'));
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { message: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) unauthenticated();
  return new ApiError(response.status, body, response.headers.get('retry-after'));
}

export async function api(method, path, { query, body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? {} : response.json();
}

export const get = (path, query, signal) => api('GET', path, { query, signal });
export const post = (path, body, query) => api('POST', path, { body, query });
export const patch = (path, body, query) => api('PATCH', path, { body, query });

// Reads a Server-Sent Events body, calling onEvent(name, payload) per event with JSON data.
// 'end' (a finished stream) and keepalive comments are not events.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
}

function dispatch(block, onEvent) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length || event === 'end') return;
  let payload;
  try {
    payload = JSON.parse(data.join('\n'));
  } catch {
    return;
  }
  if (event === 'error' || (payload.error && !payload.result)) onEvent('error', payload.error || payload);
  else onEvent('message', payload.result || payload);
}

// Follows a server-streaming RPC served as Server-Sent Events. EventSource cannot send
// an Authorization header, so this reads the stream with fetch. Reconnects with backoff
// until closed; onStatus gets 'live', 'reconnecting' or 'closed'.
export function stream(path, query, { onMessage, onStatus = () => {}, onError = () => {} }) {
  const controller = new AbortController();
  let delay = 500;

  async function once() {
    const response = await fetch(url(path, query), {
      headers: headers({ accept: 'text/event-stream' }),
      signal: controller.signal,
      cache: 'no-store',
    });
    if (!response.ok) throw await failure(response);
    onStatus('live');
    delay = 500;
    await readEvents(response, (event, payload) => (event === 'error' ? onError(new ApiError(0, payload)) : onMessage(payload)));
  }

  (async () => {
    while (!controller.signal.aborted) {
      try {
        await once();
      } catch (err) {
        if (controller.signal.aborted) break;
        if (err instanceof ApiError && [401, 403, 404].includes(err.status)) {
          onError(err);
          break;
        }
      }
      if (controller.signal.aborted) break;
      onStatus('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
    onStatus('closed');
  })();

  return { close: () => controller.abort() };
}

// One server-streaming call with a JSON body (e.g. POST /v1/rules:replay), read to its end:
// resolves when the stream ends, rejects with the ApiError it ended with. No reconnecting.
export async function streamOnce(method, path, body, { onMessage, signal }) {
  const response = await fetch(path, {
    method,
    headers: headers({ accept: 'text/event-stream', 'content-type': 'application/json' }),
    body: JSON.stringify(body),
    signal,
    cache: 'no-store',
  });
  if (!response.ok) throw await failure(response);
  let failed = null;
  await readEvents(response, (event, payload) => {
    if (event === 'error') failed = new ApiError(0, payload);
    else if (!failed) onMessage(payload);
  });
  if (failed) throw failed;
}

// Every page of a List RPC (bounded), concatenating the named repeated field.
export async function listAll(path, query, field, { maxPages = 20, signal } = {}) {
  const items = [];
  let pageToken = '';
  for (let page = 0; page < maxPages; page++) {
    const reply = await get(path, { ...query, pageToken }, signal);
    items.push(...(reply[field] || []));
    pageToken = reply.nextPageToken;
    if (!pageToken) break;
  }
  return items;
}
