"""Snowflake ids: 41-bit ms since EPOCH_MS | 10-bit worker id | 12-bit sequence.

Ids are positive 63-bit ints (fit a signed BIGINT), time-ordered, unique per worker id."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

__all__ = [
    "EPOCH_MS",
    "MAX_SEQUENCE",
    "MAX_TIMESTAMP",
    "MAX_WORKER_ID",
    "ClockMovedBackwardsError",
    "SnowflakeGenerator",
    "SnowflakeParts",
    "TimestampOutOfRangeError",
    "id_to_datetime",
    "id_parts",
    "parse_worker_id",
]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TIMESTAMP_BITS = 41
WORKER_ID_BITS = 10
SEQUENCE_BITS = 12
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1  # ms after EPOCH_MS; good until ~2093
MAX_WORKER_ID = (1 << WORKER_ID_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
_WORKER_SHIFT = SEQUENCE_BITS
_TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_ID_BITS
_MAX_ID = (1 << (TIMESTAMP_BITS + _TIMESTAMP_SHIFT)) - 1
_MAX_MS = EPOCH_MS + MAX_TIMESTAMP
# Sleep granularity while waiting for the next millisecond: short enough to lose little of it,
# long enough not to burn a core while up to 4096 callers queue on the lock.
_SPIN_SLEEP_S = 0.0001
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ClockMovedBackwardsError(RuntimeError):
    """The clock went back further than the generator is willing to wait out."""

    def __init__(self, message: str, behind_ms: int = 0) -> None:
        super().__init__(message)
        self.behind_ms = behind_ms


class TimestampOutOfRangeError(RuntimeError):
    """The clock is before EPOCH_MS or past the 41-bit timestamp range."""


class SnowflakeParts(NamedTuple):
    timestamp_ms: int  # Unix epoch milliseconds
    worker_id: int
    sequence: int


def _system_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_worker_id(worker_id: object) -> int:
    # bool is an int subclass, but True as a worker id is always a bug.
    if isinstance(worker_id, bool) or not isinstance(worker_id, int):
        raise ValueError(
            f"worker_id must be an int in 0..{MAX_WORKER_ID}, got {type(worker_id).__name__} "
            f"{worker_id!r}"
        )
    if not 0 <= worker_id <= MAX_WORKER_ID:
        raise ValueError(f"worker_id must be an int in 0..{MAX_WORKER_ID}, got {worker_id}")
    return int(worker_id)


def _out_of_range(ms: int) -> TimestampOutOfRangeError:
    return TimestampOutOfRangeError(
        f"clock reading {ms} ms is outside the Snowflake range "
        f"{EPOCH_MS}..{_MAX_MS} ms since the Unix epoch"
    )


class SnowflakeGenerator:
    """Thread-safe generator of strictly increasing Snowflake ids for one worker id."""

    __slots__ = (
        "_clock",
        "_last_ms",
        "_lock",
        "_max_backwards_ms",
        "_seq",
        "_sleep",
        "_worker_bits",
        "_worker_id",
    )

    def __init__(
        self,
        worker_id: int,
        *,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        max_backwards_ms: int = 5,
    ) -> None:
        self._worker_id = _check_worker_id(worker_id)
        if isinstance(max_backwards_ms, bool) or not isinstance(max_backwards_ms, int):
            raise ValueError(f"max_backwards_ms must be an int, got {max_backwards_ms!r}")
        if max_backwards_ms < 0:
            raise ValueError(f"max_backwards_ms must be >= 0, got {max_backwards_ms}")
        self._worker_bits = self._worker_id << _WORKER_SHIFT
        self._clock = clock if clock is not None else _system_clock_ms
        self._sleep = sleep if sleep is not None else time.sleep
        self._max_backwards_ms = max_backwards_ms
        self._lock = threading.Lock()
        # -1 so the first reading always counts as a new millisecond.
        self._last_ms = -1
        self._seq = 0

    @property
    def worker_id(self) -> int:
        return self._worker_id

    def ready(self) -> bool:
        """False while the clock is further behind the last id than next_id() would wait out
        (readiness: such a process cannot create anything until the clock catches up)."""
        return self._clock() >= self._last_ms - self._max_backwards_ms

    def next_id(self) -> int:
        """Return an id greater than every id this generator returned before."""
        # Explicit acquire/try/finally: measurably cheaper than `with` on this hot path.
        lock = self._lock
        lock.acquire()
        try:
            ms = self._clock()
            last = self._last_ms
            if ms > last:
                # Range is only checked when the millisecond changes; same-ms ids reuse the check.
                if not EPOCH_MS <= ms <= _MAX_MS:
                    raise _out_of_range(ms)
                seq = 0
            elif ms == last and self._seq < MAX_SEQUENCE:
                seq = self._seq + 1
            else:
                ms, seq = self._wait_for_clock(ms, last)
            self._last_ms = ms
            self._seq = seq
        finally:
            lock.release()
        return ((ms - EPOCH_MS) << _TIMESTAMP_SHIFT) | self._worker_bits | seq

    def _wait_for_clock(self, ms: int, last: int) -> tuple[int, int]:
        # Slow path, called with the lock held: the clock is behind the last id's timestamp, or
        # this millisecond's sequence is used up. Holding the lock makes other callers wait too,
        # which is what we want: nobody may issue an id until the clock is usable again.
        exhausted = self._seq >= MAX_SEQUENCE
        while ms < last or (exhausted and ms == last):
            behind = last - ms
            if behind > self._max_backwards_ms:
                raise ClockMovedBackwardsError(
                    f"clock moved backwards by {behind} ms (limit {self._max_backwards_ms} ms); "
                    f"refusing to generate ids until it reaches {last}",
                    behind,
                )
            self._sleep(behind / 1000 if behind > 0 else _SPIN_SLEEP_S)
            ms = self._clock()
        if ms == last:
            return ms, self._seq + 1
        if not EPOCH_MS <= ms <= _MAX_MS:
            raise _out_of_range(ms)
        return ms, 0


def id_parts(value: int) -> SnowflakeParts:
    """Split an id into its Unix-ms timestamp, worker id and sequence."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise ValueError(f"not a Snowflake id: {value!r}")
    return SnowflakeParts(
        timestamp_ms=(value >> _TIMESTAMP_SHIFT) + EPOCH_MS,
        worker_id=(value >> _WORKER_SHIFT) & MAX_WORKER_ID,
        sequence=value & MAX_SEQUENCE,
    )


def id_to_datetime(value: int) -> datetime:
    """Return the id's creation time as an aware UTC datetime (millisecond precision)."""
    # timedelta arithmetic is exact, unlike datetime.fromtimestamp(ms / 1000).
    return _UNIX_EPOCH + timedelta(milliseconds=id_parts(value).timestamp_ms)


def parse_worker_id(raw: str) -> int | Literal["auto"]:
    """Parse the APP_ENV_NODE_ID setting: 'auto' (any case) or a decimal int 0..MAX_WORKER_ID."""
    text = raw.strip()
    if text.lower() == "auto":
        return "auto"
    # isascii() keeps out non-ASCII digits, which int() would otherwise accept.
    if text.isascii() and text.isdigit():
        try:
            value = int(text)
        except ValueError:  # more digits than int() allows; certainly out of range
            pass
        else:
            if value <= MAX_WORKER_ID:
                return value
    raise ValueError(
        f"APP_ENV_NODE_ID must be an integer 0..{MAX_WORKER_ID} or 'auto', got {raw!r}"
    )
