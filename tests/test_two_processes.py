"""Two real bot processes (`python -m bot serve`) over one PostgreSQL database, 64 concurrent usage debits
arriving through both: exactly the recharges one process would have made, a clean `verify()`, and every alert
delivered once, by whichever notifier claimed it (issue 7)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage import (AlertKind, AlertSettings, AlertStatus, ConversationRef, EntryKind, RechargeSettings,
                     UsageRecord)
from storage.clock import utc_now
from storage.reference import ReferenceLedger
from tests import teams
from tests.backends import open_backend, postgres_dsn
from tests.fakes.connector import FakeConnector

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
TENANT = teams.TENANT
CHANNEL = teams.channel_id()
TOKEN = "two-processes-admin-token-0123456789"
DEBITS = 64
DEBIT = 700                    # $7.00 each: $448.00 in all
FUNDS = 10_000
RECHARGE = RechargeSettings(True, 5_000, 2_000, None, 100)
THRESHOLDS = AlertSettings((3_000,), 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def seed(ledger: Any, service_url: str | None) -> None:
    await ledger.open_account(TENANT, "USD")
    await ledger.add_funds(TENANT, FUNDS, actor="admin", key="seed")
    await ledger.set_recharge_settings(TENANT, RECHARGE, actor="admin", key="recharge")
    await ledger.set_alert_settings(TENANT, THRESHOLDS, actor="admin", key="alerts")
    if service_url is not None:
        await ledger.save_conversation(ConversationRef(CHANNEL, TENANT, {
            "bot": teams.BOT, "conversation": {"id": CHANNEL, "conversationType": "channel", "tenantId": TENANT},
            "serviceUrl": service_url, "channelId": "msteams", "locale": "en-US"}, utc_now()))
    await ledger.subscribe(TENANT, CHANNEL, [AlertKind.RECHARGED, AlertKind.LOW_BALANCE], actor="admin", key="sub")


async def expected_recharges() -> int:
    """What one process does with the same debits one after another (all equal, so order cannot matter)."""
    ledger = ReferenceLedger()
    await seed(ledger, None)
    when = datetime(2026, 11, 20, tzinfo=timezone.utc)
    for n in range(DEBITS):
        await ledger.record_usage(TENANT, UsageRecord(f"call-{n}", DEBIT, "USD", when))
    return sum(1 for e in (await ledger.history(TENANT, limit=1000)).items if e.kind is EntryKind.AUTO_RECHARGE)


def start_bot(dsn: str, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"CREDITS_STORE": dsn, "PORT": str(port), "CREDITS_ADMIN_TOKEN": TOKEN, "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT)})
    return subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(cwd / f"bot-{port}.log", "wb"))


async def wait_ready(session: aiohttp.ClientSession, port: int, bot: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert bot.poll() is None, f"the bot on port {port} exited with {bot.returncode}"
        try:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the bot on port {port} did not become ready")


def stop(bot: subprocess.Popen[bytes]) -> None:
    if bot.poll() is None:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(15)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.wait(5)


async def test_two_bots_share_one_ledger_without_a_double_recharge(tmp_path: Path,
                                                                  fake_connector: FakeConnector) -> None:
    ledger = await open_backend("postgres", tmp_path, utc_now)  # type: ignore[arg-type]
    bots: list[subprocess.Popen[bytes]] = []
    try:
        await seed(ledger, fake_connector.service_url)
        dsn = postgres_dsn(tmp_path)
        ports = [free_port(), free_port()]
        bots = [start_bot(dsn, port, tmp_path) for port in ports]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            await asyncio.gather(*(wait_ready(session, port, bot) for port, bot in zip(ports, bots)))
            when = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()

            async def debit(n: int) -> dict[str, Any]:
                row = {"usage_id": f"call-{n}", "charge": "7.00", "currency": "USD", "occurred_at": when,
                       "capability": "MCOPSTNPP", "details": {"call_type": "user_out_domestic"}}
                async with session.post(f"http://127.0.0.1:{ports[n % 2]}/api/admin/usage",
                                        json={"tenant": TENANT, "source": "csv", "rows": [row]}) as response:
                    assert response.status == 200, await response.text()
                    return await response.json()

            reports = await asyncio.gather(*(debit(n) for n in range(DEBITS)))
        assert sum(r["debited"] for r in reports) == DEBITS
        entries = (await ledger.history(TENANT, limit=1000)).items
        recharges = [e for e in entries if e.kind is EntryKind.AUTO_RECHARGE]
        assert len(recharges) == await expected_recharges() > 0
        account = await ledger.get_account(TENANT)
        assert account.balance == FUNDS - DEBITS * DEBIT + len(recharges) * RECHARGE.amount
        assert (await ledger.verify(TENANT)).ok

        for _ in range(300):                      # the two notifiers share the outbox
            alerts = await ledger.alerts(TENANT, limit=1000)
            if alerts and all(a.status is AlertStatus.DELIVERED for a in alerts):
                break
            await asyncio.sleep(0.1)
        assert alerts and all(a.status is AlertStatus.DELIVERED for a in alerts), [a.status for a in alerts]
        posted: dict[str, int] = {}
        for record in fake_connector.accepted:
            text = json.dumps(record.json)
            for alert in alerts:
                if f"reference {alert.alert_id[:8]}" in text:
                    posted[alert.alert_id] = posted.get(alert.alert_id, 0) + 1
        assert posted == {a.alert_id: 1 for a in alerts}
        assert {a.kind for a in alerts} == {AlertKind.RECHARGED, AlertKind.LOW_BALANCE}
    finally:
        for bot in bots:
            stop(bot)
        await ledger.close()
    for port in ports:
        log = (tmp_path / f"bot-{port}.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
