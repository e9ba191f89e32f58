"""Optional per-IP limit on the public routes (RATE_LIMIT_PUBLIC), shared through Redis if set.

Rate limiting is the gateway's job by default; this is the service's own second line. When
Redis cannot be reached the limiter lets requests through (fail open, logged): an outage
of a shared counter must not take the contact form down.
"""

from __future__ import annotations

import math
import time
from typing import Any

import structlog
from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from outreach.core.errors import RateLimited

log = structlog.get_logger("outreach.ratelimit")


class PublicRateLimiter:
    def __init__(self, rate: str, redis_url: str | None) -> None:
        self.item = parse(rate)
        storage: Any
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            storage = RedisStorage(
                uri, implementation="redispy", socket_timeout=0.5, socket_connect_timeout=0.5
            )
        else:
            storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)

    async def check(self, key: str) -> None:
        try:
            if await self.limiter.hit(self.item, "public", key):
                return
            stats = await self.limiter.get_window_stats(self.item, "public", key)
        except Exception as exc:  # noqa: BLE001 - fail open, see module docstring
            log.warning("Rate limiter unavailable", error=type(exc).__name__)
            return
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"At most {self.item.amount} requests per {self.item.GRANULARITY.name}",
            headers={"Retry-After": str(retry)},
        )


def make_rate_limiter(rate: str | None, redis_url: Any) -> PublicRateLimiter | None:
    if not rate:
        return None
    url = redis_url if isinstance(redis_url, str) else None
    return PublicRateLimiter(rate, url)
