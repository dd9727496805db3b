// Sign in by pasting a bearer token (development: `loom token --role admin`).

import { h, replace } from '../dom.js';
import { signIn } from '../session.js';

export function renderSignIn(main, ctx) {
  const error = h('div', { class: 'form-error', role: 'alert', id: 'token-error' }, ctx.message || '');
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-heading' },
    h('h1', { id: 'signin-heading' }, 'Sign in'),
    h('p', {}, 'Paste a Loom bearer token. For development, mint one with ', h('code', {}, 'loom token --role admin'), '.'),
    h('label', { for: 'token' }, 'Token'),
    h('textarea', { id: 'token', name: 'token', rows: 4, required: true, spellcheck: false, autocomplete: 'off', class: 'code', 'aria-describedby': 'token-error' }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'remember' }), ' Remember on this device'),
    error,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    try {
      signIn(data.get('token'), data.get('remember') === 'on');
    } catch (err) {
      error.textContent = err.message;
      form.querySelector('textarea').setAttribute('aria-invalid', 'true');
      return;
    }
    ctx.navigate(ctx.next || '#/');
  });
  replace(main, form);
  form.querySelector('textarea').focus();
}
