"""Unsubscribe tokens at rest: the database holds a selector, the token is derived under
TOKEN_SECRET (docs/adr/0002). A dump cannot unsubscribe anyone; links already mailed keep
working across the migration; the secret rotates with a comma list."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import secrets
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from outreach.config import ConfigError
from outreach.config import local_secret as config_local_secret
from outreach.db.base import UTCDateTime, make_engine, utcnow
from outreach.db.migrate import alembic_config
from outreach.models import migrate
from outreach.subscribers.tokens import (
    LOCAL_SECRET_FILE,
    local_secret,
    make_token,
    new_selector,
    token_secrets,
)
from tests.subscribers.helpers import SUBSCRIBERS, UNSUBSCRIBE, assert_problem
from tests.support import Api, make_settings, start_api, unique_email

EXPORT = f"{SUBSCRIBERS}/export"
# The schema before tokens were derived (0007): the plaintext `unsubscribe_token` column.
PREVIOUS_HEAD = "0006_statement_counters"
SECRET_A = "rotation-secret-A-" + "a" * 32
SECRET_B = "rotation-secret-B-" + "b" * 32


# ---- helpers ------------------------------------------------------------------------------


async def dump(api: Api, *ids: int) -> list[dict[str, Any]]:
    """SELECT every column of these subscribers, as a backup would hold them."""
    async with api.state.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT * FROM subscribers WHERE id IN (" + ",".join(map(str, ids)) + ")")
        )
        return [dict(row) for row in result.mappings()]


async def row_of(api: Api, email: str) -> dict[str, Any]:
    async with api.state.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT * FROM subscribers WHERE email = :e AND deleted_at IS NULL"), {"e": email}
        )
        return dict(result.mappings().one())


async def export(api: Api, marker: str) -> dict[str, str]:
    """email -> the token of its unsubscribe link, from the CSV export."""
    response = await api.client.get(EXPORT, params={"q": marker}, headers=api.owner)
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    return {r["email"]: parse_qs(urlsplit(r["unsubscribeUrl"]).query)["token"][0] for r in rows}


async def subscribe(api: Api, email: str) -> None:
    response = await api.client.post(f"{SUBSCRIBERS}/subscribe", json={"email": email})
    assert response.status_code == 202, response.text


def mac(secret: bytes, message: bytes) -> str:
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@asynccontextmanager
async def app_with(api: Api, dev_key: ECKey, **overrides: Any) -> AsyncIterator[Api]:
    """A second app on `api`'s database, with other settings (another TOKEN_SECRET)."""
    url = api.settings.database_url
    assert url is not None
    settings = make_settings(url.get_secret_value(), api.settings.var_dir, **overrides)
    async with start_api(settings, dev_key) as other:
        yield other


def upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


# ---- (a) a dump is useless ----------------------------------------------------------------


async def test_no_value_of_a_database_dump_unsubscribes_anyone(api: Api) -> None:
    marker = uuid.uuid4().hex
    emails = [unique_email(marker) for _ in range(3)]
    for email in emails:
        await subscribe(api, email)
    # One left and came back: a new selector was issued.
    back = await row_of(api, emails[2])
    links = await export(api, marker)
    assert (await api.client.post(UNSUBSCRIBE, json={"token": links[emails[2]]})).status_code == 200
    await subscribe(api, emails[2])
    assert (await row_of(api, emails[2]))["unsubscribe_selector"] != back["unsubscribe_selector"]

    ids = [(await row_of(api, e))["id"] for e in emails]
    stored = await dump(api, *ids)
    assert len(stored) == 3
    assert all("unsubscribe_token" not in row for row in stored)
    links = await export(api, marker)
    cells = {str(v) for row in stored for v in row.values() if v is not None}
    for candidate in cells:
        for send in ({"json": {"token": candidate[:128]}}, {"params": {"token": candidate[:128]}}):
            response = await api.client.post(UNSUBSCRIBE, **send)  # type: ignore[arg-type]
            assert response.status_code == 404, (candidate, response.text)
        # Nor is any working link written in the dump.
        assert not any(token in candidate for token in links.values())
    assert [(await row_of(api, e))["status"] for e in emails] == ["ACTIVE"] * 3
    # The derived links do work (the dump holds what finds the row, not what opens it).
    for email in emails:
        assert (await api.client.post(UNSUBSCRIBE, json={"token": links[email]})).status_code == 200


# ---- (b) the export's links work ----------------------------------------------------------


