"""Subscriber storage: Core statements for the public hot paths, ORM for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    LargeBinary,
    Select,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.schemas import format_time
from outreach.db.base import get_row, table_of, utcnow
from outreach.db.batch import Grouped, unnest_insert
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, Shape, fetch_page, list_filter, rows_statement
from outreach.jobs import job_insert
from outreach.subscribers.models import (
    Subscriber,
    SubscriberStatus,
    pending,
    subscribed,
    unsubscribed,
)
from outreach.subscribers.tokens import new_selector

_t = table_of(Subscriber)
COLUMNS = tuple(c.name for c in _t.columns)
PUBLIC_COLUMNS = tuple(c for c in _t.columns if c.name != "legacy_token_hash")
PUBLIC_NAMES = tuple(c.name for c in PUBLIC_COLUMNS)
_SUBSCRIBED = tuple(subscribed(None))  # the columns a subscription writes


_PENDING_SET = tuple(pending(utcnow()))  # the columns a double opt-in subscribe writes


def _kept_details(new: Any, dialect: str) -> dict[str, Any]:
    # A resubscribe keeps the old name and source unless new ones are given (and its search
    # text with them: the email is the same), and adds its consent to the ones kept.
    return {
        "name": func.coalesce(new.name, _t.c.name),
        "source": func.coalesce(new.source, _t.c.source),
        "search_text": case((new.name.is_(None), _t.c.search_text), else_=new.search_text),
        "language": func.coalesce(new.language, _t.c.language),
        "consent": _appended(_t.c.consent, new.consent, dialect),
    }


def _appended(kept: Any, new: Any, dialect: str) -> Any:
    """The consents kept, with the new row's (a one-record JSON array) after them."""
    if dialect == "postgresql":
        return cast(cast(kept, postgresql.JSONB).op("||")(cast(new, postgresql.JSONB)), Text)
    return func.json_insert(kept, "$[#]", func.json(func.json_extract(new, "$[0]")))


def _dialect(stmt: Any) -> str:
    return "postgresql" if isinstance(stmt, postgresql.Insert) else "sqlite"


def _upsert(stmt: Any) -> Any:
    """Single opt-in. New: inserted ACTIVE. UNSUBSCRIBED (or PENDING, left from double
    opt-in): ACTIVE with the new row's subscription values (models.subscribed: a new
    selector, so the old token dies). ACTIVE: the WHERE leaves it untouched and nothing is
    returned."""
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=["email"],
        index_where=_t.c.deleted_at.is_(None),
        set_={**{name: new[name] for name in _SUBSCRIBED}, **_kept_details(new, _dialect(stmt))},
        where=_t.c.status != SubscriberStatus.ACTIVE.value,
    ).returning(*PUBLIC_COLUMNS)


def _upsert_pending(stmt: Any) -> Any:
    """Double opt-in (API.md section 12). New: inserted PENDING. UNSUBSCRIBED: PENDING with a
    new confirm selector. PENDING: stays so, keeping the confirm selector already mailed while
    it is valid (a new one never kills it), a new one once it expired. Every row returned is
    PENDING and gets its `subscribe-confirm` mail. ACTIVE: untouched, nothing returned."""
    new = stmt.excluded
    keep = (_t.c.status == SubscriberStatus.PENDING.value) & (
        _t.c.confirm_expires_at > new.updated_at
    )
    return stmt.on_conflict_do_update(
        index_elements=["email"],
        index_where=_t.c.deleted_at.is_(None),
        set_={
            **{name: new[name] for name in _PENDING_SET},
            "confirm_selector": case((keep, _t.c.confirm_selector), else_=new.confirm_selector),
            "confirm_expires_at": case(
                (keep, _t.c.confirm_expires_at), else_=new.confirm_expires_at
            ),
            **_kept_details(new, _dialect(stmt)),
        },
        where=_t.c.status != SubscriberStatus.ACTIVE.value,
    ).returning(*PUBLIC_COLUMNS)


