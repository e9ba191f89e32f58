"""Fixtures of the realtime tests: one cluster (Redis + two replicas) and one Traefik for the
whole directory, since starting them is the slow part. Everything is stopped in `finally`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realtime.cluster import Cluster, Traefik, node_modules, start_cluster


@pytest.fixture(scope="package")
def cluster(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = start_cluster(pg_database, tmp_path_factory.mktemp("realtime-var"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="package")
def traefik(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traefik]:
    proxy = Traefik(tmp_path_factory.mktemp("traefik"), [cluster.a.url, cluster.b.url])
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="package")
def socket_io_client() -> Path:
    """node_modules holding socket.io-client 4.8.4 (installed under var/node at first use)."""
    return node_modules()
