"""Snowflake worker id leases in Redis (ids/leases.py): no two live processes share an id.

Unit-level tests use the machine's Redis with a key prefix of their own; the tests that stop
Redis start a `redis-server` of their own. Real processes: `python -c` lease holders (cheap)
and `outreach serve` where only the server shows it (refused start, --workers 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from outreach.core.errors import Unavailable
from outreach.ids.leases import LEASE_PREFIX, IdsUnavailable, LeasedIds, LeaseError
from outreach.ids.snowflake import MAX_WORKER_ID, id_parts
from outreach.main import create_app
from tests.support import BASE, REDIS_URL, Server, free_port, make_settings

ALL_IDS = MAX_WORKER_ID + 1


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - the environment, reported as a failure
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc} (run `make services`)")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test:leases:{uuid.uuid4().hex[:10]}:"
    try:
        yield name
    finally:
        keys = [key async for key in redis.scan_iter(match=name + "*", count=1000)]
        if keys:
            await redis.delete(*keys)


async def held(redis: Redis, prefix: str) -> dict[int, str]:
    """worker id -> holder token, for every live key under the prefix."""
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
    values = await redis.mget(keys) if keys else []
    return {
        int(str(key).rsplit(":", 1)[1]): str(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }


async def fill_all_but(redis: Redis, prefix: str, free: int, ttl_ms: int = 60_000) -> None:
    """Lease every id except `free` to a phantom holder."""
    async with redis.pipeline(transaction=False) as pipe:
        for worker in range(ALL_IDS):
            if worker != free:
                pipe.set(f"{prefix}{worker}", "phantom:1:x", px=ttl_ms)
        await pipe.execute()


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- module level


async def test_a_fixed_id_is_registered_and_a_second_holder_is_refused(
    redis: Redis, prefix: str
) -> None:
    first = LeasedIds(517, REDIS_URL, prefix=prefix, ttl=5)
    await first.start()
    try:
        assert first.ready()
        assert first.worker_id == 517
        assert id_parts(first.next_id()).worker_id == 517
        holders = await held(redis, prefix)
        assert list(holders) == [517]
        host, pid, _random = holders[517].split(":")
        assert (host, int(pid)) == (socket.gethostname(), os.getpid())
        assert 4000 < await redis.pttl(f"{prefix}517") <= 5000

        second = LeasedIds(517, REDIS_URL, prefix=prefix, ttl=5)
        with pytest.raises(LeaseError) as refused:
            await second.start()
        message = str(refused.value)
        assert "\n" not in message
        assert "worker id 517 is already leased" in message
        assert f"{socket.gethostname()}:{os.getpid()}" in message
        assert not second.ready()
        with pytest.raises(IdsUnavailable):
            second.next_id()
    finally:
        await first.stop()
    # Released on a clean stop: the id is free again at once.
    assert await held(redis, prefix) == {}
    assert not first.ready()
    again = LeasedIds(517, REDIS_URL, prefix=prefix, ttl=5)
    await again.start()
    await again.stop()


async def test_twenty_auto_leases_in_one_loop_are_distinct(redis: Redis, prefix: str) -> None:
    leases = [LeasedIds("auto", REDIS_URL, prefix=prefix, ttl=5) for _ in range(20)]
    try:
        await asyncio.gather(*(asyncio.create_task(lease.start()) for lease in leases))
        workers = [lease.worker_id for lease in leases]
        assert len(set(workers)) == 20
        holders = await held(redis, prefix)
        assert sorted(holders) == sorted(workers)
        assert {holders[lease.worker_id] for lease in leases} == {lease.holder for lease in leases}
        ids = [lease.next_id() for lease in leases for _ in range(50)]
        assert len(set(ids)) == len(ids)
    finally:
        await asyncio.gather(*(lease.stop() for lease in leases))
    assert await held(redis, prefix) == {}


async def test_auto_refuses_to_start_when_every_id_is_leased(redis: Redis, prefix: str) -> None:
    await fill_all_but(redis, prefix, free=-1)
    lease = LeasedIds("auto", REDIS_URL, prefix=prefix, ttl=5)
    with pytest.raises(LeaseError, match="no free worker id"):
        await lease.start()
    assert not lease.ready()


async def test_renewal_keeps_the_lease_past_its_ttl(redis: Redis, prefix: str) -> None:
    lease = LeasedIds("auto", REDIS_URL, prefix=prefix, ttl=1.0)
    await lease.start()
    try:
        key = lease.key
        await asyncio.sleep(2.5)  # 2.5 TTLs: only renewals keep it
        assert lease.ready()
        lease.next_id()
        assert await redis.get(key) == lease.holder
        assert 0 < await redis.pttl(key) <= 1000
    finally:
        await lease.stop()
    assert await redis.exists(key) == 0


async def test_a_fixed_id_taken_by_someone_else_stops_ids_until_it_is_free(
    redis: Redis, prefix: str
) -> None:
    lease = LeasedIds(33, REDIS_URL, prefix=prefix, ttl=1.5)
    await lease.start()
    try:
        lease.next_id()
        # Another process took the key (as after an expiry we did not see): stop at once.
        await redis.set(lease.key, "other-host:4242:abc", px=60_000)
        await wait_for(lambda: not lease.ready(), 3, "the lease to be seen as lost")
        with pytest.raises(IdsUnavailable) as unavailable:
            lease.next_id()
        assert isinstance(unavailable.value, Unavailable)
        assert unavailable.value.status == 503
        assert unavailable.value.slug == "ids-unavailable"
        # Still taken a while later: still no ids, and the key is not stolen back.
        await asyncio.sleep(0.6)
        assert not lease.ready()
        assert await redis.get(lease.key) == "other-host:4242:abc"
        # The other holder is gone: the id is taken again and ids resume.
        await redis.delete(lease.key)
        await wait_for(lease.ready, 3, "the lease to be taken again")
        assert id_parts(lease.next_id()).worker_id == 33
        assert await redis.get(lease.key) == lease.holder
    finally:
        await lease.stop()


async def test_an_auto_id_taken_by_someone_else_moves_to_another_id(
    redis: Redis, prefix: str
) -> None:
    lease = LeasedIds("auto", REDIS_URL, prefix=prefix, ttl=1.5)
    await lease.start()
    try:
        before = lease.worker_id
        await redis.set(lease.key, "other-host:4242:abc", px=60_000)
        await wait_for(lambda: lease.worker_id != before, 3, "a new worker id")
        assert lease.ready()
        assert id_parts(lease.next_id()).worker_id == lease.worker_id
        assert (await held(redis, prefix))[lease.worker_id] == lease.holder
        assert (await held(redis, prefix))[before] == "other-host:4242:abc"
    finally:
        await lease.stop()


async def test_without_redis_a_fixed_id_works_and_auto_is_refused() -> None:
    fixed = LeasedIds(12, None)
    assert fixed.ready()  # usable at once, as before leases existed
    await fixed.start()
    assert id_parts(fixed.next_id()).worker_id == 12
    await fixed.stop()

    auto = LeasedIds("auto", None)
    with pytest.raises(LeaseError, match="APP_ENV_NODE_ID=auto needs REDIS_URL"):
        await auto.start()
    assert not auto.ready()


async def test_an_unreachable_redis_at_start_refuses_auto_but_not_a_fixed_id() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    auto = LeasedIds("auto", url, ttl=2, acquire_wait=0.5)
    started = time.monotonic()
    with pytest.raises(LeaseError, match=r"APP_ENV_NODE_ID=auto: cannot lease .* does not answer"):
        await auto.start()
    assert time.monotonic() - started < 5
    # A fixed id is the configuration's promise: Redis down degrades realtime only.
    fixed = LeasedIds(9, url, ttl=2, acquire_wait=0.5)
    await fixed.start()
    try:
        assert fixed.ready()
        first = fixed.next_id()
        await asyncio.sleep(2.5)  # longer than the TTL, Redis still away
        assert fixed.ready()
        assert fixed.next_id() > first
    finally:
        await fixed.stop()


# --------------------------------------------------------------------------- Redis going away


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class OwnRedis:
    """A `redis-server` of this test's own (no persistence), to stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (Debian package redis-server)"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_lease_not_renewed_in_time_stops_ids_and_comes_back(own_redis: OwnRedis) -> None:
    ttl = 1.2
    lease = LeasedIds("auto", own_redis.url, ttl=ttl)
    await lease.start()
    try:
        worker = lease.worker_id
        lease.next_id()
        own_redis.stop()
        stopped = time.monotonic()
        # Ids keep flowing while the lease may still be alive, and stop before it expires.
        await wait_for(lambda: not lease.ready(), ttl + 1, "ids to stop")
        assert time.monotonic() - stopped < ttl
        with pytest.raises(IdsUnavailable):
            lease.next_id()
        await asyncio.sleep(ttl)  # long past the lease
        assert not lease.ready()
        # Redis is back (empty: it kept nothing): the same id is taken again, ids resume.
        own_redis.start()
        await wait_for(lease.ready, 5, "ids to resume")
        assert lease.worker_id == worker
        assert id_parts(lease.next_id()).worker_id == worker
    finally:
        await lease.stop()


