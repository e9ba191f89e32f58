"""`/metrics` of `outreach serve --workers 2` tells the pod's figures, whichever worker answers.

Real processes: one `outreach serve --workers 2` (uvicorn's supervisor and two workers on one
port), PostgreSQL and Redis. Requests on fresh connections spread over both workers (the
Snowflake ids they make name the worker that made them); every scrape must then count all
of them. A worker killed with SIGKILL is replaced: its counts stay in the totals, its
connected Socket.IO clients leave the gauge.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import socketio
from joserfc.jwk import ECKey
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from outreach.auth.devkeys import mint_token
from outreach.ids.snowflake import id_parts
from tests.support import BASE, REDIS_URL, Server

SUBMIT = f"{BASE}/inquiries/submit"
SUBMIT_ROUTE = f"{BASE}/inquiries/submit"
REQUESTS = 40


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape on a new connection: every sample by name and labels."""
    with httpx.Client(timeout=10) as client:  # a new connection: any worker may answer
        text = client.get(url + "/metrics", headers={"Connection": "close"}).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def submitted(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples.get(("outreach_inquiries_submitted_total", ()), 0.0)


def http_201(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    key = (("method", "POST"), ("route", SUBMIT_ROUTE), ("status", "201"))
    return samples.get(("http_requests_total", key), 0.0)


def duration_count(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    key = (("method", "POST"), ("route", SUBMIT_ROUTE))
    return samples.get(("http_request_duration_seconds_count", key), 0.0)


def clients_by_worker(metrics_dir: Path) -> dict[int, float]:
    """Connected clients per worker pid, as each worker wrote them (its live-gauge file)."""
    found = {}
    for path in metrics_dir.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            if '"outreach_realtime_connected_clients"' in key:
                found[pid] = value
    return found


def worker_pids(supervisor_pid: int) -> list[int]:
    """uvicorn's worker processes (spawned), not multiprocessing's resource tracker."""
    path = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children")
    pids = []
    for pid in path.read_text().split():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command:
            pids.append(int(pid))
    return pids


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """The operator's PROMETHEUS_MULTIPROC_DIR, with a stale file `serve` must remove."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"stale")
    return folder


@pytest.fixture
def two_workers(pg_database: str, var_dir: Path, metrics_dir: Path) -> Iterator[Server]:
    server = Server(
        {
            "DATABASE_URL": pg_database,
            "REDIS_URL": REDIS_URL,
            "APP_ENV": "test",
            "APP_ENV_NODE_ID": "auto",
            "METRICS_ENABLED": "true",
            "VAR_DIR": str(var_dir),
            "JOBS_WORKER": "false",
            "SHUTDOWN_DRAIN_SECONDS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        args=["--workers", "2"],
    )
    try:
        server.wait_ready(60)
        deadline = time.monotonic() + 30
        while len(worker_pids(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def submit_spread(url: str, count: int, tag: str) -> set[int]:
    """`count` submits, each on a new connection; the worker ids that made their ids."""
    workers = set()
    for i in range(count):
        with httpx.Client(timeout=10) as client:
            response = client.post(
                url + SUBMIT,
                json={"name": "W", "email": f"{tag}-{i}@example.com", "message": "two workers"},
                headers={"Connection": "close"},
            )
        assert response.status_code == 201, response.text
        workers.add(id_parts(int(response.json()["id"])).worker_id)
    return workers


def test_every_scrape_counts_the_requests_of_both_workers(two_workers: Server) -> None:
    url = two_workers.url
    before = scrape(url)
    workers = submit_spread(url, REQUESTS, "spread")
    assert len(workers) == 2, f"the submits all reached one worker: {workers}"
    for _ in range(12):  # fresh connections: both workers answer some of these
        samples = scrape(url)
        assert submitted(samples) - submitted(before) == REQUESTS
        assert http_201(samples) - http_201(before) == REQUESTS
        assert duration_count(samples) - duration_count(before) == REQUESTS
        # Histogram buckets are cumulative and end at the count.
        key = (("le", "+Inf"), ("method", "POST"), ("route", SUBMIT_ROUTE))
        assert samples[("http_request_duration_seconds_bucket", key)] == duration_count(samples)
        # The process metrics are the pod's: two workers, their memory summed.
        assert samples[("outreach_workers", ())] == 2
        assert samples[("process_resident_memory_bytes", ())] > 2 * 20 * 1024 * 1024
        assert ("process_cpu_seconds_total", ()) in samples


def test_polling_is_refused_with_several_workers(two_workers: Server) -> None:
    """A long-polling session's requests could reach either worker: only WebSocket."""
    response = httpx.get(
        two_workers.url + f"{BASE}/socket.io/", params={"EIO": "4", "transport": "polling"}
    )
    assert response.status_code == 400


async def test_a_killed_worker_keeps_its_counts_and_leaves_the_clients_gauge(
    two_workers: Server, dev_key: ECKey, metrics_dir: Path
) -> None:
    url = two_workers.url
    token = mint_token(dev_key, sub="metrics-worker", roles=["OWNER"], ttl=600)
    before = scrape(url)
    assert len(submit_spread(url, REQUESTS, "killed")) == 2
    clients = []
    try:
        for _ in range(6):
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(
                url,
                socketio_path=f"{BASE}/socket.io",
                auth={"token": token},
                transports=["websocket"],
                wait_timeout=10,
            )
            clients.append(client)
        assert scrape(url)[("outreach_realtime_connected_clients", ())] == 6
        # The worker holding clients (both may), by the files each worker writes.
        held = {pid: n for pid, n in clients_by_worker(metrics_dir).items() if n > 0}
        assert sum(held.values()) == 6
        victim, lost = max(held.items(), key=lambda item: item[1])

        os.kill(victim, signal.SIGKILL)
        # The supervisor starts another worker and forgets the dead one's live gauges.
        deadline = time.monotonic() + 30
        pids: list[int] = []
        while time.monotonic() < deadline:
            pids = worker_pids(two_workers.proc.pid)
            if (
                victim not in pids
                and len(pids) == 2
                and victim not in clients_by_worker(metrics_dir)
            ):
                break
            await asyncio.sleep(0.2)
        assert victim not in pids
        assert len(pids) == 2
        while time.monotonic() < deadline:  # its replacement has started (made its files)
            if scrape(url).get(("outreach_workers", ()), 0) == 2:
                break
            await asyncio.sleep(0.2)
        for _ in range(8):
            samples = scrape(url)
            # Its counts are still in the pod's totals (counters never go down)...
            assert submitted(samples) - submitted(before) == REQUESTS
            assert http_201(samples) - http_201(before) == REQUESTS
            # ...its clients are not (they were disconnected with it).
            assert samples[("outreach_realtime_connected_clients", ())] == 6 - lost
            assert samples[("outreach_workers", ())] == 2
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
