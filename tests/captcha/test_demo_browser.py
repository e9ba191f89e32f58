"""`make run`'s demo form: in headless Chromium at phone width, the real ALTCHA widget solves
the challenge it fetches from the service and the inquiry is stored; nothing is loaded from
another origin and nothing is written to the console as an error."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.config import Settings
from outreach.models import migrate
from tests.realtime.cluster import node_modules
from tests.support import BASE, Server

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("demo_form.mjs")


def test_the_demo_form_sends_an_inquiry_through_the_real_widget(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required"
    assert Path("/usr/bin/chromium").exists(), "chromium is required (make setup-system)"
    script = tmp_path / SCRIPT.name  # beside a node_modules link, so its import resolves
    script.write_text(SCRIPT.read_text())
    (tmp_path / "node_modules").symlink_to(node_modules())
    var_dir = tmp_path / "var"
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    asyncio.run(migrate(Settings(database_url=url, app_env="test", var_dir=var_dir)))
    server = Server({"VAR_DIR": str(var_dir), "DATABASE_URL": url, "CAPTCHA": "altcha"})
    shot = tmp_path / "demo-contact.png"
    try:
        server.wait_ready()
        result = subprocess.run(
            [node, str(script), f"{server.url}{BASE}/demo/contact", str(shot)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        token = mint_token(load_or_create_key(var_dir), sub="demo", roles=["OWNER"])
        listed = httpx.get(
            f"{server.url}{BASE}/inquiries",
            params={"q": "demo@example.com"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        replay = httpx.post(
            f"{server.url}{BASE}/inquiries/submit",
            json={"name": "x", "email": "x@example.com", "message": "m"},
            headers={"X-Altcha": outcome["payload"]},
        )
    finally:
        server.stop()
    assert outcome["status"] == "201", outcome
    assert outcome["result"].startswith("Sent: inquiry "), outcome
    assert outcome["foreign"] == [], outcome["foreign"]
    assert outcome["consoleErrors"] == [], outcome["consoleErrors"]
    assert [i["name"] for i in listed["data"]] == ["Nguyễn Văn Demo"]
    assert listed["data"][0]["status"] == "SENT"
    assert replay.json()["type"].endswith("/captcha-invalid")  # the widget's payload was real
    assert shot.stat().st_size > 10_000