async def test_lease_lost_answers_503_on_submit_and_readyz(
    own_redis: OwnRedis, pg_database: str, var_dir: Path
) -> None:
    settings = make_settings(
        pg_database,
        var_dir,
        redis_url=own_redis.url,
        app_env_node_id="auto",
        worker_lease_ttl_seconds=1.2,
    )
    app = create_app(settings)
    body = {"name": "Lease", "email": "lease@example.com", "message": "Hello"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.post(f"{BASE}/inquiries/submit", json=body)
            assert ok.status_code == 201, ok.text
            assert (await client.get("/readyz")).status_code == 200

            own_redis.stop()
            await wait_for(lambda: not app.state.outreach.ids_ready(), 3, "the lease to lapse")
            refused = await client.post(f"{BASE}/inquiries/submit", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"]
            assert refused.json()["type"].endswith("/ids-unavailable")
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "fail"

            own_redis.start()
            await wait_for(app.state.outreach.ids_ready, 5, "the lease to come back")
            again = await client.post(f"{BASE}/inquiries/submit", json=body)
            assert again.status_code == 201, again.text
            assert (await client.get("/readyz")).status_code == 200


# --------------------------------------------------------------------------- real processes

HOLDER = """
import asyncio, sys
from outreach.ids.leases import LeasedIds
from outreach.core.logging import configure_logging

configure_logging("warning", "logfmt", sys.stderr)

async def main() -> None:
    worker = sys.argv[1] if sys.argv[1] == "auto" else int(sys.argv[1])
    lease = LeasedIds(worker, sys.argv[2], prefix=sys.argv[3], ttl=float(sys.argv[4]))
    await lease.start()
    print("worker", lease.worker_id, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await lease.stop()

asyncio.run(main())
"""


def start_holder(worker: str, prefix: str, ttl: float = 10) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, worker, REDIS_URL, prefix, str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_worker(proc: subprocess.Popen[str], timeout: float) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("worker "):
                    return int(line.split()[1])
            if proc.poll() is not None:
                break
    stderr = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
    raise AssertionError(f"holder printed no worker id (rc={proc.poll()}): {stderr[-2000:]}")


def kill_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(5)


async def test_twenty_processes_on_auto_get_twenty_distinct_ids(redis: Redis, prefix: str) -> None:
    procs = [start_holder("auto", prefix) for _ in range(20)]
    try:
        workers = [await asyncio.to_thread(read_worker, proc, 60) for proc in procs]
        assert len(set(workers)) == 20, workers
        holders = await held(redis, prefix)
        assert sorted(holders) == sorted(workers)
        pids = {int(holders[w].split(":")[1]) for w in workers}
        assert pids == {proc.pid for proc in procs}
        for proc in procs:  # clean stop: each releases its key
            assert proc.stdin is not None
            proc.stdin.close()
        codes = [await asyncio.to_thread(proc.wait, 20) for proc in procs]
        assert codes == [0] * 20
        assert await held(redis, prefix) == {}
    finally:
        kill_all(procs)


async def test_a_killed_process_keeps_its_id_until_its_lease_expires(
    redis: Redis, prefix: str
) -> None:
    # Every id but one is taken, so `auto` must land on that one.
    free = 611
    await fill_all_but(redis, prefix, free)
    ttl = 3.0
    holder = start_holder("auto", prefix, ttl=ttl)
    try:
        assert await asyncio.to_thread(read_worker, holder, 30) == free
        holder.send_signal(signal.SIGKILL)  # no release
        await asyncio.to_thread(holder.wait, 10)
        assert await redis.exists(f"{prefix}{free}") == 1

        newcomer = LeasedIds("auto", REDIS_URL, prefix=prefix, ttl=ttl)
        with pytest.raises(LeaseError, match="no free worker id"):
            await newcomer.start()
        fixed = LeasedIds(free, REDIS_URL, prefix=prefix, ttl=ttl)
        with pytest.raises(LeaseError, match=f"worker id {free} is already leased"):
            await fixed.start()

        # The dead holder's lease runs out by itself; only then is its id given again.
        remaining = await redis.pttl(f"{prefix}{free}")
        assert remaining > 0
        await asyncio.sleep(remaining / 1000 + 0.1)
        await newcomer.start()
        try:
            assert newcomer.worker_id == free
        finally:
            await newcomer.stop()
    finally:
        kill_all([holder])


def server_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "VAR_DIR": str(var_dir),
        "APP_ENV": "test",
        "SHUTDOWN_DRAIN_SECONDS": "5",
        **extra,
    }


async def _free_fixed_id(redis: Redis) -> int:
    for worker in range(1000, 800, -1):
        if not await redis.exists(f"{LEASE_PREFIX}{worker}"):
            return worker
    raise AssertionError("no free fixed worker id for the test")


async def test_a_second_server_with_the_same_fixed_id_refuses_to_start(
    redis: Redis, pg_database: str, tmp_path: Path
) -> None:
    worker = await _free_fixed_id(redis)
    env = server_env(pg_database, tmp_path, APP_ENV_NODE_ID=str(worker))
    first = Server(env)
    second: Server | None = None
    try:
        await asyncio.to_thread(first.wait_ready, 40)
        second = Server(env)
        started = time.monotonic()
        code = await asyncio.to_thread(second.proc.wait, 30)
        assert code != 0
        assert time.monotonic() - started < 30
        output = second.output()
        refused = [line for line in output.splitlines() if "Startup refused" in line]
        assert len(refused) == 1, output[-3000:]
        assert f"worker id {worker} is already leased by another live process" in refused[0]
        assert "Uvicorn running" not in output  # it never listened
        assert "Traceback" not in output, output[-3000:]
        # The first one is unaffected.
        assert httpx.get(first.url + "/readyz", timeout=5).status_code == 200
    finally:
        if second is not None:
            second.stop(timeout=10)
        assert first.stop(timeout=20) == 0
    assert await redis.exists(f"{LEASE_PREFIX}{worker}") == 0  # released on exit


async def test_serve_with_two_workers_on_auto_leases_one_id_per_worker(
    redis: Redis, pg_database: str, tmp_path: Path
) -> None:
    env = server_env(pg_database, tmp_path, APP_ENV_NODE_ID="auto")
    server = Server(env, args=["--workers", "2"])
    workers: list[int] = []
    try:
        await asyncio.to_thread(server.wait_ready, 60)

        def started() -> list[int]:
            lines = [line for line in server.output().splitlines() if "Outreach started" in line]
            return [int(m.group(1)) for line in lines if (m := re.search(r"workerId=(\d+)", line))]

        await wait_for(lambda: len(started()) >= 2, 40, "two workers to start")
        workers = started()
        assert len(workers) == 2, workers
        assert workers[0] != workers[1], workers
        holders = {w: (await redis.get(f"{LEASE_PREFIX}{w}")) for w in workers}
        assert all(holders.values()), holders
        pids = {str(value).split(":")[1] for value in holders.values() if value}
        assert len(pids) == 2  # two processes, neither of them the supervisor
        assert str(server.proc.pid) not in pids
    finally:
        code = server.stop(timeout=30)
    assert code == 0, server.output()[-3000:]
    for worker in workers:
        assert await redis.exists(f"{LEASE_PREFIX}{worker}") == 0
