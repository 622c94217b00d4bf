// The neutral target of the benchmark: one Node process, the `ws` package (pinned in
// package.json), listening on 127.0.0.1 only. It sends {"type":"welcome"} on connect and
// echoes every message, so every client measured does the same full cycle against it.
'use strict';

const { WebSocketServer } = require('ws');

const port = Number.parseInt(process.argv[2] ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node target.js <port>');
  process.exit(2);
}

// perMessageDeflate off: the clients do not all offer it, and compression is not measured.
const server = new WebSocketServer({
  host: '127.0.0.1',
  port,
  backlog: 8192,
  perMessageDeflate: false,
  clientTracking: false,
});

const WELCOME = JSON.stringify({ type: 'welcome' });

server.on('connection', (socket) => {
  socket.on('error', () => {}); // a client that vanishes is not the target's problem
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.send(WELCOME);
});

server.on('listening', () => {
  console.log(`listening ${server.address().port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
