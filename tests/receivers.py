"""Real webhook receivers (tests/webhooks/receiver.py) as processes on 127.0.0.1, plain and
https (a certificate for `secure.test` from a test CA), as session fixtures."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

RECEIVER = Path(__file__).parent / "webhooks" / "receiver.py"


class Receiver:
    """A receiver process (receiver.py) on 127.0.0.1."""

    def __init__(self, *, cert: Path | None = None, key: Path | None = None) -> None:
        self.port = free_port()
        scheme = "https" if cert else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        args = [sys.executable, str(RECEIVER), str(self.port)]
        if cert and key:
            args += ["--cert", str(cert), "--key", str(key)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", line
        self._context: ssl.SSLContext | bool = False

    def trust(self, context: ssl.SSLContext) -> None:
        self._context = context

    def requests(self, path_prefix: str = "/") -> list[dict[str, Any]]:
        """The POSTs received so far whose path starts with `path_prefix`."""
        host = "secure.test" if self._context else "127.0.0.1"
        with httpx.Client(verify=self._context) as client:
            if self._context:  # the certificate names secure.test: reach it by that name
                response = client.get(
                    f"https://127.0.0.1:{self.port}/_log",
                    headers={"Host": host},
                    extensions={"sni_hostname": host},
                )
            else:
                response = client.get(f"{self.url}/_log")
        found: list[dict[str, Any]] = response.json()
        return [r for r in found if r["path"].startswith(path_prefix)]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    process = Receiver()
    yield process
    process.stop()


@dataclass
class Tls:
    ca: ssl.SSLContext  # a client context that trusts the test CA only
    receiver: Receiver


def _certificates(tmp: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `names`, signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outreach test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """An https receiver whose certificate names `secure.test` only, and a CA to trust."""
    tmp = tmp_path_factory.mktemp("tls")
    ca_path, cert, key = _certificates(tmp, ["secure.test"])
    process = Receiver(cert=cert, key=key)
    context = ssl.create_default_context(cafile=str(ca_path))
    process.trust(context)
    yield Tls(context, process)
    process.stop()
