// The client half of `make demo`: logs a demo user in through the gateway,
// connects real clients through it and prints what happened.
//
//   node demo.js guard     http://127.0.0.1:<gateway port>   socket.io-client
//   node demo.js terminate http://127.0.0.1:<gateway port>   a plain WebSocket (npm ws)
//   node demo.js socketio  http://127.0.0.1:<gateway port>   socket.io-client, to nginx itself
//
// Each outcome is printed as "[ok]" when it is what the gateway should do and
// "[FAIL]" otherwise; the exit status is 0 only when every one was [ok].
'use strict';
const { io, Manager } = require('socket.io-client');
const WebSocket = require('ws');
const signature = require('cookie-signature'); // express-session's own signer

const [mode, base] = process.argv.slice(2);
const USER = { name: 'alice', password: 'wonderland' };
const TIMEOUT = 5000;
let failures = 0;

const pad = (s, n) => s + ' '.repeat(Math.max(1, n - s.length));
function report(ok, what, detail, more = []) {
  if (!ok) failures += 1;
  console.log(`  ${pad(ok ? '[ok]' : '[FAIL]', 7)}${pad(what, 31)}${detail}`);
  for (const line of more) console.log(`  ${' '.repeat(38)}${line}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// POST a form through the gateway, asking for JSON.
async function post(path, form, cookie) {
  const headers = { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' };
  if (cookie) headers.cookie = cookie;
  const res = await fetch(base + path, { method: 'POST', headers, body: new URLSearchParams(form), redirect: 'manual' });
  return { status: res.status, body: await res.json().catch(() => null), setCookie: res.headers.getSetCookie() };
}

async function login() {
  const r = await post('/login', { username: USER.name, password: USER.password });
  const cookie = (r.setCookie.find((c) => c.startsWith('connect.sid=')) || '').split(';')[0];
  if (r.status !== 200 || !cookie) throw new Error(`login failed: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  console.log(`  logged in as ${r.body.user.name} through the gateway (POST /login): ${cookie.slice(0, 24)}…`);
  return cookie;
}

// The session id inside a connect.sid cookie ("connect.sid=s%3A<sid>.<sig>").
function sidOf(cookie) {
  const signed = decodeURIComponent(cookie.split('=')[1]);
  return signed.slice(2, signed.lastIndexOf('.'));
}

// The same cookie with one character of its signature changed.
function tamper(cookie) {
  const last = cookie.slice(-1);
  return cookie.slice(0, -1) + (last === 'A' ? 'B' : 'A');
}

// ---- guard mode: socket.io through auth:access() ---------------------------

// Resolves { socket, hello } or { error, status, message }.
function sioConnect(cookie, origin) {
  return new Promise((resolve) => {
    const extraHeaders = {};
    if (cookie) extraHeaders.cookie = cookie;
    if (origin) extraHeaders.origin = origin;
    const socket = io(base, { extraHeaders, reconnection: false, timeout: TIMEOUT });
    const timer = setTimeout(() => { socket.close(); resolve({ error: 'timeout', message: 'no answer' }); }, TIMEOUT);
    socket.on('hello', (hello) => { clearTimeout(timer); resolve({ socket, hello }); });
    socket.on('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      let message = err.message;
      try { message = JSON.parse(err.context.responseText).error || message; } catch (e) { /* not JSON */ }
      resolve({ error: err.message, status: typeof err.description === 'number' ? err.description : null, message });
    });
  });
}

// Waits for a socket.io client to finish upgrading from long-polling.
async function transportOf(socket) {
  for (let i = 0; i < 40 && socket.io.engine && socket.io.engine.transport.name !== 'websocket'; i += 1) await sleep(50);
  return socket.io.engine ? socket.io.engine.transport.name : 'closed';
}

function rejected(r, status, message) {
  return !r.socket && r.status === status && r.message === message;
}
const verdict = (r) => (r.socket ? 'connected!' : `${r.status || r.error} ${r.message}`);

