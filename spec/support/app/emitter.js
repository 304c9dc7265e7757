// A Node process that holds no sockets and pushes to socket.io servers with
// the real npm @socket.io/redis-emitter 5 over the real npm redis 4 client,
// the way an Express app does; also raw PUBLISHes (malformed messages by
// hand) with the same client.  For spec/integration/socketio_emitter_spec.lua.
//
// usage: node emitter.js < input.json   or   node emitter.js '<json>'
// Input: { redis_port, dry: false, calls: [ call, ... ] }, the calls run in
// order on one connection (so Redis sees the PUBLISHes in that order):
//   { key: "socket.io" (the emitter's key prefix, default "socket.io"),
//     chain: [ [method, ...args], ... ] }   methods applied in turn from
//       new Emitter(client, { key }): "of" nsp, "to"/"in" room | [rooms],
//       "except" room | [rooms], "volatile" (a getter), "compress" bool,
//       "emit" event ...args, "socketsJoin" room | [rooms], "socketsLeave"
//       room | [rooms], "disconnectSockets" close, "serverSideEmit" ...args;
//       the chain may also be given as a JSON string (for nulls, [] and {}
//       that the caller cannot spell)
//   { raw: { channel, b64 | text | msgpack: value, truncate: n } }   PUBLISH
//       these bytes: base64, a UTF-8 string, or value MessagePack-encoded
//       with notepack.io (the emitter's own encoder); truncate keeps the
//       first n bytes
// Values (arguments and msgpack) may hold { "$bin": base64 } for a Buffer,
// { "$repeat": s, "n": count } for s repeated count times, and
// { "$deep": n } for n nested arrays ([[[...]]]).
// dry: nothing is published; each publish's bytes are returned (hex).
// Output, one JSON line: [ { publishes: [ { channel, bytes, receivers, hex? } ],
//   error? }, ... ], one per call; receivers: PUBLISH's answer (how many
//   subscriptions got it: a pattern and a channel each count).
'use strict';
const fs = require('fs');
const { createClient } = require('redis');
const { Emitter } = require('@socket.io/redis-emitter');
const msgpack = require('notepack.io');

function decode(v) {
  if (Array.isArray(v)) return v.map(decode);
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    if (typeof v.$bin === 'string' && keys.length === 1) return Buffer.from(v.$bin, 'base64');
    if (typeof v.$repeat === 'string' && typeof v.n === 'number' && keys.length === 2) return v.$repeat.repeat(v.n);
    if (typeof v.$deep === 'number' && keys.length === 1) {
      let a = [];
      for (let i = 1; i < v.$deep; i++) a = [a];
      return a;
    }
    const o = {};
    for (const k of keys) o[k] = decode(v[k]);
    return o;
  }
  return v;
}

async function main() {
  const text = process.argv[2] !== undefined ? process.argv[2] : fs.readFileSync(0, 'utf8');
  const input = JSON.parse(text);
  // no retries: a redis-server that is not there is an error at once
  const client = createClient({
    socket: { host: '127.0.0.1', port: Number(input.redis_port), reconnectStrategy: false },
  });
  client.on('error', (e) => console.error('redis:', e.message));
  if (!input.dry) await client.connect();

  let current = null; // the publishes of the call being run
  const pending = [];
  const publish = (channel, msg) => {
    const bytes = Buffer.isBuffer(msg) ? msg : Buffer.from(String(msg), 'utf8');
    const rec = { channel, bytes: bytes.length };
    current.push(rec);
    if (input.dry) {
      rec.hex = bytes.toString('hex');
      return Promise.resolve(0);
    }
    const p = client.publish(channel, bytes).then((n) => { rec.receivers = n; });
    pending.push(p);
    return p;
  };
  // what the emitter sees of the client: publish only
  const recorder = { publish };
  const emitters = new Map();
  const emitterFor = (key) => {
    if (!emitters.has(key)) emitters.set(key, new Emitter(recorder, { key }));
    return emitters.get(key);
  };

  const results = [];
  for (const call of input.calls || []) {
    const res = { publishes: [] };
    results.push(res);
    current = res.publishes;
    try {
      if (call.raw) {
        const r = call.raw;
        let bytes;
        if (typeof r.b64 === 'string') bytes = Buffer.from(r.b64, 'base64');
        else if (typeof r.text === 'string') bytes = Buffer.from(r.text, 'utf8');
        else bytes = msgpack.encode(decode(r.msgpack));
        if (typeof r.truncate === 'number') bytes = bytes.subarray(0, r.truncate);
        publish(r.channel, bytes);
      } else {
        const chain = typeof call.chain === 'string' ? JSON.parse(call.chain) : call.chain;
        let target = emitterFor(call.key || 'socket.io');
        for (const [method, ...args] of chain) {
          if (method === 'volatile') {
            target = target.volatile;
          } else if (typeof target[method] === 'function') {
            target = target[method](...decode(args));
          } else {
            throw new Error(`no method "${method}" here`);
          }
        }
      }
    } catch (e) {
      res.error = String((e && e.message) || e);
    }
  }
  await Promise.all(pending);
  if (!input.dry) await client.quit();
  process.stdout.write(`${JSON.stringify(results)}\n`, () => process.exit(0));
}

main().catch((e) => { console.error(e); process.exit(1); });
