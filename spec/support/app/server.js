// The Node side of the integration specs: an Express app with
// express-session + connect-redis + passport-local, and a socket.io 4
// server that reports the identity headers the gateway sent it.
// env: PORT, REDIS_PORT, SECRET (comma-separated, newest first), PREFIX.
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

passport.use(new LocalStrategy((username, password, done) => {
  const u = USERS.find((x) => x.username === username && x.password === password);
  return done(null, u || false);
}));
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, USERS.find((x) => x.id === id) || false));

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  client.on('error', (e) => console.error('redis:', e.message));
  await client.connect();

  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(session({
    store: new RedisStore({ client, prefix: process.env.PREFIX || 'sess:' }),
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
  const stop = () => { io.close(); client.quit().finally(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
