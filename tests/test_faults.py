"""Faults outside the bot, end to end through the real app (issue 10, "Faults"): Teams' Bot Connector answering
about 20% of requests with 429 (with `Retry-After`), 500, 502, 503, a slow 504 or a reset connection, plus slow
successful answers; Microsoft Graph throttling (429 with `Retry-After`), failing (500, 503) and resetting
connections during a usage sync, and once failing for longer than the client's retries.

What the other suites already show is not repeated here: the connector's and the Graph client's retry rules one
by one (tests/test_connector.py, tests/test_graph_usage.py) and alert delivery under the same chaos
(tests/test_notifier.py). Here the whole path is under fire at once, with many operations on both backends:

* **chat under connector chaos**: every `/api/messages` request is answered 200; every command and card press
  happens exactly once in the ledger; its reply arrives exactly once, after at most `REPLY_ATTEMPTS` tries with
  waits of at most `REPLY_MAX_DELAY`; a reply whose every try failed is not lost for good, because Teams' (or the
  user's) resend of the same activity (the same nonce for a card) answers "already done" and moves nothing.
  The alerts those operations raised then drain through the same chaos, each once per destination.
* **Graph sync under throttling**: a chat `sync` reads every page through injected faults, honouring each
  `Retry-After`; a Graph outage longer than the retries stops the sync with a reply and keeps what was read;
  the next sync reads the rest; a third counts nothing twice. Every call is debited exactly once.

Waiting is virtual: the connectors' and the Graph client's `sleep` are replaced by a recorder, the outbox runs on
a `FakeClock`; the only real waits are the fakes' slow answers (a few to 50 ms). Figures go to
artifacts/reliability/faults.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web

from bot.app import CONNECTOR, LEDGER, NOTIFIER, REPLY_ATTEMPTS, REPLY_MAX_DELAY, USAGE, create_app
from bot.usage.graph import MAX_RETRY_AFTER
from storage import AlertStatus, EntryKind, FakeClock, UsageRecord, open_ledger
from tests import teams
from tests.crash_load import EPOCH, alert_refs, write_figures
from tests.fakes.connector import FakeConnector, Recorded
from tests.fakes.graph import FakeGraph, graph_row
from tests.fakes.identity import FakeIdentity
from tests.http_chat import ALEX, settings_for, store_for

TENANT = teams.TENANT
START = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
SEED = 20261124
#: Delivery attempts per alert (CREDITS_ALERT_ATTEMPTS): the production default.
ALERT_ATTEMPTS = 12
OPERATIONS = 400
CHAOS_RATE = 0.2
#: Faults planned on top of the chaos: every try of two replies fails (one command, one card press).
FORCED = 2 * REPLY_ATTEMPTS
SLOW_RATE = 0.1


class VirtualSleep:
    """Stands in for `asyncio.sleep` in a client's retry loop: records the delay (and `mark()` at that moment),
    lets the loop run once."""

    def __init__(self, mark: Callable[[], int] = lambda: 0) -> None:
        self.delays: list[float] = []
        self.marked: list[tuple[int, float]] = []
        self._mark = mark

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.marked.append((self._mark(), seconds))
        await asyncio.sleep(0)


class CountingRandom(random.Random):
    """The chaos' random source, counting which fault it drew (FakeConnector.chaos picks with `choice`)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn: Counter[str] = Counter()

    def choice(self, seq):  # type: ignore[no-untyped-def, override]
        picked = super().choice(seq)
        if isinstance(picked, tuple) and len(picked) == 3:
            kind, status, retry_after = picked
            self.drawn[{"fail": f"HTTP {status}" + (f" Retry-After {retry_after}" if retry_after else ""),
                        "stall": f"slow HTTP {status}", "drop": "connection reset"}[kind]] += 1
        return picked


class SlowConnector(FakeConnector):
    """The fake Bot Connector, also answering `slow_rate` of the requests late (5 to 50 ms), successfully."""

    def __init__(self, rng: random.Random, slow_rate: float) -> None:
        super().__init__()
        self._slow_rng = rng
        self.slow_rate = slow_rate
        self.slowed = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.slow_rate and self._slow_rng.random() < self.slow_rate:
            self.slowed += 1
            await asyncio.sleep(self._slow_rng.uniform(0.005, 0.05))
        return await super()._handle(request)


