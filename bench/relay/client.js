// The client of bench-relay (bench/relay/run.lua): socket.io-client 4.8
// connections to the gateway, echo round trips with an ack, per class.
//
// env: PORT, COOKIES (a file, one "connect.sid=..." a line, 2*C of them),
// C (connections per kind), ECHOES (per connection, closed loop), PAR
// (connections echoing at a time, closed loop), RATE (echoes/s, open loop),
// OPEN_SECONDS, ROUNDS, PAYLOAD (bytes), TIMEOUT (ms an ack may take, 5000).
//
// C connections with the client's default transports (polling, then the
// upgrade) and C with transports ["websocket"]; reconnection off (a lost
// connection shows instead of being replaced), forceNew (one engine each).
// Once all are up (and the polling ones upgraded), GET /relay-where?sid=
// classifies each: direct (WebSocket-only), same (the upgraded WebSocket on
// the session's home worker), other.
//
// Stdout, one JSON line each: {"event":"up",...}; then per phase
// {"event":"ready",phase,class,round} and, after SIGUSR2 from the runner,
// {"event":"done",...} (phase "idle": nothing is sent until the signal,
// which the runner sends once it has measured the idle CPU);
// then {"event":"stats",...} per mode and class over all rounds, and
// {"event":"end",...}.
'use strict';
const fs = require('fs');
const http = require('http');
const { io } = require('socket.io-client');

const PORT = Number(process.env.PORT);
const C = Number(process.env.C || 100);
const ECHOES = Number(process.env.ECHOES || 50);
const PAR = Number(process.env.PAR || 4);
const RATE = Number(process.env.RATE || 500);
const OPEN_SECONDS = Number(process.env.OPEN_SECONDS || 5);
const ROUNDS = Number(process.env.ROUNDS || 1);
const PAYLOAD = 'x'.repeat(Number(process.env.PAYLOAD || 64));
const TIMEOUT = Number(process.env.TIMEOUT || 5000);
const WARMUP = 5; // echoes per connection, twice, before anything is measured
const URL = `http://127.0.0.1:${PORT}`;
const cookies = fs.readFileSync(process.env.COOKIES, 'utf8').split('\n').filter(Boolean);

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
process.stdout.on('error', () => process.exit(1)); // the runner is gone
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

let phase = 'connect';
const errors = [];
const disconnects = {};
function note(list, msg) { if (list.length < 50) list.push(msg); }

let signals = 0;
process.on('SIGUSR2', () => { signals += 1; });
async function signal() {
  const want = signals + 1;
  // the runner signals once it has read "ready": wait for that one
  while (signals < want) await sleep(1);
}

function open(cookie, wsOnly, i) {
  const opts = { forceNew: true, reconnection: false, timeout: 20000, extraHeaders: { cookie } };
  if (wsOnly) opts.transports = ['websocket'];
  const s = io(URL, opts);
  const c = { s, i, wsOnly, cls: null, upgraded: false, sid: null };
  s.io.on('open', () => {
    const eng = s.io.engine;
    c.sid = eng.id;
    eng.on('upgrade', () => { c.upgraded = true; });
    eng.on('upgradeError', (e) => note(errors, `conn ${i} upgradeError in ${phase}: ${e.message}`));
    eng.on('close', (reason, desc) => {
      const d = desc && (desc.message || desc.description || desc.context && desc.context.statusText);
      note(errors, `conn ${i} (${c.cls || (wsOnly ? 'ws' : 'poll')}) engine close in ${phase}: ${reason}`
        + (d ? ` (${d})` : ''));
    });
  });
  c.connected = new Promise((ok) => {
    s.on('connect', () => ok(true));
    s.on('connect_error', (e) => { note(errors, `conn ${i} connect_error: ${e.message}`); ok(false); });
  });
  s.on('disconnect', (reason) => {
    const k = `${phase}: ${reason}`;
    disconnects[k] = (disconnects[k] || 0) + 1;
  });
  return c;
}