async function guard() {
  const cookie = await login();

  const a = await sioConnect(cookie);
  const transport = a.socket ? await transportOf(a.socket) : null;
  const user = a.socket ? JSON.parse(a.hello.headers['x-passport-user']) : null;
  report(!!a.socket && user.name === USER.name && a.hello.headers['x-passport-logged-in'] === 'true',
    'accepted as the user', a.socket ? `socket.io (${transport}); the app says: "${a.hello.text}"` : verdict(a),
    a.socket ? [`X-Passport-User: ${a.hello.headers['x-passport-user']}`,
      `X-Passport-Logged-In: ${a.hello.headers['x-passport-logged-in']}`] : []);

  const b = await sioConnect(null);
  report(rejected(b, 401, 'No session found'), 'rejected without a cookie', verdict(b));


  const c = await sioConnect(tamper(cookie));
  report(rejected(c, 401, 'No session found'), 'rejected, tampered cookie', verdict(c));

  const o = await sioConnect(cookie, 'https://evil.example');
  report(rejected(o, 403, 'Origin not allowed'), 'rejected, foreign Origin', verdict(o));

  // Secret rotation: the same session signed with the older secret of the
  // list (as a cookie from before the rotation would be) still verifies.
  const secrets = (process.env.SECRET || '').split(',');
  if (secrets.length > 1) {
    const sid = sidOf(cookie);
    const old = `connect.sid=${encodeURIComponent(`s:${signature.sign(sid, secrets[secrets.length - 1])}`)}`;
    const r = await sioConnect(old);
    report(!!r.socket, 'accepted, older secret', r.socket
      ? `the same session signed with "${secrets[secrets.length - 1]}" (secret = { ${secrets.map((x) => `"${x}"`).join(', ')} })`
      : verdict(r));
    if (r.socket) r.socket.close();
  }

  // Logout.  In guard mode the gateway checks handshakes and the app holds
  // the socket: an open socket.io connection is the app's to close.
  const out = await post('/logout', {}, cookie);
  await sleep(500);
  const stillOpen = !!(a.socket && a.socket.connected);
  const d = await sioConnect(cookie);
  report(out.status === 200 && rejected(d, 401, 'No session found'), 'logged out: handshake refused',
    `POST /logout, then the same cookie: ${verdict(d)}`,
    [stillOpen ? 'the socket opened before the logout is still connected: guard mode checks'
      : 'the socket opened before the logout was closed',
    stillOpen ? 'handshakes only (terminate mode below closes it on logout, code 4401)' : '']
      .filter(Boolean));
  if (a.socket) a.socket.close();
}

// ---- terminate mode: the gateway holds a plain WebSocket --------------------

// Resolves { ws, greeting } or { status, message } (the HTTP refusal).
function wsConnect(cookie, origin, path = '/ws') {
  return new Promise((resolve) => {
    const headers = {};
    if (cookie) headers.cookie = cookie;
    if (origin) headers.origin = origin;
    const ws = new WebSocket(base.replace(/^http/, 'ws') + path, { headers, handshakeTimeout: TIMEOUT });
    const timer = setTimeout(() => { ws.terminate(); resolve({ status: 'timeout', message: 'no greeting' }); }, TIMEOUT);
    const messages = [];
    ws.on('message', (data) => {
      messages.push(JSON.parse(data.toString()));
      if (messages.length === 1) { clearTimeout(timer); resolve({ ws, greeting: messages[0], messages }); }
    });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        clearTimeout(timer);
        let message = body;
        try { message = JSON.parse(body).error; } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, message });
      });
    });
    ws.on('error', (err) => { clearTimeout(timer); resolve({ status: 'error', message: err.message }); });
  });
}
const wsVerdict = (r) => (r.ws ? 'connected!' : `${r.status} ${r.message}`);
const wsRejected = (r, status, message) => !r.ws && r.status === status && r.message === message;

// Waits until pred() holds (or ms pass); returns whether it held.
async function until(pred, ms = TIMEOUT) {
  for (let t = 0; t < ms && !pred(); t += 50) await sleep(50);
  return !!pred();
}

