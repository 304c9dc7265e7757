// The socket.io reference the gateway's socket.io mode must agree with: a
// Node socket.io 4.8 server (WebSocket transport only by default, like a
// gateway without its polling dict; TRANSPORTS=polling,websocket for both)
// whose namespaces are authorized by the real npm passport.socketio over
// connect-redis sessions, running the same test application as
// spec/support/sio_app.lua (the gateway side).  Keep the two in step.
//
// env: PORT, REDIS_PORT, SECRET (comma-separated, newest first), PREFIX
//      (default "sess:"), PING_INTERVAL, PING_TIMEOUT, CONNECT_TIMEOUT,
//      ACK_TIMEOUT (ms), ORIGINS (comma-separated allow-list; unset = any;
//      set, it is also the CORS allow-list, with credentials), TRANSPORTS
//      (comma-separated, default "websocket"), MAX_PAYLOAD (bytes, 1e6),
//      REDIS_ADAPTER (set: a cluster node of @socket.io/redis-adapter 8 over
//      the same redis-server, key ADAPTER_KEY, default "socket.io", so that
//      @socket.io/redis-emitter reaches its sockets; each socket then also
//      joins "user:<id>" of its passport user on connection, as socket.io
//      apps do by hand and as the gateway does by itself).
// Prints "listening <port>" (the adapter's subscriptions may still be on
// their way then: PUBSUB NUMSUB <key>-request#/# tells when they are made).
//
// The application (both namespaces "/" and "/admin"):
//   on connection   emit "hello" { user, nsp, auth }   (auth: the CONNECT payload)
//   "echo" ...args  ack(...args) when the client asked for an ack, else emit "echo" ...args
//   "ask" { args, timeout }   emit "question" ...args with an ack (timeout ms, default
//                   ACK_TIMEOUT), then emit "answer" ("ok" | the error message, ...reply)
//   "binary"        emit "bin" <00 01 02 ff>, { nested: "héllo" bytes, empty: <> }
//   "join" room     join it, ack("joined", room) when asked   "leave" room: the same
//   "bye"           socket.disconnect()       "bye-all": socket.disconnect(true)
//   "disconnect"    (reason) logged
// Policies: every namespace refuses a disallowed Origin ("Origin not allowed"),
// then passport.socketio's authorize; "/admin" lets in role "admin" only
// ("forbidden") and then refuses a CONNECT whose auth has block: true
// ("blocked"), a plain socket.io middleware.  Unknown namespaces: socket.io's
// own "Invalid namespace".
//
// What happened server-side, per client tag (handshake auth.tag): GET /log?tag=
// returns a JSON list like ["connect /", "ack /admin ok", "disconnect / ping timeout"].
'use strict';
const http = require('http');
const { URL } = require('url');
const { Server } = require('socket.io');
const passport = require('passport');
const passportSocketIo = require('passport.socketio');
const cookieParser = require('cookie-parser');
const { createClient } = require('redis');
const connectRedis = require('connect-redis');

const RedisStore = connectRedis.RedisStore || connectRedis.default || connectRedis;

const env = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== ''
  ? process.env[name] : dflt);
const PING_INTERVAL = Number(env('PING_INTERVAL', 25000));
const PING_TIMEOUT = Number(env('PING_TIMEOUT', 20000));
const CONNECT_TIMEOUT = Number(env('CONNECT_TIMEOUT', 45000));
const ACK_TIMEOUT = Number(env('ACK_TIMEOUT', 10000));
const SECRET = env('SECRET', 'keyboard cat').split(',');
const ORIGINS = process.env.ORIGINS
  ? new Set(process.env.ORIGINS.split(',').map((o) => o.toLowerCase())) : null;
const REDIS_ADAPTER = !!process.env.REDIS_ADAPTER;

// The app's users as its deserializeUser sees them (sio_app.lua has the same).
const USERS = new Map([
  [0, { id: 0, username: 'zero', role: 'user' }],
  [1, { id: 1, username: 'ann', role: 'admin' }],
  [2, { id: 2, username: 'bob', role: 'user' }],
  [3, { id: 3, username: 'cat', role: 'admin' }],
]);
// A copy: passport.socketio sets logged_in on what it is given.
passport.deserializeUser((id, done) => {
  const u = USERS.get(id);
  done(null, u ? { ...u } : false);
});

const logs = new Map(); // tag -> [entry]
function log(tag, entry) {
  if (tag === undefined || tag === null) return;
  const k = String(tag);
  if (!logs.has(k)) logs.set(k, []);
  logs.get(k).push(entry);
}

