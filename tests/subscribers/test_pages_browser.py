"""The unsubscribe and confirm pages in headless Chromium at phone width: they render with
nothing from another origin and no console error (a CSP violation is one), their button
works without JavaScript; screenshots in the test's output folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from outreach.config import Settings
from outreach.db.base import make_engine
from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import CONFIRM, make_token, token_secrets
from tests.realtime.cluster import node_modules
from tests.support import BASE, Server, unique_email

SCRIPT = Path(__file__).with_name("pages_browser.mjs")
pytestmark = pytest.mark.slow


def selectors(settings: Settings, email: str) -> tuple[str, str | None, str]:
    async def read() -> tuple[str, str | None, str]:
        engine = make_engine(settings)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(
                            Subscriber.unsubscribe_selector,
                            Subscriber.confirm_selector,
                            Subscriber.status,
                        ).where(Subscriber.email == email)
                    )
                ).one()
        finally:
            await engine.dispose()
        return row[0], row[1], row[2]

    return asyncio.run(read())


def browse(url: str, prefix: Path) -> dict[str, object]:
    node = shutil.which("node")
    assert node, "node is required (Node 20)"
    script = prefix.parent / SCRIPT.name  # beside a node_modules link, so its import resolves
    if not script.exists():
        script.write_text(SCRIPT.read_text())
        (prefix.parent / "node_modules").symlink_to(node_modules())
    result = subprocess.run(
        [node, str(script), url, str(prefix)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_pages_render_on_a_phone_with_nothing_from_elsewhere(tmp_path: Path) -> None:
    assert shutil.which("chromium") or Path("/usr/bin/chromium").exists(), "chromium is required"
    db = f"sqlite:///{tmp_path / 'pages.db'}"
    env = {
        "DATABASE_URL": db,
        "VAR_DIR": str(tmp_path),
        "SUBSCRIBE_CONFIRMATION": "double",
        "BUSINESS_NAME": "Cửa hàng Trà Lan",
    }
    settings = Settings(database_url=db, var_dir=tmp_path, app_env="development")
    subprocess.run(
        [sys.executable, "-m", "outreach.cli", "migrate"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    server = Server(env)
    try:
        server.wait_ready()
        email = unique_email("phone")
        response = httpx.post(f"{server.url}{BASE}/subscribers/subscribe", json={"email": email})
        assert response.status_code == 202
        unsubscribe_selector, confirm_selector, status = selectors(settings, email)
        assert status == "PENDING"
        assert confirm_selector is not None
        secrets = token_secrets(settings)

        confirm = browse(
            f"{server.url}{BASE}/subscribers/confirm?token="
            + make_token(secrets, confirm_selector, purpose=CONFIRM),
            tmp_path / "confirm",
        )
        assert "error" not in confirm, confirm
        assert confirm["status"] == 200
        assert confirm["heading"] == "Xác nhận đăng ký"
        assert confirm["afterHeading"] == "Đăng ký đã được xác nhận"
        assert selectors(settings, email)[2] == "ACTIVE"

        # Confirming issued the subscriber's unsubscribe selector anew.
        unsubscribe_selector = selectors(settings, email)[0]
        leave = browse(
            f"{server.url}{BASE}/subscribers/unsubscribe?token="
            + make_token(secrets, unsubscribe_selector),
            tmp_path / "unsubscribe",
        )
        assert "error" not in leave, leave
        assert leave["heading"] == "Hủy đăng ký"
        assert leave["afterHeading"] == "Bạn đã hủy đăng ký"
        assert selectors(settings, email)[2] == "UNSUBSCRIBED"
        for outcome in (confirm, leave):
            assert outcome["foreign"] == [], outcome
            assert outcome["consoleErrors"] == [], outcome  # a CSP violation would be one
            assert outcome["scrollWidth"] == 390  # nothing wider than the phone
            assert outcome["fontSize"] == "16px"
            button = outcome["button"]
            assert isinstance(button, dict)
            assert button["height"] >= 44  # a thumb's target
        for name in ("confirm-page", "confirm-done", "unsubscribe-page", "unsubscribe-done"):
            shot = tmp_path / f"{name}.png"
            assert shot.stat().st_size > 5_000, name
        print(f"screenshots in {tmp_path}")  # noqa: T201 - where to look
    finally:
        server.stop()