async function terminate() {
  const cookie = await login();

  const a = await wsConnect(cookie);
  report(!!a.ws && a.greeting.type === 'hello' && a.greeting.user.name === USER.name, 'accepted as the user',
    a.ws ? `WebSocket held by nginx; it says: "${a.greeting.text}"` : wsVerdict(a));

  const b = await wsConnect(null);
  report(wsRejected(b, 401, 'No session found'), 'rejected without a cookie', wsVerdict(b));

  const c = await wsConnect(tamper(cookie));
  report(wsRejected(c, 401, 'No session found'), 'rejected, tampered cookie', wsVerdict(c));

  // passport.emit from Lua: alice (admin) announces to the role "user"; bob
  // (a user, maybe on the other worker) gets it, alice does not; bob may not announce.
  const bobCookie = (await post('/login', { username: 'bob', password: 'builder' })).setCookie[0].split(';')[0];
  const bob = await wsConnect(bobCookie);
  const sent = await post('/admin/announce', { role: 'user', text: 'maintenance at 18:00' }, cookie);
  const got = (r) => r.ws && r.messages.some((m) => m.type === 'announcement');
  const bobGot = await until(() => got(bob), 2000);
  await sleep(200);
  report(sent.status === 200 && bobGot && a.ws && !got(a), 'emit to a role (admin only)',
    `POST /admin/announce role=user as alice: ${sent.status}, published to ${sent.body && sent.body.workers} worker(s);`,
    [`bob (user) got it: ${bobGot}; alice (admin) got it: ${!!got(a)}`]);
  const refused = await post('/admin/announce', { role: 'user', text: 'hi' }, bobCookie);
  report(refused.status === 403 && refused.body && refused.body.error === 'handshake unauthorized',
    'emit refused to a non-admin', `POST /admin/announce as bob: ${refused.status} ${refused.body && refused.body.error}`);
  if (bob.ws) bob.ws.terminate();

  // Logout: the session ends in Redis, the gateway closes the user's sockets.
  let closed = null;
  if (a.ws) {
    const gone = new Promise((resolve) => a.ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    const out = await post('/logout', {}, cookie);
    closed = await Promise.race([gone, sleep(TIMEOUT).then(() => null)]);
    if (out.status !== 200) closed = null;
  }
  report(!!closed && closed.code === 4401, 'disconnected after logout',
    closed ? `POST /logout; the open WebSocket was closed: ${closed.code} ${closed.reason}`
      : 'POST /logout; the open WebSocket was NOT closed');
  if (a.ws) a.ws.terminate();
}

// ---- socketio mode: the gateway speaks socket.io itself ---------------------

// One connection, as a browser tab has: the namespaces it joins share it.
// The client's default transports (long-polling, then the WebSocket).
// Reconnection stays on, as in a browser, to show that a logout's
// disconnect is final.
function sioManager(cookie, origin) {
  const extraHeaders = {};
  if (cookie) extraHeaders.cookie = cookie;
  if (origin) extraHeaders.origin = origin;
  const manager = new Manager(base, {
    extraHeaders, timeout: TIMEOUT,
    reconnectionDelay: 200, reconnectionDelayMax: 400,
  });
  manager.attempts = 0;
  manager.on('reconnect_attempt', () => { manager.attempts += 1; });
  return manager;
}

// Joins namespace nsp on the connection: resolves { socket, events, greeting }
// once connected (and, with greeting, once that event came), or { error, data }
// from connect_error (the gateway's CONNECT_ERROR: err.message is its message).
function sioJoin(manager, nsp, greeting) {
  return new Promise((resolve) => {
    const socket = manager.socket(nsp);
    const events = [];
    socket.onAny((event, ...args) => events.push({ event, args }));
    const timer = setTimeout(() => { socket.close(); resolve({ error: 'timeout: no answer' }); }, TIMEOUT);
    const done = (r) => { clearTimeout(timer); resolve(r); };
    if (greeting) socket.once(greeting, (g) => done({ socket, events, greeting: g }));
    else socket.once('connect', () => done({ socket, events }));
    socket.once('connect_error', (err) => { socket.close(); done({ error: err.message, data: err.data }); });
  });
}
const sioVerdict = (r) => (r.socket ? 'connected!' : `connect_error "${r.error}"`);
const sioRefused = (r, message) => !r.socket && r.error === message;

async function socketio() {
  const cookie = await login();
  const alice = sioManager(cookie);
  const a = await sioJoin(alice, '/', 'hello');
  const hello = (a.socket && a.greeting) || {};
  const rooms = Array.isArray(hello.rooms) ? hello.rooms : [];
  const me = hello.user || {};
  const shown = rooms.filter((r) => r !== hello.id).map((r) => (r.startsWith('session:') ? `${r.slice(0, 16)}…` : r));
  const transport = a.socket ? await transportOf(a.socket) : null;
  report(me.name === USER.name && rooms.includes(`user:${me.id}`) && rooms.includes(`session:${sidOf(cookie)}`)
    && transport === 'websocket',
    'accepted as the user',
    a.socket ? `socket.io (polling, upgraded to ${transport}) held by nginx; it says: "${hello.text}"`
      : sioVerdict(a),
    a.socket ? [`socket ${hello.id}; rooms: ${shown.join(', ')} (and its own id)`] : []);

  // A refused handshake: socket.io-client's connect_error, with the message
  // passport.socketio would give.
  const b = await sioJoin(sioManager(null), '/', 'hello');
  report(sioRefused(b, 'No session found'), 'refused without a session', sioVerdict(b));

  const c = await sioJoin(sioManager(tamper(cookie)), '/', 'hello');
  report(sioRefused(c, 'No session found'), 'refused, tampered cookie', sioVerdict(c));

  const o = await sioJoin(sioManager(cookie, 'https://evil.example'), '/', 'hello');
  report(sioRefused(o, 'Origin not allowed'), 'refused, foreign Origin', sioVerdict(o));

  // Namespaces: "/admin" runs the admin policy (an authorize object as
  // middleware) over the same session.
  const bobCookie = (await post('/login', { username: 'bob', password: 'builder' })).setCookie[0].split(';')[0];
  const bobs = sioManager(bobCookie);
  const bob = await sioJoin(bobs, '/', 'hello');
  const bobAdmin = await sioJoin(bobs, '/admin');
  report(!!bob.socket && sioRefused(bobAdmin, 'handshake unauthorized'), '/admin refused to a non-admin',
    `bob (user) joins /: ${bob.socket ? 'yes' : sioVerdict(bob)}; /admin: ${sioVerdict(bobAdmin)}`);

  // passport.emit from Lua: alice (admin) asks the gateway on /admin to
  // announce to a role; the "notice" event reaches that role's sockets on
  // "/", on every worker.
  const aliceAdmin = await sioJoin(alice, '/admin');
  const notices = (r, text) => (r.socket
    ? r.events.filter((e) => e.event === 'notice' && (e.args[0] || {}).text === text).length : 0);
  const lines = [];
  let ok = !!aliceAdmin.socket && !!bob.socket;
  for (const [role, to] of [['admin', a], ['user', bob]]) {
    const text = `to the ${role}s`;
    const ack = (!aliceAdmin.socket ? { error: sioVerdict(aliceAdmin) }
      : await aliceAdmin.socket.timeout(TIMEOUT).emitWithAck('announce', { role, text })
        .catch((e) => ({ error: e.message }))) || { error: 'an empty ack' };
    const arrived = await until(() => notices(to, text) > 0, 2000);
    await sleep(200); // time for a wrong one to arrive too
    const [na, nb] = [notices(a, text), notices(bob, text)];
    ok = ok && !!ack.published && arrived && na === (role === 'admin' ? 1 : 0) && nb === (role === 'user' ? 1 : 0);
    lines.push(`role "${role}": ${ack.published ? `ack: published to ${ack.workers} worker(s)` : `ack: ${ack.error}`};`
      + ` alice (admin) got it: ${na > 0}, bob (user): ${nb > 0}`);
  }
  report(ok, 'emit to a role', 'alice on /admin: "announce" { role, text } → passport.emit{ filter = role }', lines);

  // The Express app pushes: POST /broadcast (admins only) publishes with
  // socket.io's own Redis emitter; the gateway's workers receive it and
  // deliver to every socket they hold on "/", as a socket.io server with
  // the Redis adapter would.
  {
    const text = 'from the app';
    const r = await post('/broadcast', { text }, cookie);
    const arrived = await until(() => notices(a, text) > 0 && notices(bob, text) > 0, 2000);
    const via = a.socket && (a.events.find((e) => e.event === 'notice' && (e.args[0] || {}).text === text) || {}).args;
    report(r.status === 200 && arrived, 'the app pushes (Redis emitter)',
      `POST /broadcast → emitter.emit("notice") in the app → alice: ${notices(a, text) > 0}, bob: ${notices(bob, text) > 0}`,
      [`via ${via ? via[0].via : 'nothing'}`]);
  }

  // Logout: the session ends in Redis; the gateway sends DISCONNECT to each
  // namespace of the user's connections and closes them.  socket.io-client
  // calls that "io server disconnect" and does not reconnect.
  let reason = null;
  let adminReason = null;
  let out = null;
  if (a.socket) {
    const gone = (s) => new Promise((resolve) => s.once('disconnect', resolve));
    const both = Promise.all([gone(a.socket), aliceAdmin.socket ? gone(aliceAdmin.socket) : null]);
    out = await post('/logout', {}, cookie);
    [reason, adminReason] = await Promise.race([both, sleep(TIMEOUT).then(() => [null, null])]);
    await sleep(1000); // a reconnection would have started by now
  }
  const bobConnected = !!bob.socket && bob.socket.connected;
  report(!!out && out.status === 200 && reason === 'io server disconnect' && adminReason === reason
    && alice.attempts === 0 && !a.socket.connected && bobConnected, 'disconnected after logout',
    reason ? `POST /logout; disconnect reason: "${reason}"${adminReason === reason ? ' (on / and /admin)'
      : ` (/admin: "${adminReason}")`}` : 'POST /logout; the socket was NOT disconnected',
    [`reconnect attempts since: ${alice.attempts}; bob, still logged in, still connected: ${bobConnected}`]);
  if (bob.socket) bob.socket.close();
  if (a.socket) a.socket.close();
}

const run = { guard, terminate, socketio }[mode];
if (!run || !base) {
  console.error('usage: node demo.js guard|terminate|socketio <gateway base URL>');
  process.exit(2);
}
run().then(() => process.exit(failures ? 1 : 0), (e) => {
  console.log(`  [FAIL] ${e.message}`);
  process.exit(1);
});
