// bench-sockets' socket.io 4 side: the same sessions (connect-redis records
// read by express-session through socket.io's documented recipe,
// io.engine.use(session) + passport.session()), each socket joins the room
// of its user's group, and:
//   GET /emit    io.to("even").emit(...) (or one user's room, see /mode);
//                answers how many sockets should receive it
//   GET /mode?m=room|user
//   GET /filter  the same predicate over every socket (the passport.socketio
//                filterSocketsByUser way): {"ms": per call, "matched": n}
// With EMITTER_KEY set, the server also runs @socket.io/redis-adapter on
// that key, so what @socket.io/redis-emitter publishes there (bench-sockets'
// emitter row, bench/sockets/emitter.js) reaches its sockets.  /emit then
// emits with io.local: the same local delivery as without the adapter, and
// no publish of its own, so the other rows measure the same work either way.
// env: PORT, REDIS_PORT, SECRET, EMITTER_KEY (unset: no adapter).
'use strict';
const http = require('http');
const express = require('express');
const session = require('express-session');
const passport = require('passport');
const { createClient } = require('redis');
const connectRedis = require('connect-redis');
const { Server } = require('socket.io');

const RedisStore = connectRedis.RedisStore || connectRedis.default || connectRedis;
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, { id, group: id % 2 === 0 ? 'even' : 'odd' }));

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  await client.connect();
  const sessionMiddleware = session({
    store: new RedisStore({ client, prefix: 'sess:' }), secret: process.env.SECRET,
    resave: false, saveUninitialized: false,
  });
  const app = express();
  const server = http.createServer(app);
  const io = new Server(server);
  const emitterKey = process.env.EMITTER_KEY;
  if (emitterKey) {
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = client.duplicate();
    const sub = client.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    const numpat = async () => Number(await client.sendCommand(['PUBSUB', 'NUMPAT']));
    const before = await numpat();
    io.adapter(createAdapter(pub, sub, { key: emitterKey }));
    // the adapter subscribes without a promise to wait for: wait until Redis
    // counts its pattern, so "listening" means an emitter publish arrives
    for (let i = 0; i < 200; i++) {
      if (await numpat() > before) break;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const broadcaster = emitterKey ? io.local : io;
  const onlyForHandshake = (mw) => (req, res, next) => (req._query.sid === undefined ? mw(req, res, next) : next());
  io.engine.use(onlyForHandshake(sessionMiddleware));
  io.engine.use(onlyForHandshake(passport.session()));
  io.engine.use(onlyForHandshake((req, res, next) => {
    if (req.user) return next();
    res.writeHead(401); return res.end();
  }));
  io.on('connection', (socket) => {
    const u = socket.request.user;
    socket.join(u.group);
    socket.join(`user:${u.id}`);
    socket.emit('hello', { id: u.id });
  });
  let mode = 'room';
  app.get('/mode', (req, res) => { mode = req.query.m; res.end('ok'); });
  app.get('/emit', (req, res) => {
    const room = mode === 'room' ? 'even' : 'user:0';
    const n = (io.sockets.adapter.rooms.get(room) || new Set()).size;
    broadcaster.to(room).emit('news', { n });
    res.end(String(n));
  });
  app.get('/filter', (req, res) => {
    const reps = 20;
    let matched = 0;
    const t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) {
      matched = 0;
      for (const s of io.sockets.sockets.values()) if (s.request.user.group === 'even') matched++;
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6 / reps;
    res.json({ ms, matched });
  });
  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  process.on('SIGTERM', () => process.exit(0));
}
main().catch((e) => { console.error(e); process.exit(1); });