def _one_row(insert: Any) -> Any:
    return insert(_t).values({name: bindparam(name) for name in COLUMNS})


CONFIRM_JOB = "mail.subscribe-confirm"


def _with_confirm_job(upsert: Any) -> Any:
    """`WITH up AS (upsert RETURNING ...), job AS (INSERT INTO pgqueuer ...) SELECT * FROM up`:
    the confirm mail's job queued by the subscribe's own statement, one per PENDING row."""
    up = upsert.cte("up")
    payload = func.convert_to(
        cast(func.json_build_object(literal_column("'subscriberId'"), cast(up.c.id, Text)), Text),
        literal_column("'UTF8'"),
    )
    job = job_insert(
        "postgresql",
        CONFIRM_JOB,
        payload,
        source=up,
        where=up.c.status == literal_column("'PENDING'"),
    ).cte("job")
    return select(*up.c).add_cte(job)


_SQLITE_CONFIRM_JOB = job_insert(
    "sqlite",
    CONFIRM_JOB,
    cast(func.json_object(literal_column("'subscriberId'"), cast(_t.c.id, Text)), LargeBinary),
    source=_t,
    # The row this request's upsert wrote (its new selector), if it is PENDING.
    where=(_t.c.unsubscribe_selector == bindparam("unsubscribe_selector"))
    & (_t.c.status == literal_column("'PENDING'")),
)

# The public changes' webhook fan-out (jobs.py: the messages of the endpoints listening, API.md
# section 13): a job named after the event, queued by the change's own statement only while
# an active endpoint listens for it (a read of that small table inside the statement, as the
# submit's: inquiries/repository.py), so a service without webhooks queues nothing.
SUBSCRIBED_JOB = "subscriber.subscribed"
UNSUBSCRIBED_JOB = "subscriber.unsubscribed"


def _listened(dialect: str, event: str) -> Any:
    # `event` is one of ours (a literal), never a request's value.
    if dialect == "postgresql":
        return text(
            "EXISTS (SELECT 1 FROM webhook_endpoints WHERE active AND deleted_at IS NULL"
            f" AND events::jsonb ? '{event}')"
        )
    return text(
        "EXISTS (SELECT 1 FROM webhook_endpoints, json_each(webhook_endpoints.events) AS e"
        " WHERE webhook_endpoints.active AND webhook_endpoints.deleted_at IS NULL"
        f" AND e.value = '{event}')"
    )


def _with_event_job(written: Any, kind: str) -> Any:
    """PostgreSQL: `WITH up AS (written RETURNING ...), job AS (INSERT INTO pgqueuer ...)
    SELECT * FROM up`: the `kind` job of each row written, while an endpoint listens."""
    up = written.cte("up")
    payload = func.convert_to(
        cast(func.json_build_object(literal_column("'subscriberId'"), cast(up.c.id, Text)), Text),
        literal_column("'UTF8'"),
    )
    job = job_insert(
        "postgresql", kind, payload, source=up, where=_listened("postgresql", kind)
    ).cte("job")
    return select(*up.c).add_cte(job)


def _sqlite_event_job(kind: str, which: Any) -> Any:
    """SQLite has no data-modifying CTE: the job is queued after the change, in its
    transaction, for the row `which` selects."""
    payload = cast(
        func.json_object(literal_column("'subscriberId'"), cast(_t.c.id, Text)), LargeBinary
    )
    return job_insert("sqlite", kind, payload, source=_t, where=which & _listened("sqlite", kind))


