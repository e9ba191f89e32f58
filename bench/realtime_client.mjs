// The Node load process of bench/realtime_latency.py (`--client node`): N socket.io-client
// 4.x clients on one replica (WebSocket transport), each noting when it got each
// `inquiry.sent`, on CLOCK_MONOTONIC (libuv's hrtime: the clock of Python's
// time.monotonic()). The same protocol as the Python load process, over stdin/stdout:
//   stdout {"ready": n, "failed": n, "seconds": s}   once every client has connected or failed
//   stdin closed by the coordinator                   -> stdout {"receipts": [[id, t], ...],
//                                                                "connected": n}, then exit
// Usage: node realtime_client.mjs --modules DIR --url URL --tokens FILE [--path P]
// DIR holds node_modules/socket.io-client (installed by the coordinator under var/, never
// committed).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    modules: { type: "string" },
    url: { type: "string" },
    tokens: { type: "string" },
    path: { type: "string", default: "/v1/api/outreach/socket.io" },
  },
});
const require = createRequire(path.join(args.modules, "noop.js"));
const { io } = require("socket.io-client");

const tokens = JSON.parse(readFileSync(args.tokens, "utf8"));
const receipts = [];
const sockets = [];
let failed = 0;
const now = () => Number(process.hrtime.bigint()) / 1e9;

function openOne(token) {
  return new Promise((resolve) => {
    const socket = io(args.url, {
      path: args.path,
      auth: { token },
      transports: ["websocket"],
      reconnection: false,
      timeout: 30000,
      forceNew: true,
    });
    socket.on("inquiry.sent", (data) => receipts.push([String(data.id), now()]));
    socket.once("connect", () => {
      sockets.push(socket);
      resolve();
    });
    socket.once("connect_error", () => {
      failed += 1;
      socket.close();
      resolve();
    });
  });
}

const started = now();
const queue = [...tokens];
// At most 25 connects in flight, as the Python load process.
await Promise.all(
  Array.from({ length: 25 }, async () => {
    while (queue.length) {
      await openOne(queue.shift());
    }
  }),
);
process.stdout.write(
  JSON.stringify({ ready: sockets.length, failed, seconds: now() - started }) + "\n",
);

process.stdin.resume();
process.stdin.on("end", () => {
  setTimeout(() => {
    process.stdout.write(JSON.stringify({ receipts, connected: sockets.length }) + "\n", () => {
      for (const socket of sockets) socket.close();
      process.exit(0);
    });
  }, 200);
});
