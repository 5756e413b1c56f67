"""Forecast from usage: pure arithmetic over entries, no I/O.

Burn is the money used by calls per day over a trailing window (top-ups, recharges, adjustments and expiry are
not burn). From it: days until the balance falls below the auto-recharge trigger (the next recharge) and until
it reaches zero. Amounts stay integers of minor units; the daily burn is rounded half up to a whole minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

from .model import Entry, EntryKind, parse_iso

DEFAULT_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Forecast:
    daily_burn: int                 # minor units a day, 0 when there was no usage in the window
    window_days: int
    days_to_trigger: int | None     # None: no burn, or auto-recharge off, or already below
    days_to_zero: int | None        # None: no burn, or already at or below zero
    next_recharge_on: date | None
    zero_on: date | None


def call_time(entry: Entry) -> datetime:
    """When the call of a usage entry happened (`details["occurred_at"]`, written by the ledger), else when it
    was recorded. Usage arrives 24 to 48 hours late, often in one import: burn counts calls by their own time,
    not by the time of the import."""
    value = entry.details.get("occurred_at")
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    return entry.at


def usage_burn(entries: Iterable[Entry], *, now: datetime, window: timedelta = DEFAULT_WINDOW) -> int:
    """Money used by calls that happened in the `window` before `now`, per day (rounded half up)."""
    start = now - window
    used = sum(-e.amount for e in entries if e.kind is EntryKind.USAGE and start <= call_time(e) <= now)
    return daily_burn(used, window)


def forecast(entries: Iterable[Entry], *, balance: int, now: datetime, trigger: int | None,
             window: timedelta = DEFAULT_WINDOW) -> Forecast:
    return forecast_from_burn(usage_burn(entries, now=now, window=window), balance=balance, now=now,
                              trigger=trigger, window=window)


def daily_burn(used: int, window: timedelta = DEFAULT_WINDOW) -> int:
    """Money used in `window` per day, rounded half up to a whole minor unit."""
    days = Decimal(window.total_seconds()) / Decimal(86_400)
    return int((Decimal(used) / days).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def forecast_from_burn(burn: int, *, balance: int, now: datetime, trigger: int | None,
                       window: timedelta = DEFAULT_WINDOW) -> Forecast:
    """The forecast for a daily burn (see `daily_burn`)."""
    # reaching zero: the first whole day after which the balance is <= 0; the trigger fires when the balance
    # is *below* it, so one day more than the days the surplus lasts
    days_to_zero = -(-balance // burn) if burn > 0 and balance > 0 else None
    days_to_trigger = None
    if burn > 0 and trigger is not None and balance >= trigger:
        days_to_trigger = (balance - trigger) // burn + 1
    return Forecast(
        burn, window.days, days_to_trigger, days_to_zero,
        (now + timedelta(days=days_to_trigger)).date() if days_to_trigger is not None else None,
        (now + timedelta(days=days_to_zero)).date() if days_to_zero is not None else None,
    )
