"""Pytest fixtures over the fakes (a plugin module: tests/conftest.py has `pytest_plugins = [...]`).

* `identity_server` (session): one started `FakeIdentity` for the whole run (RSA keys and the TLS certificate
  are made once).
* `identity` (function): that server, `reset()` before the test, so keys, faults, delays, registered clients
  and counters never leak between tests. Use this one.
* `fake_connector` (function, async): a started `FakeConnector`, stopped afterwards.
* `http_session` (function, async): an `aiohttp.ClientSession`, closed afterwards.
"""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.fakes.connector import FakeConnector
from tests.fakes.identity import FakeIdentity


@pytest.fixture(scope="session")
def identity_server() -> Iterator[FakeIdentity]:
    with FakeIdentity() as server:
        yield server


@pytest.fixture
def identity(identity_server: FakeIdentity) -> Iterator[FakeIdentity]:
    identity_server.reset()
    yield identity_server
    identity_server.reset()


@pytest.fixture
async def fake_connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
