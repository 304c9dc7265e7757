// The Node side of the integration specs: an Express app with
// express-session + connect-redis + passport-local, and a socket.io 4
// server that reports the identity headers the gateway sent it.
// env: PORT, REDIS_PORT, SECRET (comma-separated, newest first), PREFIX.
// Redis high availability (spec/support/redis_ha.lua), instead of REDIS_PORT:
//   REDIS_SENTINELS="127.0.0.1:p1,..." + REDIS_MASTER_NAME: node-redis 5's
//     Sentinel client (npm alias "redis5"), which follows a failover;
//   REDIS_CLUSTER="127.0.0.1:p1,...": node-redis 4's cluster client;
//   REDIS_PASSWORD: the nodes' password, for these two.
// USERS_N=1000: also users u1..uN (password "pw", ids 1001..1000+N).
'use strict';
const http = require('http');
const express = require('express');
const session = require('express-session');
const passport = require('passport');
const LocalStrategy = require('passport-local').Strategy;
const { createClient } = require('redis');
const connectRedis = require('connect-redis');
const { Server } = require('socket.io');

const RedisStore = connectRedis.RedisStore || connectRedis.default || connectRedis;

// id 0 is a real user: passport deserializes it, so must the gateway.
const USERS = [
  { id: 0, username: 'zero', password: 'pw0', role: 'user' },
  { id: 1, username: 'ann', password: 'pw1', role: 'admin' },
  { id: 2, username: 'bob', password: 'pw2', role: 'user' },
];
for (let i = 1; i <= Number(process.env.USERS_N || 0); i++) {
  USERS.push({ id: 1000 + i, username: `u${i}`, password: 'pw', role: 'user' });
}
// Lookups by name and id: a spec logs in 1,000 users.
const BY_NAME = new Map(USERS.map((u) => [u.username, u]));
const BY_ID = new Map(USERS.map((u) => [u.id, u]));

passport.use(new LocalStrategy((username, password, done) => {
  const u = BY_NAME.get(username);
  return done(null, (u && u.password === password && u) || false);
}));
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, BY_ID.get(id) || false));

// "127.0.0.1:p1,127.0.0.1:p2" -> [{ host, port }]
const addrs = (list) => list.split(',').map((a) => {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});

// What connect-redis 7.1.1 calls on its client.  It takes node-redis's call
// shapes (set(k, v, { EX })) only when the client has scanIterator, and
// ioredis's (set(k, v, 'EX', ttl)) otherwise.  Neither the Sentinel client
// (redis 5) nor the cluster client (redis 4) has one, and node-redis ignores
// the ioredis arguments: every session would be written without a TTL.  So
// connect-redis gets this node-redis-shaped adapter.  It also keeps the
// multi-key calls (clear/all/ids/length; get/set/touch/destroy use one key)
// cluster-safe: MGET and DEL go key by key (one call across slots is
// CROSSSLOT), and SCAN walks every master (scanKeys).
function storeClient(client, scanKeys) {
  return {
    get: (key) => client.get(key),
    set: (key, val, opts) => client.set(key, val, opts),
    expire: (key, ttl) => client.expire(key, ttl),
    del: async (keys) => {
      const list = [].concat(keys);
      const n = await Promise.all(list.map((k) => client.del(k)));
      return n.reduce((a, b) => a + Number(b), 0);
    },
    mGet: (keys) => Promise.all(keys.map((k) => client.get(k))),
    scanIterator: ({ MATCH, COUNT }) => scanKeys(MATCH, COUNT),
  };
}

// A SCAN walk, key by key, over one node-redis 5 client or Sentinel.
async function* scan5(client, match, count) {
  let cursor = '0';
  do {
    const r = await client.scan(cursor, { MATCH: match, COUNT: count });
    cursor = String(r.cursor);
    yield* r.keys;
  } while (cursor !== '0');
}

