// bench-e2e's sessions: logs users u0..u<N-1> in through the running
// bench/e2e/server.js over real HTTP (POST /login: passport-local, then
// express-session saves the session with connect-redis), and writes the
// signed connect.sid cookies, one Cookie header per line, in user order.
// Also writes as many forged cookies (random sid, random 43-character
// signature): what a client without the secret can send.
// usage: node seed.js <port> <users> <cookies-out> <forged-out>
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const [port, nusers, outFile, forgedFile] = process.argv.slice(2);
const N = Number(nusers);
const CONC = 32;
const agent = new http.Agent({ keepAlive: true, maxSockets: CONC });

function login(i) {
  return new Promise((resolve, reject) => {
    const body = `username=u${i}&password=p${i}`;
    const req = http.request({
      host: '127.0.0.1', port: Number(port), method: 'POST', path: '/login', agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': body.length },
    }, (res) => {
      res.resume();
      res.on('end', () => {
        const set = (res.headers['set-cookie'] || []).find((c) => c.startsWith('connect.sid='));
        if (res.statusCode !== 200 || !set) reject(new Error(`login u${i}: HTTP ${res.statusCode}`));
        else resolve(set.split(';')[0]);
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

(async () => {
  const cookies = new Array(N);
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const i = next++;
      cookies[i] = await login(i);
    }
  };
  await Promise.all(Array.from({ length: CONC }, worker));
  fs.writeFileSync(outFile, `${cookies.join('\n')}\n`);
  const forged = [];
  for (let i = 0; i < N; i++) {
    const sid = crypto.randomBytes(24).toString('base64url');
    const sig = crypto.randomBytes(32).toString('base64').replace(/=+$/, '');
    forged.push(`connect.sid=${encodeURIComponent(`s:${sid}.${sig}`)}`);
  }
  fs.writeFileSync(forgedFile, `${forged.join('\n')}\n`);
  agent.destroy();
  console.log(JSON.stringify({ users: N, cookies: outFile, forged: forgedFile }));
})().catch((e) => { console.error(String(e.stack || e)); process.exit(1); });
