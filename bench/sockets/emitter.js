// bench-sockets' emitter publisher: the app side of the emitter row, a
// long-lived process (its startup is not timed) that publishes with
// socket.io's own @socket.io/redis-emitter on an HTTP trigger, as an
// Express app would.  The load generator's second trigger (SIGUSR2 -> GET
// /emit, loadgen -G /emit -g PORT) starts the clock before the request, as
// the other rows' triggers do, so a row reads publish -> last client.
//   GET /expect/R/N  the room of the next emits and how many sockets are in
//                    it (set outside the timed emit; the emitter itself
//                    cannot count them)
//   GET /emit               emitter.to(R).emit("news", { n: 1 }); answers N
// env: PORT, REDIS_PORT, EMITTER_KEY (socket.io).
'use strict';
const http = require('http');
const { createClient } = require('redis');
const { Emitter } = require('@socket.io/redis-emitter');

async function main() {
  const client = createClient({ url: `redis://127.0.0.1:${process.env.REDIS_PORT}` });
  client.on('error', (e) => console.error('redis:', e.message));
  await client.connect();
  const emitter = new Emitter(client, { key: process.env.EMITTER_KEY || 'socket.io' });
  let room = 'even';
  let expected = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/emit') {
      emitter.to(room).emit('news', { n: 1 });
      res.end(String(expected));
    } else if (url.pathname.startsWith('/expect/')) {
      const [r, n] = url.pathname.slice('/expect/'.length).split('/');
      room = decodeURIComponent(r);
      expected = Number(n);
      res.end(Number.isInteger(expected) && expected > 0 ? 'ok' : 'bad count');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
  process.on('SIGTERM', () => process.exit(0));
}
main().catch((e) => { console.error(e); process.exit(1); });
