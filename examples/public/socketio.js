// The socket.io page (socketio.html): the real socket.io-client, connected to
// nginx's own socket.io server (examples/socketio/nginx.conf), with the
// client's default transports: HTTP long-polling, then the upgrade to a
// WebSocket.
'use strict';
/* global io, $, log, setState, whoami */
const OPTIONS = { reconnectionAttempts: 3 };
let main = null;
let admin = null;

function setAdmin(text, cls) {
  $('admin-state').textContent = text;
  $('admin-state').className = cls || '';
}

// Connects whether or not you are logged in, to show the gateway's verdict:
// a refused handshake is socket.io's connect_error, with passport.socketio's
// message ("No session found", ...) as err.message.
function connect() {
  setState('connecting…');
  setAdmin('connecting…');
  log('socket.io: connecting to / and /admin through the gateway (one connection)');
  main = io('/', OPTIONS);
  main.on('connect', () => {
    const engine = main.io.engine;
    log(`socket.io: connected to / (${engine.transport.name}, id ${main.id})`, 'ok');
    engine.once('upgrade', (t) => log(`socket.io: upgraded to ${t.name}`, 'ok'));
  });
  main.io.on('reconnect_attempt', (n) => log(`socket.io: reconnecting (attempt ${n})`));
  main.on('hello', (m) => {
    setState('accepted by the gateway', 'ok');
    $('greeting').textContent = m.text;
    $('rooms').textContent = `socket ${m.id}, in the rooms ${m.rooms.join(', ')}`;
    log(`gateway: ${m.text}`, 'ok');
  });
  main.on('notice', (m) => log(`notice from ${m.from} to the ${m.role} role: ${m.text}`
    + (m.via ? ` (via ${m.via})` : ''), 'ok'));
  main.on('connect_error', (err) => {
    setState(`rejected by the gateway: connect_error "${err.message}"`, 'bad');
    log(`socket.io: connect_error on /: ${err.message}`, 'bad');
  });
  main.on('disconnect', (reason) => {
    // "io server disconnect": the gateway said DISCONNECT (a logout ended
    // the session); socket.io-client does not reconnect after it.
    setState(reason === 'io server disconnect' ? `disconnected by the gateway: ${reason}`
      : `disconnected: ${reason}`, 'bad');
    log(`socket.io: disconnected from / (${reason})`, reason === 'io server disconnect' ? 'ok' : 'bad');
  });

  // The same connection, another namespace: only admins get in.
  admin = io('/admin', OPTIONS);
  admin.on('connect', () => {
    setAdmin('joined: the admin policy let you in', 'ok');
    $('announce').hidden = false;
  });
  admin.on('connect_error', (err) => setAdmin(`refused: connect_error "${err.message}"`, 'bad'));
  admin.on('disconnect', (reason) => {
    setAdmin(`disconnected: ${reason}`, 'bad');
    $('announce').hidden = true;
    $('announce-result').textContent = '';
  });
}

// An admin's announcement: an event with an ack; the gateway's Lua calls
// passport.emit{ filter = role, event = "notice" } and acks what it did.
$('announce').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const msg = { role: $('announce-role').value, text: $('announce-text').value };
  try {
    const r = await admin.timeout(5000).emitWithAck('announce', msg);
    $('announce-result').textContent = r.published ? `published: ${r.workers} gateway worker(s) subscribed`
      : `refused: ${r.error}`;
  } catch (e) {
    $('announce-result').textContent = `no ack: ${e.message}`;
  }
});

// The same announcement made by the Express app instead (POST /broadcast):
// it pushes with socket.io's own Redis emitter, which the gateway receives.
$('broadcast-button').addEventListener('click', async () => {
  const body = new URLSearchParams({ text: $('announce-text').value });
  const r = await fetch('/broadcast', { method: 'POST', headers: { accept: 'application/json' }, body });
  $('announce-result').textContent = r.ok ? 'the app published it with @socket.io/redis-emitter'
    : `the app refused: ${r.status}`;
});

// Log out without leaving the page, to watch the gateway disconnect the socket.
$('logout').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const r = await fetch('/logout', { method: 'POST', headers: { accept: 'application/json' } });
  log(`POST /logout: ${r.status}`);
  await whoami();
});

whoami().then(connect);
