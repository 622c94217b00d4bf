// A Socket.IO 4 server (WebSocket transport only): the "echo" event is acknowledged with its
// payload when the sender asked for an ack, else emitted back to its sender. Heartbeats are Socket.IO's own: pingInterval/pingTimeout from PING_INTERVAL_MS and
// PING_TIMEOUT_MS (Socket.IO's defaults, 25 s and 20 s, when unset).
// Prints one JSON line per event from Socket.IO's own events: listening (with the port),
// engine_open / heartbeat (an answered ping) / engine_close (Engine.IO connections, with the
// close reason), connection /
// disconnect (Socket.IO sockets, with the disconnect reason), echo, ack (an echo acknowledged).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const say = (event) => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  pingInterval: Number(process.env.PING_INTERVAL_MS || 25000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 20000),
});
io.engine.on("connection", (raw) => {
  say({ event: "engine_open" });
  raw.on("heartbeat", () => say({ event: "heartbeat" }));
  raw.on("close", (reason) => say({ event: "engine_close", reason }));
});
io.engine.on("connection_error", (err) => say({ event: "connection_error", code: err.code }));
io.on("connection", (socket) => {
  say({ event: "connection" });
  socket.on("echo", (payload, ack) => {
    say({ event: "echo" });
    if (typeof ack === "function") {
      say({ event: "ack" });
      ack(payload);
    } else {
      socket.emit("echo", payload);
    }
  });
  socket.on("disconnect", (reason) => say({ event: "disconnect", reason }));
});
httpServer.listen(0, "127.0.0.1", () => say({ event: "listening", port: httpServer.address().port }));
process.on("SIGTERM", () => process.exit(0));