function where(sid) {
  return new Promise((ok, fail) => {
    http.get(`${URL}/relay-where?sid=${encodeURIComponent(sid)}`, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => { try { ok(JSON.parse(body)); } catch (e) { fail(new Error(`relay-where: ${body}`)); } });
    }).on('error', fail);
  });
}

let seq = 0;
// One echo: resolves { rtt } (ms from t0, its scheduled time, or from now)
// or { lost } / { mismatched }; lag: how late it went out (ms after t0).
function echo(c, t0) {
  const n = ++seq;
  return new Promise((ok) => {
    const sent = now();
    const start = t0 === undefined ? sent : t0;
    c.s.timeout(TIMEOUT).emit('echo', n, PAYLOAD, (err, a, b) => {
      const t = now();
      if (err) ok({ lost: true });
      else if (a !== n || b !== PAYLOAD) ok({ mismatched: true });
      else ok({ rtt: t - start, lag: sent - start });
    });
  });
}

const quantile = (sorted, p) => (sorted.length
  ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] : null);

function summary(res) {
  const rtts = [];
  const lags = [];
  let lost = 0;
  let mismatched = 0;
  for (const r of res) {
    if (r.lost) lost += 1;
    else if (r.mismatched) mismatched += 1;
    else { rtts.push(r.rtt); lags.push(r.lag); }
  }
  rtts.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  const mean = rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length : null;
  return { n: res.length, ok: rtts.length, lost, mismatched, timeout_ms: TIMEOUT,
           p50: quantile(rtts, 0.5), p90: quantile(rtts, 0.9), p99: quantile(rtts, 0.99),
           max: rtts.length ? rtts[rtts.length - 1] : null, mean,
           lag_p50: quantile(lags, 0.5), lag_p99: quantile(lags, 0.99) };
}

// Closed loop: ECHOES sequential echoes per connection, PAR connections at
// a time.
async function closed(conns, echoes = ECHOES) {
  const res = [];
  let next = 0;
  async function lane() {
    while (next < conns.length) {
      const c = conns[next++];
      for (let k = 0; k < echoes; k++) res.push(await echo(c));
    }
  }
  await Promise.all(Array.from({ length: Math.min(PAR, conns.length) }, lane));
  return res;
}

// Open loop: RATE echoes/s round robin over conns for OPEN_SECONDS, each
// sent at its scheduled time (or as soon after as the event loop allows:
// a timer until about half a millisecond before, then setImmediate, since
// a Node timer fires a millisecond late or more), its latency counted from
// that scheduled time; how late each went out is kept (lag).
async function openLoop(conns) {
  const total = Math.round(RATE * OPEN_SECONDS);
  const start = now() + 5;
  const pending = [];
  let i = 0;
  while (i < total) {
    const t = now();
    while (i < total && start + (i * 1000) / RATE <= t) {
      pending.push(echo(conns[i % conns.length], start + (i * 1000) / RATE));
      i += 1;
    }
    if (i < total) {
      const wait = start + (i * 1000) / RATE - now();
      if (wait >= 1.5) await sleep(Math.floor(wait - 0.5));
      else await new Promise((ok) => setImmediate(ok));
    }
  }
  return Promise.all(pending);
}

