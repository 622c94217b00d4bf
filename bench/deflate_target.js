// A Node `ws` echo server on 127.0.0.1 for permessage-deflate: the live tests'
// (tests/engine/test_deflate_live.py) and bench/deflate.py's. Usage:
//   node deflate_target.js <port> <perMessageDeflate as JSON: false, true or ws' options>
// It prints "listening <port>", then for every connection one JSON line with what the
// client offered and what ws agreed to ("agreed": ws' own negotiated parameters)
// and one with the close code each connection ended with, and answers the line "mem" on stdin with {"rss": bytes, "connections": n} after a GC
// when node runs with --expose-gc.
'use strict';

const readline = require('node:readline');
const { WebSocketServer } = require('ws');

const port = Number.parseInt(process.argv[2] ?? '0', 10);
const perMessageDeflate = JSON.parse(process.argv[3] ?? 'true');
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node deflate_target.js <port> <perMessageDeflate JSON>');
  process.exit(2);
}

const server = new WebSocketServer({ host: '127.0.0.1', port, backlog: 4096, perMessageDeflate });
let open = 0;

server.on('connection', (socket, request) => {
  open += 1;
  socket.on('error', () => {});
  socket.on('close', (code) => {
    open -= 1;
    console.log(JSON.stringify({ closed: code }));
  });
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  console.log(JSON.stringify({
    offered: request.headers['sec-websocket-extensions'] ?? null,
    // ws' negotiated parameters (what its answer said), null when none was agreed.
    agreed: socket._extensions['permessage-deflate']?.params ?? null,
  }));
});

server.on('listening', () => console.log(`listening ${server.address().port}`));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'mem') {
    if (global.gc) global.gc();
    console.log(JSON.stringify({ rss: process.memoryUsage().rss, connections: open }));
  }
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