# Group commit on PostgreSQL (db/batch.py): each request finds its row by its new selector.
SUBSCRIBE = {
    "postgresql": Grouped(
        _with_event_job(_upsert(_one_row(postgresql.insert)), SUBSCRIBED_JOB),
        _with_event_job(_upsert(unnest_insert(_t)), SUBSCRIBED_JOB),
        match="unsubscribe_selector",
        distinct="email",
    ),
    "sqlite": Grouped(
        _upsert(_one_row(sqlite.insert)),
        also=(
            # The row this request's upsert made ACTIVE (its new selector), if any.
            _sqlite_event_job(
                SUBSCRIBED_JOB,
                (_t.c.unsubscribe_selector == bindparam("unsubscribe_selector"))
                & (_t.c.status == literal_column("'ACTIVE'")),
            ),
        ),
    ),
}
SUBSCRIBE_CONFIRMED = {
    "postgresql": Grouped(
        _with_confirm_job(_upsert_pending(_one_row(postgresql.insert))),
        _with_confirm_job(_upsert_pending(unnest_insert(_t))),
        match="unsubscribe_selector",
        distinct="email",
    ),
    "sqlite": Grouped(_upsert_pending(_one_row(sqlite.insert)), also=(_SQLITE_CONFIRM_JOB,)),
}
_SQLITE_JOB_OF = {
    kind: _sqlite_event_job(kind, _t.c.id == bindparam("sid"))
    for kind in (SUBSCRIBED_JOB, UNSUBSCRIBED_JOB)
}
FIND_BY_SELECTOR = select(_t.c.id, _t.c.legacy_token_hash, _t.c.status, _t.c.email).where(
    _t.c.unsubscribe_selector == bindparam("selector"), _t.c.deleted_at.is_(None)
)
FIND_BY_CONFIRM = select(_t.c.id, _t.c.status, _t.c.email, _t.c.confirm_expires_at).where(
    _t.c.confirm_selector == bindparam("selector"), _t.c.deleted_at.is_(None)
)
GET_LIVE = select(*PUBLIC_COLUMNS).where(_t.c.id == bindparam("sid"), _t.c.deleted_at.is_(None))


def _confirmed(dialect: str) -> Any:
    """The newest consent (the subscribe being confirmed) gets its `confirmedAt`."""
    if dialect == "postgresql":
        doc = cast(_t.c.consent, postgresql.JSONB)
        last = cast(func.jsonb_array_length(doc) - 1, Text)
        path = postgresql.array([last, literal_column("'confirmedAt'")])
        return case(
            (
                func.jsonb_array_length(doc) > 0,
                cast(
                    func.jsonb_set(doc, path, func.to_jsonb(bindparam("now_text", type_=Text))),
                    Text,
                ),
            ),
            else_=_t.c.consent,
        )
    return case(
        (
            func.json_array_length(_t.c.consent) > 0,
            func.json_set(_t.c.consent, "$[#-1].confirmedAt", bindparam("now_text", type_=Text)),
        ),
        else_=_t.c.consent,
    )


def _confirm(dialect: str) -> Any:
    return (
        update(_t)
        .where(
            _t.c.id == bindparam("sid"),
            _t.c.status == SubscriberStatus.PENDING.value,
            _t.c.deleted_at.is_(None),
        )
        # models.subscribed, with the new unsubscribe selector bound per request.
        .values(
            {
                **subscribed(bindparam("now")),
                "unsubscribe_selector": bindparam("new_selector"),
                "consent": _confirmed(dialect),
            }
        )
        .returning(*PUBLIC_COLUMNS)
    )


CONFIRM = {
    "postgresql": _with_event_job(_confirm("postgresql"), SUBSCRIBED_JOB),
    "sqlite": _confirm("sqlite"),
}
_UNSUBSCRIBE = (
    update(_t)
    .where(
        _t.c.id == bindparam("sid"),
        _t.c.status == SubscriberStatus.ACTIVE.value,
        _t.c.deleted_at.is_(None),
    )
    .values(unsubscribed(bindparam("now")))
    .returning(*PUBLIC_COLUMNS)
)
UNSUBSCRIBE = {
    "postgresql": _with_event_job(_UNSUBSCRIBE, UNSUBSCRIBED_JOB),
    "sqlite": _UNSUBSCRIBE,
}


