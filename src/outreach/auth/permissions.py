"""Authorization: Casbin RBAC over the policy stored in the database (API.md section 7)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog
from casbin import AsyncEnforcer
from casbin_async_sqlalchemy_adapter import Adapter
from sqlalchemy import and_, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outreach.auth.models import CasbinRule
from outreach.db.base import table_of

MODEL_PATH = Path(__file__).with_name("model.conf")

log = structlog.get_logger("outreach.auth")

# API.md section 7. The seed only ever adds missing rules: operator-added rows are kept, and
# the adapter's remove_policies is never used (it deletes more rows than asked).
SEED_POLICY: tuple[tuple[str, str, str], ...] = (
    *(("OWNER", "inquiries", a) for a in ("read", "update", "delete", "restore")),
    *(
        ("OWNER", "subscribers", a)
        for a in ("read", "create", "update", "delete", "restore", "export")
    ),
    ("OWNER", "statistics", "read"),
    *(("OWNER", "blocklist", a) for a in ("read", "create", "delete")),
    *(("OWNER", "webhooks", a) for a in ("read", "create", "update", "delete")),
    *(("OWNER", "privacy", a) for a in ("read", "erase")),
    *(("EMPLOYEE", "inquiries", a) for a in ("read", "update")),
    *(("EMPLOYEE", "subscribers", a) for a in ("read", "create", "update")),
    ("EMPLOYEE", "statistics", "read"),
    *(("EMPLOYEE", "blocklist", a) for a in ("read", "create")),
    ("CASHIER", "inquiries", "read"),
    *(("CASHIER", "subscribers", a) for a in ("read", "create")),
)


async def seed_policy(conn: AsyncConnection) -> int:
    """Insert the rules of SEED_POLICY that are missing; returns how many were added."""
    table = table_of(CasbinRule)
    existing = await conn.execute(
        select(table.c.v0, table.c.v1, table.c.v2).where(
            and_(table.c.ptype == "p", table.c.v3.is_(None))
        )
    )
    have = {tuple(row) for row in existing}
    missing = [rule for rule in SEED_POLICY if rule not in have]
    if missing:
        await conn.execute(
            insert(table), [{"ptype": "p", "v0": s, "v1": o, "v2": a} for s, o, a in missing]
        )
    log.info("Policy seeded", added=len(missing), rules=len(SEED_POLICY))
    return len(missing)


class Authorizer:
    """The in-memory Casbin enforcer, loaded from the database at start and on reload()."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._enforcer = AsyncEnforcer(str(MODEL_PATH), Adapter(engine))
        self._roles_cache: dict[tuple[str, str], tuple[str, ...]] = {}
        self._allowed_cache: dict[tuple[tuple[str, ...], str, str], bool] = {}

    async def load(self) -> None:
        await self._enforcer.load_policy()
        self._roles_cache.clear()
        self._allowed_cache.clear()

    def allowed(self, roles: Iterable[str], resource: str, action: str) -> bool:
        key = (tuple(roles), resource, action)
        result = self._allowed_cache.get(key)
        if result is None:
            result = any(self._enforcer.enforce(role, resource, action) for role in key[0])
            if len(self._allowed_cache) < 10_000:  # roles come from tokens: stay bounded
                self._allowed_cache[key] = result
        return result

    def roles_that_may(self, resource: str, action: str) -> tuple[str, ...]:
        """Every role the policy lets do `action` on `resource` (realtime rooms come from this)."""
        key = (resource, action)
        cached = self._roles_cache.get(key)
        if cached is None:
            names = set(self._enforcer.get_all_subjects()) | set(self._enforcer.get_all_roles())
            names |= {rule[0] for rule in self._enforcer.get_grouping_policy()}
            cached = tuple(sorted(n for n in names if self._enforcer.enforce(n, resource, action)))
            self._roles_cache[key] = cached
        return cached