async function main() {
  const conns = [];
  const t0 = Date.now();
  // in batches, so the handshakes do not all queue at once
  for (let i = 0; i < 2 * C; i += 20) {
    const batch = [];
    for (let k = i; k < Math.min(i + 20, 2 * C); k++) {
      const c = open(cookies[k], k >= C, k);
      conns.push(c);
      batch.push(c.connected);
    }
    await Promise.all(batch);
  }
  const connectS = (Date.now() - t0) / 1000;
  const polling = conns.filter((c) => !c.wsOnly);
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline && !polling.every((c) => c.upgraded || !c.s.connected)) await sleep(10);
  const upgradedS = (Date.now() - t0) / 1000;
  const notUp = polling.filter((c) => !c.upgraded).length;
  if (notUp > 0) note(errors, `${notUp} polling connections not upgraded after 30 s`);

  // which worker holds what
  const classes = { direct: 0, same: 0, other: 0 };
  const directBy = {};
  const wsBy = {};
  let unclassified = 0;
  const wheres = [];
  for (const c of conns) {
    if (!c.s.connected || !c.sid) continue;
    const w = await where(c.sid);
    if (c.wsOnly) {
      c.cls = 'direct';
      directBy[w.home] = (directBy[w.home] || 0) + 1;
    } else if (c.upgraded && w.ws !== null && w.home !== null) {
      c.cls = w.ws === w.home ? 'same' : 'other';
      wsBy[w.ws] = (wsBy[w.ws] || 0) + 1;
      if (w.state !== 'w') note(errors, `conn ${c.i}: upgraded, state ${w.state} (g ${w.g})`);
    } else {
      unclassified += 1;
      note(errors, `conn ${c.i}: sid ${c.sid} upgraded ${c.upgraded}, where ${JSON.stringify(w)}`);
    }
    if (c.cls) classes[c.cls] += 1;
    if (wheres.length < 4) wheres.push(w);
  }
  const byClass = { direct: [], same: [], other: [] };
  for (const c of conns) if (c.cls) byClass[c.cls].push(c);

  // warm-up, not measured: every connection at once, then the closed
  // loop's pattern (PAR at a time) over each class
  phase = 'warmup';
  await Promise.all(conns.filter((c) => c.cls).map(async (c) => {
    for (let k = 0; k < WARMUP; k++) await echo(c);
  }));
  for (const cls of ['direct', 'same', 'other']) await closed(byClass[cls], WARMUP);

  out({ event: 'up', connections: conns.length, upgraded: polling.length - notUp, classes,
        direct_by_worker: directBy, ws_by_worker: wsBy, unclassified, connect_s: connectS,
        upgraded_s: upgradedS, sample: wheres });

  phase = 'idle';
  out({ event: 'ready', phase: 'idle' });
  await signal(); // the runner measured the idle CPU meanwhile
  out({ event: 'done', phase: 'idle', n: 0 });

  const pooled = {};
  for (let round = 1; round <= ROUNDS; round++) {
    // the classes' order turns each round (what runs first may run on a
    // colder machine)
    const order = ['direct', 'same', 'other'];
    for (let k = 1; k < round; k++) order.push(order.shift());
    for (const mode of ['closed', 'open']) {
      for (const cls of order) {
        if (byClass[cls].length === 0) continue;
        phase = `${mode} ${cls}`;
        out({ event: 'ready', phase: mode, class: cls, round });
        await signal();
        const res = mode === 'closed' ? await closed(byClass[cls]) : await openLoop(byClass[cls]);
        const key = `${mode}:${cls}`;
        pooled[key] = (pooled[key] || []).concat(res);
        out(Object.assign({ event: 'done', phase: mode, class: cls, round }, summary(res)));
        await sleep(200);
      }
    }
  }
  for (const key of Object.keys(pooled)) {
    const [mode, cls] = key.split(':');
    out(Object.assign({ event: 'stats', phase: mode, class: cls, connections: byClass[cls].length },
                      summary(pooled[key])));
  }
  phase = 'end';
  const downgraded = conns.filter((c) => c.cls && c.cls !== 'direct' && c.s.io.engine
                                        && c.s.io.engine.transport.name !== 'websocket').length;
  const nd = Object.values(disconnects).reduce((a, b) => a + b, 0);
  out({ event: 'end', disconnects: nd, disconnect_reasons: disconnects, errors, downgraded });
  for (const c of conns) c.s.disconnect();
  await sleep(100);
  process.exit(0);
}

main().catch((e) => { out({ event: 'error', message: String(e && e.stack || e) }); process.exit(1); });
