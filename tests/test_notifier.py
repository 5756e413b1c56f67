"""The notifier through the real app: alerts queued by ledger operations reach every subscribed conversation at
the fake Bot Connector, once, through faults, restarts and removed bots (issue 5, ADR 0006).

Time is a `FakeClock` shared by the ledger and the notifier; rounds are driven by calling `deliver_once()`, and
the clock is moved to when the next retry is due, so nothing here sleeps. Only the send timeout is real (a
stalled request must time out), and it is set short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import bot.app
from bot.app import LEDGER, NOTIFIER, create_app
from bot.notifier import Backoff, Notifier
from storage import Alert, AlertKind, AlertStatus, FakeClock, UsageRecord, open_ledger
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import Chat, settings_for, store_for

TENANT = teams.TENANT
START = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
CHANNEL = teams.channel_id()
GROUP = teams.conversation("groupChat")["id"]
PERSONAL = teams.conversation("personal")["id"]
ATTEMPTS = 12


class World:
    """One app (local mode, background loops off) over a store, a fake clock, the fake connector."""

    def __init__(self, client: Any, connector: FakeConnector, clock: FakeClock) -> None:
        self.client = client
        self.chat = Chat(client, connector)
        self.connector = connector
        self.clock = clock

    @property
    def ledger(self):  # type: ignore[no-untyped-def]
        return self.client.app[LEDGER]

    @property
    def notifier(self):  # type: ignore[no-untyped-def]
        return self.client.app[NOTIFIER]

    async def outbox(self) -> list[Alert]:
        return await self.ledger.alerts(TENANT, limit=10_000)

    async def drain(self, *, max_rounds: int = 200) -> int:
        """Deliver rounds, moving the clock to the moment the next alert is claimable, until nothing is
        pending. Returns the number of rounds."""
        for rounds in range(1, max_rounds + 1):
            await self.notifier.deliver_once()
            pending = [a for a in await self.outbox() if a.status is AlertStatus.PENDING]
            if not pending:
                return rounds
            due = min(max(a.next_attempt_at or START, a.lease_until or START) for a in pending)
            self.clock.set(max(self.clock(), due))
        raise AssertionError(f"the outbox still had pending alerts after {max_rounds} rounds")

    async def debit(self, usage_id: str, cents: int) -> None:
        await self.ledger.record_usage(TENANT, UsageRecord(usage_id, cents, "USD", self.clock(),
                                                           {"call_type": "outbound"}))


async def open_world(tmp_path: Path, connector: FakeConnector, aiohttp_client: Any, clock: FakeClock,
                     backend: str = "tinydb", **env: str) -> World:
    """An app over a store of `backend` in `tmp_path` (the same store when called again with the same path)."""
    async def opener(store: str):  # type: ignore[no-untyped-def]
        return await open_ledger(store, clock=clock, max_attempts=ATTEMPTS)

    store = await store_for(backend, tmp_path)
    app = create_app(settings_for(tmp_path, CREDITS_STORE=store, **env), ledger_opener=opener, clock=clock,
                     background=False)
    return World(await aiohttp_client(app), connector, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture(params=["tinydb", "postgres"])
def backend(request: Any) -> str:
    return request.param


@pytest.fixture
async def world(tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, clock: FakeClock,
                backend: str) -> World:
    return await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)


def alert_refs(activity: dict[str, Any]) -> list[str]:
    """The alert references printed on the cards of one posted activity."""
    text = json.dumps(activity)
    return [word for word in text.replace('"', " ").split() if len(word) == 8 and word.isalnum()
            and f"reference {word}" in text]


def deliveries(connector: FakeConnector) -> dict[tuple[str, str], int]:
    """(alert reference, conversation) -> how many times the fake really posted that alert there."""
    counts: dict[tuple[str, str], int] = {}
    for record in connector.accepted:
        for ref in alert_refs(record.json):
            key = (ref, record.conversation_id or "")
            counts[key] = counts.get(key, 0) + 1
    return counts


async def subscribe_three(w: World) -> None:
    """A channel for everything, a group chat for two kinds, and the admin's personal chat for everything."""
    assert "will get these alerts" in await w.chat.say("subscribe", scope="channel")
    assert "will get these alerts" in await w.chat.say("subscribe recharged low_balance", scope="groupChat")
    assert "will get these alerts" in await w.chat.say("subscribe")


