// The peer for `make bench`, (c): what express-session 1.19 does per request
// to get a session id (getcookie: cookie.parse, the "s:" check, then
// cookie-signature's unsign for each secret).  Resolves cookie and
// cookie-signature from the repository's node_modules (`npm ci`).
//
// usage: node bench/node.js HEADER NAME SECRET EXPECTED_SID
// prints "express_sid ns_per_op cpu_share" (median of RUNS runs; cpu_share:
// CPU time / wall time, about 1 on a quiet machine).
'use strict';
const cookie = require('cookie');
const signature = require('cookie-signature');

// Which versions ran, for the report (express-session 1.19 pins ~0.7.2 and
// ~1.0.7).
console.log('peer cookie@' + require('cookie/package.json').version +
            ' cookie-signature@' + require('cookie-signature/package.json').version);

const RUNS = 7;
const RUN_NS = 100e6;

const [header, name, secret, expected] = process.argv.slice(2);
const secrets = [secret];

function getSid(hdr) {
  const raw = cookie.parse(hdr)[name];
  if (!raw || raw.substr(0, 2) !== 's:') return false;
  for (let i = 0; i < secrets.length; i++) {
    const val = signature.unsign(raw.slice(2), secrets[i]);
    if (val !== false) return val;
  }
  return false;
}

if (getSid(header) !== expected) {
  console.error('node.js: the peer does not verify the fixture cookie');
  process.exit(1);
}

function run(n) {
  let sink;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink = getSid(header);
  const dt = Number(process.hrtime.bigint() - t0);
  if (sink !== expected) throw new Error('result changed');
  return dt;
}

// Warm-up (lets V8 optimize getSid) and calibration to ~RUN_NS per run.
let n = 1000;
for (;;) {
  const dt = run(n);
  if (dt > 30e6) { n = Math.ceil(n * RUN_NS / dt); break; }
  n *= 4;
}
const t = [];
let wall = 0;
const c0 = process.cpuUsage();
for (let r = 0; r < RUNS; r++) {
  const dt = run(n);
  wall += dt;
  t.push(dt / n);
}
const cpu = process.cpuUsage(c0); // microseconds, all threads
t.sort((a, b) => a - b);
const share = (cpu.user + cpu.system) * 1000 / wall;
console.log('express_sid ' + t[RUNS >> 1].toFixed(1) + ' ' + share.toFixed(2));
