// The example app behind the gateway: what a passport.js app already is.
//
//   express-session + connect-redis   the signed `connect.sid` cookie, sessions in Redis
//   passport + passport-local         a login form and logout
//   socket.io 4                       greets each socket with the identity the gateway sent
//   @socket.io/redis-emitter          POST /broadcast: an admin's announcement, pushed
//                                     through Redis to the sockets nginx holds (socketio mode)
//
// The gateway (nginx + lua-resty-passport, ../guard/nginx.conf) reads the same
// cookie and the same Redis record, and only lets authenticated handshakes
// reach /socket.io/; the app trusts the X-Passport-User / X-Passport-Logged-In
// headers because it listens on loopback, behind the gateway only.
//
// env: PORT (3000), HOST (127.0.0.1), REDIS_URL (redis://127.0.0.1:<REDIS_PORT or 6379>),
//      SECRET (comma-separated, newest first: the gateway gets the same list),
//      PREFIX (connect-redis key prefix, "sess:")
'use strict';
const http = require('http');
const express = require('express');
const session = require('express-session');
const passport = require('passport');
const LocalStrategy = require('passport-local').Strategy;
const { createClient } = require('redis');
const { Emitter } = require('@socket.io/redis-emitter');
const RedisStore = require('connect-redis').default;
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || `redis://127.0.0.1:${process.env.REDIS_PORT || 6379}`;
const SECRETS = (process.env.SECRET || 'keyboard cat').split(',');
const PREFIX = process.env.PREFIX || 'sess:';

// The demo users (a real app has a database).
const USERS = [
  { id: 1, name: 'alice', password: 'wonderland', role: 'admin' },
  { id: 2, name: 'bob', password: 'builder', role: 'user' },
  { id: 3, name: 'carol', password: 'singer', role: 'user' },
];

passport.use(new LocalStrategy((username, password, done) => {
  const u = USERS.find((x) => x.name === username && x.password === password);
  return done(null, u || false, u ? undefined : { message: 'wrong user name or password' });
}));
// session.passport.user is what the gateway reads.  Keeping the few fields it
// needs in the session (instead of only the id) lets it greet users by name
// and filter by role without a database; the alternative is a Lua
// `deserialize_user` that looks the id up (see the README's migration table).
passport.serializeUser((user, done) => done(null, { id: user.id, name: user.name, role: user.role }));
passport.deserializeUser((u, done) => done(null, USERS.find((x) => x.id === u.id) ? u : false));

// A form POST gets a redirect back to the page it came from; a client that
// asks for JSON (the demo script) gets JSON.
const wantsJson = (req) => (req.get('accept') || '').includes('application/json');
const back = (req) => (/^\/[\w.-]*$/.test(req.body && req.body.next) ? req.body.next : '/');

async function main() {
  const redis = createClient({ url: REDIS_URL });
  redis.on('error', (e) => console.error('redis:', e.message));
  await redis.connect();

  const app = express();
  app.set('trust proxy', 'loopback'); // the gateway is the only client
  app.use(express.urlencoded({ extended: false }));
  app.use(session({
    name: 'connect.sid', // the gateway's `key`
    secret: SECRETS, // the gateway's `secret` (newest first)
    store: new RedisStore({ client: redis, prefix: PREFIX }), // the gateway's `prefix`
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: 'lax', path: '/', maxAge: 24 * 3600 * 1000 },
  }));
  app.use(passport.initialize());
  app.use(passport.session());

  app.post('/login', (req, res, next) => passport.authenticate('local', (err, user, info) => {
    if (err) return next(err);
    if (!user) {
      return wantsJson(req) ? res.status(401).json({ error: info.message })
        : res.redirect(`${back(req)}?error=${encodeURIComponent(info.message)}`);
    }
    return req.login(user, (e) => {
      if (e) return next(e);
      return wantsJson(req) ? res.json({ user: req.user }) : res.redirect(back(req));
    });
  })(req, res, next));

  // Terminate mode: the gateway sees the session end in Redis (keyspace
  // events, or its periodic re-check) and closes this user's sockets with
  // code 4401; nothing to do here.
  app.post('/logout', (req, res, next) => req.logout((err) => {
    if (err) return next(err);
    return wantsJson(req) ? res.json({ ok: true }) : res.redirect(back(req));
  }));

  // Who the app thinks you are (the page shows it).
  app.get('/me', (req, res) => res.json({ user: req.user || null }));

  // An admin's announcement, pushed the way socket.io apps push from a
  // process that holds no sockets: socket.io's own Redis emitter.  In
  // socketio mode the gateway's workers receive it (init_worker's
  // socketio_emitter) and deliver it to the sockets they hold.
  const emitter = new Emitter(redis);
  app.post('/broadcast', (req, res) => {
    if (!req.user) return res.status(401).json({ error: 'log in first' });
    if (req.user.role !== 'admin') return res.status(403).json({ error: 'admins only' });
    const text = String(req.body.text || '').slice(0, 200);
    emitter.emit('notice', { from: req.user.name, role: 'everyone', text, via: 'the app\'s Redis emitter' });
    return res.json({ ok: true });
  });

  const server = http.createServer(app);
  const io = new Server(server); // serves /socket.io/ and the client at /socket.io/socket.io.min.js

  // Every handshake that reaches the app went through auth:access() at the
  // gateway, which set these headers (and stripped any the client sent).
  io.use((socket, next) => {
    const h = socket.handshake.headers;
    if (h['x-passport-logged-in'] !== 'true') return next(new Error('not through the gateway'));
    socket.data.user = JSON.parse(h['x-passport-user']);
    return next();
  });
  io.on('connection', (socket) => {
    const { user } = socket.data;
    const h = socket.handshake.headers;
    socket.emit('hello', {
      text: `Hello ${user.name} (${user.role}), from the socket.io server behind the gateway`,
      headers: { 'x-passport-user': h['x-passport-user'], 'x-passport-logged-in': h['x-passport-logged-in'] },
    });
  });

  server.listen(PORT, HOST, () => console.log(`listening ${server.address().port}`));
  const stop = () => {
    io.close();
    redis.quit().catch(() => {}).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
