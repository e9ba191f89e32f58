"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

import outreach.models  # noqa: F401 - every table on the metadata
from outreach.db.base import Base
from tests.support import Api

# Created by the migration in SQL the models cannot express (see the migration's comments).
MIGRATION_ONLY_INDEXES = {
    "uq_casbin_rule_rule",
    "ix_inquiries_search_trgm",
    "ix_subscribers_search_trgm",
}


# Tables kept by migrations alone (PostgreSQL triggers' counters, migration 0002; the job
# queue, migration 0010: pgqueuer's tables on PostgreSQL, `jobs` on SQLite, declared apart
# in jobs/models.py).
MIGRATION_ONLY_TABLES = {
    "row_counts",
    "inquiry_rollup",
    "pgqueuer",
    "pgqueuer_log",
    "pgqueuer_schedules",
    "pgqueuer_statistics",
    "jobs",
}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diff = compare_metadata(context, Base.metadata)
    return [
        d
        for d in diff
        if not (
            isinstance(d, tuple)
            and d[0] == "remove_index"
            and (d[1].name in MIGRATION_ONLY_INDEXES or d[1].table.name in MIGRATION_ONLY_TABLES)
        )
        and not (
            isinstance(d, tuple) and d[0] == "remove_table" and d[1].name in MIGRATION_ONLY_TABLES
        )
    ]


async def test_models_match_the_migrated_schema(api: Api) -> None:
    async with api.state.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []
