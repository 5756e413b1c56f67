"""Rows become debits (bot.usage.sync), on every backend: classification, rounding, idempotent re-import,
recharges and alerts from usage, the Graph watermark with its overlap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, AsyncIterator

import pytest

from bot.usage.rows import BadRow, UsageRow
from bot.usage.sync import (FIRST_SYNC, GRAPH, OVERLAP, SKIP_ALREADY, SKIP_FREE, SKIP_OTHER_LICENSE, UsageImporter,
                            UsageReport, sync_graph)
from storage import AlertKind, AlertSettings, EntryKind, RechargeSettings

T = "tenant-usage"
CALL_TIME = datetime(2026, 11, 20, 14, 5, tzinfo=timezone.utc)


def call(usage_id: str, charge: str, *, currency: str = "USD", capability: str = "MCOPSTNPP",
         at: datetime = CALL_TIME) -> UsageRow:
    return UsageRow(usage_id, Decimal(charge), currency, at, capability,
                    {"user_name": "Adele Vance", "call_type": "user_out_international"})


async def importer_for(ledger, **kwargs: Any) -> UsageImporter:
    account = await ledger.open_account(T, "USD")
    return UsageImporter(ledger, T, account.currency, source="csv", **kwargs)


async def test_each_row_is_debited_skipped_or_rejected_with_a_reason(ledger) -> None:
    imp = await importer_for(ledger)
    rows = [
        call("a", "1.25"),                                 # debited 125
        call("b", "0.0350"),                               # 3.5 cents: rounded half up to 4
        call("c", "2.00", capability="MCOPSTN1"),          # calling plan: not from credits
        call("d", "0"),                                    # free
        call("e", "0.004"),                                # below half a cent
        call("f", "3.00", currency="EUR"),                 # other currency: rejected, never converted
        BadRow("PSTN.calls.2026-11-20.csv line 9", "Charge is not a number: 'abc'"),
        call("g", "0.0050"),                               # exactly half a cent: up to 1
    ]
    await imp.add_all(rows)
    await imp.flush()
    r = imp.report
    assert (r.read, r.debited, r.skipped, r.rejected) == (8, 3, 3, 2)
    assert r.total == 125 + 4 + 1
    assert r.exact_total == Decimal("1.25") + Decimal("0.0350") + Decimal("0.0050")
    assert r.skipped_by_reason == {SKIP_OTHER_LICENSE: 1, SKIP_FREE: 2}
    assert r.problems == ["call f: charged in EUR, the account is in USD: not converted",
                          "PSTN.calls.2026-11-20.csv line 9: Charge is not a number: 'abc'"]
    assert r.balance == (await ledger.get_account(T)).balance == -130
    usage = [e for e in (await ledger.history(T, limit=10)).items if e.kind is EntryKind.USAGE]
    assert sorted(e.key for e in usage) == ["a", "b", "g"]
    b = next(e for e in usage if e.key == "b")
    assert b.amount == -4 and b.details["charge"] == "0.0350" and b.details["capability"] == "MCOPSTNPP"
    assert b.details["occurred_at"].startswith("2026-11-20T14:05")


async def test_importing_the_same_rows_twice_changes_nothing(ledger) -> None:
    rows = [call(f"row-{n}", "0.10") for n in range(25)]
    first = await importer_for(ledger, batch=7)
    await first.add_all(rows)
    await first.flush()
    balance = (await ledger.get_account(T)).balance
    again = UsageImporter(ledger, T, "USD", source="csv", batch=10)
    await again.add_all(rows)
    await again.flush()
    assert (first.report.debited, first.report.total) == (25, 250)
    assert (again.report.debited, again.report.total, again.report.skipped) == (0, 0, 25)
    assert again.report.skipped_by_reason == {SKIP_ALREADY: 25}
    assert (await ledger.get_account(T)).balance == balance == -250
    assert (await ledger.verify(T)).ok


async def test_a_row_id_reused_with_another_charge_is_rejected_and_the_first_stands(ledger) -> None:
    imp = await importer_for(ledger)
    await imp.add_all([call("same", "1.00")])
    await imp.flush()
    later = UsageImporter(ledger, T, "USD", source="graph")
    await later.add_all([call("same", "9.00")])
    await later.flush()
    assert later.report.rejected == 1 and "first record stands" in later.report.problems[0]
    assert (await ledger.get_account(T)).balance == -100


async def test_usage_fires_recharges_and_alerts_and_the_report_counts_them(ledger) -> None:
    await ledger.open_account(T, "USD")
    await ledger.add_funds(T, 5_000, actor="admin", key="fund")
    await ledger.set_recharge_settings(T, RechargeSettings(True, 5_000, 1_000, None, 10), actor="admin", key="rs")
    await ledger.set_alert_settings(T, AlertSettings((3_000,), 7), actor="admin", key="as")
    await ledger.subscribe(T, "19:finance@thread.tacv2", list(AlertKind), actor="admin", key="sub")
    imp = UsageImporter(ledger, T, "USD", source="csv")
    await imp.add_all([call(f"c{n}", "9.00") for n in range(5)])   # 50 - 45 = 5 < 10: one recharge
    await imp.flush()
    r = imp.report
    assert (r.debited, r.total, r.recharges) == (5, 4_500, 1)
    assert r.alerts >= 2                                   # low balance crossed, recharged
    assert r.balance == 5_000 - 4_500 + 5_000


def test_a_report_survives_json_and_merges() -> None:
    a = UsageReport(T, "csv", "USD", read=3, debited=1, total=100, exact_total=Decimal("1.0049"))
    a.skip(SKIP_FREE)
    a.reject("line 2", "bad")
    b = UsageReport.from_dict(a.to_dict())
    assert b.to_dict() == a.to_dict()
    a.merge(b)
    assert (a.read, a.debited, a.skipped, a.rejected, a.total) == (6, 2, 2, 2, 200)
    assert a.exact_total == Decimal("2.0098") and a.problems == ["line 2: bad", "line 2: bad"]


@dataclass
class Page:
    rows: list[UsageRow | BadRow]


class FakeSource:
    """Graph as far as the sync sees it: calls by start time, pages of two, windows recorded."""

    def __init__(self, calls: list[UsageRow]) -> None:
        self.calls = calls
        self.windows: list[tuple[datetime, datetime]] = []
        self.fail_after_pages: int | None = None

    async def pstn_calls(self, tenant_id: str, start: datetime, end: datetime) -> AsyncIterator[Page]:
        self.windows.append((start, end))
        chosen = [c for c in self.calls if start <= c.occurred_at <= end]
        for n, i in enumerate(range(0, len(chosen), 2)):
            if self.fail_after_pages is not None and n >= self.fail_after_pages:
                raise ConnectionError("Graph went away")
            yield Page(list(chosen[i:i + 2]))


async def test_graph_sync_reads_from_the_watermark_minus_the_overlap(ledger) -> None:
    await ledger.open_account(T, "USD")
    now = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
    source = FakeSource([call(f"g{n}", "0.50", at=now - timedelta(hours=10 * n)) for n in range(1, 6)])
    first = await sync_graph(ledger, source, T, now=now)
    assert source.windows == [(now - FIRST_SYNC, now)]
    assert (first.read, first.debited, first.total) == (5, 5, 250)
    assert await ledger.sync_watermark(T, GRAPH) == now

    later = now + timedelta(hours=24)
    source.calls.append(call("late", "1.00", at=now - timedelta(hours=30)))   # arrived late, inside the overlap
    second = await sync_graph(ledger, source, T, now=later)
    assert source.windows[-1] == (now - OVERLAP, later)
    assert (second.debited, second.total) == (1, 100)
    assert second.skipped_by_reason[SKIP_ALREADY] == 4     # re-read in the overlap, not counted twice
    assert (await ledger.get_account(T)).balance == -350


async def test_a_sync_that_fails_part_way_keeps_what_it_recorded_and_the_old_watermark(ledger) -> None:
    await ledger.open_account(T, "USD")
    now = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
    source = FakeSource([call(f"g{n}", "0.50", at=now - timedelta(hours=n)) for n in range(1, 6)])
    source.fail_after_pages = 2
    with pytest.raises(ConnectionError):
        await sync_graph(ledger, source, T, now=now)
    assert (await ledger.get_account(T)).balance == -200   # two pages of two were recorded
    assert await ledger.sync_watermark(T, GRAPH) is None
    source.fail_after_pages = None
    report = await sync_graph(ledger, source, T, now=now)
    assert (report.debited, report.skipped) == (1, 4)
    assert (await ledger.get_account(T)).balance == -250
