"""storage.engine details that the contract suite cannot see from outside."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage.engine import BookState
from storage.model import AlertSettings, Lot, RechargeSettings

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)


def test_a_copied_state_is_equal_and_independent() -> None:
    """Every operation works on a copy of the account's state and drops it to abandon the unit: a change to
    the copy must never reach the original."""
    state = BookState("t", "USD", NOW, balance=150, entry_count=2, lots=[
        Lot(1, NOW, NOW + timedelta(days=365), 100, 100), Lot(2, NOW, NOW + timedelta(days=365), 50, 50)],
        recharge=RechargeSettings(True, 5_000, 1_000), alerts=AlertSettings((500,)),
        recent_recharges=[NOW], armed={500: True})
    copy = state.copy()
    assert copy == state and BookState.from_dict(copy.to_dict()) == state
    copy.lots.pop()
    copy.recent_recharges.append(NOW)
    copy.armed[500] = False
    copy.balance = 0
    assert len(state.lots) == 2 and state.recent_recharges == [NOW] and state.armed == {500: True}
    assert state.balance == 150
