"""Every outbound test runs under the connect guard (tests/support.py)."""

from __future__ import annotations

import pytest

from tests.support import Dialled


@pytest.fixture(autouse=True)
def _guarded(connect_guard: Dialled) -> Dialled:
    return connect_guard
