"""What the mail tests share: a real SMTP server process, the messages it received, an app
of its own (database, worker, SMTP) per backend, and a certificate for the TLS tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Received:
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    at: float

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str:
        return str(self.message[name])

    def raw_header(self, name: str) -> bytes:
        """The header as it went over the wire (folded lines joined), name excluded."""
        head = self.raw.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        for i, line in enumerate(lines):
            if line.lower().startswith(name.lower().encode() + b":"):
                value = line.split(b":", 1)[1]
                for more in lines[i + 1 :]:
                    if more[:1] not in (b" ", b"\t"):
                        break
                    value += b"\r\n" + more
                return value.strip()
        raise KeyError(name)

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, subtype
        content: str = body.get_content()
        return content.replace("\r\n", "\n")  # lines end in CRLF on the wire


class SmtpServer:
    """tests/mail/smtp_server.py as a process: start, stop (SMTP down), start again."""

    def __init__(self, directory: Path, *, port: int | None = None, args: list[str] | None = None):
        self.port = port or free_port()
        self.directory = directory
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mail.smtp_server", str(self.port), str(self.directory)]
            + self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.strip() == "ready", line + self.proc.stdout.read().decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def received(self, to: str | None = None) -> list[Received]:
        found = []
        for path in sorted(self.directory.glob("*.eml")):
            meta = json.loads(path.with_suffix(".json").read_text())
            item = Received(path.read_bytes(), **meta)
            if to is None or to.lower() in (r.lower() for r in item.rcpt_tos):
                found.append(item)
        return found

    async def wait_for(
        self,
        to: str,
        count: int = 1,
        timeout: float = 15.0,
        where: Callable[[Received], bool] | None = None,
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.received(to) if where is None or where(m)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} mails to {to} in {timeout} s")
            await asyncio.sleep(0.1)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost), and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outreach test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
