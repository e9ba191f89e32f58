"""A real SMTP server for the mail tests: aiosmtpd's own, in a process of its own, so a
test can stop it (SMTP down) and start it again on the same port.

    python -m tests.mail.smtp_server PORT DIR [--delay S] [--refuse ADDR] [--tls CERT KEY]

Each message is written to DIR as `<n>.eml` exactly as received (the DATA bytes), with the
envelope in `<n>.json`. `--delay` holds every DATA answer S seconds (a slow server);
`--refuse` answers 550 to RCPT TO that address; `--tls` offers STARTTLS with that
certificate. Prints `ready` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Keep:
    def __init__(self, directory: Path, delay: float, refuse: set[str]) -> None:
        self.directory = directory
        self.delay = delay
        self.refuse = refuse
        self.counter = itertools.count(int(time.time() * 1000))

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's signature
        session: Session,  # noqa: ARG002
        envelope: Envelope,
        address: str,
        options: Any,  # noqa: ARG002
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's signature
        session: Session,
        envelope: Envelope,
    ) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        n = next(self.counter)
        raw = envelope.original_content or b""
        tmp = self.directory / f".{n}.tmp"
        tmp.write_bytes(raw)
        (self.directory / f"{n}.json").write_text(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "at": time.time(),
                }
            )
        )
        os.replace(tmp, self.directory / f"{n}.eml")
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--refuse", action="append", default=[])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    handler = Keep(args.directory, args.delay, {a.lower() for a in args.refuse})
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=args.port,
        tls_context=context,
        decode_data=False,
        enable_SMTPUTF8=True,
        ready_timeout=10,
    )
    controller.start()
    print("ready", flush=True)  # noqa: T201 - the parent test waits for it
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
