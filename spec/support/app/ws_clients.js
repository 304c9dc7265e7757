// Real WebSocket clients (npm `ws`) held open for a spec, driven over a
// small HTTP control API on loopback, so a Lua spec can open many sockets,
// read what arrived and when, and close them.
//   POST /open?id=&url=&cookie=[&origin=]  GET /state?id=  (all: GET /state)
//   POST /send?id=&data=   POST /close?id=[&code=]   POST /drop?id= (no close frame)
// Prints "listening <port>".  env: PORT (0 = any).
'use strict';
const http = require('http');
const { URL } = require('url');
const WebSocket = require('ws');

const clients = new Map();

function state(c) {
  return {
    id: c.id, open: c.open, status: c.status, messages: c.messages,
    close: c.close, error: c.error,
  };
}

function open(id, url, cookie, origin) {
  const headers = {};
  if (cookie) headers.Cookie = cookie;
  const c = { id, open: false, status: null, messages: [], close: null, error: null };
  const ws = new WebSocket(url, { headers, origin: origin || undefined });
  c.ws = ws;
  ws.on('open', () => { c.open = true; c.status = 101; });
  ws.on('message', (data, isBinary) => {
    c.messages.push({ data: isBinary ? data.toString('base64') : data.toString(), binary: isBinary, at: Date.now() });
  });
  ws.on('close', (code, reason) => { c.open = false; c.close = { code, reason: reason.toString(), at: Date.now() }; });
  ws.on('error', (e) => { c.error = e.message; });
  ws.on('unexpected-response', (req, res) => {
    c.status = res.statusCode;
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => { c.error = body; c.close = { code: 0, reason: 'http ' + res.statusCode, at: Date.now() }; });
  });
  clients.set(id, c);
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  const q = Object.fromEntries(u.searchParams);
  const reply = (code, body) => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
  const c = q.id !== undefined ? clients.get(q.id) : null;
  switch (u.pathname) {
    case '/open': open(q.id, q.url, q.cookie, q.origin); return reply(200, { ok: true });
    case '/state':
      if (q.id === undefined) return reply(200, Array.from(clients.values()).map(state));
      return c ? reply(200, state(c)) : reply(404, { error: 'no such client' });
    case '/send': if (!c) return reply(404, {}); c.ws.send(q.data); return reply(200, { ok: true });
    case '/close': if (!c) return reply(404, {}); c.ws.close(q.code ? Number(q.code) : undefined); return reply(200, { ok: true });
    case '/drop': if (!c) return reply(404, {}); c.ws.terminate(); return reply(200, { ok: true });
    default: return reply(404, { error: 'unknown' });
  }
});
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
