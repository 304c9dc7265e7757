// Differential reference for resty.passport.socketio.parser: each stdin line
// is one case, a JSON array of Engine.IO messages (a string is a text
// message, { "b": hex } a binary one), fed in order to a fresh Decoder of
// the real socket.io-parser (4.2.7, what socket.io 4.8 uses).  Prints one
// JSON line per case: the steps up to the first error, each
// { "ok": packet } | { "wait": true } | { "err": message }.
// usage: node spec/compat/sio_parser_diff.js < cases.jsonl
'use strict';
const { Decoder } = require('socket.io-parser');

// JSON cannot carry everything a decoded packet holds: Buffers, non-finite
// numbers, undefined (a placeholder whose num is not an integer) and lone
// surrogates are tagged; an own "__proto__" key is kept as a key.
function tag(v) {
  if (v === undefined) return { $undef: true };
  if (Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    return { $bin: Buffer.from(v.buffer ? v.buffer : v, v.byteOffset || 0, v.byteLength).toString('hex') };
  }
  if (typeof v === 'number') return Number.isFinite(v) ? v : { $num: String(v) };
  if (typeof v === 'string') return v.isWellFormed() ? v : { $ill: Buffer.from(v, 'utf16le').toString('hex') };
  if (Array.isArray(v)) return v.map(tag);
  if (v && typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v)) {
      Object.defineProperty(out, k.isWellFormed() ? k : '$ill:' + Buffer.from(k, 'utf16le').toString('hex'),
        { value: tag(v[k]), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return v;
}

function packetOut(p) {
  const out = { type: p.type, nsp: tag(p.nsp) };
  if (p.id !== undefined) out.id = tag(p.id);
  if (p.data !== undefined) out.data = tag(p.data);
  return out;
}

function run(messages) {
  const dec = new Decoder();
  let got = null;
  dec.on('decoded', (p) => { got = p; });
  const steps = [];
  for (const m of messages) {
    got = null;
    try {
      dec.add(typeof m === 'string' ? m : Buffer.from(m.b, 'hex'));
    } catch (e) {
      steps.push({ err: e.message });
      break;
    }
    steps.push(got ? { ok: packetOut(got) } : { wait: true });
  }
  return steps;
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const lines = Buffer.concat(chunks).toString('utf8').split('\n');
  const out = [];
  for (const line of lines) {
    if (line === '') continue;
    out.push(JSON.stringify(run(JSON.parse(line))));
  }
  process.stdout.write(out.join('\n') + '\n');
});
