"""storage.forecast: burn from calls by their own time, days to the trigger and to zero."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from storage.forecast import call_time, forecast, usage_burn
from storage.model import Entry, EntryKind, iso

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def usage(amount: int, *, recorded: datetime, occurred: datetime | None = None, seq: int = 1) -> Entry:
    details = {"occurred_at": iso(occurred)} if occurred is not None else {}
    return Entry(seq, "t", EntryKind.USAGE, -amount, 0, "system", f"u{seq}", recorded, details=details)


def test_burn_counts_calls_by_when_they_happened_not_when_they_were_imported() -> None:
    # 60.00 of calls imported today, but made 31 to 40 days ago: outside a 30-day window
    old_calls = [usage(600, recorded=NOW, occurred=NOW - timedelta(days=31 + n), seq=n) for n in range(10)]
    # 30.00 of calls made in the window, imported two days late
    recent = [usage(300, recorded=NOW, occurred=NOW - timedelta(days=n + 2), seq=20 + n) for n in range(10)]
    assert usage_burn(old_calls + recent, now=NOW) == 100           # 3000 / 30 days
    assert call_time(recent[0]) == NOW - timedelta(days=2)
    assert call_time(usage(1, recorded=NOW)) == NOW                 # no call time: the entry's own


def test_top_ups_do_not_burn_and_the_days_are_whole() -> None:
    credit = Entry(1, "t", EntryKind.FUNDS_ADDED, 10_000, 10_000, "a", "k", NOW - timedelta(days=3))
    calls = [usage(900, recorded=NOW - timedelta(days=1), seq=2)]
    f = forecast([credit, *calls], balance=1_000, now=NOW, trigger=200)
    assert f.daily_burn == 30                                        # 900 / 30
    assert f.days_to_zero == 34 and f.zero_on == date(2026, 12, 27)  # ceil(1000 / 30)
    assert f.days_to_trigger == 27 and f.next_recharge_on == date(2026, 12, 20)   # (1000-200)//30 + 1
    idle = forecast([credit], balance=1_000, now=NOW, trigger=200)
    assert (idle.daily_burn, idle.days_to_zero, idle.days_to_trigger) == (0, None, None)