async def test_export_links_are_derived_and_unsubscribe(api: Api) -> None:
    marker = uuid.uuid4().hex
    email, bystander = unique_email(marker), unique_email(marker)
    await subscribe(api, email)
    await subscribe(api, bystander)
    links = await export(api, marker)
    row = await row_of(api, email)
    keys = token_secrets(api.settings)
    assert links[email] == make_token(keys, row["unsubscribe_selector"])
    assert links[email] not in {str(v) for v in row.values()}
    assert len(row["unsubscribe_selector"]) >= 22  # 128 random bits

    response = await api.client.post(
        UNSUBSCRIBE, params={"token": links[email]}, data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200, response.text
    assert (await row_of(api, email))["status"] == "UNSUBSCRIBED"
    assert (await row_of(api, bystander))["status"] == "ACTIVE"
    # The same link again (a second click), after another export: still 200, still derived.
    assert (await export(api, marker))[email] == links[email]
    assert (await api.client.post(UNSUBSCRIBE, json={"token": links[email]})).status_code == 200


# ---- (c) links mailed before the migration keep working -----------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
async def old_database(request: pytest.FixtureRequest, fresh_pg: str, tmp_path: Path) -> str:
    """A new database migrated only up to the schema that stored tokens in plain text."""
    url = fresh_pg if request.param == "postgresql" else f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(make_settings(url, tmp_path), pool=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, PREVIOUS_HEAD)
    finally:
        await engine.dispose()
    return url


async def insert_old_subscriber(url: str, var_dir: Path, email: str, status: str) -> str:
    """A subscriber as the code before 0007 stored it; its (plaintext) token."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    engine = make_engine(make_settings(url, var_dir), pool=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO subscribers (id, email, status, subscribed_at,"
                    " unsubscribe_selector, unsubscribe_token, search_text, created_at,"
                    " updated_at) VALUES (:id, :email, :status, :now, :selector, :token,"
                    " :search, :now, :now)"
                ).bindparams(bindparam("now", type_=UTCDateTime())),
                {
                    "id": secrets.randbelow(2**62),
                    "email": email,
                    "search": email,
                    "status": status,
                    "now": now,
                    "selector": token[:16],
                    "token": token,
                },
            )
    finally:
        await engine.dispose()
    return token


async def test_a_link_mailed_before_the_migration_keeps_working(
    old_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    marker = uuid.uuid4().hex
    leaving, staying, returning = (unique_email(marker) for _ in range(3))
    old = {
        e: await insert_old_subscriber(old_database, var_dir, e, "ACTIVE")
        for e in (leaving, staying)
    }
    old[returning] = await insert_old_subscriber(old_database, var_dir, returning, "UNSUBSCRIBED")

    settings = make_settings(old_database, var_dir)
    await migrate(settings)  # head: 0007 and whatever follows, then the seed
    async with start_api(settings, dev_key) as api:
        stored = [await row_of(api, e) for e in old]
        # The plaintext is gone; what is left cannot make a link.
        for row in stored:
            assert "unsubscribe_token" not in row
            assert not any(token in str(v) for token in old.values() for v in row.values())
            assert (
                row["legacy_token_hash"] == hashlib.sha256(old[row["email"]].encode()).hexdigest()
            )

        # The mailed link works, once and again; it touches no one else.
        for _ in range(2):
            response = await api.client.post(UNSUBSCRIBE, json={"token": old[leaving]})
            assert response.status_code == 200, response.text
        assert (await row_of(api, leaving))["status"] == "UNSUBSCRIBED"
        assert (await row_of(api, staying))["status"] == "ACTIVE"
        # The export prints a derived link for the old rows too, and it works.
        links = await export(api, marker)
        assert set(links) == {leaving, staying, returning}
        assert links[staying] != old[staying]
        assert (
            await api.client.post(UNSUBSCRIBE, json={"token": links[staying]})
        ).status_code == 200
        assert (await row_of(api, staying))["status"] == "UNSUBSCRIBED"

        # Resubscribing issues a new selector: the old token dies and its hash is cleared.
        await subscribe(api, returning)
        back = await row_of(api, returning)
        assert (back["status"], back["legacy_token_hash"]) == ("ACTIVE", None)
        assert_problem(await api.client.post(UNSUBSCRIBE, json={"token": old[returning]}), 404)
        assert (await row_of(api, returning))["status"] == "ACTIVE"
        # An old token with one character changed is no one's.
        forged = old[leaving][:-1] + ("A" if old[leaving][-1] != "A" else "B")
        assert_problem(await api.client.post(UNSUBSCRIBE, json={"token": forged}), 404)


# ---- (d) rotation -------------------------------------------------------------------------


async def test_rotation_old_links_work_under_the_comma_list_new_ones_use_the_first(
    api: Api, dev_key: ECKey
) -> None:
    marker = uuid.uuid4().hex
    first, second = unique_email(marker), unique_email(marker)
    async with app_with(api, dev_key, token_secret=SECRET_A) as under_a:
        await subscribe(under_a, first)
        await subscribe(under_a, second)
        made_with_a = await export(under_a, marker)
    selector = (await row_of(api, first))["unsubscribe_selector"]
    assert made_with_a[first] == make_token([SECRET_A.encode()], selector)

    async with app_with(api, dev_key, token_secret=f" {SECRET_B} , {SECRET_A} ") as rotating:
        made_with_b = await export(rotating, marker)
        assert made_with_b[first] == make_token([SECRET_B.encode()], selector)
        assert made_with_b[first] != made_with_a[first]
        # A link mailed before the rotation still works...
        ok = await rotating.client.post(UNSUBSCRIBE, json={"token": made_with_a[first]})
        assert ok.status_code == 200, ok.text
        # ...and so does one the export made after it.
        ok = await rotating.client.post(UNSUBSCRIBE, json={"token": made_with_b[second]})
        assert ok.status_code == 200, ok.text

    # Once A is retired, its links are no one's; B's still work.
    async with app_with(api, dev_key, token_secret=SECRET_B) as retired:
        assert_problem(
            await retired.client.post(UNSUBSCRIBE, json={"token": made_with_a[first]}), 404
        )
        again = await retired.client.post(UNSUBSCRIBE, json={"token": made_with_b[first]})
        assert again.status_code == 200


# ---- (e) the MAC is checked ----------------------------------------------------------------


async def test_a_valid_selector_with_a_wrong_mac_is_404(api: Api) -> None:
    email = unique_email("mac")
    await subscribe(api, email)
    row = await row_of(api, email)
    selector: str = row["unsubscribe_selector"]
    [key] = token_secrets(api.settings)
    genuine = make_token([key], selector)
    other = new_selector()
    forged = [
        selector + mac(b"not-the-secret", b"unsubscribe:" + selector.encode()),
        selector + mac(key, selector.encode()),  # no domain separation
        selector + mac(key, b"confirm:" + selector.encode()),  # another purpose's token
        selector + make_token([key], other)[len(other) :],  # another selector's MAC
        genuine[:-1] + ("A" if genuine[-1] != "A" else "B"),
        genuine[:-1],
        selector,
        selector + "=" * 43,
        str(row["legacy_token_hash"]),
    ]
    for token in forged:
        assert_problem(await api.client.post(UNSUBSCRIBE, json={"token": token}), 404)
    assert (await row_of(api, email))["status"] == "ACTIVE"
    response = await api.client.post(UNSUBSCRIBE, json={"token": genuine})
    assert response.status_code == 200, response.text
    assert (await row_of(api, email))["status"] == "UNSUBSCRIBED"


# ---- the secrets --------------------------------------------------------------------------


def test_without_token_secret_a_local_secret_is_made_once_0600(tmp_path: Path) -> None:
    var = tmp_path / "var"
    settings = make_settings("sqlite:///unused.db", var, app_env="development")
    made = token_secrets(settings)
    path = var / LOCAL_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_bytes().strip(), validate=True)) == 32
    assert made == [path.read_bytes().strip()]
    # A restart (another process: nothing cached) reads the same secret: links survive.
    config_local_secret.cache_clear()
    assert token_secrets(make_settings("sqlite:///unused.db", var)) == made
    assert list(var.iterdir()) == [path]  # no temporary file left behind
    # TOKEN_SECRET, when set, is used instead, first one first.
    assert token_secrets(make_settings("sqlite:///x.db", var, token_secret="b1, a2 ,")) == [
        b"b1",
        b"a2",
    ]


def test_production_never_falls_back_to_a_local_secret(tmp_path: Path) -> None:
    settings = make_settings("postgresql://x@127.0.0.1/db", tmp_path, app_env="production")
    with pytest.raises(ConfigError):
        token_secrets(settings)
    assert not (tmp_path / LOCAL_SECRET_FILE).exists()


def test_an_emptied_local_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / LOCAL_SECRET_FILE).write_bytes(b"\n")
    with pytest.raises(ConfigError):
        local_secret(tmp_path)