@pytest.fixture(params=["tinydb", "postgres"])
def backend(request: Any) -> str:
    return request.param


# === chat and alerts under connector chaos ======================================================================

def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def shown(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


class ChatUnderFire:
    def __init__(self, client: Any, connector: SlowConnector, clock: FakeClock) -> None:
        self.client = client
        self.connector = connector
        self.clock = clock
        self.statuses: Counter[str] = Counter()
        self.resends = 0
        self.given_up: list[str] = []
        self.reply_tries: list[int] = []

    @property
    def ledger(self):  # type: ignore[no-untyped-def]
        return self.client.app[LEDGER]

    def tries(self, activity_id: str, since: int) -> list[Recorded]:
        """The connector calls that tried to post the reply to `activity_id` (requests from `since` on)."""
        return [r for r in self.connector.requests[since:]
                if r.method == "POST" and len(r.segments) == 5 and r.segments[4] == activity_id]

    def replies(self, activity_id: str) -> list[Recorded]:
        return [r for r in self.connector.accepted if len(r.segments) == 5 and r.segments[4] == activity_id]

    async def send(self, activity: dict[str, Any]) -> str | None:
        """Post one activity; the text of its reply, or None when every try to post the reply failed."""
        since = len(self.connector.requests)
        response = await self.client.post("/api/messages", data=json.dumps(activity),
                                          headers={"Content-Type": "application/json"})
        self.statuses[str(response.status)] += 1
        assert response.status == 200, await response.text()
        tries = self.tries(activity["id"], since)
        replies = self.replies(activity["id"])
        assert len(replies) <= 1, f"reply to {activity['id']} posted {len(replies)} times"
        assert 1 <= len(tries) <= REPLY_ATTEMPTS, f"{len(tries)} tries to reply to {activity['id']}"
        self.reply_tries.append(len(tries))
        if not replies:
            assert len(tries) == REPLY_ATTEMPTS, "a reply is given up only after every attempt"
            self.given_up.append(activity["id"])
            return None
        return str(replies[0].json.get("text") or "")

    async def command(self, text: str, activity_id: str) -> str:
        """A typed command, resent with the same activity id (as Teams retries) until its reply arrives."""
        first = True
        while True:
            activity = teams.message(text, service_url=self.connector.service_url, sender=ALEX,
                                     activity_id=activity_id)
            reply = await self.send(activity)
            if reply is not None:
                return reply if first else "RESENT " + reply
            first = False
            self.resends += 1

    async def press_add(self, nonce: str, cents: int, n: int | str) -> str:
        """Action.Submit of the add-funds confirmation; pressed again (a new activity, the same nonce) until the
        reply arrives."""
        attempt = 0
        while True:
            attempt += 1
            activity = teams.message("", service_url=self.connector.service_url, sender=ALEX,
                                     activity_id=f"fault-press-{n}-{attempt}")
            activity.pop("text")
            activity.update({"replyToId": f"card-{n}", "value": {"verb": "add_funds.confirm", "nonce": nonce,
                                                                 "amount": money(cents), "memo": ""}})
            reply = await self.send(activity)
            if reply is not None:
                return reply if attempt == 1 else "RESENT " + reply
            self.resends += 1


async def drain(chat: ChatUnderFire, max_rounds: int = 400) -> int:
    """Notifier rounds, moving the clock to the moment the next alert is claimable, until nothing is pending."""
    notifier = chat.client.app[NOTIFIER]
    for rounds in range(1, max_rounds + 1):
        await notifier.deliver_once()
        pending = [a for a in await chat.ledger.alerts(TENANT, limit=10_000) if a.status is AlertStatus.PENDING]
        if not pending:
            return rounds
        due = min(max(a.next_attempt_at or START, a.lease_until or START) for a in pending)
        chat.clock.set(max(chat.clock(), due))
    raise AssertionError(f"alerts still pending after {max_rounds} rounds")


async def test_chat_replies_and_alerts_under_connector_chaos(backend: str, tmp_path: Path, aiohttp_client: Any) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    clock = FakeClock(START)
    chaos_rng = CountingRandom(SEED + 1)
    async with SlowConnector(random.Random(SEED + 2), SLOW_RATE) as connector:
        store = await store_for(backend, tmp_path)

        async def opener(location: str):  # type: ignore[no-untyped-def]
            return await open_ledger(location, clock=clock, max_attempts=ALERT_ATTEMPTS)

        settings = settings_for(tmp_path, CREDITS_STORE=store, CREDITS_RATE_LIMIT="0",
                                CREDITS_ALERT_ATTEMPTS=str(ALERT_ATTEMPTS))
        client = await aiohttp_client(create_app(settings, ledger_opener=opener, clock=clock, background=False))
        sleeps = VirtualSleep()
        client.app[CONNECTOR]._sleep = sleeps         # noqa: SLF001 - the reply connector's retry waits
        chat = ChatUnderFire(client, connector, clock)

        for text, scope in (("subscribe", "channel"), ("subscribe", "personal")):
            activity = teams.message(text, service_url=connector.service_url, sender=ALEX, scope=scope)
            assert "will get these alerts" in (await chat.send(activity) or "")
        assert "Saved" in await chat.command("alerts 100, 50", "fault-setup-alerts")
        assert "Saved" in await chat.command("recharge 50 below 40", "fault-setup-recharge")
        assert "Added $150.00" in await chat.command("add 150", "fault-setup-add")

        connector.chaos(CHAOS_RATE, rng=chaos_rng, stall_seconds=0.05)   # 20% faults from here on
        chaos_from = len(connector.requests)
        expected: dict[str, tuple[EntryKind, int]] = {}
        balance, counts = 15_000, Counter[str]()
        for n in range(OPERATIONS):
            kind = rng.choices(["add", "press", "balance", "debit"],
                               [1, 1, 1, 3] if balance > 9_000 else [3, 3, 1, 1])[0]
            counts[kind] += 1
            if kind == "add":
                cents = rng.randint(5, 30) * 100 + rng.choice((0, 50))
                reply = await chat.command(f"add {money(cents)}", f"fault-add-{n}")
                assert reply.startswith(f"Added {shown(cents)}.") or (
                    reply.startswith("RESENT That was already done") and shown(cents) in reply), reply
                expected[f"fault-add-{n}"] = (EntryKind.FUNDS_ADDED, cents)
            elif kind == "press":
                cents = rng.randint(5, 30) * 100
                reply = await chat.press_add(f"faultnonce{n:06d}", cents, n)
                assert reply.startswith(f"Added {shown(cents)}.") or (
                    reply.startswith("RESENT That was already done") and shown(cents) in reply), reply
                expected[f"card:faultnonce{n:06d}"] = (EntryKind.FUNDS_ADDED, cents)
            elif kind == "balance":
                reply = await chat.command("balance", f"fault-balance-{n}")
                assert "Communications Credits balance" in reply, reply
            else:
                cents = rng.randint(500, 2_500)
                await chat.ledger.record_usage(TENANT, UsageRecord(f"fault-call-{n}", cents, "USD", clock(),
                                                                   {"call_type": "user_out_domestic"}))
                expected[f"fault-call-{n}"] = (EntryKind.USAGE, -cents)
            balance = (await chat.ledger.get_account(TENANT)).balance
            clock.advance(minutes=1)
        # a reply that no try could post: the operation happened once, and a resend of the same activity (the
        # same nonce for a card) says so; forced here once each way, on top of whatever the chaos did
        personal = teams.conversation("personal")["id"]
        connector.fail_next(REPLY_ATTEMPTS, status=503, path=f"/v3/conversations/{personal}/activities/fault-lost")
        reply = await chat.command("add 12.34", "fault-lost")
        assert reply.startswith("RESENT That was already done") and "$12.34" in reply, reply
        expected["fault-lost"] = (EntryKind.FUNDS_ADDED, 1_234)
        connector.fail_next(REPLY_ATTEMPTS, status=502,
                            path=f"/v3/conversations/{personal}/activities/fault-press-lost-1")
        reply = await chat.press_add("faultnoncelost", 4_321, "lost")
        assert reply.startswith("RESENT That was already done") and "$43.21" in reply, reply
        expected["card:faultnoncelost"] = (EntryKind.FUNDS_ADDED, 4_321)

        # every operation once, with its amount; nothing else moved money
        entries = await chat.ledger.entries_since(TENANT, EPOCH)
        keys = [e.key for e in entries]
        assert len(keys) == len(set(keys)), "no entry twice"
        by_key = {e.key: e for e in entries}
        lost = [key for key, (kind, amount) in expected.items()
                if key not in by_key or by_key[key].kind is not kind or by_key[key].amount != amount]
        assert lost == []
        moved = {e.key for e in entries if e.kind in (EntryKind.FUNDS_ADDED, EntryKind.USAGE)}
        assert moved == set(expected) | {"fault-setup-add"}
        assert (await chat.ledger.verify(TENANT)).ok
        assert all(0 <= d <= REPLY_MAX_DELAY for d in sleeps.delays), max(sleeps.delays)
        assert chat.statuses.keys() == {"200"}

        # the alerts those operations raised, through the same chaos
        drain_from = clock()
        await drain(chat)
        alerts = await chat.ledger.alerts(TENANT, limit=10_000)
        assert alerts and all(a.status is AlertStatus.DELIVERED for a in alerts), [a.status for a in alerts]
        copies: Counter[tuple[str, str]] = Counter()
        for record in connector.accepted:
            for ref in alert_refs(record):
                copies[(ref, record.conversation_id or "")] += 1
        assert set(copies) == {(a.alert_id[:8], d) for a in alerts for d in a.delivered}
        assert set(copies.values()) == {1}, "each alert once per destination"
        assert all(len(a.destinations) == 2 and len(a.delivered) == 2 for a in alerts)
        simulated = clock() - drain_from
        requests_under_chaos = len(connector.requests) - chaos_from
        connector.chaos(0, rng=chaos_rng)

    assert chaos_rng.drawn["connection reset"] and chaos_rng.drawn["HTTP 429 Retry-After 7"], chaos_rng.drawn
    assert chat.resends == len(chat.given_up) >= 2
    figures = {
        "test": "chat replies and alerts under connector chaos",
        "backend": backend,
        "seed": SEED,
        "operations": OPERATIONS,
        "operations_by_kind": dict(sorted(counts.items())),
        "inbound_requests": sum(chat.statuses.values()),
        "inbound_statuses": dict(chat.statuses),
        "connector_requests_under_chaos": requests_under_chaos,
        "fault_rate": CHAOS_RATE,
        "faults_injected": sum(chaos_rng.drawn.values()) + FORCED + connector.slowed,
        "faults_by_kind": {**dict(sorted(chaos_rng.drawn.items())), "forced: every reply try failed": FORCED,
                           "slow answer (5-50 ms)": connector.slowed},
        "reply_attempts_max": max(chat.reply_tries),
        "replies_needing_a_retry": sum(1 for n in chat.reply_tries if n > 1),
        "replies_given_up_after_all_attempts": len(chat.given_up),
        "activities_resent_after_a_lost_reply": chat.resends,
        "reply_retry_wait_max_s": round(max(sleeps.delays, default=0.0), 3),
        "lost": len(lost),
        "duplicated_entries": len(keys) - len(set(keys)),
        "duplicated_replies": 0,
        "alerts": len(alerts),
        "alert_deliveries": sum(copies.values()),
        "alert_duplicates": sum(n - 1 for n in copies.values()),
        "alert_attempts_max": max(a.attempts for a in alerts),
        "alert_drain_simulated_minutes": round(simulated.total_seconds() / 60, 1),
        "duration_s": round(time.monotonic() - began, 1),
    }
    print(figures)
    write_figures("faults", figures)


# === Graph sync under throttling ================================================================================

GRAPH_APP_ID = "6f1c2b3a-0000-4000-8000-00000000fa17"
GRAPH_SECRET = "graph-secret-for-the-fault-suite"
ROWS = 600
PAGE = 25
OUTAGE_AFTER_PAGES = 9
GRAPH_FAULTS: tuple[tuple[str, int, str | None], ...] = (
    ("fail", 429, "2"), ("fail", 429, "30"), ("fail", 429, None), ("fail", 503, None), ("fail", 503, "5"),
    ("fail", 500, None), ("drop", 0, None),
)


class ThrottledGraph(FakeGraph):
    """The fake Graph, failing `rate` of the requests with a fault drawn from `GRAPH_FAULTS`, and able to go down
    for `outage` requests after `outage_after` pages were served."""

    def __init__(self, *args: Any, rng: random.Random, rate: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = rng
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.retry_after: dict[int, float] = {}    # index in `requests` -> the Retry-After it was answered
        self.outage_after: int | None = None
        self.outage = 6
        self._served = 0

    def _answer(self, request: web.Request, record: Any) -> web.Response | None:
        index = len(self.requests) - 1
        planned = any(f.remaining > 0 for f in self._faults)
        if not planned and self.rate and self._rng.random() < self.rate:
            kind, status, retry_after = self._rng.choice(GRAPH_FAULTS)
            self.injected["connection reset" if kind == "drop" else
                          f"HTTP {status}" + (f" Retry-After {retry_after}" if retry_after else "")] += 1
            if kind == "drop":
                return None
            headers = {"Retry-After": retry_after} if retry_after else {}
            if retry_after:
                self.retry_after[index] = float(retry_after)
            code = "TooManyRequests" if status == 429 else "ServiceUnavailable"
            return web.json_response({"error": {"code": code, "message": "injected"}}, status=status,
                                     headers=headers)
        if planned:
            self.injected["outage HTTP 503"] += 1
        response = super()._answer(request, record)
        if response is not None and response.status == 200 and not planned:
            self._served += 1
            if self.outage_after is not None and self._served == self.outage_after:
                self.outage_after = None
                self.fail_next(self.outage, status=503)   # longer than the client's retries
        return response


@pytest.fixture
async def graph(identity: FakeIdentity) -> AsyncIterator[ThrottledGraph]:
    identity.add_client(GRAPH_APP_ID, GRAPH_SECRET)
    now = datetime.now(timezone.utc)
    rows = [graph_row(n, now - timedelta(hours=2 + n * 0.8), charge=Decimal("0.35"),
                      connection_charge=Decimal("0.0250")) for n in range(ROWS)]
    rows.sort(key=lambda r: r["startDateTime"])
    async with ThrottledGraph(identity, tenant=TENANT, rows=rows, page_size=PAGE, rng=random.Random(SEED + 3),
                              rate=CHAOS_RATE) as fake:
        yield fake


def check_waits(graph: ThrottledGraph, sleeps: VirtualSleep, max_attempts: int) -> int:
    """Pair each failed Graph request with the wait the client made before its next try (marked with the number
    of requests seen when it began): every wait is at least the Retry-After asked (up to MAX_RETRY_AFTER); a
    failure without a wait is the last attempt of a page, or a reset keep-alive connection that aiohttp itself
    re-sent at once. Returns how many Retry-After headers were honoured."""
    waits = {mark: delay for mark, delay in sleeps.marked}
    assert len(waits) == len(sleeps.marked), "two waits between two requests"
    honoured = streak = 0
    for index, request in enumerate(graph.requests):
        if request.status == 200:
            streak = 0
            continue
        waited = waits.pop(index + 1, None)
        if waited is None:
            if request.status == 0:
                continue            # aiohttp re-sent the GET on a new connection: not a failed attempt
            streak += 1
            assert streak == max_attempts, f"request {index} ({request.status}) was tried again without a wait"
            streak = 0              # the client gave up on this page
            continue
        streak += 1
        assert 0 <= waited <= MAX_RETRY_AFTER, waited
        asked = graph.retry_after.get(index)
        if asked is not None:
            assert waited >= min(asked, MAX_RETRY_AFTER), (index, asked, waited)
            honoured += 1
    assert waits == {}, f"waits that no failure explains: {waits}"
    return honoured


async def test_graph_sync_under_throttling_debits_every_call_once(backend: str, tmp_path: Path,
                                                                  fake_connector: FakeConnector,
                                                                  identity: FakeIdentity, graph: ThrottledGraph,
                                                                  aiohttp_client: Any) -> None:
    began = time.monotonic()
    store = await store_for(backend, tmp_path)
    settings = settings_for(tmp_path, CREDITS_STORE=store, CREDITS_RATE_LIMIT="0", GRAPH_TENANT_ID=TENANT,
                            GRAPH_CLIENT_ID=GRAPH_APP_ID, GRAPH_CLIENT_SECRET=GRAPH_SECRET,
                            GRAPH_LOGIN_URL=identity.https_url, GRAPH_URL=graph.url)
    client = await aiohttp_client(create_app(settings, msal_http_client=identity.requests_session(),
                                             background=False))
    graph_client = client.app[USAGE].graph
    sleeps = VirtualSleep(lambda: len(graph.requests))
    graph_client._sleep = sleeps                     # noqa: SLF001 - the Graph client's retry waits
    ledger = client.app[LEDGER]

    async def say(text: str) -> str:
        activity = teams.message(text, service_url=fake_connector.service_url, sender=ALEX)
        response = await client.post("/api/messages", data=json.dumps(activity),
                                     headers={"Content-Type": "application/json"})
        assert response.status == 200, await response.text()
        [reply] = [r for r in fake_connector.accepted if r.json.get("replyToId") == activity["id"]]
        return str(reply.json["text"])

    async def usage_keys() -> list[str]:
        return [e.key for e in await ledger.entries_since(TENANT, EPOCH) if e.kind is EntryKind.USAGE]

    assert "Added" in await say("add 300")
    assert "Saved" in await say("recharge 100 below 50")

    # 1. Graph goes down for longer than the retries after some pages: the sync stops, keeps what it read
    graph.outage_after = OUTAGE_AFTER_PAGES
    first = await say("sync")
    print("\nreply to a sync cut by an outage:", first)
    # an outage is not a refusal: the admin is told what is kept, with an incident id and no internal message
    assert "did not finish" in first and "next sync reads the rest" in first and "incident" in first, first
    assert "refused" not in first and "503" not in first and "getPstnCalls" not in first, first
    read_before_outage = [rid for r in graph.requests if r.status == 200 for rid in r.row_ids]
    assert sorted(await usage_keys()) == sorted(read_before_outage)
    assert len(read_before_outage) == OUTAGE_AFTER_PAGES * PAGE
    assert await ledger.sync_watermark(TENANT, "graph") is None

    # 2. the next sync, still throttled, reads everything; what the first one recorded is not debited again
    second = await say("sync")
    match = re.search(r"(\d+) calls read, (\d+) debited", second)
    assert match, second
    assert int(match.group(1)) == ROWS and int(match.group(2)) == ROWS - len(read_before_outage), second
    assert await ledger.sync_watermark(TENANT, "graph") is not None

    # 3. a third sync re-reads the overlap: nothing twice
    third = await say("sync")
    assert " 0 debited" in third, third

    keys = await usage_keys()
    assert len(keys) == len(set(keys)) == ROWS
    assert set(keys) == {f"row-{n}" for n in range(ROWS)}
    usage = [e for e in await ledger.entries_since(TENANT, EPOCH) if e.kind is EntryKind.USAGE]
    assert {e.amount for e in usage} == {-38}        # 0.35 + 0.025 = 0.375, half up: 0.38 each
    assert (await ledger.verify(TENANT)).ok
    honoured = check_waits(graph, sleeps, graph_client.max_attempts)
    assert sum(graph.injected.values()) >= 10 and honoured >= 2, graph.injected

    figures = {
        "test": "graph sync under throttling",
        "backend": backend,
        "seed": SEED,
        "rows": ROWS,
        "pages": -(-ROWS // PAGE),
        "syncs": 3,
        "syncs_stopped_by_an_outage": 1,
        "graph_requests": len(graph.requests),
        "fault_rate": CHAOS_RATE,
        "faults_injected": sum(graph.injected.values()),
        "faults_by_kind": dict(sorted(graph.injected.items())),
        "retry_after_honoured": honoured,
        "graph_retry_wait_max_s": round(max(sleeps.delays, default=0.0), 3),
        "rows_debited": len(keys),
        "lost": ROWS - len(set(keys)),
        "duplicated_entries": len(keys) - len(set(keys)),
        "duration_s": round(time.monotonic() - began, 1),
    }
    print(figures)
    write_figures("faults", figures)