// The client connect-redis uses, by env; errors go to stderr, never throw.
async function openRedis() {
  const password = process.env.REDIS_PASSWORD || undefined;
  if (process.env.REDIS_SENTINELS) {
    const { createSentinel } = require('redis5');
    const sentinel = createSentinel({
      name: process.env.REDIS_MASTER_NAME || 'mymaster',
      sentinelRootNodes: addrs(process.env.REDIS_SENTINELS),
      nodeClientOptions: { password },
    });
    // 'error': the Sentinel's own; 'client-error': a master, replica or
    // sentinel connection (the master's drop on a failover, then the
    // client asks the sentinels again and moves to the new master).
    sentinel.on('error', (e) => console.error('redis sentinel:', e && e.message ? e.message : e));
    sentinel.on('client-error', (ev) => console.error(
      `redis sentinel: ${ev.type} ${ev.node && ev.node.host}:${ev.node && ev.node.port}:`,
      ev.error && ev.error.message));
    sentinel.on('topology-change', (ev) => console.error('redis sentinel: topology', JSON.stringify(ev)));
    await sentinel.connect();
    return {
      client: sentinel,
      store: storeClient(sentinel, (m, c) => scan5(sentinel, m, c)),
      close: () => sentinel.close(),
    };
  }
  if (process.env.REDIS_CLUSTER) {
    const { createCluster } = require('redis');
    const cluster = createCluster({
      rootNodes: addrs(process.env.REDIS_CLUSTER).map((a) => ({ url: `redis://${a.host}:${a.port}` })),
      defaults: { password },
    });
    cluster.on('error', (e) => console.error('redis cluster:', e.message));
    await cluster.connect();
    // Every master's keys (node-redis 4's scanIterator yields one key at a time).
    async function* scanAll(match, count) {
      for (const m of cluster.getMasters()) {
        const node = await cluster.nodeClient(m);
        yield* node.scanIterator({ MATCH: match, COUNT: count });
      }
    }
    return { client: cluster, store: storeClient(cluster, scanAll), close: () => cluster.quit() };
  }
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  client.on('error', (e) => console.error('redis:', e.message));
  await client.connect();
  return { client, store: client, close: () => client.quit() };
}

async function main() {
  const redis = await openRedis();

  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(session({
    store: new RedisStore({ client: redis.store, prefix: process.env.PREFIX || 'sess:' }),
    secret: (process.env.SECRET || 'keyboard cat').split(','),
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 3600 * 1000 },
  }));
  app.use(passport.initialize());
  app.use(passport.session());

  app.post('/login', passport.authenticate('local'), (req, res) => res.json({ user: req.user }));
  app.post('/logout', (req, res, next) => req.logout((err) => (err ? next(err) : res.json({ ok: true }))));
  // An anonymous session: a record without a "passport" key.
  app.get('/visit', (req, res) => { req.session.views = (req.session.views || 0) + 1; res.json({ views: req.session.views }); });
  // What the app itself says about a cookie: the verdict the gateway must match.
  app.get('/whoami', (req, res) => res.json({
    logged_in: req.isAuthenticated(), user: req.user || null, session_id: req.session ? req.sessionID : null,
  }));
  app.get('/headers', (req, res) => res.json(req.headers));

  const server = http.createServer(app);
  const io = new Server(server);
  io.on('connection', (socket) => {
    const h = socket.handshake.headers;
    socket.emit('hello', { user: h['x-passport-user'] || null, logged_in: h['x-passport-logged-in'] || null });
  });
  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  const stop = () => {
    io.close();
    Promise.resolve().then(redis.close).catch(() => {}).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// With Sentinel or a cluster, a Redis error while a request waits (a
// failover, a reshard) must not take the app down.
if (process.env.REDIS_SENTINELS || process.env.REDIS_CLUSTER) {
  process.on('unhandledRejection', (e) => console.error('unhandled rejection:', e));
}

main().catch((e) => { console.error(e); process.exit(1); });
