// Differential fuzzing reference: random Cookie headers and names, parsed by
// the real npm `cookie` 0.7 (what express-session uses).  Prints a JSON
// array of { header: hex, name, value: hex|null } for spec/compat.
// usage: node spec/compat/diff_cookie.js <seed> <count>
'use strict';
const cookie = require('cookie');

let state = (Number(process.argv[2]) >>> 0) || 1;
const count = Number(process.argv[3]) || 1000;
// xorshift32: deterministic for a seed, so a failing case can be replayed.
function rand(n) {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state % n;
}

// Pieces that exercise the parser's branches, plus single random bytes.
const PIECES = ['a', 'b', 'sid', 'connect.sid', '=', '=', ';', ';', ' ', '\t', '"', '%', '%3A', '%2',
  '%zz', '%E9', '%C3%A9', '%ED%A0%80', '%F0%9F%98%80', '%C0%80', '+', 's:', '.', 'x y', '\u00e9', '\u00ff'];
const NAMES = ['a', 'b', 'sid', 'connect.sid', 'x y', 'A'];

function piece() {
  if (rand(6) === 0) {
    let c = rand(256);
    // bytes Node's HTTP parser refuses never reach express-session
    if (c < 0x20 && c !== 0x09) c = 0x41;
    if (c === 0x7f) c = 0x42;
    return String.fromCharCode(c);
  }
  return PIECES[rand(PIECES.length)];
}

const WS = ['', '', ' ', '\t', '  '];

// name=value pairs with noise around every part, and now and then junk.
function header() {
  const pairs = [];
  const n = 1 + rand(6);
  for (let i = 0; i < n; i++) {
    let pair = WS[rand(WS.length)] + (rand(4) ? NAMES[rand(NAMES.length)] : piece()) + WS[rand(WS.length)];
    if (rand(10)) pair += '=';
    pair += WS[rand(WS.length)];
    const m = rand(5);
    for (let k = 0; k < m; k++) pair += piece();
    pairs.push(pair + WS[rand(WS.length)]);
  }
  return pairs.join(rand(3) ? ';' : '; ');
}

const hex = (s) => Buffer.from(s, 'latin1').toString('hex');
const out = [];
for (let i = 0; i < count; i++) {
  const h = header().replace(/^[ \t]+|[ \t]+$/g, ''); // Node trims header values
  const name = NAMES[rand(NAMES.length)];
  const parsed = cookie.parse(h);
  const has = Object.prototype.hasOwnProperty.call(parsed, name);
  out.push({ header: hex(h), name, value: has ? Buffer.from(parsed[name], 'utf8').toString('hex') : null });
}
process.stdout.write(JSON.stringify(out));