async def _changed(db: FastDB, stmt: Any, kind: str, params: dict[str, Any]) -> Row | None:
    """The row `stmt` changed (None if none), its `kind` job queued with it while an
    endpoint listens: in the statement itself on PostgreSQL, in its transaction on SQLite."""
    if db.dialect == "postgresql":
        return await db.fetchrow(stmt, params)
    async with db.transaction() as conn:
        row = await conn.fetchrow(stmt, params)
        if row is not None:
            await conn.execute(_SQLITE_JOB_OF[kind], {"sid": params["sid"]})
        return row


async def subscribe(
    conn: FastConn, dialect: str, row: dict[str, Any], *, confirm: bool = False
) -> Row | None:
    """The subscriber when it became ACTIVE (new or back; its webhook fan-out queued while an
    endpoint listens), or, with `confirm` (double opt-in), PENDING (its confirm mail queued);
    None when it was ACTIVE already."""
    return await conn.fetch_grouped((SUBSCRIBE_CONFIRMED if confirm else SUBSCRIBE)[dialect], row)


async def find_by_selector(db: FastDB, selector: str) -> Row | None:
    return await db.fetchrow(FIND_BY_SELECTOR, {"selector": selector})


async def find_by_confirm_selector(db: FastDB, selector: str) -> Row | None:
    return await db.fetchrow(FIND_BY_CONFIRM, {"selector": selector})


async def get_live(db: FastConn, subscriber_id: int) -> Row | None:
    return await db.fetchrow(GET_LIVE, {"sid": subscriber_id})


async def confirm(db: FastDB, subscriber_id: int, now: Any) -> Row | None:
    """PENDING to ACTIVE (`subscribedAt` the confirmation time, and its consent's
    `confirmedAt`); None if it was not PENDING."""
    params = {
        "sid": subscriber_id,
        "now": now,
        "now_text": format_time(now),
        "new_selector": new_selector(),
    }
    return await _changed(db, CONFIRM[db.dialect], SUBSCRIBED_JOB, params)


async def unsubscribe(db: FastDB, subscriber_id: int, now: Any) -> Row | None:
    """ACTIVE to UNSUBSCRIBED; None if it was not ACTIVE."""
    params = {"sid": subscriber_id, "now": now}
    return await _changed(db, UNSUBSCRIBE[db.dialect], UNSUBSCRIBED_JOB, params)


async def get(
    session: AsyncSession, subscriber_id: int, *, include_deleted: bool = False, lock: bool = False
) -> Subscriber | None:
    return await get_row(
        session, Subscriber, subscriber_id, include_deleted=include_deleted, lock=lock
    )


async def live_email_taken(
    session: AsyncSession, email: str, *, other_than: int | None = None
) -> bool:
    stmt = select(Subscriber.id).where(Subscriber.email == email, Subscriber.deleted_at.is_(None))
    if other_than is not None:
        stmt = stmt.where(Subscriber.id != other_than)
    return (await session.scalars(stmt.limit(1))).first() is not None


async def page(
    db: FastDB, query: ListQuery, statuses: Sequence[SubscriberStatus] | None
) -> tuple[list[Row], str | None, int]:
    names = [s.value for s in statuses] if statuses else None
    return await fetch_page(db, _t, PUBLIC_NAMES, query, statuses=names, counted=True)


EXPORT_COLUMNS = (
    "id",
    "email",
    "name",
    "status",
    "source",
    "subscribed_at",
    "unsubscribed_at",
    "unsubscribe_selector",
)


@lru_cache(maxsize=256)
def _export_statement(shape: Shape) -> Select[Any]:
    # PENDING subscribers never asked twice: not on the mailing list (API.md section 12).
    return rows_statement(_t, EXPORT_COLUMNS, shape).where(
        _t.c.status != SubscriberStatus.PENDING.value
    )


def export_query(
    dialect: str, query: ListQuery, statuses: Sequence[SubscriberStatus] | None
) -> tuple[Select[Any], dict[str, Any]]:
    """Every row the list with the same filters shows, but PENDING ones, with the selector
    of its link."""
    names = [s.value for s in statuses] if statuses else None
    shape, params = list_filter(dialect, query, statuses=names)
    return _export_statement(shape), params
