"""Blocklist rules: entries added and removed by staff or by a triaged flood; every change is
matched on this replica as soon as it commits and announced to the others (matcher.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.blocklist import repository
from outreach.blocklist.matcher import BlocklistScreen, entry
from outreach.blocklist.models import BlockKind, BlocklistEntry
from outreach.blocklist.schemas import BlockCreate, block_json
from outreach.core.errors import AlreadyListed, NotFound
from outreach.db.base import after_commit, utcnow
from outreach.db.listing import ListQuery, page_body
from outreach.state import State


class BlocklistService:
    def _announce(self, state: State, session: AsyncSession, rows: list[BlocklistEntry]) -> None:
        screen = state.screen
        if rows and isinstance(screen, BlocklistScreen):
            entries = [entry(r.kind, r.value, r.expires_at) for r in rows]
            after_commit(session, lambda: screen.added(entries))

    async def page(self, state: State, query: ListQuery, kinds: list[BlockKind] | None) -> bytes:
        rows, next_cursor, total = await repository.page(state.fastdb, query, kinds)
        return page_body([block_json(r) for r in rows], query.limit, next_cursor, total)

    async def create(
        self, session: AsyncSession, state: State, body: BlockCreate, actor: AuthPrincipal
    ) -> BlocklistEntry:
        if await repository.existing(session, [(body.kind.value, body.value)]):
            raise AlreadyListed(f"{body.kind.value} {body.value} is on the blocklist already")
        row = BlocklistEntry(
            id=state.ids.next_id(),
            kind=body.kind.value,
            value=body.value,
            reason=body.reason,
            created_by=actor.sub,
            created_at=utcnow(),
            expires_at=body.expires_at,
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:  # the same entry added at once by someone else
            raise AlreadyListed(f"{body.kind.value} {body.value} is on the blocklist") from None
        self._announce(state, session, [row])
        return row

    async def add_unlisted(
        self,
        session: AsyncSession,
        state: State,
        pairs: Iterable[tuple[BlockKind, str]],
        actor: AuthPrincipal,
        reason: str,
    ) -> list[dict[str, Any]]:
        """Entries for the (kind, normalized value) pairs not listed yet, in this transaction
        (bulk-status `block`); the JSON of those created."""
        wanted = list(dict.fromkeys((kind.value, value) for kind, value in pairs))
        have = await repository.existing(session, wanted)
        now = utcnow()
        rows = [
            BlocklistEntry(
                id=state.ids.next_id(),
                kind=kind,
                value=value,
                reason=reason,
                created_by=actor.sub,
                created_at=now,
                expires_at=None,
            )
            for kind, value in wanted
            if (kind, value) not in have
        ]
        session.add_all(rows)
        await session.flush()
        self._announce(state, session, rows)
        return [block_json(r) for r in rows]

    async def delete(self, session: AsyncSession, state: State, entry_id: int) -> None:
        row = await repository.get(session, entry_id)
        if row is None:
            raise NotFound("No such blocklist entry")
        kind, value = BlockKind(row.kind), row.value
        await session.delete(row)
        await session.flush()
        screen = state.screen
        if isinstance(screen, BlocklistScreen):
            after_commit(session, lambda: screen.removed(kind, value))


blocklist = BlocklistService()
