"""The daily jobs, run inside the app: lot expiry, then forecast alerts, for every account.

They run once at start-up (so a day missed while the bot was down is caught up; every job is idempotent, so an
extra run changes nothing) and then every day at `at` (UTC, `CREDITS_DAILY_AT`).

* **Expiry**: `Ledger.expire_lots(now)` writes an `expiry` entry for what is left in each lot past its 12
  months, and queues an `expiring` alert once per lot with money left that expires within 30 days.
* **Forecast**: when the account's projected zero date (usage burn over the last 30 days, `storage.forecast`)
  falls within its forecast horizon (`AlertSettings.forecast_days`) and auto-recharge will not step in, a
  `forecast` alert is queued. It is keyed by the newest open lot (the latest credit with money left), so it is
  raised once per funding: it comes back only after money was added and the projection falls short again,
  never once a day.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone

from storage import AlertKind, Ledger
from storage.clock import Clock, utc_now
from storage.model import Lot, iso

from .reports import account_forecast

log = logging.getLogger(__name__)


def next_run(after: datetime, at: time) -> datetime:
    """The first moment strictly after `after` whose UTC time of day is `at`."""
    after = after.astimezone(timezone.utc)
    candidate = datetime.combine(after.date(), at, tzinfo=timezone.utc)
    return candidate if candidate > after else candidate + timedelta(days=1)


def forecast_key(tenant_id: str, newest_lot: Lot) -> str:
    """One forecast alert per funding: the newest open lot names the episode, by its id (the credit entry's
    seq) and its amount, which grows when another credit of the same UTC day joins it (ADR 0008)."""
    return f"forecast:{tenant_id}:lot{newest_lot.lot_id}:{newest_lot.amount}"


@dataclass
class JobsReport:
    expired: int = 0                                        # expiry entries written
    forecasts: list[str] = field(default_factory=list)      # tenants with a forecast alert raised (or found)
    failed: list[str] = field(default_factory=list)         # tenants whose forecast failed (logged)


class DailyJobs:
    """See the module docstring. `run_once` is the whole day's work; `start`/`stop` schedule it."""

    def __init__(self, ledger: Ledger, *, at: time, clock: Clock = utc_now) -> None:
        self._ledger = ledger
        self._at = at
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> JobsReport:
        report = JobsReport()
        now = self._clock()
        report.expired = len(await self._ledger.expire_lots(now))
        for tenant in await self._ledger.tenants():
            try:
                if await self._forecast_alert(tenant, now):
                    report.forecasts.append(tenant)
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("incident %s: forecast job failed for tenant %s", incident, tenant)
                report.failed.append(tenant)
        return report

    async def _forecast_alert(self, tenant: str, now: datetime) -> bool:
        f, recharge_amount = await account_forecast(self._ledger, tenant, now)
        horizon = (await self._ledger.alert_settings(tenant)).forecast_days
        if f.days_to_zero is None or f.zero_on is None or f.days_to_zero > horizon:
            return False
        if recharge_amount is not None:
            return False  # auto-recharge tops the balance up before it reaches zero (a block alerts by itself)
        lots = await self._ledger.lots(tenant)
        if not lots:
            return False
        balance = (await self._ledger.get_account(tenant)).balance
        await self._ledger.raise_alert(tenant, AlertKind.FORECAST, forecast_key(tenant, lots[-1]), {
            "balance": balance, "daily_burn": f.daily_burn, "days_to_zero": f.days_to_zero,
            "zero_on": f.zero_on.isoformat(), "computed_at": iso(now)})
        return True

    # --- scheduling -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="daily jobs")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with self._ledger.leading("daily-jobs") as leader:
                    if leader:   # with several bots over one database, one of them runs the day's jobs
                        report = await self.run_once()
                        log.info("daily jobs done", extra={"expired": report.expired,
                                                           "forecasts": len(report.forecasts)})
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("incident %s: daily jobs failed; next try at the next scheduled time", incident)
            now = self._clock()
            await asyncio.sleep((next_run(now, self._at) - now).total_seconds())
