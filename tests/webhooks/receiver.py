"""A real webhook receiver, run as its own process by the tests (`python receiver.py PORT`).

It records every request (path, headers, body) and answers by path:
  /ok/...            204
  /status/N/...      N
  /fail/N/...        500 for the first N requests to that path, then 204 (fails, then recovers)
  /hang/...          answers nothing for 60 s (the sender's timeout)
  /redirect/...      302 to /landed (a sender that follows it shows up there)
  /endless/...       200, then a body that never ends (a sender that reads it never finishes)
  GET /_log          the recorded requests as JSON
With `--cert FILE --key FILE` it serves https. It prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG: list[dict[str, Any]] = []
SEEN: Counter[str] = Counter()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        return

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        if self.path == "/_log":
            with LOCK:
                body = json.dumps(LOG).encode()
            self._answer(200, body, {"Content-Type": "application/json"})
        else:
            self._answer(404)

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        parts = self.path.strip("/").split("/")
        with LOCK:
            LOG.append(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )
            SEEN[self.path] += 1
            seen = SEEN[self.path]
        kind = parts[0]
        if kind == "ok" or kind == "landed":
            self._answer(204)
        elif kind == "status":
            self._answer(int(parts[1]))
        elif kind == "fail":
            self._answer(500 if seen <= int(parts[1]) else 204, b"not yet")
        elif kind == "hang":
            time.sleep(60)
            self._answer(204)
        elif kind == "redirect":
            self._answer(302, headers={"Location": "/landed"})
        elif kind == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for _ in range(600):  # about a minute, then give up
                    self.wfile.write(b"x" * 65536)
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._answer(404)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)  # noqa: T201 - the test waits for this line
    server.serve_forever()


if __name__ == "__main__":
    main()
