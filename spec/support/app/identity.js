// The identity header's truth, from Node.
//
//   node identity.js seed <redis-port> <prefix> <count> <seed>
//     writes <count> sessions with random passport.user values through the
//     real connect-redis store and prints [{ sid, user }] (user as JSON text)
//     plus the fixed vectors (ids >= 1e14, near 2^53, negative, fractional,
//     strings).
//   node identity.js check  < [{ header, user, mode }]
//     mode "record": JSON.parse(header) must deep-equal the user with
//     logged_in: true (an object user) or { value: user, logged_in: true };
//     mode "deserialized": the spec's deserialize_user returned
//     { id: user, nested: { user } }, with logged_in: true.
//     Prints { ok, bad: [...] }.
'use strict';
const assert = require('assert');

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

const VECTORS = [
  1234567890123456, 1234567890123499, 100000000000000, 99999999999999.5,
  2 ** 53, 2 ** 53 - 1, -(2 ** 53 - 1), -1234567890123456, 0.1, -0.5,
  1e21, 5e-324, 1.7976931348623157e308, 123456789012345680000,
  '1234567890123456', 'ünïcödé ✓ 😀', '"quoted" \\ back\\slash\n',
  { id: 1234567890123456, name: 'big' }, { id: '42', roles: ['a', 'b'], n: -0.000001 },
  { id: 7, deep: { a: [1, [2, [3, { b: 9007199254740991 }]]] } },
  true, { id: 1, obj: {} },
];
// Not here: an array as the user itself, and an empty array anywhere in
// it.  Lua has one table type: an empty array arrives as {} (the README
// says so), and the gateway adds logged_in to a table user as it is.

function randomString(r) {
  const pool = ['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u0001', 'é', '€', '中', '😀', '\u2028', '\u00ff'];
  let s = '';
  const n = Math.floor(r() * 12);
  for (let i = 0; i < n; i++) s += pool[Math.floor(r() * pool.length)];
  return s;
}

function randomNumber(r) {
  switch (Math.floor(r() * 6)) {
    case 0: return 2 ** 53 - Math.floor(r() * 1e6);
    case 1: return -(2 ** 53 - Math.floor(r() * 1e6));
    case 2: return Math.floor(r() * 1e16);
    case 3: return (r() - 0.5) * 10 ** Math.floor(r() * 40 - 20);
    case 4: return Math.floor(r() * 1e15) / 1000;
    default: return Math.floor(r() * 1000);
  }
}

function randomValue(r, depth) {
  const k = Math.floor(r() * (depth > 2 ? 3 : 5));
  if (k === 0) return randomNumber(r);
  if (k === 1) return randomString(r);
  if (k === 2) return r() < 0.5;
  if (k === 3) {
    const a = [];
    const n = 1 + Math.floor(r() * 3);
    for (let i = 0; i < n; i++) a.push(randomValue(r, depth + 1));
    return a;
  }
  const o = {};
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) o['k' + randomString(r)] = randomValue(r, depth + 1);
  return o;
}

function randomUser(r) {
  if (r() < 0.5) return randomNumber(r);
  if (r() < 0.3) return randomString(r) || 'x';
  return { id: randomNumber(r), name: randomString(r), extra: randomValue(r, 1) };
}

async function seed([port, prefix, count, seedArg]) {
  const session = require('express-session');
  const cr = require('connect-redis');
  const RedisStore = cr.RedisStore || cr.default || cr;
  const { createClient } = require('redis');
  const client = createClient({ socket: { host: '127.0.0.1', port: +port } });
  await client.connect();
  const store = new RedisStore({ client, prefix });
  const r = rng(+seedArg);
  const users = VECTORS.slice();
  for (let i = 0; i < +count; i++) users.push(randomUser(r));
  const out = [];
  for (let i = 0; i < users.length; i++) {
    const sid = `id-${seedArg}-${i}`;
    const cookie = new session.Cookie({ maxAge: 3600000, httpOnly: true, path: '/' });
    await new Promise((ok, ko) => store.set(sid, { cookie, passport: { user: users[i] } },
      (e) => (e ? ko(e) : ok())));
    out.push({ sid, user: JSON.stringify(users[i]) });
  }
  await client.quit();
  process.stdout.write(JSON.stringify(out));
}

function expected(user, mode) {
  if (mode === 'deserialized') return { id: user, nested: { user }, logged_in: true };
  if (user !== null && typeof user === 'object' && !Array.isArray(user)) {
    return { ...user, logged_in: true };
  }
  return { value: user, logged_in: true };
}

function check() {
  const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const bad = [];
  for (const c of cases) {
    try {
      assert.deepStrictEqual(JSON.parse(c.header), expected(JSON.parse(c.user), c.mode));
    } catch (e) {
      bad.push({ mode: c.mode, user: c.user, header: c.header, why: String(e.message).slice(0, 300) });
    }
  }
  process.stdout.write(JSON.stringify({ ok: cases.length - bad.length, bad }));
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'seed') seed(args).catch((e) => { console.error(String(e)); process.exit(1); });
else if (cmd === 'check') check();
else { console.error('usage: identity.js seed|check'); process.exit(2); }
