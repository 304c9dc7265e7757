// A real socket.io-client 4.8 driven by a scenario, for the socket.io specs:
// the same scenario runs against the gateway and the Node reference
// (sio_reference.js) and the two outcomes are compared.
//
// usage: node sio_client.js '<json>'   or   node sio_client.js < file.json
// The input is one scenario or a list of them (run concurrently, in one
// process); the output is one JSON line: the outcome, or the list of them.
//
// Scenario:
//   { name, url: "http://127.0.0.1:<port>", path: "/socket.io/" (default),
//     cookie, origin, headers: {...} (extra request headers),
//     reconnection: false (default; true: fast retries, to see none happen),
//     transports: ["websocket"] (default; ["polling", "websocket"] is the
//       client's own default: polling, then the upgrade),
//     timeout: 3000 (the Manager's connect timeout), deadline: 20000 (whole run),
//     upgrade_delay: ms (optional: the engine probes its upgrade that much later
//       than the client would, so that steps run over polling first),
//     repeat: n (optional: run the scenario n times, one after another, each
//       with a new connection; the outcome is then { name, runs: [outcome, ...] }),
//     json: true (optional: each event also carries json, its args as canonical
//       JSON text -- object keys sorted, nulls, [] and {} kept -- for exact comparing),
//     steps: [ ... ] }
// Steps (s names a namespace socket of this connection, default "main"):
//   { op: "open", s, nsp: "/", auth: {...}, wait: true, expect, timeout }   connect it;
//        wait for "connect" or "connect_error" unless wait is false, then (when
//        connected) for the event named by expect, if given
//   { op: "emit", s, event, args: [...], ack: false, timeout: 3000, wait: true }
//        with ack: socket.timeout(timeout).emit(..., cb); the step's result is
//        { ack: [...] } or { error: "operation has timed out" }; wait false: go on
//        at once (the result is filled in when the ack comes)
//   { op: "answer", s, event, reply: [...] | null, delay: 0 }   from now on, answer the
//        server's acks for event with reply (null: never answer, the default)
//   { op: "wait", s, event, count: 1, timeout: 3000 }   until event has arrived count
//        times in total; event "disconnect" waits for the disconnect, "close" for the
//        engine's close; the result says { ok: true|false }
//   { op: "wait_upgrade", count: 1, timeout: 3000 }   until the engine has upgraded
//        count times; the result says { ok: true|false }
//   { op: "sleep", ms }
//   { op: "stop_pong" }   the engine stops answering the server's pings (its
//        _sendPacket("pong") is dropped; everything else still goes out)
//   { op: "disconnect", s }   socket.disconnect() (client namespace disconnect)
//   { op: "close" }   the engine closes the transport (like a closed tab)
//   { op: "mark", file, ids: false }   writes file (Date.now()): tells the spec a point is
//        reached; with ids: true, writes instead the JSON { <s>: socket.id } of the
//        sockets connected now (so the spec can address a socket's own room)
//   { op: "gate", file, timeout: 10000 }   waits until the spec creates file
//   { op: "http", url }   GET; the result is { status, body }
// Any step with via: true also records { via: the engine's transport when it ran,
// pings: how many pings had come by then }.
// Args and replies may hold { "$bin": base64 } for a Buffer; received binary
// (Buffer / ArrayBuffer) is written the same way.
//
// Outcome (as it stood after the last step: the run's own closing at the end
// is not in it, so a socket still connected then has disconnect null):
//   { name, error?, steps: [ { op, at, ...result } ],
//     sockets: { <s>: { nsp, connected, connects, connect_error: { message, data } | null,
//                       events: [ { event, args, ack: bool, at, t } ],
//                       disconnect: { reason, description?, at, t } | null } },
//     engine: { opened, closes: [ { reason, at, t } ], reconnect_attempts, pongs_dropped,
//               pings, transport: the one in use at the end, upgrades,
//               upgrade_errors: [message, ...] (only when a probe failed) } }
// at: ms since the scenario started; t: Date.now().
'use strict';
const fs = require('fs');
const http = require('http');
const { Manager } = require('socket.io-client');

function decode(v) {
  if (Array.isArray(v)) return v.map(decode);
  if (v && typeof v === 'object') {
    if (typeof v.$bin === 'string' && Object.keys(v).length === 1) return Buffer.from(v.$bin, 'base64');
    const o = {};
    for (const k of Object.keys(v)) o[k] = decode(v[k]);
    return o;
  }
  return v;
}

// JSON text with object keys sorted: the same value always reads the same.
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v === undefined ? null : v);
}

