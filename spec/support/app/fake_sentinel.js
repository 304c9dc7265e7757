// A sentinel that lies, for the fault specs: whatever it is asked, it
// answers that the master is at the address given (a replica, or a port
// where nothing listens).  argv: port, host, master port.
'use strict';
const net = require('net');

const [port, host, masterPort] = process.argv.slice(2);
const reply = `*2\r\n$${host.length}\r\n${host}\r\n$${masterPort.length}\r\n${masterPort}\r\n`;

net.createServer((sock) => {
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    // one reply per command: a command starts with "*<n>"
    let m;
    while ((m = /^\*(\d+)\r\n((?:\$\d+\r\n[^\r]*\r\n)*)/.exec(buf)) && m[2].split('\r\n').length - 1 >= 2 * m[1]) {
      const parts = m[2].split('\r\n');
      const used = `*${m[1]}\r\n`.length + parts.slice(0, 2 * m[1]).join('\r\n').length + 2;
      buf = buf.slice(used);
      sock.write(reply);
    }
  });
  sock.on('error', () => {});
}).listen(Number(port), '127.0.0.1', () => console.log(`listening ${port}`));
