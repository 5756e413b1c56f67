"""/healthz and /readyz over HTTP on the real app, with the ledger injected through `ledger_opener`.

Most tests inject a small double with only `ping()` and `close()` (the routes need nothing else), so they can
make the store fail or hang; one goes through the default opener with the in-memory reference ledger.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from bot import app as app_module
from bot.app import LEDGER, create_app
from bot.logging_setup import LogfmtFormatter
from bot.settings import Settings
from storage import Ledger
from storage.errors import StoreLocked


class PingOnlyLedger:
    """Answers `ping()`; counts calls; remembers being closed. Subclasses nothing on purpose."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.pings = 0
        self.closed = False

    async def ping(self) -> None:
        self.pings += 1

    async def close(self) -> None:
        self.closed = True


class UnreachableLedger(PingOnlyLedger):
    SECRET_DETAIL = "connection refused by db.internal (password=hunter2)"

    async def ping(self) -> None:
        self.pings += 1
        raise ConnectionError(self.SECRET_DETAIL)


class Opener:
    """A `ledger_opener` that records the location it was asked for and hands out one ledger of `kind`."""

    def __init__(self, kind: type[PingOnlyLedger]) -> None:
        self.kind = kind
        self.ledger: PingOnlyLedger | None = None

    async def __call__(self, location: str) -> PingOnlyLedger:
        self.ledger = self.kind(location)
        return self.ledger


SETTINGS = Settings(store="memory://")


async def test_healthz_is_ok_without_touching_the_store(aiohttp_client) -> None:
    opener = Opener(UnreachableLedger)
    client = await aiohttp_client(create_app(SETTINGS, ledger_opener=opener, background=False))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert opener.ledger is not None and opener.ledger.pings == 0


async def test_readyz_is_ready_when_the_store_answers(aiohttp_client) -> None:
    opener = Opener(PingOnlyLedger)
    client = await aiohttp_client(create_app(SETTINGS, ledger_opener=opener, background=False))
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}
    assert opener.ledger is not None and opener.ledger.pings == 1
    assert opener.ledger.location == "memory://"
    assert client.app[LEDGER] is opener.ledger


async def test_readyz_is_503_without_the_cause_in_the_response(aiohttp_client, caplog) -> None:
    opener = Opener(UnreachableLedger)
    client = await aiohttp_client(create_app(SETTINGS, ledger_opener=opener, background=False))
    with caplog.at_level(logging.ERROR, logger="bot.app"):
        response = await client.get("/readyz")
    assert response.status == 503
    body = await response.text()
    assert await response.json() == {"status": "unavailable"}
    assert "refused" not in body and "hunter2" not in body
    incident = response.headers["X-Incident-Id"]
    [record] = [r for r in caplog.records if r.name == "bot.app" and r.levelno >= logging.ERROR]
    assert record.incident == incident  # the log line and the response can be matched
    assert record.exc_info is not None and UnreachableLedger.SECRET_DETAIL in str(record.exc_info[1])
    line = LogfmtFormatter().format(record)
    assert "\n" not in line and f"incident={incident}" in line and "ConnectionError" in line


async def test_readyz_is_503_when_the_store_hangs(aiohttp_client, monkeypatch) -> None:
    class HangingLedger(PingOnlyLedger):
        async def ping(self) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(app_module, "READY_TIMEOUT", 0.01)
    client = await aiohttp_client(create_app(SETTINGS, ledger_opener=Opener(HangingLedger), background=False))
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"status": "unavailable"}


async def test_the_ledger_is_closed_when_the_app_stops(aiohttp_client) -> None:
    opener = Opener(PingOnlyLedger)
    client = await aiohttp_client(create_app(SETTINGS, ledger_opener=opener, background=False))
    assert opener.ledger is not None and not opener.ledger.closed
    await client.close()
    assert opener.ledger.closed


async def test_a_store_that_cannot_open_stops_start_up() -> None:
    async def locked(location: str) -> PingOnlyLedger:
        raise StoreLocked(location, "pid 4242")

    runner = web.AppRunner(create_app(SETTINGS, ledger_opener=locked, background=False))
    try:
        with pytest.raises(StoreLocked):
            await runner.setup()
    finally:
        await runner.cleanup()


async def test_readyz_through_the_default_opener_with_the_memory_store(aiohttp_client) -> None:
    client = await aiohttp_client(create_app(Settings(store="memory://")))
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}
    assert isinstance(client.app[LEDGER], Ledger)