function app(socket) {
  const nsp = socket.nsp.name;
  const auth = socket.handshake.auth || {};
  const tag = auth.tag;
  log(tag, `connect ${nsp}`);
  const user = socket.request.user;
  if (REDIS_ADAPTER && user && user.id !== undefined) socket.join(`user:${user.id}`);
  socket.on('disconnect', (reason) => log(tag, `disconnect ${nsp} ${reason}`));
  socket.emit('hello', { user: socket.request.user, nsp, auth });

  socket.on('echo', (...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    if (ack) ack(...args);
    else socket.emit('echo', ...args);
  });
  socket.on('ask', (opts) => {
    const o = opts || {};
    const timeout = typeof o.timeout === 'number' ? o.timeout : ACK_TIMEOUT;
    socket.timeout(timeout).emit('question', ...(o.args || []), (err, ...reply) => {
      const verdict = err ? err.message : 'ok';
      log(tag, `ack ${nsp} ${verdict}`);
      socket.emit('answer', verdict, ...reply);
    });
  });
  socket.on('binary', () => {
    socket.emit('bin', Buffer.from([0, 1, 2, 255]),
      { nested: Buffer.from('h\u00e9llo', 'utf8'), empty: Buffer.alloc(0) });
  });
  socket.on('join', (room, ack) => {
    socket.join(String(room));
    if (typeof ack === 'function') ack('joined', room);
  });
  socket.on('leave', (room, ack) => {
    socket.leave(String(room));
    if (typeof ack === 'function') ack('left', room);
  });
  socket.on('bye', () => socket.disconnect());
  socket.on('bye-all', () => socket.disconnect(true));
}

// Not passport.socketio's: the gateway's Origin allow-list, as a socket.io
// middleware with the gateway's message.
function originCheck(socket, next) {
  const origin = socket.request.headers.origin;
  if (ORIGINS && origin !== undefined && !ORIGINS.has(String(origin).toLowerCase())) {
    return next(new Error('Origin not allowed'));
  }
  return next();
}

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  client.on('error', (e) => console.error('redis:', e.message));
  await client.connect();
  const store = new RedisStore({ client, prefix: env('PREFIX', 'sess:') });

  const base = {
    passport,
    cookieParser,
    key: 'connect.sid',
    secret: SECRET,
    store,
    // passport.socketio's own defaults on socket.io >= 1, spelled out
    success: (data, accept) => accept(),
    fail: (data, message, critical, accept) => accept(new Error(message)),
  };
  const authorize = passportSocketIo.authorize(base);
  const adminOnly = passportSocketIo.authorize({
    ...base,
    success: (data, accept) => (data.user && data.user.role === 'admin'
      ? accept() : accept(new Error('forbidden'))),
  });

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/log') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(logs.get(url.searchParams.get('tag')) || []));
      return;
    }
    res.writeHead(404);
    res.end('not found');
  });
  const io = new Server(server, {
    path: '/socket.io/',
    transports: env('TRANSPORTS', 'websocket').split(','),
    cors: ORIGINS ? { origin: [...ORIGINS], credentials: true } : undefined,
    serveClient: false,
    pingInterval: PING_INTERVAL,
    pingTimeout: PING_TIMEOUT,
    connectTimeout: CONNECT_TIMEOUT,
    maxHttpBufferSize: Number(env('MAX_PAYLOAD', 1e6)),
  });
  let adapterClients = [];
  if (REDIS_ADAPTER) {
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = client.duplicate();
    const sub = client.duplicate();
    pub.on('error', (e) => console.error('redis (adapter pub):', e.message));
    sub.on('error', (e) => console.error('redis (adapter sub):', e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    adapterClients = [pub, sub];
    io.adapter(createAdapter(pub, sub, { key: env('ADAPTER_KEY', 'socket.io') }));
  }

  io.of('/').use(originCheck).use(authorize).on('connection', app);
  io.of('/admin')
    .use(originCheck)
    .use(adminOnly)
    .use((socket, next) => (socket.handshake.auth && socket.handshake.auth.block
      ? next(new Error('blocked')) : next()))
    .on('connection', app);

  server.listen(Number(env('PORT', 0)), '127.0.0.1',
    () => console.log(`listening ${server.address().port}`));
  const stop = () => {
    io.close();
    Promise.allSettled([client, ...adapterClients].map((c) => c.quit())).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
