// A real socket.io-client: connects to URL with a Cookie header (and an
// optional Origin), prints one JSON line with the outcome, exits.
// usage: node client.js <url> <transport: websocket|polling> [cookie] [origin]
'use strict';
const { io } = require('socket.io-client');

const [url, transport, cookie, origin] = process.argv.slice(2);
const extraHeaders = {};
if (cookie) extraHeaders.cookie = cookie;
if (origin) extraHeaders.origin = origin;

const socket = io(url, { transports: [transport], extraHeaders, reconnection: false, timeout: 5000 });
const done = (out) => { console.log(JSON.stringify(out)); socket.close(); process.exit(0); };
socket.on('hello', (hello) => done({ connected: true, hello }));
socket.on('connect_error', (err) => done({
  connected: false,
  error: err.message,
  // a polling error's description is the HTTP status itself
  status: typeof err.description === 'number' ? err.description
    : err.description && (err.description.statusCode || err.description.status || null),
  context: err.context && err.context.responseText ? err.context.responseText : null,
}));
setTimeout(() => done({ connected: false, error: 'timeout' }), 8000);
