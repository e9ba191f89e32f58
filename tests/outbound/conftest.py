"""Every outbound test runs under the connect guard (tests/support.py)."""

from __future__ import annotations

import pytest

from tests.support import Dialled, Dns


@pytest.fixture(autouse=True)
def _guarded(connect_guard: Dialled, dns: Dns) -> tuple[Dialled, Dns]:
    """No connection but to loopback, and no DNS lookup but of the stub's names."""
    return connect_guard, dns
