// Preloaded into Artillery by bench/artillery.py (NODE_OPTIONS=--require, which worker
// threads inherit): the benchmark talks to 127.0.0.1 only. A connection to any other
// host (telemetry, an update check) is refused and reported on stderr, never made.
'use strict';

const net = require('node:net');
const dns = require('node:dns');

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

function refuse(host, code) {
  process.stderr.write(`loopback-only: refused a connection to ${host}\n`);
  const err = new Error(`loopback-only: ${host} is not the loopback interface`);
  err.code = code;
  return err;
}

// Every TCP client (http, https, ws, fetch) ends in Socket.prototype.connect.
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function loopbackOnlyConnect(...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0]; // Node's internal normalized form
  let host;
  if (options !== null && typeof options === 'object') {
    if (options.path === undefined) host = options.host ?? 'localhost';
  } else if (typeof options === 'number' || /^\d+$/.test(String(options))) {
    host = typeof args[1] === 'string' ? args[1] : 'localhost';
  }
  if (host !== undefined && !LOOPBACK.has(host)) {
    const err = refuse(host, 'ECONNREFUSED');
    process.nextTick(() => this.destroy(err));
    return this;
  }
  return connect.apply(this, args);
};

const lookup = dns.lookup;
dns.lookup = function loopbackOnlyLookup(hostname, ...rest) {
  if (!LOOPBACK.has(hostname)) {
    const callback = rest[rest.length - 1];
    const err = refuse(hostname, 'ENOTFOUND');
    process.nextTick(() => callback(err));
    return {};
  }
  return lookup.call(this, hostname, ...rest);
};