function encode(v) {
  if (Buffer.isBuffer(v)) return { $bin: v.toString('base64') };
  if (v instanceof ArrayBuffer) return { $bin: Buffer.from(v).toString('base64') };
  if (ArrayBuffer.isView(v)) return { $bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  if (Array.isArray(v)) return v.map(encode);
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v)) o[k] = encode(v[k]);
    return o;
  }
  if (v === undefined) return null;
  return v;
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function until(pred, timeout) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(5);
  }
  return pred();
}

function httpGet(url) {
  return new Promise((ok) => {
    http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => ok({ status: res.statusCode, body }));
    }).on('error', (e) => ok({ status: null, body: String(e.message) }));
  });
}

function blank(sc) {
  return {
    name: sc.name,
    steps: [],
    sockets: {},
    engine: {
      opened: false, closes: [], reconnect_attempts: 0, pongs_dropped: 0, pings: 0,
      transport: null, upgrades: 0,
    },
  };
}

async function run(sc, out) {
  const t0 = Date.now();
  const at = () => Date.now() - t0;
  const headers = { ...(sc.headers || {}) };
  if (sc.cookie) headers.cookie = sc.cookie;
  if (sc.origin) headers.origin = sc.origin;
  const manager = new Manager(sc.url, {
    path: sc.path || '/socket.io/',
    transports: sc.transports || ['websocket'],
    extraHeaders: headers,
    withCredentials: true,
    reconnection: !!sc.reconnection,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
    randomizationFactor: 0,
    timeout: sc.timeout || 3000,
    autoConnect: false,
  });
  let dropPongs = false;
  const hookEngine = () => {
    const engine = manager.engine;
    if (!engine || engine.__hooked) return;
    engine.__hooked = true;
    out.engine.opened = true;
    engine.on('close', (reason, description) => out.engine.closes.push({
      reason, description: description && (description.message || description.description
        || (typeof description === 'string' ? description : undefined)), at: at(), t: Date.now(),
    }));
    engine.on('ping', () => { out.engine.pings += 1; });
    out.engine.transport = engine.transport && engine.transport.name;
    engine.on('upgrade', (t) => { out.engine.upgrades += 1; out.engine.transport = t.name; });
    engine.on('upgradeError', (e) => {
      (out.engine.upgrade_errors = out.engine.upgrade_errors || []).push(String(e && e.message));
    });
    if (sc.upgrade_delay) {
      const probe = engine._probe;
      engine._probe = function delayedProbe(...args) {
        setTimeout(() => { if (this.readyState === 'open') probe.apply(this, args); }, sc.upgrade_delay);
      };
    }
    const orig = engine._sendPacket;
    engine._sendPacket = function sendPacket(type, ...rest) {
      if (type === 'pong' && dropPongs) {
        out.engine.pongs_dropped += 1;
        return undefined;
      }
      return orig.call(this, type, ...rest);
    };
  };
  manager.on('open', hookEngine);
  manager.on('reconnect_attempt', () => { out.engine.reconnect_attempts += 1; });

  const sockets = {};
  const answers = {}; // s -> event -> { reply, delay }
  const pending = [];
  const sock = (name) => {
    const s = sockets[name || 'main'];
    if (!s) throw new Error(`no socket "${name || 'main'}" (open it first)`);
    return s;
  };
  const state = (name) => out.sockets[name || 'main'];

  const steps = sc.steps || [];
  for (let i = 0; i < steps.length; i++) {
    const st = steps[i];
    const rec = { op: st.op, at: at() };
    if (st.via) {
      rec.via = (manager.engine && manager.engine.transport && manager.engine.transport.name) || null;
      rec.pings = out.engine.pings;
    }
    out.steps.push(rec);
    const name = st.s || 'main';
    switch (st.op) {
      case 'open': {
        const rs = {
          nsp: st.nsp || '/', connected: false, connects: 0, connect_error: null,
          events: [], disconnect: null,
        };
        out.sockets[name] = rs;
        const socket = manager.socket(st.nsp || '/', { auth: st.auth || {} });
        sockets[name] = socket;
        answers[name] = answers[name] || {};
        socket.on('connect', () => { rs.connected = true; rs.connects += 1; hookEngine(); });
        socket.on('connect_error', (err) => {
          rs.connect_error = { message: err.message, data: err.data === undefined ? null : encode(err.data) };
        });
        socket.on('disconnect', (reason, description) => {
          rs.connected = false;
          rs.disconnect = {
            reason,
            description: description && (description.message || description.description
              || (typeof description === 'string' ? description : undefined)),
            at: at(),
            t: Date.now(),
          };
        });
        socket.onAny((event, ...args) => {
          const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
          const ev = { event, args: encode(args), ack: !!ack, at: at(), t: Date.now() };
          if (sc.json) ev.json = canon(encode(args));
          rs.events.push(ev);
          const rule = answers[name][event];
          if (ack && rule && Array.isArray(rule.reply)) {
            const send = () => ack(...decode(rule.reply));
            if (rule.delay) setTimeout(send, rule.delay); else send();
          }
        });
        socket.connect();
        if (st.wait !== false) {
          rec.ok = await until(() => rs.connected || rs.connect_error, st.timeout || 3000);
          if (st.expect && rs.connected) {
            rec.expected = await until(() => rs.events.some((e) => e.event === st.expect), st.timeout || 3000);
          }
        }
        break;
      }
      case 'emit': {
        const socket = sock(name);
        const args = decode(Array.isArray(st.args) ? st.args : []);
        if (st.ack) {
          let done = false;
          const p = new Promise((resolve) => {
            socket.timeout(st.timeout || 3000).emit(st.event, ...args, (err, ...reply) => {
              if (err) rec.error = err.message; else rec.ack = encode(reply);
              rec.ack_at = at();
              done = true;
              resolve();
            });
          });
          if (st.wait === false) pending.push(p); else await p;
          rec.done = done;
        } else {
          socket.emit(st.event, ...args);
        }
        break;
      }
      case 'answer':
        answers[name] = answers[name] || {};
        // a reply that is not a list (null, or {} from an empty Lua table) never answers
        answers[name][st.event] = { reply: Array.isArray(st.reply) ? st.reply : null, delay: st.delay || 0 };
        break;
      case 'wait': {
        const timeout = st.timeout || 3000;
        if (st.event === 'close') {
          rec.ok = await until(() => out.engine.closes.length > 0, timeout);
        } else if (st.event === 'disconnect') {
          rec.ok = await until(() => state(name).disconnect !== null, timeout);
        } else if (st.event === 'connect') {
          rec.ok = await until(() => state(name).connected || state(name).connect_error, timeout);
        } else {
          const n = st.count || 1;
          rec.ok = await until(() => state(name).events.filter((e) => e.event === st.event).length >= n,
            timeout);
        }
        rec.done_at = at();
        break;
      }
      case 'wait_upgrade':
        rec.ok = await until(() => out.engine.upgrades >= (st.count || 1), st.timeout || 3000);
        rec.done_at = at();
        break;
      case 'sleep':
        await sleep(st.ms || 0);
        break;
      case 'stop_pong':
        dropPongs = true;
        break;
      case 'disconnect':
        sock(name).disconnect();
        break;
      case 'close':
        if (manager.engine) manager.engine.close();
        break;
      case 'mark':
        if (st.ids) {
          const ids = {};
          for (const [n, s] of Object.entries(sockets)) if (s.connected) ids[n] = s.id;
          fs.writeFileSync(`${st.file}.tmp`, JSON.stringify(ids));
          fs.renameSync(`${st.file}.tmp`, st.file); // whole when it appears
        } else {
          fs.writeFileSync(st.file, String(Date.now()));
        }
        break;
      case 'gate':
        rec.ok = await until(() => fs.existsSync(st.file), st.timeout || 10000);
        break;
      case 'http':
        Object.assign(rec, await httpGet(st.url));
        break;
      default:
        throw new Error(`unknown op "${st.op}"`);
    }
  }
  await Promise.all(pending);
  // what was seen up to the last step, before this run's own disconnects
  const seen = JSON.parse(JSON.stringify(out));
  for (const s of Object.values(sockets)) s.disconnect();
  if (manager.engine) manager.engine.close();
  return seen;
}

function runGuarded(sc) {
  const deadline = sc.deadline || 20000;
  let timer;
  const out = blank(sc);
  return Promise.race([
    run(sc, out).catch((e) => Object.assign(out, { error: String((e && e.stack) || e) })),
    new Promise((ok) => {
      timer = setTimeout(() => ok(Object.assign(out, { error: `deadline of ${deadline} ms passed` })), deadline);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function runScenario(sc) {
  if (!sc.repeat) return runGuarded(sc);
  const runs = [];
  for (let i = 0; i < sc.repeat; i++) runs.push(await runGuarded({ ...sc, repeat: undefined }));
  return { name: sc.name, runs };
}

async function main() {
  const text = process.argv[2] !== undefined ? process.argv[2] : fs.readFileSync(0, 'utf8');
  const input = JSON.parse(text);
  const list = Array.isArray(input) ? input : [input];
  const results = await Promise.all(list.map(runScenario));
  // exit once written: a large outcome into a pipe is not written at once
  process.stdout.write(`${JSON.stringify(Array.isArray(input) ? results : results[0])}\n`, () => process.exit(0));
}

main().catch((e) => { console.error(e); process.exit(1); });
