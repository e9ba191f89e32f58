// A socket.io-client 4.x (Node) client for the realtime tests: it connects, and prints what
// happens as JSON lines on stdout, one object a line:
//   {"type":"open","transport":"polling","engineId":...}   (the Engine.IO session opened)
//   {"type":"connect","id":...,"engineId":...,"transport":"polling"}
//   {"type":"upgrade","transport":"websocket"}
//   {"type":"event","event":"inquiry.sent","data":{...}}
//   {"type":"connect_error","message":"unauthorized"}
//   {"type":"disconnect","reason":"transport close"}
//   {"type":"reconnect_attempt","attempt":1}
// It exits when its standard input closes, or after --seconds.
//
// Usage: node node_client.mjs --modules DIR --url http://127.0.0.1:PORT
//          [--path /v1/api/outreach/socket.io] [--token JWT] [--transports polling,websocket]
//          [--with-credentials true|false] [--seconds 60] [--events inquiry.sent,...]
// DIR is the folder holding node_modules/socket.io-client (installed at test time, never
// committed: see tests/realtime/conftest.py).

import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    modules: { type: "string" },
    url: { type: "string" },
    path: { type: "string", default: "/v1/api/outreach/socket.io" },
    token: { type: "string" },
    transports: { type: "string", default: "polling,websocket" },
    "with-credentials": { type: "string", default: "true" },
    seconds: { type: "string", default: "60" },
    events: {
      type: "string",
      default: "inquiry.sent,inquiry.updated,subscriber.subscribed,subscriber.unsubscribed",
    },
  },
});
if (!args.modules || !args.url) {
  process.stderr.write("node_client.mjs: --modules and --url are required\n");
  process.exit(2);
}

const require = createRequire(path.join(path.resolve(args.modules), "index.js"));
const { io } = require("socket.io-client");
const version = require("socket.io-client/package.json").version;

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const options = {
  path: args.path,
  transports: args.transports.split(","),
  withCredentials: args["with-credentials"] === "true",
  reconnection: true,
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  timeout: 5000,
};
if (args.token !== undefined) {
  options.auth = { token: args.token };
}

print({ type: "start", version, options: { ...options, auth: options.auth ? "set" : "none" } });
const socket = io(args.url, options);

// Engine.IO level: the transport it opened with, and the upgrade (polling -> websocket).
socket.io.on("open", () => {
  const engine = socket.io.engine;
  print({ type: "open", transport: engine.transport.name, engineId: engine.id });
  engine.on("upgrade", (transport) => print({ type: "upgrade", transport: transport.name }));
});
socket.io.on("reconnect_attempt", (attempt) => print({ type: "reconnect_attempt", attempt }));
socket.on("connect", () => {
  const engine = socket.io.engine;
  print({ type: "connect", id: socket.id, engineId: engine.id, transport: engine.transport.name });
});
socket.on("connect_error", (err) => {
  print({ type: "connect_error", message: err.message, description: String(err.description ?? "") });
  if (err.message === "unauthorized") {
    // The server refused the token: retrying with the same one is pointless.
    finish(0);
  }
});
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
for (const name of args.events.split(",").filter(Boolean)) {
  socket.on(name, (data) => print({ type: "event", event: name, data }));
}

let done = false;
function finish(code) {
  if (done) return;
  done = true;
  socket.close();
  // Let stdout drain before exiting.
  process.stdout.write("", () => process.exit(code));
}

process.stdin.on("end", () => finish(0));
process.stdin.on("close", () => finish(0));
process.stdin.resume();
setTimeout(() => finish(0), Number(args.seconds) * 1000);
process.on("SIGTERM", () => finish(0));
