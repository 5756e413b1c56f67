"""Rows become debits: the rules shared by the Graph sync, the CSV import and a file dropped in chat.

`UsageImporter` classifies each row and records the billed ones in batches (`Ledger.record_usage_batch`, one
atomic unit per batch, every row keyed by its source id, so a second import of the same rows changes nothing):

* a `BadRow` (unreadable) is **rejected**, with where and why;
* a call whose license capability is not billed from Communications Credits (`MCOPSTNPP` by default) is
  **skipped**; so is a free call (charge 0, or less than half a minor unit) and a row already recorded;
* a call in another currency than the account's is **rejected** and reported, never converted;
* the rest is **debited**: the charge (charge + connection charge, exact `Decimal`) rounded half up to the
  currency's minor unit (calls are priced in fractions of a cent; docs/decisions/0007), the exact charge kept in
  the entry's details.

`sync_graph` reads Graph from the account's watermark minus an overlap (PSTN data lags 24 to 48 hours; the row
id makes re-reading safe) up to now, and moves the watermark only after every page was recorded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, AsyncIterable, Iterable, Mapping, Protocol

from storage import EntryKind, InvalidCurrency, Ledger, RowStatus, UsageRecord
from storage.model import SYSTEM_ACTOR
from storage.money import max_minor, normalize_currency, precision

from .rows import DEFAULT_BILLED_CAPABILITIES, BadRow, UsageRow

GRAPH = "graph"
#: Re-read this much before the watermark: PSTN records arrive 24 to 48 hours after the call.
OVERLAP = timedelta(hours=48)
#: The first sync of an account reads this far back.
FIRST_SYNC = timedelta(days=30)
#: Rows per atomic ledger batch.
BATCH = 2000
#: Rejections listed in a report (the counts cover all of them).
MAX_PROBLEMS = 20

SKIP_OTHER_LICENSE = "not paid from Communications Credits"
SKIP_FREE = "free call"
SKIP_ALREADY = "already recorded"


@dataclass
class UsageReport:
    """What one run did, for one account. Amounts in minor units of `currency`."""

    tenant_id: str
    source: str
    currency: str
    read: int = 0
    debited: int = 0
    skipped: int = 0
    rejected: int = 0
    total: int = 0                                  # minor units debited by this run
    exact_total: Decimal = Decimal(0)               # the same calls' charges before rounding to minor units
    recharges: int = 0
    alerts: int = 0
    balance: int | None = None
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}" if where else reason)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped += n
        self.skipped_by_reason[reason] += n

    def merge(self, other: "UsageReport") -> None:
        """Add `other` (a later part of the same run, e.g. a chunk sent to the running bot)."""
        self.read += other.read
        self.debited += other.debited
        self.rejected += other.rejected
        self.total += other.total
        self.exact_total += other.exact_total
        self.recharges += other.recharges
        self.alerts += other.alerts
        self.balance = other.balance if other.balance is not None else self.balance
        for reason, n in other.skipped_by_reason.items():
            self.skip(reason, n)
        self.problems.extend(other.problems[:max(0, MAX_PROBLEMS - len(self.problems))])

    def to_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "source": self.source, "currency": self.currency, "read": self.read,
                "debited": self.debited, "skipped": self.skipped, "rejected": self.rejected, "total": self.total,
                "exact_total": str(self.exact_total), "recharges": self.recharges, "alerts": self.alerts,
                "balance": self.balance, "skipped_by_reason": dict(self.skipped_by_reason),
                "problems": list(self.problems)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UsageReport":
        report = cls(d["tenant_id"], d["source"], d["currency"], d["read"], d["debited"], 0, 0, d["total"],
                     Decimal(d["exact_total"]), d["recharges"], d["alerts"], d.get("balance"))
        for reason, n in d.get("skipped_by_reason", {}).items():
            report.skip(reason, int(n))
        report.rejected = d["rejected"]
        report.problems = list(d.get("problems", []))
        return report


class UsageImporter:
    """Feeds rows of one account into the ledger; see the module docstring. `await flush()` at the end."""

    def __init__(self, ledger: Ledger, tenant_id: str, currency: str, *, source: str,
                 billed: Iterable[str] = DEFAULT_BILLED_CAPABILITIES, batch: int = BATCH,
                 actor: str = SYSTEM_ACTOR) -> None:
        self._ledger = ledger
        self._tenant = tenant_id
        self._currency = currency
        self._places = precision(currency)
        self._max = max_minor(currency)
        self._billed = frozenset(billed)
        self._batch_size = batch
        self._actor = actor
        self._pending: list[tuple[UsageRecord, Decimal]] = []
        self._in_flight: asyncio.Task[None] | None = None
        self.report = UsageReport(tenant_id, source, currency)

    async def add(self, row: UsageRow | BadRow) -> None:
        self.report.read += 1
        record = self._classify(row)
        if record is not None:
            self._pending.append(record)
            if len(self._pending) >= self._batch_size:
                await self._submit()

    async def _submit(self) -> None:
        """Hand the pending rows to the ledger as one batch. At most one batch is in flight: the next rows are
        read and classified while the ledger records the previous batch, and batches are recorded in order."""
        batch, self._pending = self._pending, []
        if self._in_flight is not None:
            await self._in_flight
        self._in_flight = asyncio.ensure_future(self._record(batch))

    async def add_all(self, rows: Iterable[UsageRow | BadRow] | AsyncIterable[UsageRow | BadRow]) -> None:
        if isinstance(rows, AsyncIterable):
            async for row in rows:
                await self.add(row)
        else:
            for row in rows:
                await self.add(row)

    def _classify(self, row: UsageRow | BadRow) -> tuple[UsageRecord, Decimal] | None:
        report = self.report
        if isinstance(row, BadRow):
            report.reject(row.where, row.reason)
            return None
        if row.capability not in self._billed:
            report.skip(SKIP_OTHER_LICENSE)
            return None
        try:
            currency = normalize_currency(row.currency)
        except InvalidCurrency:
            report.reject(f"call {row.usage_id}", f"unknown currency {row.currency[:12]!r}")
            return None
        if currency != self._currency:
            report.reject(f"call {row.usage_id}", f"charged in {currency}, the account is in {self._currency}: "
                                                  "not converted")
            return None
        if not row.charge.is_finite() or row.charge < 0:
            report.reject(f"call {row.usage_id}", f"charge {row.charge} is not a price")
            return None
        minor = int(row.charge.scaleb(self._places).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if minor == 0:
            report.skip(SKIP_FREE)
            return None
        if minor > self._max:
            report.reject(f"call {row.usage_id}", f"charge {row.charge} {currency} is too large to be one call")
            return None
        details = {**row.details, "capability": row.capability, "charge": str(row.charge), "source": report.source}
        return UsageRecord(row.usage_id, minor, currency, row.occurred_at, details), row.charge

    async def flush(self) -> None:
        """Record everything added so far; when it returns, the report is complete."""
        if self._pending:
            await self._submit()
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def _record(self, pending: list[tuple[UsageRecord, Decimal]]) -> None:
        result = await self._ledger.record_usage_batch(self._tenant, [record for record, _ in pending],
                                                       actor=self._actor)
        report = self.report
        for (record, exact), outcome in zip(pending, result.rows):
            if outcome.status is RowStatus.RECORDED and outcome.posting is not None:
                report.debited += 1
                report.total += record.amount
                report.exact_total += exact
                report.recharges += sum(1 for e in outcome.posting.entries if e.kind is EntryKind.AUTO_RECHARGE)
                report.alerts += len(outcome.posting.alert_ids)
            elif outcome.status is RowStatus.REPLAYED:
                report.skip(SKIP_ALREADY)
            elif outcome.status is RowStatus.CONFLICT:
                report.reject(f"call {record.usage_id}", "recorded before with a different charge or time; the "
                                                         "first record stands")
            else:
                report.reject(f"call {record.usage_id}", outcome.reason or "refused by the ledger")
        report.balance = result.balance


class PstnSource(Protocol):
    def pstn_calls(self, tenant_id: str, start: datetime, end: datetime) -> AsyncIterable[Any]:
        """Pages with `.rows` (UsageRow | BadRow), window by window (`bot.usage.graph.GraphUsageClient`)."""
        ...


async def sync_graph(ledger: Ledger, client: PstnSource, tenant_id: str, *, now: datetime,
                     billed: Iterable[str] = DEFAULT_BILLED_CAPABILITIES, actor: str = SYSTEM_ACTOR) -> UsageReport:
    """Read the account's PSTN calls from Graph since its watermark (minus `OVERLAP`; `FIRST_SYNC` back on the
    first run) up to `now`, record them, then move the watermark to `now`. A failure part-way keeps what was
    recorded (each batch is atomic and keyed) and leaves the watermark, so the next run reads the rest."""
    account = await ledger.get_account(tenant_id)
    watermark = await ledger.sync_watermark(tenant_id, GRAPH)
    start = watermark - OVERLAP if watermark is not None else now - FIRST_SYNC
    importer = UsageImporter(ledger, tenant_id, account.currency, source=GRAPH, billed=billed, actor=actor)
    importer.report.window = (start, now)
    async for page in client.pstn_calls(tenant_id, start, now):
        await importer.add_all(page.rows)
        await importer.flush()
    await importer.flush()
    await ledger.set_sync_watermark(tenant_id, GRAPH, now)
    return importer.report
