// The signed-in token. Kept in sessionStorage (this tab only) unless the user asks
// to be remembered on this device. The payload is decoded for display and role
// checks only; the services verify the signature on every call.

const KEY = 'loom.token';

function decodePayload(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('a token has three dot-separated parts');
  const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
  const json = new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)));
  const claims = JSON.parse(json);
  if (typeof claims.role !== 'string' || typeof claims.sub !== 'string') throw new Error('the token names no role or subject');
  return claims;
}

// Returns the claims, or throws with a human message for a malformed or expired token.
export function inspect(token) {
  let claims;
  try {
    claims = decodePayload(token.trim());
  } catch (err) {
    throw new Error(`This is not a Loom token (${err.message}).`);
  }
  if (claims.exp && claims.exp * 1000 <= Date.now()) throw new Error('This token has expired; mint a new one.');
  return claims;
}

export function signIn(token, remember) {
  inspect(token);
  signOut();
  (remember ? localStorage : sessionStorage).setItem(KEY, token.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

// {sub, role, exp} of the current token, or null when signed out or expired.
export function current() {
  const t = token();
  if (!t) return null;
  try {
    return inspect(t);
  } catch {
    signOut();
    return null;
  }
}
