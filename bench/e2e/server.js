// bench-e2e's Node side: one Express app (express-session + connect-redis +
// passport-local, 10,000 users) with a socket.io 4 server, authorized one of
// three ways (MODE):
//   psio    passport.socketio 3.7.0: io.use(passportSocketIo.authorize({...}))
//           with cookie-parser and the connect-redis store (its README setup)
//   recipe  socket.io's documented Passport recipe: io.engine.use() of the
//           session middleware, passport.session() and a 401 for no user,
//           each on the handshake request only
//   noauth  no auth in Node: the gateway (guard mode) sits in front
// Every accepted socket gets one "hello" event, the load generator's welcome.
// POST /login logs a user in (the seeding); GET /emit sends one event to
// every socket of an admin (every 10th user) and answers how many it sent;
// GET /filter-native answers how many sockets passport.socketio's own
// filterSocketsByUser finds for the same filter.
// env: PORT, REDIS_PORT, SECRET, USERS (10000), MODE.
'use strict';
const http = require('http');
const express = require('express');
const session = require('express-session');
const passport = require('passport');
const LocalStrategy = require('passport-local').Strategy;
const cookieParser = require('cookie-parser');
const { createClient } = require('redis');
const connectRedis = require('connect-redis');
const { Server } = require('socket.io');
const passportSocketIo = require('passport.socketio');

const RedisStore = connectRedis.RedisStore || connectRedis.default || connectRedis;
const MODE = process.env.MODE || 'psio';
const SECRET = process.env.SECRET || 'bench-e2e secret';
const NUSERS = Number(process.env.USERS || 10000);

const users = new Map();
const byName = new Map();
for (let i = 0; i < NUSERS; i++) {
  const u = { id: i, username: `u${i}`, password: `p${i}`, role: i % 10 === 0 ? 'admin' : 'user' };
  users.set(i, u);
  byName.set(u.username, u);
}

passport.use(new LocalStrategy((username, password, done) => {
  const u = byName.get(username);
  return done(null, u && u.password === password ? u : false);
}));
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, users.get(id) || false));

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  client.on('error', (e) => console.error('redis:', e.message));
  await client.connect();
  const store = new RedisStore({ client, prefix: 'sess:' });

  const sessionMiddleware = session({
    store, secret: SECRET, resave: false, saveUninitialized: false,
    cookie: { maxAge: 24 * 3600 * 1000 },
  });
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(sessionMiddleware);
  app.use(passport.initialize());
  app.use(passport.session());
  app.post('/login', passport.authenticate('local'), (req, res) => res.json({ id: req.user.id }));

  const server = http.createServer(app);
  const io = new Server(server);

  if (MODE === 'psio') {
    io.use(passportSocketIo.authorize({
      cookieParser, key: 'connect.sid', secret: SECRET, store, passport,
    }));
  } else if (MODE === 'recipe') {
    // https://socket.io/how-to/use-with-passport (socket.io 4.6+, passport 0.6+)
    const onlyForHandshake = (middleware) => (req, res, next) => {
      const isHandshake = req._query.sid === undefined;
      if (isHandshake) middleware(req, res, next); else next();
    };
    io.engine.use(onlyForHandshake(sessionMiddleware));
    io.engine.use(onlyForHandshake(passport.session()));
    io.engine.use(onlyForHandshake((req, res, next) => {
      if (req.user) next(); else { res.writeHead(401); res.end(); }
    }));
  }

  const userOf = (socket) => (MODE === 'noauth'
    ? { username: socket.handshake.headers['x-passport-user'] || 'anonymous' }
    : socket.request.user);

  io.on('connection', (socket) => {
    socket.emit('hello', { user: userOf(socket).username });
  });

  const isAdmin = (u) => Boolean(u && u.role === 'admin');
  app.get('/emit', (req, res) => {
    let n = 0;
    for (const socket of io.of('/').sockets.values()) {
      if (isAdmin(socket.request.user)) { socket.emit('news', { n }); n++; }
    }
    res.end(String(n));
  });
  app.get('/filter-native', (req, res) => {
    let n;
    try { n = passportSocketIo.filterSocketsByUser(io, isAdmin).length; } catch (e) { n = `error: ${e.message}`; }
    res.end(String(n));
  });

  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  const stop = () => { io.close(); client.quit().finally(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { console.error(e); process.exit(1); });
