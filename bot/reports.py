"""Read-side summaries shared by chat replies and cards: usage by call type and user, the last recharge, the
forecast line. Pure over ledger reads; no formatting beyond what the caller's context does."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage import EntryKind, Ledger
from storage.forecast import Forecast, daily_burn, forecast, forecast_from_burn
from storage.model import AccountView

PERIOD_DAYS = {"7d": 7, "30d": 30}


def period_start(period: str, now: datetime) -> datetime:
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return now - timedelta(days=PERIOD_DAYS[period])


@dataclass(frozen=True)
class UsageSummary:
    total: int
    calls: int
    by_type: list[tuple[str, int]]   # largest first
    by_user: list[tuple[str, int]]   # largest first


async def usage_summary(ledger: Ledger, tenant_id: str, period: str, now: datetime) -> UsageSummary:
    entries = [e for e in await ledger.entries_since(tenant_id, period_start(period, now)) if e.kind is EntryKind.USAGE]
    by_type: Counter[str] = Counter()
    by_user: Counter[str] = Counter()
    for e in entries:
        by_type[str(e.details.get("call_type") or "-")] += -e.amount
        by_user[str(e.details.get("user_name") or e.details.get("user_id") or "-")] += -e.amount
    return UsageSummary(sum(by_type.values()), len(entries), by_type.most_common(), by_user.most_common())


async def account_forecast(ledger: Ledger, tenant_id: str, now: datetime) -> tuple[Forecast, int | None]:
    """The forecast and the recharge amount it expects (None when auto-recharge is off)."""
    account = await ledger.get_account(tenant_id)
    recharge = await ledger.recharge_settings(tenant_id)
    entries = await ledger.entries_since(tenant_id, now - timedelta(days=30))
    f = forecast(entries, balance=account.balance, now=now, trigger=recharge.trigger if recharge.enabled else None)
    return f, (recharge.amount if recharge.enabled else None)


def view_forecast(view: AccountView, now: datetime) -> tuple[Forecast, int | None]:
    """`account_forecast` from an `AccountView` read with the default burn window (no further ledger call)."""
    recharge = view.recharge
    f = forecast_from_burn(daily_burn(view.window_usage), balance=view.account.balance, now=now,
                           trigger=recharge.trigger if recharge.enabled else None)
    return f, (recharge.amount if recharge.enabled else None)
