#!/usr/bin/env node
// Writes spec/compat/vectors/*.json: compatibility test vectors whose expected
// verdicts come from the real npm packages (express-session 1.19, cookie 0.7,
// cookie-signature, cookie-session 2.1 + keygrip, connect-redis 7, passport 0.7).
// Nothing expected here is written by hand: the generator only builds inputs,
// and Node decides.  See spec/compat/README.md.
//
//   node spec/compat/gen_vectors.js      (or: npm run vectors)
//
// Deterministic: inputs come from seeded PRNGs (one per file), "now" is fixed,
// TZ is UTC, and results are stored by case index, never by arrival order.
'use strict';

// Date.parse of ISO strings without an offset uses local time; pin it.
process.env.TZ = 'UTC';
// express-session computes cookie.expires as Date.now() + maxAge.
const FIXED_NOW = Date.UTC(2026, 10, 23, 10, 0, 0); // 2026-11-23T10:00:00.000Z
Date.now = () => FIXED_NOW;

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const cookie = require('cookie');
const signature = require('cookie-signature');
const express = require('express');
const session = require('express-session');
const cookieSession = require('cookie-session');
const Keygrip = require('keygrip');
const RedisStore = require('connect-redis').default;
const { Passport } = require('passport');
const SessionStrategy = require('passport/lib/strategies/session');
const LocalStrategy = require('passport-local').Strategy;

const OUT = path.join(__dirname, 'vectors');

// express-session must use the cookie-signature we pin at the root.
assert.strictEqual(require.resolve('cookie-signature', { paths: [require.resolve('express-session')] }),
  require.resolve('cookie-signature'));

// ---------------------------------------------------------------- helpers

// mulberry32, seeded from the file name so files are independent.
function makeRng(label) {
  let a = crypto.createHash('sha256').update(label).digest().readUInt32LE(0);
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const r = {
    next,
    int: (n) => Math.floor(next() * n),            // 0 .. n-1
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    bytes: (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
    // weighted pick over [[weight, value], ...]
    weighted: (list) => {
      let x = next() * list.reduce((s, [w]) => s + w, 0);
      for (const [w, v] of list) { if ((x -= w) < 0) return v; }
      return list[list.length - 1][1];
    },
    str: (alphabet, n) => Array.from({ length: n }, () => alphabet[Math.floor(next() * alphabet.length)]).join(''),
  };
  return r;
}

// Header bytes are carried around as latin1 strings (one char per byte),
// which is exactly what Node's HTTP parser hands to JS (checkLatin1() below,
// and every HTTP-path vector echoes its header back).
const hexL1 = (s) => Buffer.from(s, 'latin1').toString('hex');
// Strings produced by JS (sids, values, secrets) are written as UTF-8.
const hexU8 = (s) => {
  assert(s.isWellFormed(), 'lone surrogate would not survive UTF-8');
  return Buffer.from(s, 'utf8').toString('hex');
};
// The wire form of a JS string: its UTF-8 bytes, as a latin1 string.
const u8 = (s) => Buffer.from(s, 'utf8').toString('latin1');
// Percent-encode every byte (a value nobody sends, but decodeURIComponent accepts).
const pctAll = (s) => [...Buffer.from(s, 'utf8')].map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('');

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const PRINTABLE = ' !#$&()*+,-./0123456789:<>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~';
// uid-safe's sync(24): 24 random bytes as unpadded base64url, 32 chars.
const uid = (rng) => rng.bytes(24).toString('base64url');

function writeVectors(file, vectors) {
  // One vector per line: readable diffs, still plain JSON.
  const text = '[\n' + vectors.map((v) => JSON.stringify(v)).join(',\n') + '\n]\n';
  fs.writeFileSync(path.join(OUT, file), text);
  console.log(`${file}: ${vectors.length} vectors, ${text.length} bytes`);
}

// ------------------------------------------------------- raw HTTP harness

// Node rejects these bytes in a header value with 400 (measured: 0x00-0x08,
// 0x0a-0x1f, 0x7f), so the HTTP-path vectors never contain them; it also
// trims leading/trailing spaces and tabs.  Both are asserted per request.
const REJECTED_HEADER_BYTE = /[\x00-\x08\x0a-\x1f\x7f]/;

// Send exactly `head` (+ body) over a fresh TCP connection; resolve with
// status and body once the server closes (Connection: close).
function rawRequest(port, head, body = Buffer.alloc(0)) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('request timed out')); }, 10000);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('close', () => {
      clearTimeout(timer);
      const res = Buffer.concat(chunks).toString('latin1');
      const sep = res.indexOf('\r\n\r\n');
      resolve({ status: Number(res.slice(9, 12)), head: res.slice(0, sep), body: res.slice(sep + 4) });
    });
    sock.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  });
}

// GET / with exactly this Cookie header (a latin1 string) and extra headers.
function cookieRequest(port, header, extra = {}) {
  assert(!REJECTED_HEADER_BYTE.test(header), 'header holds a byte Node rejects');
  let head = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n';
  for (const [k, v] of Object.entries(extra)) head += `${k}: ${v}\r\n`;
  head += 'Cookie: ' + header + '\r\n\r\n';
  return rawRequest(port, head);
}

