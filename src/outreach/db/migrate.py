"""`outreach migrate`: Alembic to head, then the idempotent seeds, under one advisory lock.

The seeds are the domains' (the authorization policy: auth/permissions.py); outreach/models.py
lists them beside every table, and the caller passes them in.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from outreach.config import Settings
from outreach.db.base import make_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_REVISION = re.compile(r"""^revision(?:: *str)? *= *["']([^"']+)["']""", re.M)
# The value may be None, one id, or a tuple of ids (a merge): every quoted id on the line.
_DOWN = re.compile(r"^down_revision\b[^=]*=(.*)$", re.M)
_QUOTED = re.compile(r"""["']([^"']+)["']""")
# pg_advisory_xact_lock key: two pods migrating at once run one after the other.
MIGRATION_LOCK_KEY = 0x6F757472  # "outr"


def alembic_config() -> Config:
    from alembic.config import Config  # only `outreach migrate` needs Alembic itself

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "file_template", "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    return cfg


@lru_cache
def head_revision() -> str:
    """The newest migration's id, read from the version files' `revision` and
    `down_revision` lines: readiness compares it with the database's without importing
    Alembic and every migration (~0.2 s of a server's start; tests/test_cli.py checks
    it against Alembic's own answer)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revisions.update(_REVISION.findall(source))
        for value in _DOWN.findall(source):
            parents.update(_QUOTED.findall(value))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def _upgrade(connection: Connection) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def current_revision(conn: AsyncConnection) -> str | None:
    try:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
    except DBAPIError as exc:
        # No table yet: nothing migrated. Anything else (the database went away) is raised.
        message = str(exc.orig).lower()
        if "no such table" in message or "does not exist" in message:
            return None
        raise
    return result.scalar_one_or_none()


Seed = Callable[[AsyncConnection], Awaitable[int]]


async def migrate(settings: Settings, seeds: Sequence[Seed], *, seed_only: bool = False) -> int:
    """Upgrade and seed in one transaction; returns the number of rows the seeds added."""
    engine = make_engine(settings, pool=False)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            if not seed_only:
                await conn.run_sync(_upgrade)
            return sum([await seed(conn) for seed in seeds])
    finally:
        await engine.dispose()
