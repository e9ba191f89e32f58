import threading
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from outreach.ids.snowflake import (
    EPOCH_MS,
    MAX_SEQUENCE,
    MAX_TIMESTAMP,
    MAX_WORKER_ID,
    ClockMovedBackwardsError,
    SnowflakeGenerator,
    SnowflakeParts,
    TimestampOutOfRangeError,
    id_parts,
    id_to_datetime,
    parse_worker_id,
)

T0 = EPOCH_MS + 1_000_000  # an arbitrary ms inside the valid range


class FakeClock:
    """A ms clock that only moves when told to, or when `sleep` is called."""

    def __init__(self, now: int = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # At least 1 ms so a sub-ms spin still makes progress; round() undoes float noise
        # such as 3 / 1000 * 1000 == 3.0000000000000004.
        self.now += max(1, round(seconds * 1000))


def make(
    worker_id: int = 7, clock: FakeClock | None = None
) -> tuple[SnowflakeGenerator, FakeClock]:
    clock = clock if clock is not None else FakeClock()
    return SnowflakeGenerator(worker_id, clock=clock, sleep=clock.sleep), clock


def test_bit_layout() -> None:
    gen, clock = make(worker_id=5)
    first = gen.next_id()
    second = gen.next_id()
    clock.now += 3
    third = gen.next_id()

    assert first == ((T0 - EPOCH_MS) << 22) | (5 << 12)
    assert id_parts(first) == SnowflakeParts(timestamp_ms=T0, worker_id=5, sequence=0)
    assert id_parts(second) == SnowflakeParts(timestamp_ms=T0, worker_id=5, sequence=1)
    assert id_parts(third) == SnowflakeParts(timestamp_ms=T0 + 3, worker_id=5, sequence=0)
    assert gen.worker_id == 5


def test_largest_id_fits_signed_64_bit() -> None:
    gen, _ = make(worker_id=MAX_WORKER_ID, clock=FakeClock(EPOCH_MS + MAX_TIMESTAMP))
    ids = [gen.next_id() for _ in range(MAX_SEQUENCE + 1)]
    assert ids[-1] == 2**63 - 1
    assert id_parts(ids[-1]) == SnowflakeParts(EPOCH_MS + MAX_TIMESTAMP, MAX_WORKER_ID, 4095)


def test_id_to_datetime_is_utc_aware() -> None:
    ms = 1_717_245_296_789  # 2024-06-01T12:34:56.789Z
    gen, _ = make(clock=FakeClock(ms))
    assert id_to_datetime(gen.next_id()) == datetime(2024, 6, 1, 12, 34, 56, 789_000, tzinfo=UTC)
    assert id_to_datetime(0) == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", [-1, 2**63, True])
def test_parse_id_rejects_non_ids(value: int) -> None:
    with pytest.raises(ValueError, match="not a Snowflake id"):
        id_parts(value)


def test_strictly_increasing_with_fake_clock() -> None:
    gen, clock = make()
    ids = []
    for i in range(10_000):
        if i % 7 == 0:
            clock.now += 1
        ids.append(gen.next_id())
    assert all(a < b for a, b in pairwise(ids))


def test_sequence_exhaustion_waits_for_next_ms() -> None:
    gen, clock = make()
    ids = [gen.next_id() for _ in range(MAX_SEQUENCE + 1)]
    assert clock.sleeps == []
    assert id_parts(ids[-1]).sequence == MAX_SEQUENCE

    overflow = gen.next_id()

    assert clock.sleeps  # waited instead of reusing a sequence number
    assert id_parts(overflow) == SnowflakeParts(T0 + 1, 7, 0)
    assert overflow > ids[-1]


def test_small_backwards_step_is_waited_out() -> None:
    gen, clock = make()
    before = [gen.next_id(), gen.next_id()]
    clock.now -= 3  # within the default max_backwards_ms=5

    after = gen.next_id()

    assert clock.sleeps == [pytest.approx(0.003)]
    assert id_parts(after) == SnowflakeParts(T0, 7, 2)  # continued the same ms's sequence
    assert after > max(before)


def test_small_backwards_step_with_exhausted_sequence() -> None:
    gen, clock = make()
    last = [gen.next_id() for _ in range(MAX_SEQUENCE + 1)][-1]
    clock.now -= 2

    after = gen.next_id()

    assert id_parts(after) == SnowflakeParts(T0 + 1, 7, 0)
    assert after > last


def test_big_backwards_step_raises_then_recovers() -> None:
    gen, clock = make()
    before = [gen.next_id() for _ in range(3)]
    clock.now -= 6  # one past the default limit

    with pytest.raises(ClockMovedBackwardsError, match="backwards by 6 ms"):
        gen.next_id()
    with pytest.raises(ClockMovedBackwardsError):
        gen.next_id()  # still refusing, and still not handing out smaller ids
    assert clock.sleeps == []

    clock.now = T0  # caught up to the last timestamp: continues its sequence
    same_ms = gen.next_id()
    clock.now = T0 + 1
    next_ms = gen.next_id()

    assert id_parts(same_ms) == SnowflakeParts(T0, 7, 3)
    assert max(before) < same_ms < next_ms
    assert isinstance(ClockMovedBackwardsError("x"), RuntimeError)


def test_max_backwards_ms_zero_raises_on_any_step_back() -> None:
    clock = FakeClock()
    gen = SnowflakeGenerator(1, clock=clock, sleep=clock.sleep, max_backwards_ms=0)
    gen.next_id()
    clock.now -= 1
    with pytest.raises(ClockMovedBackwardsError):
        gen.next_id()


@pytest.mark.parametrize("now", [EPOCH_MS - 1, EPOCH_MS + MAX_TIMESTAMP + 1])
def test_timestamp_out_of_range_raises(now: int) -> None:
    gen, _ = make(clock=FakeClock(now))
    with pytest.raises(TimestampOutOfRangeError, match="outside the Snowflake range"):
        gen.next_id()


def test_timestamp_overflow_after_exhaustion_raises() -> None:
    gen, _ = make(clock=FakeClock(EPOCH_MS + MAX_TIMESTAMP))
    for _ in range(MAX_SEQUENCE + 1):
        gen.next_id()
    with pytest.raises(TimestampOutOfRangeError):
        gen.next_id()


@pytest.mark.parametrize("worker_id", [-1, 1024, True, False, "3", 3.0, None])
def test_invalid_worker_id(worker_id: object) -> None:
    with pytest.raises(ValueError, match=r"worker_id must be an int in 0\.\.1023"):
        SnowflakeGenerator(worker_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("worker_id", [0, 1023])
def test_boundary_worker_ids(worker_id: int) -> None:
    gen, _ = make(worker_id=worker_id)
    assert id_parts(gen.next_id()).worker_id == worker_id


@pytest.mark.parametrize("max_backwards_ms", [-1, True, 1.5])
def test_invalid_max_backwards_ms(max_backwards_ms: int) -> None:
    with pytest.raises(ValueError, match="max_backwards_ms"):
        SnowflakeGenerator(1, max_backwards_ms=max_backwards_ms)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("  Auto\n", "auto"),
        ("0", 0),
        ("1023", 1023),
        (" 42 ", 42),
        ("007", 7),
    ],
)
def test_parse_worker_id(raw: str, expected: int | str) -> None:
    assert parse_worker_id(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", " ", "1024", "-1", "+1", "1.0", "0x10", "1e3", "automatic", "٣", "1_0", "9" * 5000]
)
def test_parse_worker_id_rejects(raw: str) -> None:
    with pytest.raises(
        ValueError, match=r"APP_ENV_NODE_ID must be an integer 0\.\.1023 or 'auto', got"
    ):
        parse_worker_id(raw)


