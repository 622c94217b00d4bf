// A graphql-ws 6 server on `ws` (subprotocol graphql-transport-ws): `subscription { tick }`
// yields 1, 2, 3, ... one a second from its subscribe. graphql-ws answers its own ping with pong.
// Prints one JSON line per event from graphql-ws's hooks: listening (with the port),
// connect (onConnect), subscribe (onSubscribe), next (onNext), close (onClose, with the
// code and reason), and from ws: open, and ws_close with the close code. (A hook returning
// a value changes what graphql-ws does: say returns nothing.)
"use strict";
const { WebSocketServer } = require("ws");
const { useServer } = require("graphql-ws/use/ws");
const { buildSchema } = require("graphql");

const say = (event) => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};
const schema = buildSchema("type Query { hello: String } type Subscription { tick: Int }");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const roots = {
  query: { hello: () => "hello" },
  subscription: {
    tick: async function* tick() {
      for (let n = 1; ; n += 1) {
        yield { tick: n };
        await sleep(1000);
      }
    },
  },
};
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
wss.on("connection", (ws) => {
  say({ event: "open" });
  ws.on("close", (code) => say({ event: "ws_close", code }));
});
useServer(
  {
    schema,
    roots,
    onConnect: () => say({ event: "connect" }),
    onSubscribe: () => say({ event: "subscribe" }),
    onNext: () => say({ event: "next" }),
    onClose: (_ctx, code, reason) => say({ event: "close", code, reason: String(reason) }),
  },
  wss,
);
wss.on("listening", () => say({ event: "listening", port: wss.address().port }));
process.on("SIGTERM", () => process.exit(0));
