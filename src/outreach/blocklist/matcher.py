"""The blocklist, compiled in memory per replica: a submit or subscribe is checked without a
query (API.md section 10; the list is small and changes rarely).

Emails and domains are dict lookups (an address's domain and each of its parent domains);
networks are grouped by prefix length, so an address is checked with one shift and one dict
lookup per prefix length in use, whatever the number of entries. Each entry keeps its expiry
and stops matching once it has passed.

Every replica holds the whole list. A change on one replica is applied to its own matcher
right after the commit, and announced on Redis; the others reload from the database when the
message comes. A periodic reload (RELOAD_SECONDS) is the fallback when Redis is down or
absent (several replicas without Redis see a change within that time).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog
from redis.asyncio import Redis
from sqlalchemy import select

from outreach.blocklist.models import BlockKind, BlocklistEntry
from outreach.blocklist.values import domain_of, parse_network
from outreach.db.base import table_of
from outreach.db.fast import FastDB

log = structlog.get_logger("outreach.blocklist")

RELOAD_SECONDS = 15.0
CHANNEL = "outreach:blocklist"
_t = table_of(BlocklistEntry)
_ALL = select(_t.c.kind, _t.c.value, _t.c.expires_at)
NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class Entry:
    kind: BlockKind
    value: str
    expires: float  # Unix seconds; NEVER without an expiry


def entry(kind: str, value: str, expires_at: datetime | None) -> Entry:
    return Entry(BlockKind(kind), value, expires_at.timestamp() if expires_at else NEVER)


class Matcher:
    """An immutable compiled blocklist."""

    __slots__ = ("_domains", "_emails", "_v4", "_v6")

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._emails: dict[str, float] = {}
        self._domains: dict[str, float] = {}
        self._v4: dict[int, dict[int, float]] = {}  # prefix length -> network bits -> expiry
        self._v6: dict[int, dict[int, float]] = {}
        for item in entries:
            if item.kind is BlockKind.EMAIL:
                self._emails[item.value] = item.expires
            elif item.kind is BlockKind.DOMAIN:
                self._domains[item.value] = item.expires
            else:
                network = parse_network(item.value)
                table = self._v4 if network.version == 4 else self._v6
                shift = network.max_prefixlen - network.prefixlen
                bits = int(network.network_address) >> shift
                table.setdefault(network.prefixlen, {})[bits] = item.expires

    def blocked(self, email: str, ip: str | None, now: float | None = None) -> bool:
        moment = time.time() if now is None else now
        if self._emails.get(email, 0.0) > moment:
            return True
        if self._domains:
            domain = domain_of(email)
            while domain:
                if self._domains.get(domain, 0.0) > moment:
                    return True
                domain = domain.partition(".")[2]
        if ip and (self._v4 or self._v6):
            return self._ip_blocked(ip, moment)
        return False

    def _ip_blocked(self, ip: str, moment: float) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        table, width = (self._v4, 32) if address.version == 4 else (self._v6, 128)
        value = int(address)
        return any(
            bits.get(value >> (width - prefix), 0.0) > moment for prefix, bits in table.items()
        )


class BlocklistScreen:
    """The State's `screen`: the current Matcher of this replica, kept fresh."""

    def __init__(self, fastdb: FastDB, redis: Redis | None) -> None:
        self._db = fastdb
        self._redis = redis
        self._matcher = Matcher(())
        self._entries: dict[tuple[BlockKind, str], Entry] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def blocked(self, email: str, ip: str | None) -> bool:
        return self._matcher.blocked(email, ip)

    @property
    def size(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # noqa: BLE001 - start open; the periodic reload retries
            log.error("Blocklist could not be loaded", error=type(exc).__name__)
        self._tasks = [asyncio.create_task(self._periodic())]
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reload(self) -> None:
        rows = await self._db.fetch(_ALL, {})
        entries = [entry(r["kind"], r["value"], r["expires_at"]) for r in rows]
        self._set({(e.kind, e.value): e for e in entries})

    def _set(self, entries: dict[tuple[BlockKind, str], Entry]) -> None:
        self._entries = entries
        self._matcher = Matcher(entries.values())

    def added(self, entries: Iterable[Entry]) -> None:
        """Entries committed here: matched at once on this replica, announced to the others."""
        self._set({**self._entries, **{(e.kind, e.value): e for e in entries}})
        self._announce()

    def removed(self, kind: BlockKind, value: str) -> None:
        self._set({k: e for k, e in self._entries.items() if k != (kind, value)})
        self._announce()

    def _announce(self) -> None:
        if self._redis is not None:
            task = asyncio.create_task(self._publish())
            self._tasks.append(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _publish(self) -> None:
        assert self._redis is not None
        try:
            await self._redis.publish(CHANNEL, b"changed")
        except Exception as exc:  # noqa: BLE001 - the others reload within RELOAD_SECONDS
            log.warning("Blocklist change not announced", error=type(exc).__name__)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep the list we have
                log.warning("Blocklist reload failed", error=type(exc).__name__)

    async def _listen(self) -> None:
        """Reload whenever another replica announces a change; resubscribe after a failure."""
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await self.reload()  # what changed while we were not listening
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: the periodic reload covers
                log.warning("Blocklist listener lost Redis", error=type(exc).__name__)
                await asyncio.sleep(1.0)