async function listen(app) {
  const server = http.createServer(app);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

// Run fn over items with bounded concurrency; results keep item order.
async function mapPool(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return out;
}

// Each HTTP-path handler echoes the Cookie header it saw as latin1 hex, so
// every vector also proves that Node handed JS the exact bytes we sent.
const echo = (req) => hexL1(req.headers.cookie === undefined ? '' : req.headers.cookie);

// Self-test of the convention above: a header holding every byte Node
// accepts (HTAB, 0x20-0x7e, 0x80-0xff) reaches JS as the same latin1 string.
async function checkLatin1() {
  const server = await listen((req, res) => res.end(echo(req)));
  try {
    let all = '\t';
    for (let b = 0x20; b <= 0xff; b++) if (b !== 0x7f) all += String.fromCharCode(b);
    const header = 'a=' + all + 'z';
    const r = await cookieRequest(server.address().port, header);
    assert.strictEqual(r.body, hexL1(header), 'Node did not hand the Cookie header to JS as latin1');
  } finally {
    server.close();
  }
}

// ------------------------------------------------------------ cookie_get

function genCookieGet() {
  const rng = makeRng('cookie_get');
  const V = [];
  const add = (why, header, names) => {
    for (const name of names) {
      const obj = cookie.parse(header);
      const has = Object.prototype.hasOwnProperty.call(obj, name);
      V.push({ why, header: hexL1(header), name, value: has ? hexU8(obj[name]) : null });
    }
  };

  add('spaces around name and value', 'a = 1 ; b = 2', ['a', 'b', 'a ', ' b']);
  add('tabs around name and value', 'a\t=\t1\t;\tb\t=\t2', ['a', 'b']);
  add('mixed spaces and tabs', ' \t a \t = \t x y \t ;\t b=2 \t', ['a', 'b']);
  add('leading and trailing whitespace of header', '   a=1; b=2   ', ['a', 'b']);
  add('no spaces', 'a=1;b=2;c=3', ['a', 'b', 'c', 'd']);
  add('inner spaces kept', 'a=x y z; b b=2', ['a', 'b b', 'b']);
  add('quoted value', 'a="1"; b="two words"', ['a', 'b']);
  add('quoted value with spaces outside quotes', 'a = "1" ; b=2', ['a']);
  add('spaces inside quotes kept', 'a=" 1 "', ['a']);
  add('only leading quote', 'a="1; b="2', ['a', 'b']);
  add('only trailing quote', 'a=1"; b=2"', ['a', 'b']);
  add('lone quote', 'a="; b=x', ['a', 'b']);
  add('two quotes', 'a=""; b=x', ['a']);
  add('three quotes', 'a="""', ['a']);
  add('quoted percent value', 'a="%41%42"', ['a']);
  add('quote inside value', 'a=x"y', ['a']);
  add('percent valid', 'a=%41%42c; b=%20x%20', ['a', 'b']);
  add('percent lowercase hex', 'a=%4a%e2%82%ac', ['a']);
  add('percent invalid keeps raw', 'a=%zz; b=%4; c=%; d=100%', ['a', 'b', 'c', 'd']);
  add('one bad percent keeps whole value raw', 'a=%41%zz%42', ['a']);
  add('double encoded decodes once', 'a=%2541; b=s%253Ax', ['a', 'b']);
  add('percent utf-8 multibyte', 'a=%E2%82%AC; b=%F0%9F%98%80; c=%C3%A9', ['a', 'b', 'c']);
  add('percent overlong utf-8', 'a=%C0%80; b=%E0%80%80; c=%C1%BF', ['a', 'b', 'c']);
  add('percent surrogate utf-8', 'a=%ED%A0%80; b=%ED%BF%BF', ['a', 'b']);
  add('percent beyond U+10FFFF', 'a=%F4%90%80%80; b=%F5%80%80%80', ['a', 'b']);
  add('percent truncated utf-8', 'a=%E2%82; b=%C3', ['a', 'b']);
  add('percent lone continuation', 'a=%80; b=%BF%41', ['a', 'b']);
  add('percent NUL', 'a=%00; b=x%00y', ['a', 'b']);
  add('percent semicolon and equals', 'a=%3B%3D; b=2', ['a', 'b']);
  add('plus stays plus', 'a=1+2; b=%2B+%20', ['a', 'b']);
  add('percent decoded in name is not done', 'a%41=1; aA=2', ['aA', 'a%41']);
  add('pair without equals', 'foo; a=1', ['foo', 'a']);
  add('pair without equals after', 'a=1; foo; b=2', ['a', 'foo', 'b']);
  add('only pairs without equals', 'foo; bar', ['foo', 'bar']);
  add('pair without equals same name', 'a; a=1', ['a']);
  // Empty names are parsed but never looked up: express-session and
  // cookie-session fall back to their default name for ''.
  add('empty name', '=x; a=1', ['a']);
  add('empty name only', '=x', ['a']);
  add('empty value', 'a=; b=2', ['a', 'b']);
  add('empty value at end', 'a=1; b=', ['a', 'b']);
  add('value holds equals', 'a=b=c; d==', ['a', 'd']);
  add('semicolon runs', ';;;a=1;;;; b=2;;', ['a', 'b']);
  add('semicolon spaces runs', ' ; ; a=1 ; ; ', ['a']);
  add('duplicates first wins', 'a=1; a=2; a=3', ['a']);
  add('duplicate empty first wins', 'a=; a=2', ['a']);
  add('duplicate quoted first', 'a="q"; a=2', ['a']);
  add('duplicate bad percent first', 'a=%zz; a=ok', ['a']);
  add('names differ by case', 'A=1; a=2; Ab=3', ['a', 'A', 'ab', 'Ab', 'AB']);
  add('name prefixes and suffixes', 'ab=1; a=2; abc=3; b=4', ['a', 'ab', 'abc', 'b', 'bc']);
  add('suffix before name', 'xconnect.sid=1; connect.sidx=2; connect.sid=3', ['connect.sid', 'xconnect.sid', 'connect.sidx']);
  add('name with dot and dash', 'connect.sid=1; my-sess=2; my.session=3', ['connect.sid', 'my-sess', 'my.session', 'connect']);
  add('raw high bytes in value', 'a=\xe9t\xe9; b=\xff\xfe; c=\x80', ['a', 'b', 'c']);
  add('raw utf-8 bytes in value', 'a=' + u8('été €'), ['a']);
  add('raw high bytes with percent', 'a=\xe9%41; b=\xe9%zz', ['a', 'b']);
  add('raw high byte in other name', '\xe9=1; a=2', ['a']);
  add('NUL bytes', 'a=x\x00y; b\x00=2; c=3', ['a', 'b', 'c']);
  add('NUL at start', '\x00a=1; a=2', ['a']);
  add('control characters', 'a=\x01\x1f\x7f; b=2', ['a', 'b']);
  add('vertical tab and CR not trimmed', 'a=\x0b1\x0d; \x0bb=2', ['a', 'b']);
  add('header length 0', '', ['a']);
  add('header length 1', 'a', ['a']);
  add('header length 1 equals', '=', ['a']);
  add('header length 2', 'a=', ['a']);
  add('header length 3', 'a=1', ['a']);
  add('equals before semicolon later', 'a;b=c', ['a', 'b', 'a;b']);
  add('javascript prototype names', 'constructor=1; toString=2; hasOwnProperty=3', ['constructor', 'toString', 'hasOwnProperty', 'valueOf']);
  add('s: value', 'connect.sid=s:abc.def; sid=s%3Aabc.def', ['connect.sid', 'sid']);

  // Very long values and many pairs.
  const long = 'v'.repeat(8192);
  add('very long value', 'a=' + long + '; b=2', ['a', 'b']);
  add('very long percent value', 'a=' + '%41'.repeat(3000), ['a']);
  add('very long header many pairs', Array.from({ length: 300 }, (_, i) => `k${i}=v${i}`).join('; '), ['k0', 'k150', 'k299', 'k300']);
  add('very long name', 'n'.repeat(4096) + '=1; a=2', ['n'.repeat(4096), 'a']);

  // Fuzz: random headers from tokens that stress the parser.
  const TOK = ['a', 'b', 'ab', 'a', 'b', '=', '=', '=', ';', ';', '; ', ' ', '\t', '"', '%', '%4', '%41', '%e2%82%ac', '%C3',
    '%ED%A0%80', '%F4%90%80%80', '%C0%80', '%2B', '+', '\x00', '\x80', '\xe9', '\xff', '.', 'x', 's:', '%3A'];
  for (let i = 0; i < 300; i++) {
    const header = Array.from({ length: 1 + rng.int(14) }, () => rng.pick(TOK)).join('');
    add('fuzz tokens', header, [rng.pick(['a', 'b', 'ab'])]);
  }
  return V;
}

// ----------------------------------------------------- sign / unsign

// express-session's unsigncookie(): try each secret in order.
function unsignLikeExpress(val, secrets) {
  for (const s of secrets) {
    const r = signature.unsign(val, s);
    if (r !== false) return r;
  }
  return false;
}

// Odd session ids (express would never mint these, but a store may hold them).
const ODD_SIDS = ['', 'a', 'a.b', 'a.b.c', '.', '..', 'é', 'ÿ', '日本語', '😀', 'x😀y', '%', '%41', '100%', 'a%2', 'a+b',
  'a b', ' a', 'a;b', 'a,b', 'a"b', '"q"', 's:nested', '=', 'a=b', 'x'.repeat(200), '\u0000', 'tab\there'];

const HTTP_ODD_SIDS = ODD_SIDS.filter((s) => !REJECTED_HEADER_BYTE.test(s));

function genSign() {
  const rng = makeRng('sign');
  const V = [];
  // HMAC keys longer than the 64-byte SHA-256 block are hashed first: 64/65/129.
  const kinds = [['ascii', 'keyboard cat'], ['unicode', 'sécret ключ 🔑'], ['one byte', 'k'], ['64 bytes', 'a'.repeat(64)],
    ['65 bytes', 'b'.repeat(65)], ['129 bytes', 'c'.repeat(129)], ['90-byte CJK', '鍵'.repeat(30)],
    ['NUL inside', 'nul\u0000inside'], ['spaces around', ' spaced secret '], ['astral only', '😀']];
  const secrets = kinds.map(([, k]) => k);
  const add = (why, sid, secret) => V.push({ why, sid: hexU8(sid), secret: hexU8(secret), signed: signature.sign(sid, secret) });
  for (const sid of ODD_SIDS) add('odd sid ' + (sid.length > 20 ? sid.length + ' chars' : JSON.stringify(sid)), sid, rng.pick(secrets));
  for (const [kind, secret] of kinds) add('secret ' + kind, uid(rng), secret);
  add('empty sid', '', 'keyboard cat');
  while (V.length < 110) add('random uid and secret', uid(rng), rng.pick([rng.str(PRINTABLE, 1 + rng.int(80)), rng.pick(secrets)]));
  return V;
}

// Ways to damage a signed value t = sid + '.' + sig (the part after "s:").
function tamper(kind, sid, secret, rng) {
  const signed = signature.sign(sid, secret);
  const sig = signed.slice(signed.lastIndexOf('.') + 1);
  const flip = (s, i) => s.slice(0, i) + B64[(B64.indexOf(s[i]) + 1 + rng.int(63)) % 64] + s.slice(i + 1);
  switch (kind) {
    case 'none': return signed;
    case 'sig-char': return sid + '.' + flip(sig, rng.int(sig.length));
    case 'sig-last-char': return sid + '.' + flip(sig, sig.length - 1);
    case 'sid-char': return sid.length ? flip(sid.replace(/[^A-Za-z0-9+/]/g, 'A'), rng.int(sid.length)) + '.' + sig : 'A.' + sig;
    case 'truncated': return signed.slice(0, signed.length - 1 - rng.int(3));
    case 'sig-empty': return sid + '.';
    case 'padded': return signed + '=';
    case 'padded2': return signed + '==';
    case 'b64url': return sid + '.' + sig.replace(/\+/g, '-').replace(/\//g, '_');
    case 'hex-sig': return sid + '.' + crypto.createHmac('sha256', secret).update(sid).digest('hex');
    case 'sha1-sig': return sid + '.' + crypto.createHmac('sha1', secret).update(sid).digest('base64').replace(/=+$/, '');
    case 'trailing-garbage': return signed + rng.pick(['x', 'AAAA', '!', '%']);
    case 'trailing-dot': return signed + '.';
    case 'trailing-dot-garbage': return signed + '.x';
    case 'missing-dot': return sid + sig;
    case 'sig-twice': return signed + '.' + sig;
    case 'lowercased-sig': return sid + '.' + sig.toLowerCase();
    default: throw new Error('unknown tamper ' + kind);
  }
}
const TAMPERS = ['sig-char', 'sig-last-char', 'sid-char', 'truncated', 'sig-empty', 'padded', 'padded2', 'b64url', 'hex-sig',
  'sha1-sig', 'trailing-garbage', 'trailing-dot', 'trailing-dot-garbage', 'missing-dot', 'sig-twice', 'lowercased-sig'];

function genUnsign() {
  const rng = makeRng('unsign');
  const V = [];
  const add = (why, value, secrets) => {
    const r = unsignLikeExpress(value, secrets);
    V.push({ why, value: hexU8(value), secrets: secrets.map(hexU8), result: r === false ? null : hexU8(r) });
  };
  const lists = [['keyboard cat'], ['new', 'old'], ['s3', 's2', 's1'], ['sécret ключ 🔑'], ['x'.repeat(100)],
    ['鍵'.repeat(50), 'ascii']];
  for (const list of lists) {
    for (const secret of list) add('valid, signed with list secret #' + list.indexOf(secret), signature.sign(uid(rng), secret), list);
    add('retired secret', signature.sign(uid(rng), 'retired'), list);
    for (const sid of ODD_SIDS) add('odd sid ' + (sid.length > 20 ? sid.length + ' chars' : JSON.stringify(sid)), signature.sign(sid, rng.pick(list)), list);
    for (const t of TAMPERS) add('tampered: ' + t, tamper(t, uid(rng), rng.pick(list), rng), list);
  }
  for (const v of ['', '.', 'abc', '.sig', 'a.b.c', 'abc.', '..', 'é.x', '😀']) add('no valid signature shape', v, ['keyboard cat']);
  // The "no dot" path slices off the last UTF-16 unit; with an astral char at the end.
  add('no dot, astral last char', 'abc😀', ['keyboard cat']);
  add('signature of the empty sid', signature.sign('', 'keyboard cat'), ['keyboard cat']);
  add('secret order does not matter for validity', signature.sign('abc', 'old'), ['old', 'new']);
  add('same secret twice', signature.sign('abc', 'k'), ['k', 'k']);
  while (V.length < 300) {
    const list = rng.pick(lists);
    const t = rng.weighted([[3, 'none'], [2, rng.pick(TAMPERS)]]);
    add('random: ' + t, tamper(t, rng.pick([uid(rng), rng.str(PRINTABLE, rng.int(40))]), rng.pick([...list, 'other']), rng), list);
  }
  return V;
}

// ---------------------------------------------------------- express_sid

// Groups: one express-session middleware per (name, secret list).
const EXPRESS_GROUPS = [
  { name: 'connect.sid', secrets: ['keyboard cat'], why: 'ascii secret' },
  { name: 'connect.sid', secrets: ['sécret ключ 🔑'], why: 'unicode secret' },
  { name: 'connect.sid', secrets: ['L'.repeat(100)], why: 'secret > 64 bytes' },
  { name: 'connect.sid', secrets: ['ü€'.repeat(30)], why: 'unicode secret > 128 bytes' },
  { name: 'connect.sid', secrets: ['new-secret', 'old-secret'], why: 'rotation [new, old]' },
  { name: 'sid', secrets: ['s3', 's2', 's1'], why: 'three secrets' },
  { name: 'my.session', secrets: ['5e<r3t w!th $pecial ch@rs;=,'], why: 'special-char secret' },
  { name: 'connect.sid', secrets: ['Zx8Kq3v0Lr9TnW2yB6uE1oA4sD7fG5hJ', 'prev'], why: 'random secret + previous' },
];

// How the signed string t ("s:" + sid.sig) is placed in the cookie value.
const ENCODINGS = {
  raw: (t) => u8(t),
  url: (t) => encodeURIComponent(t), // what express res.cookie / express-session sets
  'url-lowercase-hex': (t) => encodeURIComponent(t).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
  'pct-every-byte': (t) => pctAll(t),
  'double-encoded': (t) => encodeURIComponent(encodeURIComponent(t)),
  quoted: (t) => '"' + encodeURIComponent(t) + '"',
  'quoted-raw': (t) => '"' + u8(t) + '"',
  'leading-quote': (t) => '"' + encodeURIComponent(t),
  'bad-pct-after': (t) => encodeURIComponent(t) + '%zz',
  'raw-bad-pct-after': (t) => u8(t) + '%',
  'half-encoded': (t) => 's%3A' + u8(t.slice(2)),
};

// Header shapes around name N and value V.
function shape(kind, N, V, decoy) {
  switch (kind) {
    case 'alone': return `${N}=${V}`;
    case 'among others': return `_ga=GA1.1.1234.5678; ${N}=${V}; theme=dark`;
    case 'no spaces': return `a=1;${N}=${V};b=2`;
    case 'dup valid first': return `${N}=${V}; ${N}=${decoy}`;
    case 'dup decoy first': return `${N}=${decoy}; ${N}=${V}`;
    case 'dup empty first': return `${N}=; ${N}=${V}`;
    case 'pair without =': return `flag; ${N}=${V}; other`;
    case 'name without = before': return `${N}; ${N}=${V}`;
    case 'tabs': return `a=1;\t${N}\t=\t${V}\t;b=2`;
    case 'spaces around =': return `a=1; ${N} = ${V} ; b=2`;
    case 'name case differs': return `${N.toUpperCase()}=${V}`;
    case 'prefixed name': return `x${N}=${V}; ${N}x=${V}`;
    case 'prefixed then real': return `x${N}=${decoy}; ${N}x=${decoy}; ${N}=${V}`;
    case 'semicolon runs': return `;;${N}=${V};;`;
    case 'empty name before': return `=${decoy}; ${N}=${V}`;
    default: throw new Error('unknown shape ' + kind);
  }
}
const SHAPES = ['alone', 'among others', 'no spaces', 'dup valid first', 'dup decoy first', 'dup empty first', 'pair without =',
  'name without = before', 'tabs', 'spaces around =', 'name case differs', 'prefixed name', 'prefixed then real',
  'semicolon runs', 'empty name before'];

function expressCases() {
  const rng = makeRng('express_sid');
  const cases = [];
  const add = (g, why, header) => cases.push({ g, why, header });
  EXPRESS_GROUPS.forEach((grp, g) => {
    const N = grp.name;
    const sid = () => rng.weighted([[5, uid(rng)], [1, rng.pick(HTTP_ODD_SIDS)]]);
    const signer = () => rng.weighted([[5, grp.secrets[0]], [3, grp.secrets[grp.secrets.length - 1]], [1, 'retired-' + grp.secrets[0]]]);
    const tag = (s) => (s === grp.secrets[0] ? 'first secret' : grp.secrets.includes(s) ? 'older secret' : 'retired secret');
    // The other value in duplicate/decoy shapes: a valid cookie for another
    // sid, a badly signed one, or junk.  Its kind goes into "why".
    const decoy = () => rng.pick([
      ['decoy valid other sid', encodeURIComponent('s:' + signature.sign(uid(rng), grp.secrets[0]))],
      ['decoy bad signature', 's%3Agarbage.sig'],
      ['decoy junk', 'x']]);
    const DECOY_SHAPES = ['dup valid first', 'dup decoy first', 'prefixed then real', 'empty name before'];
    const shaped = (sh, V) => {
      const [kind, d] = decoy();
      return [DECOY_SHAPES.includes(sh) ? `; ${kind}` : '', shape(sh, N, V, d)];
    };

    // Every encoding x shape once with an undamaged signature.
    for (const enc of Object.keys(ENCODINGS)) {
      for (const sh of SHAPES) {
        const s = signer();
        const [d, h] = shaped(sh, ENCODINGS[enc]('s:' + signature.sign(sid(), s)));
        add(g, `${grp.why}; ${sh}; ${enc}; ${tag(s)}${d}`, h);
      }
    }
    // Every odd sid, URL-encoded and raw (raw only where Node accepts the bytes).
    for (const o of ODD_SIDS) {
      for (const enc of ['url', 'raw']) {
        const h = shape('alone', N, ENCODINGS[enc]('s:' + signature.sign(o, grp.secrets[0])), '');
        const label = o.length > 20 ? `${o.length} chars` : JSON.stringify(o);
        if (!REJECTED_HEADER_BYTE.test(h)) add(g, `${grp.why}; odd sid ${label}; ${enc}`, h);
      }
    }
    // Every tamper, in the common encodings.
    for (const t of TAMPERS) {
      for (const enc of ['url', 'raw']) add(g, `${grp.why}; tampered: ${t}; ${enc}`, shape(rng.pick(SHAPES.slice(0, 3)), N, ENCODINGS[enc]('s:' + tamper(t, uid(rng), signer(), rng)), ''));
    }
    // Prefix variants around "s:".
    const plain = uid(rng);
    const good = signature.sign(plain, grp.secrets[0]);
    for (const [w, v] of [['unsigned sid', plain], ['unsigned signed-looking', good], ['s: alone', 's:'], ['s%3A alone', 's%3A'],
      ['upper S:', 'S:' + good], ['s without colon', 's' + good], ['colon without s', ':' + good], ['s: without signature', 's:' + plain],
      ['s: percent-encoded as %73%3A', '%73%3A' + good], ['j: json cookie', 'j:' + JSON.stringify(plain)],
      ['space after s:', 's: ' + good], ['s:s: twice', 's:s:' + good]]) {
      add(g, `${grp.why}; prefix: ${w}`, `${N}=${v}`);
    }
    // A few whole-header oddities.
    add(g, `${grp.why}; empty header`, '');
    add(g, `${grp.why}; header of one char`, 'a');
    add(g, `${grp.why}; only other cookies`, 'a=1; b=2');
    add(g, `${grp.why}; name only`, N);
    add(g, `${grp.why}; empty value`, `${N}=`);
    add(g, `${grp.why}; high bytes around`, `\xe9=\xff; ${N}=${encodeURIComponent('s:' + signature.sign(plain, grp.secrets[0]))}; x=\x80`);
    // Random mixtures to reach the rest of the space.
    for (let i = 0; i < 40; i++) {
      const t = rng.weighted([[2, 'none'], [1, rng.pick(TAMPERS)]]);
      const enc = rng.pick(Object.keys(ENCODINGS));
      const sh = rng.pick(SHAPES);
      const s = signer();
      const [d, h] = shaped(sh, ENCODINGS[enc]('s:' + tamper(t, sid(), s, rng)));
      add(g, `${grp.why}; random: ${sh}; ${enc}; ${t}; ${tag(s)}${d}`, h);
    }
  });
  return cases;
}

// The store records the id express-session asks for by handing it back
// inside the session, so the route can report it.  get() is the only way
// express-session reads a session; it is never called for a missing id.
class RecordingStore extends session.Store {
  get(sid, cb) {
    cb(null, { cookie: { originalMaxAge: null, path: '/', httpOnly: true }, recordedSid: sid });
  }
  set(sid, sess, cb) { cb(); }
  destroy(sid, cb) { cb(); }
  touch(sid, sess, cb) { cb(); }
}

async function genExpressSid() {
  const cases = expressCases();
  const mws = EXPRESS_GROUPS.map((grp) => session({
    name: grp.name, secret: grp.secrets, store: new RecordingStore(), resave: false, saveUninitialized: false,
  }));
  const app = express();
  app.use((req, res, next) => mws[Number(req.headers['x-group'])](req, res, next));
  app.get('/', (req, res) => {
    const sid = req.session.recordedSid;
    res.json({ echo: echo(req), sid: sid === undefined ? null : hexU8(sid) });
  });
  const server = await listen(app);
  const { port } = server.address();
  try {
    return await mapPool(cases, 16, async (c) => {
      const r = await cookieRequest(port, c.header, { 'X-Group': c.g });
      assert.strictEqual(r.status, 200, `express_sid: HTTP ${r.status} for ${c.why}`);
      const out = JSON.parse(r.body);
      assert.strictEqual(out.echo, hexL1(c.header), 'Node did not see the header bytes we sent');
      const grp = EXPRESS_GROUPS[c.g];
      return { why: c.why, header: hexL1(c.header), name: grp.name, secrets: grp.secrets.map(hexU8), sid: out.sid };
    });
  } finally {
    server.close();
  }
}

// ------------------------------------------------------- cookie_session

const CS_GROUPS = [
  { name: 'session', keys: ['k1'], why: '[k1]' },
  { name: 'session', keys: ['k2', 'k1'], why: 'rotation [k2, k1]' },
  { name: 'session', keys: ['clé 🔑 ключ'], why: 'unicode key' },
  { name: 'session', keys: ['K'.repeat(100), 'short'], why: 'key > 64 bytes' },
  { name: 'app.sess', keys: ['k1'], why: 'name with regex char' },
];

// Realistic session bodies (what cookie-session itself would serialize).
const USER_IDS = [1, 0, 42, -7, 1.5, 9007199254740991, 'alice', '', '0', 'ユーザー😀', null, false, true, { id: 7, name: 'jose' }, [1, 2]];
function csBodies(rng) {
  const bodies = [];
  for (const u of USER_IDS) bodies.push(['passport user ' + JSON.stringify(u), JSON.stringify({ passport: { user: u } })]);
  bodies.push(['passport without user', JSON.stringify({ passport: {} })]);
  bodies.push(['no passport', JSON.stringify({ views: 3, cart: ['a'] })]);
  bodies.push(['empty object', '{}']);
  bodies.push(['with flash', JSON.stringify({ flash: { info: ['hi'] }, passport: { user: 'bob' } })]);
  for (let i = 0; i < 6; i++) bodies.push(['random passport user', JSON.stringify({ passport: { user: uid(rng) }, n: rng.int(1000) })]);
  return bodies;
}
const CS_HOSTILE_BODIES = [
  ['not JSON', 'hello'], ['JSON number', '42'], ['JSON string', '"str"'], ['JSON null', 'null'], ['JSON array', '[1,2]'],
  ['JSON true', 'true'], ['truncated JSON', '{"passport":{"user":1}'], ['trailing garbage', '{"a":1}x'],
  ['leading BOM', '\ufeff{"a":1}'], ['empty body', ''], ['whitespace around', ' \n{"a":1}\t '],
  ['invalid utf-8 inside string', Buffer.from('7b2261223a2280ff227d', 'hex')],
  ['invalid utf-8 outside string', Buffer.from('7b2261223a317dff', 'hex')],
  ['NUL inside string', '{"a":"\u0000"}'], ['escaped unicode', '{"pass\\u0070ort":{"user":"\\ud83d\\ude00"}}'],
].map(([why, b]) => [why, Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8')]);

function csCases() {
  const rng = makeRng('cookie_session');
  const cases = [];
  CS_GROUPS.forEach((grp, g) => {
    const N = grp.name;
    const kg = new Keygrip(grp.keys);
    const sig = (value, key = grp.keys[0]) => new Keygrip([key]).sign(N + '=' + value);
    const add = (why, header) => cases.push({ g, why: `${grp.why}; ${why}`, header });
    // Bodies are bytes; cookie-session base64-encodes the UTF-8 of its JSON.
    const b64 = (b) => (Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8')).toString('base64');
    const bodies = csBodies(rng);

    for (const [w, body] of bodies) {
      const v = b64(body);
      add(`${w}; plain`, `${N}=${v}; ${N}.sig=${sig(v)}`);
    }
    for (const [w, body] of CS_HOSTILE_BODIES) {
      const v = b64(body);
      add(`body: ${w}`, `${N}=${v}; ${N}.sig=${sig(v)}`);
    }
    // Big session: ~8 KB of JSON.
    const big = JSON.stringify({ passport: { user: { id: 1, blob: 'x'.repeat(8000) } } });
    add('8 KB session', `${N}=${b64(big)}; ${N}.sig=${sig(b64(big))}`);

    // Header-level quirks of the `cookies` regex parser, on one realistic body.
    const body = JSON.stringify({ passport: { user: 'alice' } });
    const v = b64(body);
    const s = sig(v);
    const quirks = [
      ['sig first', `${N}.sig=${s}; ${N}=${v}`],
      ['no spaces', `a=1;${N}=${v};${N}.sig=${s}`],
      ['many leading spaces', `a=1;    ${N}=${v};   ${N}.sig=${s}`],
      ['tab before name', `a=1;\t${N}=${v}; ${N}.sig=${s}`],
      ['tab before sig', `${N}=${v};\t${N}.sig=${s}`],
      ['space before =', `${N} =${v}; ${N}.sig=${s}`],
      ['space after =', `${N}= ${v}; ${N}.sig=${s}`],
      ['space after = signed with space', `${N}= ${v}; ${N}.sig=${sig(' ' + v)}`],
      ['trailing space in value', `${N}=${v} ; ${N}.sig=${s}`],
      ['trailing space in value signed with it', `${N}=${v} ; ${N}.sig=${sig(v + ' ')}`],
      ['trailing space in sig', `${N}=${v}; ${N}.sig=${s} ; x=1`],
      ['sig missing', `${N}=${v}`],
      ['sig empty', `${N}=${v}; ${N}.sig=`],
      ['sig tampered', `${N}=${v}; ${N}.sig=${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`],
      ['sig truncated', `${N}=${v}; ${N}.sig=${s.slice(0, -1)}`],
      ['sig standard base64 alphabet', `${N}=${v}; ${N}.sig=${crypto.createHmac('sha1', grp.keys[0]).update(N + '=' + v).digest('base64')}`],
      ['sig of another value', `${N}=${v}; ${N}.sig=${sig(b64('{}'))}`],
      ['sig quoted', `${N}=${v}; ${N}.sig="${s}"`],
      ['sig with only leading quote', `${N}=${v}; ${N}.sig="${s}`],
      ['value quoted, sig over unquoted', `${N}="${v}"; ${N}.sig=${s}`],
      ['value quoted, sig over quoted', `${N}="${v}"; ${N}.sig=${sig('"' + v + '"')}`],
      ['value with only leading quote, sig over full', `${N}="${v}; ${N}.sig=${sig('"' + v)}`],
      ['value with only leading quote, sig over sliced', `${N}="${v}; ${N}.sig=${sig(v.slice(0, -1))}`],
      ['value url-encoded, sig over decoded', `${N}=${encodeURIComponent(v)}; ${N}.sig=${s}`],
      ['value url-encoded, sig over encoded', `${N}=${encodeURIComponent(v)}; ${N}.sig=${sig(encodeURIComponent(v))}`],
      ['base64url alphabet unpadded', `${N}=${Buffer.from(body).toString('base64url')}; ${N}.sig=${sig(Buffer.from(body).toString('base64url'))}`],
      ['whitespace inside base64', `${N}=${v.slice(0, 8)} ${v.slice(8, 16)}\t${v.slice(16)}; ${N}.sig=${sig(v.slice(0, 8) + ' ' + v.slice(8, 16) + '\t' + v.slice(16))}`],
      ['garbage chars inside base64', `${N}=${v.slice(0, 4)}.!*${v.slice(4)}; ${N}.sig=${sig(v.slice(0, 4) + '.!*' + v.slice(4))}`],
      ['high byte inside base64', `${N}=${v.slice(0, 4)}\xe9${v.slice(4)}; ${N}.sig=${sig(v.slice(0, 4) + '\xe9' + v.slice(4))}`],
      ['= in the middle of base64', `${N}=${v.slice(0, 4)}=${v.slice(4)}; ${N}.sig=${sig(v.slice(0, 4) + '=' + v.slice(4))}`],
      ['padding stripped', `${N}=${v.replace(/=+$/, '')}; ${N}.sig=${sig(v.replace(/=+$/, ''))}`],
      ['extra padding', `${N}=${v}==; ${N}.sig=${sig(v + '==')}`],
      ['duplicate value, valid first', `${N}=${v}; ${N}=${b64('{}')}; ${N}.sig=${s}`],
      ['duplicate value, other first', `${N}=${b64('{}')}; ${N}=${v}; ${N}.sig=${s}`],
      ['duplicate sig, valid first', `${N}=${v}; ${N}.sig=${s}; ${N}.sig=AAAA`],
      ['duplicate sig, bad first', `${N}=${v}; ${N}.sig=AAAA; ${N}.sig=${s}`],
      ['decoy name with prefix', `x${N}=${b64('{}')}; ${N}=${v}; ${N}.sig=${s}`],
      ['decoy name with suffix', `${N}x=${b64('{}')}; ${N}=${v}; ${N}.sig=${s}`],
      ['name case differs', `${N[0].toUpperCase()}${N.slice(1)}=${v}; ${N}.sig=${s}`],
      ...(N.includes('.') ? [['name regex chars', `${N.replace('.', 'X')}=${v}; ${N}.sig=${s}`]] : []),
      ['empty value signed', `${N}=; ${N}.sig=${sig('')}`],
      ['semicolon at start', `;${N}=${v};${N}.sig=${s}`],
      ['rotation: signed with last key', `${N}=${v}; ${N}.sig=${sig(v, grp.keys[grp.keys.length - 1])}`],
      ['key not in list', `${N}=${v}; ${N}.sig=${sig(v, 'not-a-key')}`],
      ['sig of name=value with other name', `${N}=${v}; ${N}.sig=${new Keygrip([grp.keys[0]]).sign('other=' + v)}`],
    ];
    for (const [w, h] of quirks) add(w, h);
    assert(kg.verify(N + '=' + v, s));

    // Random bodies x random keys from the list (or not).
    for (let i = 0; i < 25; i++) {
      const [w, b] = rng.pick(bodies);
      const val = b64(b);
      const key = rng.weighted([[3, grp.keys[0]], [2, grp.keys[grp.keys.length - 1]], [1, 'stranger']]);
      add(`random: ${w}; key ${grp.keys.includes(key) ? '#' + grp.keys.indexOf(key) : 'not in list'}`, `${N}=${val}; ${N}.sig=${sig(val, key)}`);
    }
  });
  return cases;
}

async function genCookieSession() {
  const cases = csCases();
  const mws = CS_GROUPS.map((grp) => cookieSession({ name: grp.name, keys: grp.keys }));
  const app = express();
  app.use((req, res, next) => mws[Number(req.headers['x-group'])](req, res, next));
  app.get('/', (req, res) => {
    const s = req.session; // reading it makes cookie-session parse the cookie
    // isNew is false only for a session deserialized from the cookie; _ctx._val
    // is the cookie value cookie-session accepted (before base64 decoding).
    const found = !s.isNew;
    res.json({ echo: echo(req), found, body: found ? Buffer.from(s._ctx._val, 'base64').toString('hex') : null });
  });
  const server = await listen(app);
  const { port } = server.address();
  try {
    return await mapPool(cases, 16, async (c) => {
      const r = await cookieRequest(port, c.header, { 'X-Group': c.g });
      assert.strictEqual(r.status, 200, `cookie_session: HTTP ${r.status} for ${c.why}`);
      const out = JSON.parse(r.body);
      assert.strictEqual(out.echo, hexL1(c.header), 'Node did not see the header bytes we sent');
      const grp = CS_GROUPS[c.g];
      return { why: c.why, header: hexL1(c.header), name: grp.name, keys: grp.keys.map(hexU8), found: out.found, body: out.body };
    });
  } finally {
    server.close();
  }
}

// -------------------------------------------------------------- session

// The verdict for a record as connect-redis would hand it to express-session:
// node-redis decodes the bytes as UTF-8, then JSON.parse.  passport's rule is
// taken from the real SessionStrategy (it deserializes only when su || su === 0).
function sessionVerdict(bytes) {
  const none = { ok: false, expires: null, original_max_age: null, passport: false, user_present: false, user_counts: false, user: null };
  let obj;
  try { obj = JSON.parse(bytes.toString('utf8')); } catch (e) { return none; }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return none;

  let expires = null;
  let oma = null;
  const c = obj.cookie;
  if (c !== null && typeof c === 'object') {
    const e = c.expires;
    // express-session's createSession() turns only a string into a Date;
    // any other type is left alone, so it is reported as null (see README).
    if (typeof e === 'string') {
      const t = Date.parse(e);
      expires = Number.isNaN(t) ? 'invalid' : t;
    }
    if (typeof c.originalMaxAge === 'number') oma = c.originalMaxAge;
  }
  assert(oma === null || Number.isFinite(oma), 'non-finite originalMaxAge cannot be written as JSON');

  let counted = false;
  let seen;
  const strategy = new SessionStrategy((su, req, done) => { counted = true; seen = su; done(null, { id: su }); });
  strategy.pass = () => {};
  strategy.error = (err) => { throw err; };
  strategy.authenticate({ session: obj });

  const p = obj.passport;
  const present = Boolean(p) && p.user !== undefined;
  if (counted) assert(present && Object.is(seen, p.user));
  if (present && typeof p.user === 'number') assert(Number.isFinite(p.user), 'non-finite user id cannot be written as JSON');
  return {
    ok: true, expires, original_max_age: oma, passport: Boolean(p), user_present: present, user_counts: counted,
    user: present ? exactJSON(p.user) : null,
  };
}

// JSON.stringify, except that -0 stays -0: passport hands deserializeUser
// the parsed value, and JSON.stringify(-0) would print "0".
function exactJSON(v) {
  if (Object.is(v, -0)) return '-0';
  if (Array.isArray(v)) return '[' + v.map(exactJSON).join(',') + ']';
  if (v !== null && typeof v === 'object') {
    return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ':' + exactJSON(v[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

// Real records: express-session + passport 0.7 + connect-redis 7, through real
// requests; a fake node-redis v4 client captures what connect-redis SETs.
async function realSessionRecords() {
  const records = [];
  const fakeRedis = {
    scanIterator() {}, // connect-redis detects node-redis v4 by this method
    async get() { return null; },
    async set(key, val) { records.push({ key, val }); return 'OK'; },
    async del() { return 1; },
    async expire() { return 1; },
    async mGet() { return []; },
  };
  // One store per middleware: express-session installs its cookie options on
  // the store (store.generate), so a shared store would take the last ones.
  const users = {
    int: 1, zero: 0, big: 9007199254740991, neg: -7, float: 2.5, str: 'alice', zerostr: '0', uni: 'ユーザー😀',
    esc: 'quote"back\\slash\nnewline\u0001ctl', obj: { id: 7, name: 'jose', roles: ['admin'] }, arr: [1, 'two'], bool: true,
    uuid: '2f1c3d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f', objectid: '507f1f77bcf86cd799439011',
  };
  const cookies = [
    { why: 'maxAge 1 day', cookie: { maxAge: 86400000 } },
    { why: 'no maxAge (browser-session cookie)', cookie: {} },
    { why: 'maxAge 1 h, sameSite, domain, secure false', cookie: { maxAge: 3600000, sameSite: 'lax', domain: 'example.com', secure: false } },
    { why: 'maxAge 1 ms', cookie: { maxAge: 1 } },
    { why: 'maxAge 30 days, path /app, partitioned, priority', cookie: { maxAge: 2592000000, path: '/', partitioned: true, priority: 'high', httpOnly: false } },
  ];
  const passport = new Passport();
  passport.use(new LocalStrategy((username, password, done) => done(null, { key: username })));
  passport.serializeUser((user, done) => done(null, users[user.key]));
  passport.deserializeUser((id, done) => done(null, { id }));

  const mws = cookies.map((c) => session({
    store: new RedisStore({ client: fakeRedis }), secret: 'record-secret', resave: false, saveUninitialized: false, cookie: c.cookie,
  }));
  const app = express();
  app.use((req, res, next) => mws[Number(req.headers['x-group'])](req, res, next));
  app.use(express.urlencoded({ extended: false }));
  app.use(passport.initialize());
  app.use(passport.session());
  app.post('/login', passport.authenticate('local'), (req, res) => res.end('ok'));
  app.post('/login-keep', (req, res, next) => {
    req.session.cart = ['book', 'pen'];
    req.session.views = 3;
    req.login({ key: req.body.username }, { keepSessionInfo: true }, (err) => (err ? next(err) : res.end('ok')));
  });
  app.post('/login-logout', (req, res, next) => {
    req.login({ key: req.body.username }, (err) => {
      if (err) return next(err);
      req.logout((err2) => (err2 ? next(err2) : res.end('ok')));
    });
  });
  app.post('/anon', (req, res) => { req.session.views = 1; res.end('ok'); });

  const server = await listen(app);
  const { port } = server.address();
  const out = [];
  const post = async (g, route, username, why) => {
    const body = Buffer.from('username=' + encodeURIComponent(username) + '&password=pw');
    const head = `POST ${route} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Group: ${g}\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`;
    const before = records.length;
    const r = await rawRequest(port, head, body);
    assert.strictEqual(r.status, 200, `session record request ${route} failed: ${r.status}`);
    // express-session may save the same record twice (after login and at the
    // end of the response); keep each distinct record once.
    for (const rec of records.slice(before)) {
      if (!out.some((o) => o.json === rec.val)) out.push({ why: `real: ${why}; ${cookies[g].why}`, json: rec.val });
    }
  };
  try {
    // Sequential on purpose: record order must not depend on scheduling.
    for (let g = 0; g < cookies.length; g++) {
      for (const k of Object.keys(users)) await post(g, '/login', k, `login, user ${k}`);
      await post(g, '/login-keep', 'int', 'login keeping cart');
      await post(g, '/login-logout', 'str', 'login then logout');
      await post(g, '/anon', 'x', 'anonymous session');
    }
  } finally {
    server.close();
  }
  for (const r of records) assert(r.key.startsWith('sess:'));
  return out;
}

function hostileSessionRecords(real) {
  const rng = makeRng('session');
  const R = [];
  const add = (why, json) => R.push({ why, json });
  const canon = '{"cookie":{"originalMaxAge":86400000,"expires":"2026-11-24T10:00:00.000Z","httpOnly":true,"path":"/"},"passport":{"user":%U%}}';
  const withUser = (u) => canon.replace('%U%', u);
  const withCookie = (c) => `{"cookie":${c},"passport":{"user":1}}`;

  // passport shapes
  for (const p of ['"x"', '""', '[]', '[1]', 'null', '0', '1', 'true', 'false', '{}', '{"user":null}', '{"user":false}',
    '{"user":""}', '{"user":0}', '{"user":"0"}', '{"user":[]}', '{"user":{}}', '{"User":1}', '{"user ":1}', '{"users":1}',
    '{"user":1,"user":2}', '{"__proto__":{"user":1}}', '{"user":"a","other":{"user":"b"}}']) {
    add('passport is ' + p, `{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"passport":${p}}`);
  }
  add('no passport key', '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"views":1}');
  add('passport under __proto__', '{"__proto__":{"passport":{"user":1}}}');
  add('duplicate passport, last wins', '{"passport":{"user":1},"passport":{"user":2}}');
  add('duplicate passport, last null', '{"passport":{"user":1},"passport":null}');
  add('duplicate passport, last has no user', '{"passport":{"user":1},"passport":{}}');
  add('duplicate cookie, last wins', '{"cookie":{"expires":"2026-11-24T10:00:00.000Z"},"cookie":{"expires":"2030-01-01T00:00:00.000Z"},"passport":{"user":1}}');
  add('duplicate expires, last wins', '{"cookie":{"expires":"2026-11-24T10:00:00.000Z","expires":null},"passport":{"user":1}}');
  add('key spelled with escapes', '{"pass\\u0070ort":{"\\u0075ser":"x"}}');
  add('cookie key spelled with escapes', '{"cook\\u0069e":{"expire\\u0073":"2026-11-24T10:00:00Z","originalMaxAge":5},"passport":{"user":1}}');
  add('escaped and plain duplicate key', '{"passport":{"user":1},"pass\\u0070ort":{"user":2}}');
  add('escaped slash in key', '{"pass\\/port":{"user":1}}');

  // user id values
  for (const u of ['0', '-0', '0.0', '-0.0', '0e0', '0E+0', '1e3', '1E3', '1e-3', '1.0', '-1', '9007199254740993',
    '123456789012345678901234567890', '1.7976931348623157e308', '5e-324', '"0"', '""', '" "', 'null', 'false', 'true',
    '"\\u00e9"', '"é"', '"\\ud83d\\ude00"', '"😀"', '"\\ud800"', '"\\udc00x"', '"\\u0000"', '"a\\nb\\t\\"\\\\\\/\\b\\f\\r"',
    '{"id":1}', '{"id":{"nested":[1,{"x":null}]}}', '[1,[2,[3]]]', '[]', '{}', '"x"']) {
    add('user is ' + u, withUser(u));
  }
  // invalid number and string forms -> JSON.parse fails
  for (const u of ['01', '+1', '.5', '1.', '-', '1e', 'NaN', 'Infinity', '-Infinity', '0x10', '1_000', 'undefined',
    "'x'", '"\\x41"', '"\\u12"', '"\\ud83d\\ude0"', '"a\u0001b"', '"a\nb"', '"\\a"', 'True', 'nul']) {
    add('invalid JSON user ' + JSON.stringify(u), withUser(u));
  }
  // cookie / expires / originalMaxAge forms
  for (const e of ['"2026-11-23T10:00:00.000Z"', '"2026-11-23T10:00:00Z"', '"2026-11-23T12:00:00+02:00"', '"2026-11-23T10:00:00-05:30"',
    '"2026-11-23T10:00:00"', '"2026-11-23T10:00"', '"2026-11-23"', '"2026-11"', '"2026"', '"2026-11-23T10:00:00.5Z"',
    '"2026-11-23T10:00:00.123456Z"', '"2026-11-23t10:00:00z"', '"2026-11-23 10:00:00Z"', '" 2026-11-23T10:00:00Z"',
    '"2026-11-23T24:00:00Z"', '"2026-11-23T25:00:00Z"', '"2026-02-30T00:00:00Z"', '"2026-13-01T00:00:00Z"',
    '"+275760-09-13T00:00:00.000Z"', '"+275760-09-13T00:00:00.001Z"', '"-000001-01-01T00:00:00Z"', '"+002026-11-23T10:00:00Z"',
    '"1970-01-01T00:00:00.000Z"', '"1969-12-31T23:59:59.999Z"', '"Mon, 23 Nov 2026 10:00:00 GMT"', '"Tue Nov 24 2026 10:00:00 GMT+0000"',
    '"2026/11/23"', '"garbage"', '""', '"\\u0032026-11-23T10:00:00Z"', '1795000000000', '0', 'true', '{}', '[]', 'null', '"Invalid Date"']) {
    add('cookie.expires ' + e, withCookie(`{"originalMaxAge":3600000,"expires":${e},"httpOnly":true,"path":"/"}`));
  }
  for (const o of ['0', '-0', '1.5e3', '86400000', '-1', '1e21', 'null', '"86400000"', 'true', '{}', '[]']) {
    add('cookie.originalMaxAge ' + o, withCookie(`{"originalMaxAge":${o},"expires":null}`));
  }
  for (const c of ['null', '"str"', '[]', '["2026-11-23T10:00:00Z"]', '5', 'true', '{}', '{"expires":"2026-11-23T10:00:00Z"}']) {
    add('cookie is ' + c, withCookie(c));
  }
  add('cookie missing', '{"passport":{"user":1}}');

  // top level
  for (const t of ['', ' ', 'null', '[]', '[{}]', '1', '"str"', 'true', '{}', '{"passport":{"user":1}}', '[{"passport":{"user":1}}]',
    '"{\\"passport\\":{\\"user\\":1}}"']) {
    add('top level ' + JSON.stringify(t), t);
  }

  // whitespace around every structural character (outside strings)
  const ws = (s, w) => {
    let out = '';
    let inStr = false;
    for (let i = 0; i < s.length; i++) {
      const ch = s[i];
      if (inStr) {
        out += ch;
        if (ch === '\\') out += s[++i];
        else if (ch === '"') inStr = false;
      } else if (ch === '"') {
        out += ch;
        inStr = true;
      } else {
        out += '{}[]:,'.includes(ch) ? w + ch + w : ch;
      }
    }
    return out;
  };
  add('JSON whitespace everywhere', ws(withUser('1'), ' \t\n\r'));
  add('leading and trailing whitespace', ' \n\t\r' + withUser('1') + '\r\n\t ');
  for (const [name, w] of [['form feed', '\f'], ['vertical tab', '\v'], ['NBSP', '\u00a0'], ['U+2028', '\u2028'], ['BOM', '\ufeff'], ['NUL', '\u0000']]) {
    add('non-JSON whitespace: ' + name, w + withUser('1'));
    add('non-JSON whitespace inside: ' + name, ws(withUser('1'), w));
  }

  // trailing garbage
  for (const g of ['x', '}', ']', '{}', ',', ' x', '\u0000', '\n\n', '//c', '/*c*/']) add('trailing ' + JSON.stringify(g), withUser('1') + g);
  add('leading comment', '/*c*/' + withUser('1'));

  // nesting (kept below 512 levels; see README)
  for (const d of [10, 100, 500]) {
    add(`user nested arrays depth ${d}`, withUser('['.repeat(d) + ']'.repeat(d)));
    add(`other key nested objects depth ${d}`, `{"passport":{"user":1},"deep":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}`);
  }
  add('unbalanced nesting', withUser('[[[' + ']]'));

  // big records
  for (const [n, size] of [['8 KB', 8192], ['64 KB', 65536]]) {
    add(`big record ${n}, blob`, `{"cookie":{"originalMaxAge":null,"expires":null},"blob":"${'x'.repeat(size)}","passport":{"user":"big"}}`);
    const keys = Array.from({ length: Math.floor(size / 16) }, (_, i) => `"k${i}":${i}`).join(',');
    add(`big record ${n}, many keys`, `{${keys},"passport":{"user":${size}}}`);
  }
  add('big user string 8 KB', withUser(JSON.stringify('u'.repeat(8192))));

  // invalid UTF-8 bytes (node-redis turns them into U+FFFD before JSON.parse)
  add('invalid utf-8 in other string', Buffer.concat([Buffer.from('{"x":"'), Buffer.from([0xff, 0xc3]), Buffer.from('","passport":{"user":1}}')]));
  add('invalid utf-8 in user', Buffer.concat([Buffer.from('{"passport":{"user":"a'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}}')]));
  add('invalid utf-8 outside strings', Buffer.concat([Buffer.from('{"passport":{"user":1}}'), Buffer.from([0x80])]));

  // truncations of real records at many positions
  for (const which of ['user obj', 'login keeping cart']) {
    const base = real.find((r) => r.why.includes(which)).json;
    for (let i = 0; i < base.length; i += 1 + rng.int(3)) add('truncated real record', base.slice(0, i));
  }
  // random single-byte damage of real records
  const ALPH = ['"', '\\', '{', '}', '[', ']', ':', ',', ' ', '0', '-', 'e', '.', 'n', 'x', '\u00e9'];
  for (let i = 0; i < 150; i++) {
    const r = rng.pick(real).json;
    const at = rng.int(r.length);
    const op = rng.pick(['replace', 'insert', 'delete']);
    const ch = rng.pick(ALPH);
    const m = op === 'replace' ? r.slice(0, at) + ch + r.slice(at + 1) : op === 'insert' ? r.slice(0, at) + ch + r.slice(at) : r.slice(0, at) + r.slice(at + 1);
    add('damaged real record: ' + op, m);
  }
  return R;
}

async function genSession() {
  const real = await realSessionRecords();
  const all = [...real, ...hostileSessionRecords(real)];
  return all.map(({ why, json }) => {
    const bytes = Buffer.isBuffer(json) ? json : Buffer.from(json, 'utf8');
    return { why, json: bytes.toString('hex'), ...sessionVerdict(bytes) };
  });
}

// ---------------------------------------------------------------- main

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  await checkLatin1();
  writeVectors('cookie_get.json', genCookieGet());
  writeVectors('sign.json', genSign());
  writeVectors('unsign.json', genUnsign());
  writeVectors('express_sid.json', await genExpressSid());
  writeVectors('cookie_session.json', await genCookieSession());
  writeVectors('session.json', await genSession());
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
