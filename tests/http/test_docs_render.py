"""The Scalar API reference renders in a real browser with no internet access."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import BASE, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_reference_page_renders_offline_in_chromium(tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required on CI (make setup-system installs it)")
        pytest.skip("chromium not installed: run `make setup-system`")
    server = Server({"VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"})
    try:
        server.wait_ready()
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chrome'}",
                # The network is cut: every host but this machine fails to resolve, and any
                # connection that still tries goes to a dead proxy.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1",
                "--virtual-time-budget=20000",
                "--dump-dom",
                f"{server.url}{BASE}/doc",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    dom = result.stdout
    assert "Outreach API" in dom, result.stderr[-2000:]
    # Operations of every part of the API are listed in the rendered reference.
    for text in ("Submit Inquiry", "Unsubscribe", "Export Subscribers", "Inquiry Statistics"):
        assert text in dom, text
    # The bundle came from the service itself.
    assert f"{BASE}/doc/scalar.standalone.js" in server.output()
