// Shared by both pages: who the Express app says you are (GET /me through the
// gateway), the login/logout forms, and the event log.
'use strict';
const $ = (id) => document.getElementById(id);

function log(text, cls) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (cls) li.className = cls;
  $('log').appendChild(li);
}

function setState(text, cls) {
  $('state').textContent = text;
  $('state').className = cls || '';
}

// Shows the login form or the logout button; resolves to the user or null.
async function whoami() {
  const error = new URLSearchParams(location.search).get('error');
  if (error) log(`login failed: ${error}`, 'bad');
  let user = null;
  try {
    const r = await fetch('/me', { credentials: 'same-origin' });
    user = (await r.json()).user;
  } catch (e) {
    log(`GET /me failed: ${e.message}`, 'bad');
  }
  $('me').textContent = user ? `${user.name} (${user.role})` : 'nobody (not logged in)';
  $('login').hidden = !!user;
  $('logout').hidden = !user;
  for (const f of document.querySelectorAll('input[name=next]')) f.value = location.pathname;
  return user;
}
