"""The daily jobs inside the app: lot expiry and forecast alerts, on a fake clock, delivered by the notifier."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import JOBS, LEDGER, create_app
from bot.jobs import next_run
from storage import AlertKind, EntryKind, FakeClock, UsageRecord, open_ledger
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import settings_for
from tests.test_notifier import START, open_world

TENANT = teams.TENANT


@pytest.fixture(params=["tinydb", "postgres"])
def backend(request: Any) -> str:
    return request.param


def test_next_run_is_the_next_time_of_day_strictly_after() -> None:
    at = time(2, 0)
    assert next_run(datetime(2026, 11, 23, 1, 59, tzinfo=timezone.utc), at) == \
        datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    assert next_run(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc), at) == \
        datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
    assert next_run(datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc), at) == \
        datetime(2027, 1, 1, 2, 0, tzinfo=timezone.utc)
    plus_one = timezone(timedelta(hours=1))                # an aware non-UTC moment is read in UTC
    assert next_run(datetime(2026, 11, 23, 2, 30, tzinfo=plus_one), at) == \
        datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


async def test_expiring_credit_is_announced_once_and_expired_credit_is_written_off(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, backend: str) -> None:
    clock = FakeClock(START)
    w = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await w.chat.say("subscribe expiring", scope="channel")
    await w.chat.say("add 80")
    await w.debit("call-1", 3000)                          # 50.00 left in the lot
    jobs = w.client.app[JOBS]

    clock.set(START + timedelta(days=340))                 # the lot expires in about 25 days
    first = await jobs.run_once()
    again = await jobs.run_once()                          # a second run the same day changes nothing
    assert first.expired == again.expired == 0
    expiring = [a for a in await w.outbox() if a.kind is AlertKind.EXPIRING]
    assert len(expiring) == 1 and expiring[0].payload["remaining"] == 5000
    await w.drain()
    posted = [r for r in fake_connector.accepted if r.conversation_id == teams.channel_id()
              and "reference" in json.dumps(r.json)]
    assert len(posted) == 1 and "$50.00" in json.dumps(posted[0].json)

    clock.set(START + timedelta(days=366))                 # 12 months and a day: what is left expires
    report = await jobs.run_once()
    assert report.expired == 1
    history = (await w.ledger.history(TENANT, limit=1)).items
    assert history[0].kind is EntryKind.EXPIRY and history[0].amount == -5000
    assert (await w.ledger.get_account(TENANT)).balance == 0
    assert (await jobs.run_once()).expired == 0
    assert (await w.ledger.verify(TENANT)).ok


async def test_a_forecast_alert_comes_once_per_funding_not_once_a_day(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, backend: str) -> None:
    clock = FakeClock(START)
    w = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await w.chat.say("subscribe forecast", scope="channel")
    await w.chat.say("add 100")
    await w.debit("call-1", 9000)                          # 10.00 left; 90.00 over 30 days = 3.00 a day
    jobs = w.client.app[JOBS]

    report = await jobs.run_once()
    assert report.forecasts == [TENANT]
    [alert] = [a for a in await w.outbox() if a.kind is AlertKind.FORECAST]
    assert alert.payload["daily_burn"] == 300 and alert.payload["days_to_zero"] == 4
    assert alert.payload["zero_on"] == (START + timedelta(days=4)).date().isoformat()
    for day in range(1, 4):                                # the next days: same funding, no new alert
        clock.set(START + timedelta(days=day))
        await jobs.run_once()
    assert len([a for a in await w.outbox() if a.kind is AlertKind.FORECAST]) == 1

    await w.chat.say("add 5")                              # new money, still short: a new alert
    await jobs.run_once()
    assert len([a for a in await w.outbox() if a.kind is AlertKind.FORECAST]) == 2
    await w.drain()
    cards = [r for r in fake_connector.accepted if "reference" in json.dumps(r.json)]
    assert len(cards) == 2 and all(r.conversation_id == teams.channel_id() for r in cards)


async def test_no_forecast_alert_when_auto_recharge_will_step_in_or_zero_is_far(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, backend: str) -> None:
    clock = FakeClock(START)
    w = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await w.chat.say("subscribe forecast", scope="channel")
    await w.chat.say("add 1000")
    await w.debit("call-1", 3000)                          # 970.00 left at 1.00 a day: zero in 970 days
    assert (await w.client.app[JOBS].run_once()).forecasts == []
    await w.chat.say("recharge 100 below 5")
    await w.debit("call-2", 95000)                         # 20.00 left, burn 32.67/day, but auto-recharge is on
    assert (await w.client.app[JOBS].run_once()).forecasts == []
    assert not [a for a in await w.outbox() if a.kind is AlertKind.FORECAST]


async def test_the_app_runs_the_daily_jobs_at_start_up(tmp_path: Path) -> None:
    """A run missed while the bot was down happens when it starts (here: a lot that expired meanwhile)."""
    clock = FakeClock(START)
    ledger = await open_ledger(str(tmp_path / "store"), clock=clock)
    await ledger.open_account(TENANT, "USD")
    await ledger.add_funds(TENANT, 2000, actor="admin", key="k1")
    await ledger.record_usage(TENANT, UsageRecord("call-1", 500, "USD", clock()))
    await ledger.close()
    clock.set(START + timedelta(days=400))

    async def opener(store: str):  # type: ignore[no-untyped-def]
        return await open_ledger(store, clock=clock)

    app = create_app(settings_for(tmp_path), ledger_opener=opener, clock=clock, background=True)
    async with TestClient(TestServer(app)) as client:
        for _ in range(300):
            if (await client.app[LEDGER].get_account(TENANT)).balance == 0:
                break
            await asyncio.sleep(0.01)
        assert (await client.app[LEDGER].get_account(TENANT)).balance == 0
        kinds = [e.kind for e in (await client.app[LEDGER].history(TENANT, limit=5)).items]
        assert kinds[0] is EntryKind.EXPIRY

