"""Mail tests: a real SMTP server process and an app of their own per backend (their own
database, so the session's apps' workers never take these jobs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from tests.mail.support import SmtpServer
from tests.support import Api, make_settings, migrated_database, start_api

MAIL_FROM = "Cửa hàng Lan <shop@lan.example>"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
async def mail_api(
    request: pytest.FixtureRequest,
    smtp: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
    var_dir: Path,
    dev_key: ECKey,
) -> AsyncIterator[Api]:
    # The session's VAR_DIR (its development key signs the tests' tokens); a database of
    # its own.
    async with migrated_database(request.param, tmp_path_factory.mktemp("maildb")) as url:
        settings = make_settings(
            url,
            var_dir,
            smtp_url=smtp.url,
            mail_from=MAIL_FROM,
            metrics_enabled=True,
        )
        async with start_api(settings, dev_key) as api:
            await api.state.jobs.wait_started()
            yield api


def staff_address() -> str:
    return f"staff-{uuid.uuid4().hex[:10]}@lan.example"
