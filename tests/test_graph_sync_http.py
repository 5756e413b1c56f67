"""`sync` in chat, end to end: the real app, the real msal flow against the fake token endpoint, the fake Graph,
the ledger, the notifier. Usage from Graph moves the balance, fires a recharge whose card reaches the channel,
and a second sync counts nothing twice; a refusal is explained in words an admin can act on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from bot.app import LEDGER, NOTIFIER, create_app
from storage import AlertKind, EntryKind
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.fakes.graph import FakeGraph, graph_row
from tests.fakes.identity import FakeIdentity
from tests.http_chat import MEGAN, Chat, settings_for

GRAPH_APP_ID = "6f1c2b3a-0000-4000-8000-00000000c0de"
GRAPH_SECRET = "graph-client-secret-never-shown"
TENANT = teams.TENANT


@pytest.fixture
async def graph(identity: FakeIdentity) -> AsyncIterator[FakeGraph]:
    identity.add_client(GRAPH_APP_ID, GRAPH_SECRET)
    now = datetime.now(timezone.utc)
    rows = [graph_row(n, now - timedelta(hours=30 + n), charge=Decimal("4.1"), connection_charge=Decimal("0.0250"))
            for n in range(3)]
    rows.append(graph_row(9, now - timedelta(hours=40), capability="MCOPSTN1"))
    async with FakeGraph(identity, tenant=TENANT, rows=rows, page_size=2) as fake:
        yield fake


@pytest.fixture
async def chat(tmp_path: Path, fake_connector: FakeConnector, identity: FakeIdentity, graph: FakeGraph,
               aiohttp_client: Any) -> Chat:
    settings = settings_for(tmp_path, GRAPH_TENANT_ID=TENANT, GRAPH_CLIENT_ID=GRAPH_APP_ID,
                            GRAPH_CLIENT_SECRET=GRAPH_SECRET, GRAPH_LOGIN_URL=identity.https_url,
                            GRAPH_URL=graph.url)
    app = create_app(settings, msal_http_client=identity.requests_session(), background=False)
    return Chat(await aiohttp_client(app), fake_connector)


async def test_sync_in_chat_debits_graph_usage_once_and_the_recharge_card_reaches_the_channel(
        chat: Chat, graph: FakeGraph) -> None:
    ledger = chat.client.app[LEDGER]
    assert TENANT in await ledger.tenants()                # opened at start-up for GRAPH_TENANT_ID
    await chat.say("subscribe recharged", scope="channel")
    await chat.say("add 20")
    await chat.say("recharge 25 below 10")
    settings_before = await ledger.recharge_settings(TENANT)

    reply = await chat.say("sync")

    assert "4 calls read, 3 debited ($12.39)" in reply      # each call 4.1 + 0.025 = 4.125, half up 4.13
    assert "1 skipped, 0 rejected" in reply and "Balance now: $32.61" in reply
    assert "Auto-recharges made: 1" in reply
    usage = [e for e in (await ledger.history(TENANT, limit=20)).items if e.kind is EntryKind.USAGE]
    assert sorted(e.key for e in usage) == ["row-0", "row-1", "row-2"]
    assert len(graph.requests) >= 2                        # two pages
    chat.connector.clear()
    round_ = await chat.client.app[NOTIFIER].deliver_once()
    assert round_.sent == 1
    [posted] = chat.connector.accepted
    assert posted.conversation_id == teams.channel_id() and "Auto-recharge added $25.00" in str(posted.json)
    [alert] = [a for a in await ledger.alerts(TENANT) if a.kind is AlertKind.RECHARGED]

    again = await chat.say("sync")                         # re-reads the overlap: nothing counted twice
    assert "0 debited ($0.00)" in again and "Balance now: $32.61" in again
    assert (await ledger.get_account(TENANT)).balance == 3_261
    assert await ledger.recharge_settings(TENANT) == settings_before    # a sync moves money, never settings
    assert [a.alert_id for a in await ledger.alerts(TENANT) if a.kind is AlertKind.RECHARGED] == [alert.alert_id]


async def test_a_refusal_from_graph_is_explained_and_changes_nothing(chat: Chat, graph: FakeGraph) -> None:
    await chat.say("add 20")
    graph.forbid()
    reply = await chat.say("sync")
    assert "CallRecord" in reply and "consent" in reply.lower()
    assert GRAPH_SECRET not in reply and "Traceback" not in reply
    assert (await chat.client.app[LEDGER].get_account(TENANT)).balance == 2_000
    assert await chat.client.app[LEDGER].sync_watermark(TENANT, "graph") is None


async def test_readers_may_not_sync(chat: Chat, graph: FakeGraph) -> None:
    reply = await chat.say("sync", sender=MEGAN)
    assert "admin" in reply.lower()
    assert graph.requests == []
