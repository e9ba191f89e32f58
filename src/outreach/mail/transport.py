"""Where a built message goes: an SMTP server (aiosmtplib), or, outside production without
SMTP_URL, an `.eml` file under VAR_DIR/outbox/ (what `make run` would have sent)."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

# Each SMTP command (connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA) waits at most this long;
# a whole delivery at most SEND_TIMEOUT. A slow server is an outage: the job is retried.
COMMAND_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0


class Permanent(Exception):  # noqa: N818
    """The server refused this mail for good (5xx on the recipient or the content)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused with {code}")
        self.code = code


class Transport(Protocol):
    async def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        """Deliver or raise: Permanent for a refusal for good, anything else to retry."""
        ...


TlsMode = Literal["starttls-if-offered", "starttls", "tls", "off"]


@dataclass(frozen=True, slots=True)
class SmtpUrl:
    """SMTP_URL (API.md section 8): `smtp://user:pass@host:587` uses STARTTLS when the
    server offers it, `?tls=required` insists on it, `smtps://` is TLS from the start (port
    465 by default), `?tls=off` never uses TLS. Certificates are verified against the
    system's CAs (SSL_CERT_FILE adds one)."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: TlsMode

    @classmethod
    def parse(cls, url: str) -> SmtpUrl:
        parts = urlsplit(url)
        query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        option = query.get("tls", "")
        if parts.scheme == "smtps":
            tls: TlsMode = "tls"
        elif option == "off":
            tls = "off"
        elif option == "required":
            tls = "starttls"
        else:
            tls = "starttls-if-offered"
        if not parts.hostname:
            raise ValueError("SMTP_URL has no host")
        port = parts.port or (465 if tls == "tls" else 587 if parts.username else 25)
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


class SmtpTransport:
    def __init__(self, url: SmtpUrl) -> None:
        self._url = url
        self._tls = ssl.create_default_context()  # verifies the certificate and host name

    async def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        url = self._url
        start_tls = {"starttls-if-offered": None, "starttls": True, "tls": False, "off": False}[
            url.tls
        ]
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await aiosmtplib.send(
                    # Our bytes: aiosmtplib would flatten the message again with the
                    # standard policy, whose folding loses spaces (mailer.MAIL_POLICY).
                    message.as_bytes(),
                    sender=sender,
                    recipients=[recipient],
                    hostname=url.host,
                    port=url.port,
                    username=url.username,
                    password=url.password,
                    use_tls=url.tls == "tls",
                    start_tls=start_tls,
                    validate_certs=True,
                    tls_context=self._tls if url.tls != "off" else None,
                    timeout=COMMAND_TIMEOUT,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise Permanent(codes[0]) from None
            raise
        except aiosmtplib.SMTPDataError as exc:
            if 500 <= exc.code < 600:
                raise Permanent(exc.code) from None
            raise


class OutboxTransport:
    """Development without SMTP_URL: each mail becomes VAR_DIR/outbox/<time>-<id>.eml."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        del sender, recipient  # in the file's headers
        await asyncio.to_thread(self._write, message.as_bytes())

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.directory / name)  # whole files only, for whoever watches it


def error_reason(exc: BaseException) -> str:
    """A failed delivery, named without its text (a server's reply may quote the address)."""
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    return f"{name} {code}" if isinstance(code, int) and code > 0 else name
