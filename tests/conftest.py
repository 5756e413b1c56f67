"""Fixtures shared by the storage tests: a fake clock and an open ledger of every backend."""

from __future__ import annotations

import pytest

from tests.backends import BACKENDS, open_backend
from storage.clock import FakeClock

pytest_plugins = ["tests.fakes.fixtures", "tests.http_chat"]


def pytest_collection_modifyitems(items) -> None:
    """Tests that run on the PostgreSQL backend carry the `postgres` marker (`-m postgres`, `-m "not postgres"`)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres" in params.values() or "postgres" in item.name:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def clock() -> FakeClock:
    """Time that moves only when a test says so (starts 2026-01-15 09:00 UTC)."""
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def ledger(request, tmp_path, clock):
    """An empty ledger of each backend, on the test's `clock`, closed afterwards."""
    store = await open_backend(request.param, tmp_path, clock)
    try:
        yield store
    finally:
        await store.close()
