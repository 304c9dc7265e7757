// Differential reference for resty.passport.engineio.payload: each stdin
// line is one case, { "decode": hex } (a polling body, as bytes) or
// { "encode": [ { type, data | hex, binary } ... ] }.  Prints one JSON line
// per case: the packets the real engine.io-parser (what engine.io 6.6 uses)
// decodes from the body, or the body its encodePayload writes (hex).
// usage: node spec/compat/eio_payload_diff.js < cases.jsonl
'use strict';
const parser = require('engine.io-parser');
const readline = require('readline');

const rl = readline.createInterface({ input: process.stdin });
const out = [];
rl.on('line', (line) => {
  const c = JSON.parse(line);
  if (c.decode !== undefined) {
    // engine.io reads a text body as UTF-8 (its chunks are strings)
    const body = Buffer.from(c.decode, 'hex').toString('utf8');
    const packets = parser.decodePayload(body, 'nodebuffer').map((p) => {
      const r = { type: p.type };
      if (Buffer.isBuffer(p.data)) { r.hex = p.data.toString('hex'); r.binary = true; } else if (p.data !== undefined) r.data = p.data;
      return r;
    });
    out.push(JSON.stringify({ packets }));
  } else {
    const packets = c.encode.map((p) => ({
      type: p.type, data: p.binary ? Buffer.from(p.hex, 'hex') : p.data,
    }));
    parser.encodePayload(packets, (body) => out.push(JSON.stringify({ body: Buffer.from(body, 'utf8').toString('hex') })));
  }
});
rl.on('close', () => { process.stdout.write(out.join('\n') + '\n'); });
