"""storage.engine details that the contract suite cannot see from outside, and the lots of ADR 0008 (credits
expire by UTC day; a credit of the newest open lot's expiry is added to it) on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from storage import engine, policy
from storage.engine import Book, BookState
from storage.model import (AlertSettings, Entry, EntryKind, Lot, Posting, RechargeSettings, SYSTEM_ACTOR,
                           UsageRecord)
from storage.reference import ReferenceLedger
from storage.transfer import copy_store

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
T = "tenant-lots"
ADMIN = "aad-admin-lots"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# --- the hot state ------------------------------------------------------------------------------------------------

def test_a_copied_state_is_equal_and_independent() -> None:
    """Every operation works on a copy of the account's state and drops it to abandon the unit: a change to
    the copy must never reach the original."""
    state = BookState("t", "USD", NOW, balance=150, entry_count=2, lots=[
        Lot(1, NOW, NOW + timedelta(days=365), 100, 100), Lot(2, NOW, NOW + timedelta(days=365), 50, 50)],
        recharge=RechargeSettings(True, 5_000, 1_000), alerts=AlertSettings((500,)),
        recent_recharges=[NOW], armed={500: True})
    copy = state.copy()
    assert copy == state and BookState.from_dict(copy.to_dict()) == state
    assert copy.lots[0] is state.lots[0]      # lots are frozen: the copy shares them, it copies only the list
    copy.lots.pop()
    copy.recent_recharges.append(NOW)
    copy.armed[500] = False
    copy.balance = 0
    assert len(state.lots) == 2 and state.recent_recharges == [NOW] and state.armed == {500: True}
    assert state.balance == 150


def test_a_new_account_opens_lots_by_utc_day_from_its_first_entry() -> None:
    state = BookState("t", "USD", NOW)
    assert state.day_lots_from == 1 and state.to_dict()["day_lots_from"] == 1
    assert BookState.from_dict(state.to_dict()) == state


def test_a_state_written_before_adr_0008_follows_the_day_rule_from_its_next_entry() -> None:
    """Older code wrote no `day_lots_from`: every entry it holds opened its lot by the old rule."""
    old = BookState("t", "USD", NOW, balance=150, entry_count=7).to_dict()
    del old["day_lots_from"]
    state = BookState.from_dict(old)
    assert state.day_lots_from == 8
    assert BookState.from_dict(state.to_dict()).day_lots_from == 8     # kept once written


# --- the engine's books -------------------------------------------------------------------------------------------

def credit(state: BookState, amount: int, at: datetime) -> BookState:
    """One `funds_added` operation on `state` at `at`; returns the state the backend would persist."""
    book = Book(state, [], at)
    book.settle(book.credit(EntryKind.FUNDS_ADDED, amount, actor=ADMIN, key=f"k{state.entry_count + 1}"))
    return book.state


def test_a_thousand_credits_over_ten_days_keep_ten_open_lots_in_the_state() -> None:
    state = BookState(T, "USD", utc(2026, 1, 1))
    entries: list[Entry] = []
    for n in range(1000):
        book = Book(state, [], utc(2026, 1, 1 + n // 100, (n % 100) // 5, n % 60))
        book.settle(book.credit(EntryKind.FUNDS_ADDED, 100 + n, actor=ADMIN, key=f"k{n}"))
        state, entries = book.state, entries + book.entries
    assert [(lot.lot_id, lot.opened_at.day, lot.expires_at) for lot in state.lots] == \
        [(1 + 100 * d, 1 + d, utc(2027, 1, 2 + d)) for d in range(10)]
    assert [lot.amount for lot in state.lots] == [sum(100 + n for n in range(100 * d, 100 * d + 100))
                                                  for d in range(10)]
    assert sum(lot.remaining for lot in state.lots) == state.balance
    assert engine.verify_journal(state, entries) == []


def test_the_engine_and_the_rebuild_merge_alike() -> None:
    """Credits, usage below zero, a credit paying the deficit partly, expiry: `verify_journal` rebuilds the
    lots the engine kept."""
    state = BookState(T, "USD", utc(2026, 1, 1))
    entries: list[Entry] = []

    def run(at: datetime, step) -> None:  # type: ignore[no-untyped-def]
        nonlocal state, entries
        book = Book(state, [], at)
        book.settle(step(book))
        state, entries = book.state, entries + book.entries

    run(utc(2026, 1, 1, 8), lambda b: b.credit(EntryKind.FUNDS_ADDED, 100, actor=ADMIN, key="a"))
    run(utc(2026, 1, 1, 9), lambda b: b.credit(EntryKind.ADJUSTMENT, 50, actor=ADMIN, key="b"))
    run(utc(2026, 1, 1, 10), lambda b: b.debit(EntryKind.USAGE, 200, actor=ADMIN, key="c", may_go_negative=True))
    assert (state.lots, state.deficit) == ([], 50)
    run(utc(2026, 1, 1, 11), lambda b: b.credit(EntryKind.FUNDS_ADDED, 80, actor=ADMIN, key="d"))
    run(utc(2026, 1, 1, 12), lambda b: b.credit(EntryKind.FUNDS_ADDED, 10, actor=ADMIN, key="e"))
    assert [(l.lot_id, l.amount, l.remaining) for l in state.lots] == [(4, 90, 40)]   # 80 paid 50 of deficit
    run(utc(2027, 1, 2), lambda b: b.expire(engine.expired_lots(b.state, utc(2027, 1, 2))[0]))
    assert state.lots == [] and state.balance == 0
    assert engine.verify_journal(state, entries) == []


def legacy_journal() -> tuple[BookState, list[Entry]]:
    """What code before ADR 0008 wrote: a credit and, in one later operation, two recharges at the very same
    moment (all entries of an operation share its time), each a lot of its own expiring to the second; a
    state without `day_lots_from`."""
    at = utc(2026, 1, 15, 9, 30, 15)
    entries = [
        Entry(1, T, EntryKind.FUNDS_ADDED, 100, 100, ADMIN, "k1", at, "", "", {}),
        Entry(2, T, EntryKind.USAGE, -90, 10, SYSTEM_ACTOR, "c1", at, "", "c1", {}),
        Entry(3, T, EntryKind.AUTO_RECHARGE, 50, 60, SYSTEM_ACTOR, "c1:recharge:1", at, "", f"{T}:2", {}),
        Entry(4, T, EntryKind.AUTO_RECHARGE, 50, 110, SYSTEM_ACTOR, "c1:recharge:2", at, "", f"{T}:2", {}),
    ]
    exact = policy.legacy_lot_expiry(at)
    state = BookState(T, "USD", at, balance=110, entry_count=4, lots=[
        Lot(1, at, exact, 100, 10), Lot(3, at, exact, 50, 50), Lot(4, at, exact, 50, 50)]).to_dict()
    del state["day_lots_from"]
    return BookState.from_dict(state), entries


def test_a_journal_of_the_old_rule_verifies_even_with_credits_of_the_same_moment() -> None:
    state, entries = legacy_journal()
    assert engine.verify_journal(state, entries) == []
    claimed = BookState.from_dict({**state.to_dict(), "day_lots_from": 1})     # as if written by the day rule
    assert any("open lots" in p for p in engine.verify_journal(claimed, entries))


def test_new_credits_on_an_old_state_open_day_lots_beside_the_old_ones() -> None:
    state, entries = legacy_journal()
    for minutes in (1, 2):      # the same day as the old lots, which expire to the second: no merge with them
        book = Book(state, [], utc(2026, 1, 15, 10, minutes))
        book.settle(book.credit(EntryKind.FUNDS_ADDED, 20, actor=ADMIN, key=f"new{minutes}"))
        state, entries = book.state, entries + book.entries
    assert [(l.lot_id, l.remaining, l.expires_at) for l in state.lots] == [
        (1, 10, utc(2027, 1, 15, 9, 30, 15)), (3, 50, utc(2027, 1, 15, 9, 30, 15)),
        (4, 50, utc(2027, 1, 15, 9, 30, 15)), (5, 40, utc(2027, 1, 16))]
    assert state.day_lots_from == 5 and engine.verify_journal(state, entries) == []


@pytest.mark.parametrize("day_lots_from", [0, 6])
def test_verify_reports_a_day_rule_boundary_outside_the_journal(day_lots_from: int) -> None:
    state, entries = legacy_journal()
    state.day_lots_from = day_lots_from
    assert any("day_lots_from" in p for p in engine.verify_journal(state, entries))


# --- on every backend ---------------------------------------------------------------------------------------------

async def fund(ledger, amount: int, key: str) -> Posting:  # type: ignore[no-untyped-def]
    return await ledger.add_funds(T, amount, actor=ADMIN, key=key)


async def lots(ledger) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    return [(lot.lot_id, lot.amount, lot.remaining) for lot in await ledger.lots(T)]


async def verified(ledger) -> bool:  # type: ignore[no-untyped-def]
    report = await ledger.verify()
    assert report.problems == ()
    return report.ok


async def test_credits_of_one_utc_day_make_one_lot(ledger, clock) -> None:
    clock.set(utc(2026, 3, 10, 0, 0, 0))
    await ledger.open_account(T, "USD", actor=ADMIN)
    await fund(ledger, 100, "a")
    clock.set(utc(2026, 3, 10, 12, 30))
    await ledger.adjust(T, 50, actor=ADMIN, key="b")                    # a positive adjustment is a credit
    clock.set(utc(2026, 3, 10, 23, 59, 59))
    await fund(ledger, 25, "c")
    [lot] = await ledger.lots(T)
    assert lot == Lot(1, utc(2026, 3, 10), utc(2027, 3, 11), 175, 175)   # the first credit's id and time
    assert lot.last_day.isoformat() == "2027-03-10"
    assert await verified(ledger)


async def test_credits_on_consecutive_days_make_separate_lots(ledger, clock) -> None:
    clock.set(utc(2026, 3, 10, 23, 59, 59))
    await ledger.open_account(T, "USD", actor=ADMIN)
    await fund(ledger, 100, "a")
    clock.set(utc(2026, 3, 11, 0, 0, 0))                              # one second later, the next UTC day
    await fund(ledger, 40, "b")
    clock.set(utc(2026, 3, 12, 7))
    await fund(ledger, 5, "c")
    assert [(l.lot_id, l.expires_at) for l in await ledger.lots(T)] == \
        [(1, utc(2027, 3, 11)), (2, utc(2027, 3, 12)), (3, utc(2027, 3, 13))]
    assert await verified(ledger)


async def test_a_lot_expires_when_its_last_utc_day_ends(ledger, clock) -> None:
    clock.set(utc(2026, 3, 10, 23, 59, 59))
    await ledger.open_account(T, "USD", actor=ADMIN)
    await fund(ledger, 100, "a")
    clock.set(utc(2026, 3, 11, 0, 0, 0))
    await fund(ledger, 40, "b")
    assert await ledger.expire_lots(utc(2027, 3, 10, 23, 59, 59)) == []
    [first] = await ledger.expire_lots(utc(2027, 3, 11))
    assert (first.entry.key, first.entry.amount, first.balance) == ("expiry:1", -100, 40)
    assert await ledger.expire_lots(utc(2027, 3, 11, 23, 59, 59)) == []
    [second] = await ledger.expire_lots(utc(2027, 3, 12))
    assert (second.entry.key, second.entry.amount, second.balance) == ("expiry:2", -40, 0)
    assert await verified(ledger)


async def test_a_merged_lot_expires_whole_with_one_entry_and_one_notice(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    for n in range(3):
        clock.advance(hours=1)
        await fund(ledger, 10, f"f{n}")
    await ledger.expire_lots(utc(2026, 12, 20))                        # within 30 days of 2027-01-16
    await ledger.expire_lots(utc(2026, 12, 21))
    [alert] = await ledger.alerts(T)
    assert alert.key == policy.expiring_key(T, 1) and alert.payload["remaining"] == 30
    [posting] = await ledger.expire_lots(utc(2027, 1, 16))
    assert (posting.entry.details["lot_id"], posting.entry.amount) == (1, -30)
    assert await verified(ledger)


async def test_consumption_across_merged_lots_stays_oldest_first(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    await fund(ledger, 100, "a")                                         # lot 1
    clock.advance(hours=2)
    await fund(ledger, 20, "b")                                          # same day: lot 1 holds 120
    clock.advance(days=1)
    await fund(ledger, 50, "c")                                          # lot 3
    clock.advance(hours=1)
    await fund(ledger, 30, "d")                                          # lot 3 holds 80
    await ledger.record_usage(T, UsageRecord("call-1", 130, "USD", clock.now))
    assert await lots(ledger) == [(3, 80, 70)]                           # lot 1 first, then 10 of lot 3
    clock.advance(days=1)
    await fund(ledger, 5, "e")                                           # lot 6
    await ledger.record_usage(T, UsageRecord("call-2", 71, "USD", clock.now))
    assert await lots(ledger) == [(6, 5, 4)]
    assert await verified(ledger)


async def test_a_credit_paying_a_deficit_partly_opens_or_joins_a_lot_with_the_rest(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    await ledger.record_usage(T, UsageRecord("call-1", 30, "USD", clock.now))   # balance -30
    await fund(ledger, 20, "a")                                          # all of it to the deficit: no lot
    assert await lots(ledger) == []
    await fund(ledger, 50, "b")                                          # 10 to the deficit, 40 opens lot 3
    await fund(ledger, 5, "c")                                           # joins lot 3
    assert await lots(ledger) == [(3, 55, 45)]
    assert await verified(ledger)


async def test_recharges_join_the_days_lot(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    await ledger.set_recharge_settings(T, RechargeSettings(True, 50, 100, None, 10), actor=ADMIN, key="r")
    await fund(ledger, 120, "a")
    posting = await ledger.record_usage(T, UsageRecord("call-1", 90, "USD", clock.now))
    assert len(posting.recharges) == 2
    assert await lots(ledger) == [(1, 220, 130)]
    assert await verified(ledger)


async def test_a_replay_returns_the_identical_result_after_its_lot_grew(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    first = await fund(ledger, 100, "a")
    clock.advance(hours=1)
    adjusted = await ledger.adjust(T, 40, actor=ADMIN, key="b")
    before = (await lots(ledger), (await ledger.get_account(T)).balance)
    clock.advance(hours=1)
    assert await fund(ledger, 100, "a") == Posting(first.entries, first.balance, first.alert_ids,
                                                   first.recharge_blocked, replayed=True)
    assert await ledger.adjust(T, 40, actor=ADMIN, key="b") == adjusted.as_replay()
    assert (await lots(ledger), (await ledger.get_account(T)).balance) == before == ([(1, 140, 140)], 140)
    assert await verified(ledger)


async def test_a_thousand_credits_over_ten_days_make_ten_open_lots(ledger, clock) -> None:
    clock.set(utc(2026, 5, 1))
    await ledger.open_account(T, "USD", actor=ADMIN)
    for day in range(10):
        for n in range(100):
            clock.set(utc(2026, 5, 1 + day, n // 5, n % 60))
            await fund(ledger, 1 + n, f"d{day}-{n}")
    found = await ledger.lots(T)
    assert [(l.lot_id, l.expires_at) for l in found] == [(1 + 100 * d, utc(2027, 5, 2 + d)) for d in range(10)]
    assert all(l.amount == l.remaining == 5050 for l in found)
    assert await verified(ledger)


async def test_merged_lots_copy_to_another_store(ledger, clock) -> None:
    await ledger.open_account(T, "USD", actor=ADMIN)
    for n in range(3):
        await fund(ledger, 10 + n, f"f{n}")
        clock.advance(hours=10)
    copy = ReferenceLedger(clock=clock)
    report = await copy_store(ledger, copy)
    assert report.problems == []
    assert await copy.lots(T) == await ledger.lots(T) and len(await copy.lots(T)) == 2


async def test_a_store_written_by_the_old_rule_imports_verifies_and_goes_on(ledger, clock, monkeypatch) -> None:
    """A store written before ADR 0008 (lots to the second, never merged; two recharges of one operation with
    the very same expiry) is imported as it is: it verifies, its lots keep their expiries, new credits open day
    lots beside them, and everything still verifies and copies."""
    old_rule = policy.credit_lots

    def credit_lots_before_adr_0008(*args: Any, **kwargs: Any) -> Any:
        return old_rule(*args, **{**kwargs, "by_day": False})

    old = ReferenceLedger(clock=clock)
    with monkeypatch.context() as patched:
        patched.setattr(policy, "credit_lots", credit_lots_before_adr_0008)
        await old.open_account(T, "USD", actor=ADMIN)
        await fund(old, 100, "a")
        await old.set_recharge_settings(T, RechargeSettings(True, 50, 100, None, 10), actor=ADMIN, key="r")
        assert len((await old.record_usage(T, UsageRecord("call-1", 90, "USD", clock.now))).recharges) == 2
        await old.set_recharge_settings(T, RechargeSettings(), actor=ADMIN, key="off")
        export = await old.export_account(T)
    state = dict(export["state"])
    del state["day_lots_from"]                                           # older code did not write it
    await ledger.import_account({**export, "state": state})

    exact = utc(2027, 1, 15, 9)
    assert [(l.lot_id, l.remaining, l.expires_at) for l in await ledger.lots(T)] == \
        [(1, 10, exact), (3, 50, exact), (4, 50, exact)]
    assert await verified(ledger)
    clock.advance(minutes=5)
    await fund(ledger, 20, "b")                                          # same day, another expiry: lot 5
    await fund(ledger, 30, "c")                                          # joins lot 5
    assert [(l.lot_id, l.remaining, l.expires_at) for l in await ledger.lots(T)][3:] == [(5, 50, utc(2027, 1, 16))]
    assert await verified(ledger)
    again = ReferenceLedger(clock=clock)
    assert (await copy_store(ledger, again)).problems == []

    assert [p.entry.key for p in await ledger.expire_lots(exact)] == ["expiry:1", "expiry:3", "expiry:4"]
    assert await lots(ledger) == [(5, 50, 50)]
    assert [p.entry.key for p in await ledger.expire_lots(utc(2027, 1, 16))] == ["expiry:5"]
    assert await verified(ledger)