def test_million_real_ids_unique_and_increasing() -> None:
    next_id = SnowflakeGenerator(3).next_id
    ids = [next_id() for _ in range(1_000_000)]
    assert all(a < b for a, b in pairwise(ids))
    assert len(set(ids)) == len(ids)


def test_different_workers_same_ms_never_collide() -> None:
    clock = FakeClock()  # shared, so both generators see exactly the same milliseconds
    gen_a = SnowflakeGenerator(1, clock=clock, sleep=clock.sleep)
    gen_b = SnowflakeGenerator(2, clock=clock, sleep=clock.sleep)
    ids_a = [gen_a.next_id() for _ in range(MAX_SEQUENCE + 1)]
    ids_b = [gen_b.next_id() for _ in range(MAX_SEQUENCE + 1)]
    assert clock.now == T0  # every id above came from the same millisecond
    assert not set(ids_a) & set(ids_b)


def test_threads_share_a_generator_without_duplicates() -> None:
    gen = SnowflakeGenerator(9)
    per_thread = 20_000
    results: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(len(results))

    def work(out: list[int]) -> None:
        barrier.wait()
        next_id = gen.next_id
        out.extend(next_id() for _ in range(per_thread))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for out in results:  # each thread sees its own ids increasing
        assert all(a < b for a, b in pairwise(out))
    all_ids = [i for out in results for i in out]
    assert len(set(all_ids)) == len(results) * per_thread