async def expect_every_alert_once(w: World) -> list[Alert]:
    alerts = await w.outbox()
    counts = deliveries(w.connector)
    expected = {(a.alert_id[:8], d) for a in alerts for d in a.delivered}
    assert alerts and all(a.status is AlertStatus.DELIVERED for a in alerts), [(a.kind, a.status) for a in alerts]
    assert set(counts) == expected, "every (alert, destination) and nothing else"
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n != 1}
    return alerts


# --- the path of an alert -------------------------------------------------------------------------------------

async def test_a_usage_debit_that_fires_an_auto_recharge_puts_a_card_in_the_channel(world: World) -> None:
    await world.chat.say("subscribe", scope="channel")
    await world.chat.say("recharge 50 below 20")
    await world.chat.say("add 30")
    world.connector.clear()
    await world.debit("call-1", 1500)                      # 30.00 - 15.00 = 15.00 < 20.00: recharge 50.00
    round_ = await world.notifier.deliver_once()
    assert round_.sent == 1 and round_.failed == 0
    [posted] = world.connector.accepted
    assert posted.conversation_id == CHANNEL               # the channel itself: a new post, not a thread reply
    assert len(posted.segments) == 4                       # POST .../activities, no replyToId
    card = posted.json["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert "Auto-recharge added $50.00" in json.dumps(card)
    assert posted.json["text"] == card["fallbackText"]
    [alert] = await world.outbox()
    assert alert.kind is AlertKind.RECHARGED and alert.status is AlertStatus.DELIVERED
    assert alert_refs(posted.json) == [alert.alert_id[:8]]


async def test_the_card_speaks_the_language_of_the_conversation(world: World) -> None:
    await world.chat.say("abonner", scope="channel", locale="da-DK")
    await world.chat.say("alerts 10")
    await world.chat.say("add 20")
    await world.debit("call-1", 1500)
    await world.notifier.deliver_once()
    [posted] = world.connector.accepted[-1:]
    card = posted.json["attachments"][0]["content"]
    assert card["lang"] == "da"
    assert "5,00" in json.dumps(card, ensure_ascii=False)  # Danish money


async def test_through_faults_every_alert_reaches_every_destination_exactly_once(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    await subscribe_three(world)
    await world.chat.say("alerts 100, 50, 25")
    await world.chat.say("recharge 40 below 10")
    rng = random.Random(20261123)
    for i in range(6):                                     # hovering down and up: many crossings and recharges
        await world.chat.say(f"add {rng.randint(60, 120)}")
        for j in range(rng.randint(3, 6)):
            await world.debit(f"call-{i}-{j}", rng.randint(1000, 4000))
    queued = [a for a in await world.outbox() if a.status is AlertStatus.PENDING]
    assert len(queued) >= 15 and {a.kind for a in queued} >= {AlertKind.RECHARGED, AlertKind.LOW_BALANCE}
    world.connector.clear()
    world.connector.chaos(0.2, rng=random.Random(5), stall_seconds=0.6)
    notifier_connector_timeout(world, monkeypatch, 0.2)

    rounds = await world.drain()

    assert world.connector.chaos_injected >= 5, "the run must really have been disturbed"
    await expect_every_alert_once(world)
    print(f"chaos: {world.connector.chaos_injected} faults, {rounds} rounds, {world.clock() - START} simulated")
    assert rounds <= 150
    assert world.clock() - START <= timedelta(hours=6)     # bounded: retries back off, but not forever


def notifier_connector_timeout(w: World, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The alert sender's connector gives up on a silent Teams after `seconds` (15 in production)."""
    sender = w.client.app[bot.app.SENDER]
    connector = sender._adapter._connector                  # noqa: SLF001 - the test reaches into its own wiring
    import aiohttp
    monkeypatch.setattr(connector, "_timeout", aiohttp.ClientTimeout(total=seconds))


async def test_a_removed_bot_disables_that_destination_and_the_others_still_get_theirs(world: World) -> None:
    await subscribe_three(world)
    await world.chat.say("alerts 50")
    await world.chat.say("add 60")
    world.connector.clear()
    world.connector.fail_next(10, status=403, path=f"/v3/conversations/{GROUP}/activities",
                              body={"error": {"code": "BotNotInConversationRoster"}})
    await world.debit("call-1", 2000)                      # low balance: all three destinations want it

    round_ = await world.notifier.deliver_once()

    assert round_.disabled == [GROUP] and round_.failed == 0
    assert sorted(r.conversation_id for r in world.connector.accepted) == sorted([CHANNEL, PERSONAL])
    [alert] = await world.outbox()
    assert alert.status is AlertStatus.DELIVERED and alert.skipped == (GROUP,)
    subs = {s.conversation_id: s for s in await world.ledger.subscriptions(TENANT)}
    assert not subs[GROUP].enabled and "403" in subs[GROUP].disabled_reason
    assert subs[CHANNEL].enabled and subs[PERSONAL].enabled
    # the next alert does not even try the disabled destination
    world.connector.clear()
    await world.chat.say("add 40")
    await world.debit("call-2", 5000)
    await world.drain()
    assert GROUP not in {r.conversation_id for r in world.connector.requests}


async def test_retry_after_is_honoured_and_holds_the_service(world: World) -> None:
    await world.chat.say("subscribe", scope="channel")
    await world.chat.say("subscribe", scope="groupChat")
    await world.chat.say("alerts 50")
    await world.chat.say("add 60")
    await world.debit("call-1", 2000)
    world.connector.clear()
    world.connector.fail_next(1, status=429, retry_after=120)

    round_ = await world.notifier.deliver_once()

    assert len(world.connector.requests) == 1, "after a 429 nothing more goes to that service in the round"
    assert round_.sent == 0 and round_.failed == 2
    [alert] = await world.outbox()
    assert alert.next_attempt_at is not None and alert.next_attempt_at >= START + timedelta(seconds=120)
    world.clock.advance(seconds=119)
    assert (await world.notifier.deliver_once()).claimed == 0   # not due before Teams said
    world.clock.set(alert.next_attempt_at)
    round_ = await world.notifier.deliver_once()
    assert round_.sent == 2
    assert {r.conversation_id for r in world.connector.accepted} == {CHANNEL, GROUP}


def test_backoff_grows_with_jitter_and_never_undercuts_retry_after() -> None:
    rng = random.Random(1)
    backoff = Backoff()
    firsts = [backoff.delay(1, None, rng).total_seconds() for _ in range(200)]
    assert 7.5 <= min(firsts) and max(firsts) <= 15 and len(set(firsts)) > 100   # jittered within [base/2, base]
    assert all(480 <= backoff.delay(7, None, rng).total_seconds() <= 960 for _ in range(50))   # 15 s * 2**6
    assert all(backoff.delay(20, None, rng).total_seconds() <= 3600 for _ in range(50))   # capped
    assert backoff.delay(1, 300.0, rng).total_seconds() == 300.0
    assert backoff.delay(1, 10 ** 9, rng) == backoff.longest_retry_after


async def test_an_alert_that_never_gets_through_is_given_up_and_logged_with_an_incident(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    await world.chat.say("subscribe", scope="channel")
    await world.chat.say("alerts 50")
    await world.chat.say("add 60")
    await world.debit("call-1", 2000)
    world.connector.clear()
    world.connector.fail_next(1000, status=500)
    with caplog.at_level(logging.ERROR, logger="bot.notifier"):
        rounds = await world.drain()
    assert rounds == ATTEMPTS
    [alert] = await world.outbox()
    assert alert.status is AlertStatus.DEAD and alert.attempts == ATTEMPTS and "HTTP 500" in alert.last_error
    assert [a.alert_id for a in await world.ledger.alerts(TENANT, status=AlertStatus.DEAD)] == [alert.alert_id]
    [logged] = [r for r in caplog.records if "given up" in r.getMessage()]
    assert "incident" in logged.getMessage() and alert.alert_id in logged.getMessage()
    assert world.connector.accepted == []


# --- thresholds: one alert per real crossing ----------------------------------------------------------------

async def test_a_balance_hovering_around_a_threshold_alerts_once_per_real_crossing(world: World) -> None:
    await world.chat.say("subscribe low_balance", scope="channel")
    await world.chat.say("alerts 50")
    await world.chat.say("add 51")                        # 51.00, armed
    crossings = 0
    balance = 5100
    steps = [-200, -50, -25, +300, -10, -100, -10, -10, +500, -450, -100, -5, +5, +200, -200]
    for n, step in enumerate(steps):
        before = balance
        if step < 0:
            await world.debit(f"hover-{n}", -step)
        else:
            await world.chat.say(f"add {step / 100:.2f}")
        balance += step
        crossings += before >= 5000 > balance
    assert crossings == 4
    await world.drain()
    low = [a for a in await world.outbox() if a.kind is AlertKind.LOW_BALANCE]
    assert len(low) == crossings
    assert sum(deliveries(world.connector).values()) == crossings
    await expect_every_alert_once(world)


# --- restarts ---------------------------------------------------------------------------------------------------

async def test_a_new_app_on_the_same_store_delivers_what_a_stopped_one_left(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, clock: FakeClock, backend: str) -> None:
    first = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await subscribe_three(first)
    await first.chat.say("alerts 100, 50, 25")
    await first.chat.say("add 120")
    for n in range(4):                                     # 90.00, 60.00, 30.00, 0.00: four alerts or more
        await first.debit(f"call-{n}", 3000)
    fake_connector.clear()
    # two sends go through; the third hangs (Teams silent) and the app is stopped while it waits
    sender = first.client.app[bot.app.SENDER]
    real_send = sender.send
    third_in_flight = asyncio.Event()
    calls = 0

    async def send(*args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            third_in_flight.set()
            await asyncio.Event().wait()                   # until cancelled
        return await real_send(*args, **kwargs)

    sender.send = send                                     # type: ignore[method-assign]
    round_task = asyncio.create_task(first.notifier.deliver_once())
    await asyncio.wait_for(third_in_flight.wait(), 5)
    round_task.cancel()
    await asyncio.gather(round_task, return_exceptions=True)
    await first.client.close()                             # the store is released (TinyDB: one process)
    assert len(deliveries(fake_connector)) == 2

    clock.advance(minutes=6)                               # past the stopped app's lease
    second = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await second.drain()
    alerts = await expect_every_alert_once(second)
    assert sum(len(a.delivered) for a in alerts) > 2


async def test_a_crash_between_send_and_mark_resends_the_same_alert_once(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any, clock: FakeClock, backend: str) -> None:
    first = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await first.chat.say("subscribe", scope="channel")
    await first.chat.say("alerts 50")
    await first.chat.say("add 60")
    await first.debit("call-1", 2000)
    fake_connector.clear()

    class Crash(BaseException):
        """The process dies right after Teams accepted the card, before the outbox heard of it."""

    async def die(*args: Any, **kwargs: Any) -> None:
        raise Crash

    first.ledger.mark_delivered = die                      # type: ignore[method-assign]
    with pytest.raises(Crash):
        await first.notifier.deliver_once()
    del first.ledger.mark_delivered
    await first.client.close()

    clock.advance(minutes=6)
    second = await open_world(tmp_path, fake_connector, aiohttp_client, clock, backend)
    await second.drain()
    [alert] = await second.outbox()
    assert alert.status is AlertStatus.DELIVERED
    # at least once: the channel saw the card twice, both times with the same reference, and never a third time
    assert deliveries(fake_connector) == {(alert.alert_id[:8], CHANNEL): 2}


# --- the loop -------------------------------------------------------------------------------------------------

async def test_the_running_notifier_wakes_at_once_when_an_operation_queues_an_alert(
        tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # polling alone would take an hour: only the ledger's hint can make this quick
    monkeypatch.setitem(Notifier.__init__.__kwdefaults__, "poll", 3600.0)
    app = create_app(settings_for(tmp_path), background=True)
    client = await aiohttp_client(app)
    chat = Chat(client, fake_connector)
    await chat.say("subscribe", scope="channel")
    await chat.say("alerts 50")
    await chat.say("add 60")
    before = len(fake_connector.accepted)
    await app[LEDGER].record_usage(TENANT, UsageRecord("call-1", 2000, "USD", datetime.now(timezone.utc)))
    for _ in range(200):
        if len(fake_connector.accepted) > before:
            break
        await asyncio.sleep(0.01)
    assert [r.conversation_id for r in fake_connector.accepted[before:]] == [CHANNEL]
    await client.close()
