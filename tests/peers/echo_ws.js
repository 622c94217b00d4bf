// A plain echo service on Node's `ws`: every message goes back as it came (text or binary).
// Prints one JSON line per event from ws's own events: listening (with the port), open,
// message, close (with the code the client sent).
"use strict";
const { WebSocketServer } = require("ws");

const say = (event) => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
wss.on("listening", () => say({ event: "listening", port: wss.address().port }));
wss.on("connection", (ws) => {
  say({ event: "open" });
  ws.on("message", (data, isBinary) => {
    say({ event: "message" });
    ws.send(data, { binary: isBinary });
  });
  ws.on("close", (code) => say({ event: "close", code }));
});
process.on("SIGTERM", () => process.exit(0));
