"""The bench's bare hello: the smallest ASGI app, served by `outreach serve` itself (same
uvicorn options: loop, HTTP implementation, workers), so `/healthz` can be read as a ratio
to what this server does with no Python work at all.

    python -m bench.hello --port 3412 [--workers N]   (the service's environment)
"""

from __future__ import annotations

import sys
from typing import Any

from outreach import cli

BODY = b'{"status":"ok"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
}
DONE = {"type": "http.response.body", "body": BODY}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(START)
    await send(DONE)


def factory() -> Any:
    return hello


if __name__ == "__main__":
    cli.SERVED_APP = "bench.hello:factory"
    sys.argv = ["outreach", "serve", *sys.argv[1:]]
    cli.main()
