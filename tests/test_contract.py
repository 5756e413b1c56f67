"""The ledger contract, run against every backend (see tests/backends.py).

Each test opens an empty ledger through the `ledger` fixture, on a `FakeClock` (`clock`) that starts on
2026-01-15 09:00 UTC and moves only when a test says so. Amounts are integers in minor units (cents for USD).

The tests also pin the conventions listed at the top of storage/reference.py ("Conventions the backends
share"): entry fields, alert keys and payloads, audit actions. A backend that differs there fails here.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from storage import policy
from storage.errors import LedgerError
from storage.errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                            InsufficientFunds, InvalidAmount, InvalidCurrency, InvalidSettings, InvalidUsage,
                            LeaseLost, NotFound, SelfApproval)
from storage.model import (AlertKind, AlertSettings, AlertStatus, ApprovalStatus, ConversationRef, EntryKind,
                           RechargeSettings, Role, RowStatus, UsageRecord)
from tests.backends import BACKENDS, open_backend, postgres_dsn

T = "tenant-1"
OTHER = "tenant-2"
ADMIN = "aad-admin-1"
ADMIN2 = "aad-admin-2"
ADMIN3 = "aad-admin-3"
OCCURRED = datetime(2026, 1, 14, 8, 30, tzinfo=timezone.utc)   # when the test calls "happened"

_numbers = itertools.count(1)


def k(prefix: str = "op") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{next(_numbers)}"


def row(usage_id: str, amount: int, *, currency: str = "USD", **details) -> UsageRecord:
    """One billed call as the usage import hands it to the ledger."""
    return UsageRecord(usage_id, amount, currency, OCCURRED, details)


async def new_account(ledger, tenant: str = T, currency: str = "USD"):
    return await ledger.open_account(tenant, currency, actor=ADMIN)


async def fund(ledger, amount: int, *, tenant: str = T, key: str | None = None):
    return await ledger.add_funds(tenant, amount, actor=ADMIN, key=key or k("fund"))


async def use(ledger, amount: int, *, tenant: str = T, usage_id: str | None = None):
    return await ledger.record_usage(tenant, row(usage_id or k("call"), amount))


async def auto_recharge(ledger, amount: int, trigger: int, *, cap: int | None = None, per_day: int = 10,
                        tenant: str = T):
    settings = RechargeSettings(enabled=True, amount=amount, trigger=trigger, monthly_cap=cap,
                                max_per_day=per_day)
    return await ledger.set_recharge_settings(tenant, settings, actor=ADMIN, key=k("recharge"))


async def thresholds(ledger, *values: int, tenant: str = T):
    return await ledger.set_alert_settings(tenant, AlertSettings(tuple(values)), actor=ADMIN, key=k("alerts"))


async def balance(ledger, tenant: str = T) -> int:
    return (await ledger.get_account(tenant)).balance


async def entries(ledger, tenant: str = T):
    """Every entry, oldest first."""
    page = await ledger.history(tenant, limit=10_000)
    return list(reversed(page.items))


async def alerts_oldest_first(ledger, tenant: str = T):
    return list(reversed(await ledger.alerts(tenant, limit=10_000)))


async def alert_kinds(ledger, tenant: str = T) -> list[str]:
    return [a.kind.value for a in await alerts_oldest_first(ledger, tenant)]


async def audit_actions(ledger, tenant: str = T) -> list[str]:
    page = await ledger.audit(tenant, limit=10_000)
    return [r.action for r in reversed(page.items)]


# ==== accounts ==================================================================================================

async def test_open_account_creates_it_once_and_keeps_its_currency(ledger, clock):
    account = await ledger.open_account(T, "usd", actor=ADMIN)
    assert (account.tenant_id, account.currency, account.balance, account.entry_count) == (T, "USD", 0, 0)
    assert account.created_at == clock.now

    clock.advance(hours=1)
    again = await ledger.open_account(T, "EUR", actor=ADMIN2)
    assert again == account   # the existing account, unchanged: set_currency changes a currency

    await ledger.open_account("a-tenant", "EUR")
    assert await ledger.tenants() == ["a-tenant", T]
    records = (await ledger.audit(T)).items
    assert [(r.action, r.actor, r.details) for r in records] == [("account_opened", ADMIN, {"currency": "USD"})]


@pytest.mark.parametrize("code", ["ZZZ", "US", "", "XTS", "dollars"])
async def test_open_account_refuses_what_is_not_a_currency(ledger, code):
    with pytest.raises(InvalidCurrency):
        await ledger.open_account(T, code)
    assert await ledger.tenants() == []


async def test_currency_can_change_until_the_first_entry(ledger):
    await new_account(ledger)
    change = await ledger.set_currency(T, "eur", actor=ADMIN, key="cur-1")
    assert change.value == {"currency": "EUR"} and not change.replayed
    assert (await ledger.get_account(T)).currency == "EUR"

    with pytest.raises(InvalidCurrency):
        await ledger.set_currency(T, "nope", actor=ADMIN, key=k())

    await fund(ledger, 100)
    with pytest.raises(CurrencyLocked) as locked:
        await ledger.set_currency(T, "DKK", actor=ADMIN, key=k())
    assert locked.value.currency == "EUR"
    with pytest.raises(CurrencyLocked):   # even the same currency: it is fixed, full stop
        await ledger.set_currency(T, "EUR", actor=ADMIN, key=k())

    replay = await ledger.set_currency(T, "eur", actor=ADMIN, key="cur-1")   # a replay still answers
    assert replay.replayed and replay.value == {"currency": "EUR"}
    audit = (await ledger.audit(T, limit=50)).items
    assert [r.action for r in audit] == ["funds_added", "currency", "account_opened"]
    assert audit[1].details == {"currency": "EUR", "previous": "USD"} and audit[1].key == "cur-1"


async def test_every_account_operation_on_an_unknown_tenant_is_account_not_found(ledger, clock):
    settings = RechargeSettings(True, 10, 10)
    calls = [
        lambda: ledger.get_account("ghost"),
        lambda: ledger.set_currency("ghost", "USD", actor=ADMIN, key=k()),
        lambda: ledger.add_funds("ghost", 1, actor=ADMIN, key=k()),
        lambda: ledger.adjust("ghost", 1, actor=ADMIN, key=k()),
        lambda: ledger.record_usage("ghost", row(k(), 1)),
        lambda: ledger.record_usage_batch("ghost", [row(k(), 1)]),
        lambda: ledger.history("ghost"),
        lambda: ledger.entries_since("ghost", clock.now),
        lambda: ledger.lots("ghost"),
        lambda: ledger.recharge_settings("ghost"),
        lambda: ledger.set_recharge_settings("ghost", settings, actor=ADMIN, key=k()),
        lambda: ledger.alert_settings("ghost"),
        lambda: ledger.set_alert_settings("ghost", AlertSettings((5,)), actor=ADMIN, key=k()),
        lambda: ledger.raise_alert("ghost", AlertKind.FORECAST, "forecast:x", {}),
        lambda: ledger.alerts("ghost"),
        lambda: ledger.save_conversation(ConversationRef("conv", "ghost", {}, clock.now)),
        lambda: ledger.conversation("ghost", "conv"),
        lambda: ledger.conversations("ghost"),
        lambda: ledger.subscribe("ghost", "conv", [AlertKind.EXHAUSTED], actor=ADMIN, key=k()),
        lambda: ledger.unsubscribe("ghost", "conv", actor=ADMIN, key=k()),
        lambda: ledger.disable_subscription("ghost", "conv", reason="gone"),
        lambda: ledger.subscriptions("ghost"),
        lambda: ledger.grant_role("ghost", "u", Role.READER, actor=ADMIN, key=k()),
        lambda: ledger.revoke_role("ghost", "u", actor=ADMIN, key=k()),
        lambda: ledger.roles("ghost"),
        lambda: ledger.audit("ghost"),
        lambda: ledger.verify("ghost"),
        lambda: ledger.request_approval("ghost", 1, actor=ADMIN, key=k()),
        lambda: ledger.decide_approval("ghost", "approval", approve=True, actor=ADMIN2, key=k()),
        lambda: ledger.approvals("ghost"),
        lambda: ledger.get_approval("ghost", "approval"),
    ]
    for call in calls:
        with pytest.raises(AccountNotFound):
            await call()


async def test_the_account_is_checked_before_anything_else(ledger, clock):
    """Arguments that are wrong in every other way still give `AccountNotFound` for an unknown tenant."""
    calls = [
        lambda: ledger.add_funds("ghost", 0, actor=ADMIN, key="expiry:1"),
        lambda: ledger.adjust("ghost", 0, actor=ADMIN, key=""),
        lambda: ledger.set_currency("ghost", "nope", actor=ADMIN, key="x:recharge:1"),
        lambda: ledger.set_recharge_settings("ghost", RechargeSettings(True, 0, 100), actor=ADMIN, key=""),
        lambda: ledger.set_alert_settings("ghost", AlertSettings((0,)), actor=ADMIN, key="expiry:2"),
        lambda: ledger.grant_role("ghost", "u", "owner", actor=ADMIN, key=""),
        lambda: ledger.revoke_role("ghost", "u", actor=ADMIN, key="expiry:3"),
        lambda: ledger.subscribe("ghost", "conv", [], actor=ADMIN, key=""),
        lambda: ledger.unsubscribe("ghost", "conv", actor=ADMIN, key="a:recharge:2"),
        lambda: ledger.record_usage("ghost", UsageRecord("expiry:1", 0, "EUR", datetime(2026, 1, 1))),
        lambda: ledger.record_usage_batch("ghost", [UsageRecord("", 0, "EUR", datetime(2026, 1, 1))]),
        lambda: ledger.raise_alert("ghost", AlertKind.EXHAUSTED, "nope", {}),
        lambda: ledger.request_approval("ghost", 0, actor=ADMIN, key=""),
        lambda: ledger.decide_approval("ghost", "nope", approve="yes", actor=ADMIN, key="expiry:4"),
    ]
    for call in calls:
        with pytest.raises(AccountNotFound):
            await call()


# ==== money =====================================================================================================

async def test_add_funds_writes_one_entry_and_opens_a_lot(ledger, clock):
    await new_account(ledger)
    posting = await ledger.add_funds(T, 25_000, actor=ADMIN, key="act-1", memo="Q3 top-up", reference="PO-7")

    assert posting.balance == 25_000 and not posting.replayed and posting.alert_ids == ()
    entry = posting.entry
    assert posting.entries == (entry,)
    assert (entry.seq, entry.tenant_id, entry.kind, entry.amount, entry.balance_after) == \
        (1, T, EntryKind.FUNDS_ADDED, 25_000, 25_000)
    assert (entry.actor, entry.key, entry.memo, entry.reference, dict(entry.details)) == \
        (ADMIN, "act-1", "Q3 top-up", "PO-7", {})
    assert entry.at == clock.now and entry.id == f"{T}:1"

    account = await ledger.get_account(T)
    assert (account.balance, account.entry_count) == (25_000, 1)
    [lot] = await ledger.lots(T)
    assert (lot.lot_id, lot.amount, lot.remaining, lot.opened_at) == (1, 25_000, 25_000, clock.now)
    # ADR 0008: usable through the whole UTC day 12 months on (2027-01-15), expires when it ends
    assert lot.expires_at == datetime(2027, 1, 16, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("amount, reason", [(0, "zero"), (-5, "negative"), (1.5, "not_a_number"),
                                            (True, "not_a_number"), ("100", "not_a_number"),
                                            (10**15 + 1, "too_large")])
async def test_add_funds_refuses_what_is_not_an_amount_and_records_nothing(ledger, amount, reason):
    await new_account(ledger)
    with pytest.raises(InvalidAmount) as error:
        await ledger.add_funds(T, amount, actor=ADMIN, key="same-key")
    assert error.value.reason == reason
    assert await entries(ledger) == [] and await audit_actions(ledger) == ["account_opened"]
    # the key of a failed operation stays free
    assert (await ledger.add_funds(T, 100, actor=ADMIN, key="same-key")).balance == 100


async def test_adjustments_credit_and_debit_but_never_below_zero(ledger):
    await new_account(ledger)
    up = await ledger.adjust(T, 300, actor=ADMIN, key="adj-1", memo="goodwill")
    assert (up.entry.kind, up.entry.amount, up.balance) == (EntryKind.ADJUSTMENT, 300, 300)
    assert [lot.amount for lot in await ledger.lots(T)] == [300]   # a positive adjustment opens a lot

    down = await ledger.adjust(T, -120, actor=ADMIN, key="adj-2")
    assert (down.entry.amount, down.balance) == (-120, 180)
    assert [lot.remaining for lot in await ledger.lots(T)] == [180]

    with pytest.raises(InsufficientFunds) as error:
        await ledger.adjust(T, -181, actor=ADMIN, key="adj-3")
    assert (error.value.balance, error.value.requested) == (180, 181)
    with pytest.raises(InvalidAmount):
        await ledger.adjust(T, 0, actor=ADMIN, key="adj-3")

    assert (await ledger.adjust(T, -180, actor=ADMIN, key="adj-3")).balance == 0   # exactly to zero is fine
    assert len(await entries(ledger)) == 3


async def test_manual_debit_is_refused_while_usage_has_taken_the_balance_below_zero(ledger):
    await new_account(ledger)
    await fund(ledger, 50)
    await use(ledger, 80)
    with pytest.raises(InsufficientFunds):
        await ledger.adjust(T, -1, actor=ADMIN, key=k())
    assert await balance(ledger) == -30


async def test_usage_is_a_fact_recorded_even_below_zero(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)
    posting = await ledger.record_usage(T, row("call-1", 130, user="Ada", call_type="tollfree"))

    entry = posting.entry
    assert (entry.kind, entry.amount, entry.balance_after, posting.balance) == (EntryKind.USAGE, -130, -30, -30)
    assert (entry.key, entry.reference, entry.actor, entry.memo) == ("call-1", "call-1", "system", "")
    assert dict(entry.details) == {"user": "Ada", "call_type": "tollfree", "occurred_at": OCCURRED.isoformat()}
    assert entry.at == clock.now   # recorded now; the call itself happened at details["occurred_at"]
    assert await ledger.lots(T) == []   # no lot holds money; the 30 short is a deficit


async def test_a_deficit_is_paid_first_by_the_next_credit(ledger):
    await new_account(ledger)
    await use(ledger, 30)                       # balance -30, no lots
    posting = await fund(ledger, 100)
    assert posting.balance == 70
    [lot] = await ledger.lots(T)
    assert (lot.lot_id, lot.amount, lot.remaining) == (2, 100, 70)

    await use(ledger, 200)                      # -130
    await fund(ledger, 100)                     # pays 100 of the deficit, lot keeps nothing
    assert await ledger.lots(T) == [] and await balance(ledger) == -30


async def test_usage_in_another_currency_is_refused(ledger):
    await new_account(ledger)
    await fund(ledger, 100)
    with pytest.raises(CurrencyMismatch) as error:
        await ledger.record_usage(T, row("call-eur", 10, currency="EUR"))
    assert (error.value.expected, error.value.got) == ("USD", "EUR")
    assert (await ledger.record_usage(T, row("call-usd", 10, currency="usd"))).balance == 90   # case is not a
    assert len(await entries(ledger)) == 2                                                    # currency


@pytest.mark.parametrize("amount, reason", [(0, "zero"), (-10, "negative"), (2.5, "not_a_number")])
async def test_usage_amount_must_be_positive_minor_units(ledger, amount, reason):
    await new_account(ledger)
    with pytest.raises(InvalidAmount) as error:
        await ledger.record_usage(T, row("call-x", amount))
    assert error.value.reason == reason
    assert await entries(ledger) == []


@pytest.mark.parametrize("usage_id", ["", None, 42, "expiry:1", "expiry:", "call-1:recharge:1", "a:recharge:b"])
async def test_a_usage_row_needs_an_id_of_its_own(ledger, usage_id):
    await new_account(ledger)
    with pytest.raises(InvalidUsage) as error:
        await ledger.record_usage(T, UsageRecord(usage_id, 10, "USD", OCCURRED))
    assert error.value.reason == "bad_usage_id"
    assert await entries(ledger) == [] and await audit_actions(ledger) == ["account_opened"]


@pytest.mark.parametrize("occurred_at", [datetime(2026, 1, 14, 8, 30), "2026-01-14T08:30:00+00:00", None,
                                         OCCURRED.date(), 1768379400])
async def test_a_usage_row_needs_an_aware_time(ledger, occurred_at):
    await new_account(ledger)
    with pytest.raises(InvalidUsage) as error:
        await ledger.record_usage(T, UsageRecord("call-1", 10, "USD", occurred_at))
    assert error.value.reason == "bad_time"
    assert await entries(ledger) == []
    assert not (await ledger.record_usage(T, row("call-1", 10))).replayed     # its id stays free


async def test_a_usage_row_in_another_time_zone_is_the_same_fact(ledger):
    await new_account(ledger)
    first = await ledger.record_usage(T, row("call-1", 10))
    in_cet = OCCURRED.astimezone(timezone(timedelta(hours=1)))
    again = await ledger.record_usage(T, UsageRecord("call-1", 10, "USD", in_cet))
    assert again.replayed and again.entries == first.entries


async def test_usage_checks_come_in_a_fixed_order(ledger):
    """Row id, then time, then the idempotency key, then currency, then amount."""
    await new_account(ledger)
    await fund(ledger, 1000)
    await ledger.record_usage(T, row("known", 10))
    naive = datetime(2026, 1, 14, 8, 30)
    cases = [
        (UsageRecord("expiry:1", 0, "EUR", naive), InvalidUsage, "bad_usage_id"),
        (UsageRecord("", 10, "USD", naive), InvalidUsage, "bad_usage_id"),
        (UsageRecord("new", 0, "EUR", naive), InvalidUsage, "bad_time"),
        (UsageRecord("known", 10, "USD", naive), InvalidUsage, "bad_time"),          # time before the lookup
        (UsageRecord("known", 0, "EUR", OCCURRED), IdempotencyConflict, None),        # lookup before the rest
        (UsageRecord("new", 0, "EUR", OCCURRED), CurrencyMismatch, None),             # currency before amount
        (UsageRecord("new", -5, "USD", OCCURRED), InvalidAmount, "negative"),
    ]
    for usage, error_type, reason in cases:
        with pytest.raises(error_type) as error:
            await ledger.record_usage(T, usage)
        if reason is not None:
            assert error.value.reason == reason, usage
    assert (await ledger.record_usage(T, row("known", 10))).replayed    # a replay passes every check
    assert await balance(ledger) == 990 and len(await entries(ledger)) == 2


# ==== lots ======================================================================================================

async def test_debits_consume_lots_oldest_first(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)            # lot 1
    clock.advance(days=3)
    await fund(ledger, 50)             # lot 2
    clock.advance(days=3)
    await ledger.adjust(T, 70, actor=ADMIN, key=k())   # lot 3
    await use(ledger, 120)             # lot 1 empties, lot 2 gives 20

    lots = await ledger.lots(T)
    assert [(lot.lot_id, lot.remaining) for lot in lots] == [(2, 30), (3, 70)]
    assert sum(lot.remaining for lot in lots) == await balance(ledger) == 100


@pytest.mark.parametrize("opened, expires", [   # ADR 0008: at the end of the UTC day 12 calendar months on
    (datetime(2026, 1, 15, 9, 0), datetime(2027, 1, 16, 0, 0)),
    (datetime(2028, 2, 29, 10, 0), datetime(2029, 3, 1, 0, 0)),      # leap day: usable through Feb 28
    (datetime(2026, 8, 31, 23, 59), datetime(2027, 9, 1, 0, 0)),
    (datetime(2027, 12, 31, 0, 0), datetime(2029, 1, 1, 0, 0)),
])
async def test_a_lot_expires_twelve_calendar_months_after_it_was_opened(ledger, clock, opened, expires):
    clock.set(opened.replace(tzinfo=timezone.utc))
    await new_account(ledger)
    await fund(ledger, 100)
    [lot] = await ledger.lots(T)
    assert lot.expires_at == expires.replace(tzinfo=timezone.utc)


async def test_expire_lots_writes_off_what_is_left_in_an_expired_lot(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)                              # lot 1, expires 2027-01-16 00:00 (ADR 0008)
    await use(ledger, 30)
    clock.advance(days=200)
    await fund(ledger, 40)                               # lot 3, expires later

    clock.set(datetime(2027, 1, 15, 23, 59, 59, tzinfo=timezone.utc))
    assert await ledger.expire_lots() == []              # one second early: nothing
    clock.set(datetime(2027, 1, 16, 0, 0, tzinfo=timezone.utc))
    [posting] = await ledger.expire_lots()               # at the instant of expiry: written off

    entry = posting.entry
    assert (entry.kind, entry.amount, entry.balance_after, posting.balance) == (EntryKind.EXPIRY, -70, 40, 40)
    assert (entry.actor, entry.key, entry.memo, entry.reference, dict(entry.details)) == \
        ("system", "expiry:1", "", "", {"lot_id": 1})
    assert entry.at == clock.now
    assert [(lot.lot_id, lot.remaining) for lot in await ledger.lots(T)] == [(3, 40)]
    assert await ledger.expire_lots() == []              # nothing left to do: no second entry
    assert len(await entries(ledger)) == 4
    records = (await ledger.audit(T)).items
    assert (records[0].action, records[0].actor, records[0].key) == ("expiry", "system", "expiry:1")


async def test_expire_lots_uses_the_moment_it_is_given(ledger, clock):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    await fund(ledger, 100)
    await fund(ledger, 60, tenant=OTHER)
    assert await ledger.expire_lots(clock.now + timedelta(days=365)) == []   # 2027-01-15 09:00: its last day
    postings = await ledger.expire_lots(clock.now + timedelta(days=366))
    assert [(p.entry.tenant_id, p.entry.amount) for p in postings] == [(T, -100), (OTHER, -60)]
    assert await balance(ledger) == 0 and await balance(ledger, OTHER) == 0


async def test_an_emptied_lot_has_nothing_to_expire(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)
    await use(ledger, 100)
    clock.advance(days=400)
    assert await ledger.expire_lots() == []


async def test_expiring_alert_once_per_lot_with_money_left_within_30_days(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)                                      # lot 1
    clock.advance(days=1)                                        # (a credit of the same UTC day would join lot 1)
    await fund(ledger, 30)                                       # lot 2, expires 2027-01-17 00:00
    await use(ledger, 100)                                       # lot 1 is empty: no notice for it
    clock.set(datetime(2026, 12, 18, 0, 0, 1, tzinfo=timezone.utc))   # 30 days minus 1 s before expiry
    assert await ledger.expire_lots() == []

    [alert] = await ledger.alerts(T)
    assert alert.kind is AlertKind.EXPIRING
    assert alert.key == policy.expiring_key(T, 2) == f"expiring:{T}:2"
    assert alert.alert_id == policy.alert_id(T, alert.key)
    assert dict(alert.payload) == {"lot_id": 2, "remaining": 30,
                                   "expires_at": datetime(2027, 1, 17, 0, 0, tzinfo=timezone.utc).isoformat()}
    clock.advance(days=1)
    await ledger.expire_lots()
    assert len(await ledger.alerts(T)) == 1                      # once per lot


async def test_no_expiring_alert_earlier_than_30_days(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)                                      # expires 2027-01-16 00:00
    clock.set(datetime(2026, 12, 16, 23, 59, 59, tzinfo=timezone.utc))
    await ledger.expire_lots()
    assert await ledger.alerts(T) == []


async def test_expiry_is_a_debit_that_can_trigger_auto_recharge(ledger, clock):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=20)
    await fund(ledger, 100)
    clock.advance(days=366)
    [posting] = await ledger.expire_lots()
    assert [e.kind for e in posting.entries] == [EntryKind.EXPIRY, EntryKind.AUTO_RECHARGE]
    assert posting.entries[1].key == "expiry:1:recharge:1" and posting.balance == 50


# ==== idempotency ===============================================================================================

async def test_a_replay_returns_the_original_result_and_changes_nothing(ledger, clock):
    await new_account(ledger)
    first = await ledger.add_funds(T, 500, actor=ADMIN, key="activity-1", memo="top-up")
    await use(ledger, 100)
    before = (await entries(ledger), await balance(ledger), await audit_actions(ledger))
    clock.advance(minutes=5)

    again = await ledger.add_funds(T, 500, actor=ADMIN, key="activity-1", memo="top-up")
    assert again.replayed and not first.replayed
    assert again.entries == first.entries and again.balance == first.balance == 500   # the original result
    assert (await entries(ledger), await balance(ledger), await audit_actions(ledger)) == before

    by_other_admin = await ledger.add_funds(T, 500, actor=ADMIN2, key="activity-1", memo="top-up")
    assert by_other_admin.replayed   # the actor is not an argument: one card, clicked by two admins


async def test_the_same_key_with_other_arguments_is_a_conflict(ledger):
    await new_account(ledger)
    await ledger.add_funds(T, 500, actor=ADMIN, key="activity-1", memo="top-up")
    for call in (lambda: ledger.add_funds(T, 501, actor=ADMIN, key="activity-1", memo="top-up"),
                 lambda: ledger.add_funds(T, 500, actor=ADMIN, key="activity-1", memo="other"),
                 lambda: ledger.add_funds(T, 500, actor=ADMIN, key="activity-1", memo="top-up", reference="x"),
                 lambda: ledger.adjust(T, 500, actor=ADMIN, key="activity-1", memo="top-up"),
                 lambda: ledger.record_usage(T, row("activity-1", 500)),
                 lambda: ledger.grant_role(T, "u", Role.READER, actor=ADMIN, key="activity-1")):
        with pytest.raises(IdempotencyConflict) as error:
            await call()
        assert error.value.key == "activity-1"
    assert len(await entries(ledger)) == 1 and await ledger.roles(T) == []


async def test_keys_are_checked_before_the_balance(ledger):
    await new_account(ledger)
    await fund(ledger, 100)
    debit = await ledger.adjust(T, -100, actor=ADMIN, key="debit-1")
    # the balance is now 0: a fresh debit would be refused, but the replay answers with the original result
    replay = await ledger.adjust(T, -100, actor=ADMIN, key="debit-1")
    assert replay.replayed and replay.entries == debit.entries


async def test_the_key_of_a_failed_operation_stays_free(ledger):
    await new_account(ledger)
    with pytest.raises(InsufficientFunds):
        await ledger.adjust(T, -10, actor=ADMIN, key="k-1")
    posting = await ledger.add_funds(T, 10, actor=ADMIN, key="k-1")   # another operation may use it
    assert not posting.replayed and posting.balance == 10


async def test_keys_are_scoped_to_the_account(ledger):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    await ledger.add_funds(T, 10, actor=ADMIN, key="k-1")
    other = await ledger.add_funds(OTHER, 99, actor=ADMIN, key="k-1")
    assert not other.replayed and other.balance == 99


async def test_usage_rows_replay_by_usage_id(ledger):
    await new_account(ledger)
    await fund(ledger, 1000)
    first = await ledger.record_usage(T, row("graph-row-1", 120, user="Ada"))
    # the same row fetched again, even with other descriptive details, is the same fact
    again = await ledger.record_usage(T, row("graph-row-1", 120, user="Ada Lovelace"))
    assert again.replayed and again.entries == first.entries
    with pytest.raises(IdempotencyConflict):
        await ledger.record_usage(T, row("graph-row-1", 121))
    with pytest.raises(IdempotencyConflict):
        await ledger.record_usage(T, UsageRecord("graph-row-1", 120, "USD", OCCURRED + timedelta(seconds=1)))
    assert await balance(ledger) == 880 and len(await entries(ledger)) == 2


async def test_a_replayed_usage_that_recharged_does_not_recharge_again(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await fund(ledger, 120)
    first = await use(ledger, 90, usage_id="call-1")
    again = await use(ledger, 90, usage_id="call-1")
    assert again.replayed and again.entries == first.entries and again.alert_ids == first.alert_ids
    assert len(await entries(ledger)) == 4 and await balance(ledger) == 130
    assert await alert_kinds(ledger) == ["recharged"]


async def test_the_key_of_a_recharge_entry_cannot_be_reused(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await use(ledger, 10, usage_id="call-1")             # writes call-1:recharge:1, call-1:recharge:2, ...
    before = (await entries(ledger), await audit_actions(ledger))
    with pytest.raises(ValueError):                      # a namespace the ledger reserves: a programming error
        await ledger.add_funds(T, 5, actor=ADMIN, key="call-1:recharge:1")
    assert (await entries(ledger), await audit_actions(ledger)) == before


async def test_an_expiry_key_is_not_a_callers_key(ledger):
    await new_account(ledger)
    with pytest.raises(ValueError):
        await ledger.add_funds(T, 100, actor=ADMIN, key="expiry:7")
    assert await entries(ledger) == [] and await audit_actions(ledger) == ["account_opened"]


async def test_expire_lots_still_writes_its_own_keys_after_a_caller_tried_them(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 100)                              # lot 1
    with pytest.raises(ValueError):
        await ledger.add_funds(T, 5, actor=ADMIN, key="expiry:1")
    clock.advance(days=366)
    [posting] = await ledger.expire_lots()
    assert (posting.entry.kind, posting.entry.key, posting.entry.amount) == (EntryKind.EXPIRY, "expiry:1", -100)
    assert posting.balance == 0 and not posting.replayed
    with pytest.raises(ValueError):                      # a key the ledger has used is still not the caller's:
        await ledger.add_funds(T, 5, actor=ADMIN, key="expiry:1")   # no replay, no conflict
    assert await ledger.expire_lots() == []
    assert (await ledger.verify()).ok


@pytest.mark.parametrize("key", ["", "expiry:7", "expiry:", "call-1:recharge:1", "x:recharge:"])
async def test_every_keyed_mutation_refuses_a_reserved_or_empty_key(ledger, key):
    await new_account(ledger)
    await fund(ledger, 100)
    await ledger.grant_role(T, "u", Role.READER, actor=ADMIN, key=k())
    await ledger.subscribe(T, "conv", [AlertKind.EXHAUSTED], actor=ADMIN, key=k())
    pending = await ledger.request_approval(T, 100, actor=ADMIN, key=k())
    before = (await entries(ledger), await audit_actions(ledger), await ledger.roles(T),
              await ledger.subscriptions(T), await ledger.recharge_settings(T), await ledger.alert_settings(T),
              await ledger.approvals(T))
    calls = [
        lambda: ledger.add_funds(T, 5, actor=ADMIN, key=key),
        lambda: ledger.adjust(T, -5, actor=ADMIN, key=key),
        lambda: ledger.set_currency(T, "EUR", actor=ADMIN, key=key),
        lambda: ledger.set_recharge_settings(T, RechargeSettings(True, 50, 100), actor=ADMIN, key=key),
        lambda: ledger.set_alert_settings(T, AlertSettings((50,)), actor=ADMIN, key=key),
        lambda: ledger.grant_role(T, "v", Role.ADMIN, actor=ADMIN, key=key),
        lambda: ledger.revoke_role(T, "u", actor=ADMIN, key=key),
        lambda: ledger.subscribe(T, "conv-2", [AlertKind.EXHAUSTED], actor=ADMIN, key=key),
        lambda: ledger.unsubscribe(T, "conv", actor=ADMIN, key=key),
        lambda: ledger.request_approval(T, 5, actor=ADMIN, key=key),
        lambda: ledger.decide_approval(T, pending.approval_id, approve=True, actor=ADMIN2, key=key),
        # the key is checked before the arguments and the state
        lambda: ledger.add_funds(T, 0, actor=ADMIN, key=key),
        lambda: ledger.adjust(T, -10_000, actor=ADMIN, key=key),
        lambda: ledger.set_currency(T, "nope", actor=ADMIN, key=key),
        lambda: ledger.set_recharge_settings(T, RechargeSettings(True, 0, 100), actor=ADMIN, key=key),
        lambda: ledger.grant_role(T, "v", "owner", actor=ADMIN, key=key),
        lambda: ledger.revoke_role(T, "nobody", actor=ADMIN, key=key),
        lambda: ledger.subscribe(T, "conv-2", [], actor=ADMIN, key=key),
        lambda: ledger.unsubscribe(T, "never", actor=ADMIN, key=key),
        lambda: ledger.request_approval(T, 0, actor=ADMIN, key=key),
        lambda: ledger.decide_approval(T, "unknown", approve=True, actor=ADMIN2, key=key),
        lambda: ledger.decide_approval(T, pending.approval_id, approve=True, actor=ADMIN, key=key),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            await call()
    after = (await entries(ledger), await audit_actions(ledger), await ledger.roles(T),
             await ledger.subscriptions(T), await ledger.recharge_settings(T), await ledger.alert_settings(T),
             await ledger.approvals(T))
    assert after == before


async def test_settings_changes_replay_and_conflict_like_money(ledger):
    await new_account(ledger)
    settings = RechargeSettings(True, 50, 100, None, 3)
    first = await ledger.set_recharge_settings(T, settings, actor=ADMIN, key="card-nonce-1")
    assert first.value == settings.to_dict() and not first.replayed
    again = await ledger.set_recharge_settings(T, settings, actor=ADMIN, key="card-nonce-1")
    assert again.replayed and again.value == first.value
    with pytest.raises(IdempotencyConflict):
        await ledger.set_recharge_settings(T, RechargeSettings(True, 60, 100), actor=ADMIN, key="card-nonce-1")
    assert await audit_actions(ledger) == ["account_opened", "recharge_settings"]


# ==== usage batches =============================================================================================

async def test_a_batch_reports_each_row(ledger):
    await new_account(ledger)
    await fund(ledger, 1000)
    await ledger.record_usage(T, row("r-old", 100))
    await ledger.record_usage(T, row("r-known", 50))

    result = await ledger.record_usage_batch(T, [
        row("r-1", 10),                       # recorded
        row("r-old", 100),                    # recorded before: replayed
        row("r-eur", 20, currency="EUR"),     # rejected
        row("r-known", 51),                   # the id was recorded with another amount: conflict
        row("r-zero", 0),                     # rejected
        row("r-2", 30),                       # recorded
        row("r-2", 30),                       # the same row twice in one file: replayed
        row("expiry:1", 5),                   # an id in a namespace the ledger reserves: rejected
        row("", 5),                           # no id: rejected
        UsageRecord("r-naive", 5, "USD", datetime(2026, 1, 14, 8, 30)),   # no time zone: rejected
        UsageRecord("r-old", 100, "USD", datetime(2026, 1, 14, 8, 30)),   # the time is checked before the key
        row("r-neg", -3),                     # rejected
    ])
    assert [(r.usage_id, r.status, r.reason) for r in result.rows] == [
        ("r-1", RowStatus.RECORDED, ""),
        ("r-old", RowStatus.REPLAYED, ""),
        ("r-eur", RowStatus.REJECTED, "currency_mismatch"),
        ("r-known", RowStatus.CONFLICT, "idempotency_conflict"),
        ("r-zero", RowStatus.REJECTED, "zero"),
        ("r-2", RowStatus.RECORDED, ""),
        ("r-2", RowStatus.REPLAYED, ""),
        ("expiry:1", RowStatus.REJECTED, "bad_usage_id"),
        ("", RowStatus.REJECTED, "bad_usage_id"),
        ("r-naive", RowStatus.REJECTED, "bad_time"),
        ("r-old", RowStatus.REJECTED, "bad_time"),
        ("r-neg", RowStatus.REJECTED, "negative"),
    ]
    assert result.balance == 1000 - 100 - 50 - 10 - 30 == await balance(ledger)
    assert result.debited == 40
    assert result.rows[1].posting.replayed and result.rows[1].posting.entry.seq == 2
    assert [r.posting for r in result.rows if r.status in (RowStatus.REJECTED, RowStatus.CONFLICT)] == [None] * 8
    assert [e.key for e in await entries(ledger)][3:] == ["r-1", "r-2"]
    # the key of a rejected row stays free
    assert not (await ledger.record_usage(T, row("r-eur", 20))).replayed
    assert not (await ledger.record_usage(T, row("r-naive", 5))).replayed
    batch_audit = (await ledger.audit(T)).items[2]
    assert (batch_audit.action, batch_audit.key) == ("usage_batch", "")
    assert dict(batch_audit.details) == {"rows": 12, "recorded": 2, "replayed": 2, "rejected": 7, "conflict": 1,
                                         "debited": 40}


async def test_a_batch_records_rows_as_if_one_after_another(ledger):
    """Recharges and alerts inside a batch are exactly what separate calls would have written."""
    calls = [row("u1", 40), row("u2", 70), row("u3", 5), row("u4", 300)]
    for tenant in (T, OTHER):
        await new_account(ledger, tenant)
        await auto_recharge(ledger, amount=50, trigger=60, tenant=tenant)
        await thresholds(ledger, 80, tenant=tenant)
        await fund(ledger, 100, tenant=tenant, key="seed")
    result = await ledger.record_usage_batch(T, calls)
    singles = [await ledger.record_usage(OTHER, c) for c in calls]

    def strip(entry):
        return (entry.seq, entry.kind, entry.amount, entry.balance_after, entry.key, entry.reference.split(":")[-1])
    assert [strip(e) for e in await entries(ledger, T)] == [strip(e) for e in await entries(ledger, OTHER)]
    assert [r.posting.balance for r in result.rows] == [p.balance for p in singles]
    kinds_t = [(a.kind, a.key.replace(T, "X")) for a in await alerts_oldest_first(ledger, T)]
    kinds_o = [(a.kind, a.key.replace(OTHER, "X")) for a in await alerts_oldest_first(ledger, OTHER)]
    assert kinds_t == kinds_o and kinds_t


async def test_a_batch_is_one_atomic_unit_even_when_a_row_crashes(ledger):
    await new_account(ledger)
    await fund(ledger, 100)
    broken = UsageRecord("r-broken", 5, "USD", OCCURRED, None)   # a bug at the edge: details is not a mapping
    with pytest.raises(Exception) as error:
        await ledger.record_usage_batch(T, [row("r-1", 10), row("r-2", 20), broken])
    assert not isinstance(error.value, LedgerError)            # a crash, not a row the ledger rejects
    assert await balance(ledger) == 100 and len(await entries(ledger)) == 1
    assert (await ledger.record_usage_batch(T, [row("r-1", 10)])).rows[0].status is RowStatus.RECORDED


async def test_a_long_batch_is_one_unit_whatever_pieces_a_backend_works_in(ledger):
    """A backend may work through a long batch in pieces (PostgreSQL writes 500 rows while it computes the
    next ones): rows repeated or conflicting across those pieces, recharges and alerts on their boundaries, and
    replays of an earlier call come out exactly as when the same rows arrive in small batches."""
    calls = [row(f"long-{i}", 7 + i % 13) for i in range(1203)]
    calls[700] = row("long-3", 7 + 3)      # the same row again, far from the first time: replayed
    calls[1100] = row("long-5", 99)        # an id seen earlier with another amount: conflict
    for tenant in (T, OTHER):
        await new_account(ledger, tenant)
        await auto_recharge(ledger, amount=2000, trigger=500, tenant=tenant)
        await thresholds(ledger, 300, tenant=tenant)
        await fund(ledger, 1000, tenant=tenant, key="seed")
    await ledger.record_usage_batch(T, calls[:250])             # recorded before: replayed in the long batch
    long = await ledger.record_usage_batch(T, calls)
    for i in range(0, 250, 37):                                   # the same, in other pieces
        await ledger.record_usage_batch(OTHER, calls[i:min(i + 37, 250)])
    pieces = [await ledger.record_usage_batch(OTHER, calls[i:i + 37]) for i in range(0, len(calls), 37)]

    def strip(entry):
        return (entry.seq, entry.kind, entry.amount, entry.balance_after, entry.key, entry.reference.split(":")[-1])
    assert [strip(e) for e in await entries(ledger, T)] == [strip(e) for e in await entries(ledger, OTHER)]
    rows = [r for piece in pieces for r in piece.rows]
    assert [(r.usage_id, r.status) for r in long.rows] == [(r.usage_id, r.status) for r in rows]
    assert [r.posting.balance if r.posting else None for r in long.rows] == \
        [r.posting.balance if r.posting else None for r in rows]
    assert sum(r.status is RowStatus.RECORDED for r in long.rows) == 1203 - 250 - 2
    assert long.rows[1100].status is RowStatus.CONFLICT and long.rows[700].status is RowStatus.REPLAYED
    kinds_t = [(a.kind, a.key.replace(T, "X")) for a in await alerts_oldest_first(ledger, T)]
    kinds_o = [(a.kind, a.key.replace(OTHER, "X")) for a in await alerts_oldest_first(ledger, OTHER)]
    assert kinds_t == kinds_o and AlertKind.RECHARGED in {kind for kind, _ in kinds_t}
    assert long.balance == await balance(ledger, T) == await balance(ledger, OTHER)
    assert (await ledger.verify(T)).ok


async def test_a_long_batch_that_crashes_in_its_last_rows_writes_nothing(ledger):
    await new_account(ledger)
    await fund(ledger, 100)
    broken = UsageRecord("r-broken", 5, "USD", OCCURRED, None)   # a bug at the edge: details is not a mapping
    with pytest.raises(Exception) as error:
        await ledger.record_usage_batch(T, [row(f"r-{i}", 1) for i in range(1200)] + [broken])
    assert not isinstance(error.value, LedgerError)
    assert await balance(ledger) == 100 and len(await entries(ledger)) == 1
    assert (await ledger.verify(T)).ok
    assert (await ledger.record_usage_batch(T, [row("r-1", 1)])).rows[0].status is RowStatus.RECORDED


async def test_an_empty_batch_changes_nothing(ledger):
    await new_account(ledger)
    result = await ledger.record_usage_batch(T, [])
    assert result.rows == () and result.balance == 0
    assert await audit_actions(ledger) == ["account_opened"]


# ==== auto-recharge =============================================================================================

async def test_auto_recharge_repeats_until_the_balance_is_back_at_the_trigger(ledger, clock):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await fund(ledger, 120)
    posting = await use(ledger, 90, usage_id="call-1")        # 30: needs two recharges to reach 130

    usage, first, second = posting.entries
    assert posting.recharges == (first, second) and posting.balance == 130
    for n, recharge in enumerate((first, second), start=1):
        assert (recharge.kind, recharge.amount, recharge.actor, recharge.memo) == \
            (EntryKind.AUTO_RECHARGE, 50, "system", "")
        assert recharge.key == f"call-1:recharge:{n}"
        assert recharge.reference == usage.id == f"{T}:2"
        assert dict(recharge.details) == {"trigger_seq": 2}
        assert recharge.at == clock.now
    assert [e.balance_after for e in posting.entries] == [30, 80, 130]
    # credited on the UTC day of lot 1, the newest open lot, both recharges are added to it (ADR 0008)
    assert [(lot.lot_id, lot.amount, lot.remaining) for lot in await ledger.lots(T)] == [(1, 220, 130)]


async def test_a_debit_that_stays_at_or_above_the_trigger_does_not_recharge(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await fund(ledger, 200)
    assert (await use(ledger, 100)).recharges == ()          # exactly at the trigger
    assert (await use(ledger, 1)).recharges != ()


async def test_credits_and_settings_move_no_money(ledger):
    await new_account(ledger)
    await fund(ledger, 10)
    await auto_recharge(ledger, amount=50, trigger=100)     # below the trigger already: still no recharge
    assert await balance(ledger) == 10
    assert (await fund(ledger, 20)).recharges == ()          # a credit below the trigger does not recharge
    assert len(await entries(ledger)) == 2


async def test_disabled_auto_recharge_never_recharges(ledger):
    await new_account(ledger)
    await ledger.set_recharge_settings(T, RechargeSettings(False, 50, 100), actor=ADMIN, key=k())
    assert (await use(ledger, 10)).recharges == ()
    assert await ledger.recharge_settings(T) == RechargeSettings(False, 50, 100)


async def test_a_negative_adjustment_triggers_auto_recharge(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await fund(ledger, 150)
    posting = await ledger.adjust(T, -100, actor=ADMIN, key="fix-1")
    assert [e.key for e in posting.entries] == ["fix-1", "fix-1:recharge:1"] and posting.balance == 100


@pytest.mark.parametrize("settings, reason", [
    (RechargeSettings(True, 0, 100), "amount_zero"),
    (RechargeSettings(True, 50, -1), "negative"),
    (RechargeSettings(True, 50, 100, monthly_cap=49), "cap_below_amount"),
    (RechargeSettings(True, 50, 100, max_per_day=0), "breaker_below_one"),
    (RechargeSettings(False, 50, 100, max_per_day=0), "breaker_below_one"),
    (RechargeSettings(True, 50, 10**15 + 1), "too_large"),
    (RechargeSettings(True, 50, 100, max_per_day=policy.MAX_RECHARGES_PER_DAY + 1), "breaker_too_high"),
    (RechargeSettings(1, 50, 100), "enabled_not_bool"),
    (RechargeSettings("false", 50, 100), "enabled_not_bool"),
])
async def test_recharge_settings_that_cannot_work_are_refused(ledger, settings, reason):
    await new_account(ledger)
    with pytest.raises(InvalidSettings) as error:
        await ledger.set_recharge_settings(T, settings, actor=ADMIN, key="s-1")
    assert error.value.reason == reason
    assert await ledger.recharge_settings(T) == RechargeSettings()
    assert await audit_actions(ledger) == ["account_opened"]


async def test_the_monthly_cap_allows_part_of_the_recharges_then_blocks(ledger, clock):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100, cap=100)
    await fund(ledger, 120)
    posting = await use(ledger, 170)                  # -50: three recharges needed, the cap allows two
    assert len(posting.recharges) == 2 and posting.balance == 50
    assert posting.recharge_blocked == "monthly_cap"
    assert await alert_kinds(ledger) == ["recharged", "recharge_blocked"]
    blocked = (await ledger.alerts(T))[0]
    assert blocked.key == policy.blocked_key(T, posting.entry.seq)
    assert dict(blocked.payload) == {"reason": "monthly_cap", "balance": 50, "entry_seq": posting.entry.seq}

    more = await use(ledger, 10)                      # still capped this month: blocked, but no second alert
    assert more.recharges == () and more.recharge_blocked == "monthly_cap" and more.alert_ids == ()

    clock.set(datetime(2026, 2, 1, 0, 0, tzinfo=timezone.utc))   # a new calendar month (UTC)
    fresh = await use(ledger, 1)
    assert len(fresh.recharges) == 2 and fresh.recharge_blocked is None and fresh.balance == 139


async def test_the_breaker_counts_recharges_in_a_rolling_24_hours(ledger, clock):
    await new_account(ledger)
    await auto_recharge(ledger, amount=10, trigger=50, per_day=2)
    await fund(ledger, 60)
    first = await use(ledger, 40)                     # 20: three recharges needed, the breaker allows two
    assert len(first.recharges) == 2 and first.recharge_blocked == "breaker" and first.balance == 40

    clock.advance(hours=23, minutes=59)
    assert (await use(ledger, 1)).recharge_blocked == "breaker"
    clock.advance(minutes=1)                          # exactly 24 h after the two recharges: they drop out
    later = await use(ledger, 1)
    assert len(later.recharges) == 2 and later.balance == 58 and later.recharge_blocked is None


async def test_the_blocked_alert_fires_once_and_rearms(ledger, clock):
    await new_account(ledger)
    await auto_recharge(ledger, amount=10, trigger=50, per_day=1)
    await fund(ledger, 50)
    async def recharge_alerts():
        return [kind for kind in await alert_kinds(ledger) if kind.startswith("recharge")]

    await use(ledger, 30)                             # one recharge, then the breaker: alert 1
    await use(ledger, 5)                              # still blocked: no new alert
    assert await recharge_alerts() == ["recharged", "recharge_blocked"]

    await fund(ledger, 100)                           # back at or above the trigger: re-armed
    clock.advance(hours=1)
    await use(ledger, 200)                            # breaker again (the recharge 1 h ago counts): alert 2
    assert await recharge_alerts() == ["recharged", "recharge_blocked", "recharge_blocked"]

    await auto_recharge(ledger, amount=10, trigger=50, per_day=1)   # saving settings re-arms it too
    await use(ledger, 5)
    assert await recharge_alerts() == ["recharged"] + ["recharge_blocked"] * 3

    clock.advance(hours=24)                           # a successful recharge re-arms it, then it blocks
    posting = await use(ledger, 5)
    assert len(posting.recharges) == 1 and posting.recharge_blocked == "breaker"
    assert await recharge_alerts() == ["recharged"] + ["recharge_blocked"] * 3 + ["recharged", "recharge_blocked"]


async def test_the_recharged_alert_lists_the_recharges_of_the_operation(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=50, trigger=100)
    await fund(ledger, 120)
    posting = await use(ledger, 90)
    [alert] = await ledger.alerts(T)
    assert alert.kind is AlertKind.RECHARGED
    assert alert.key == policy.recharged_key(T, 3) == f"recharged:{T}:3"
    assert alert.alert_id == policy.alert_id(T, alert.key) and posting.alert_ids == (alert.alert_id,)
    assert dict(alert.payload) == {"count": 2, "total": 100, "balance": 130, "entry_seqs": [3, 4]}


# ==== thresholds and exhausted ==================================================================================

async def test_low_balance_fires_once_per_real_crossing(ledger):
    await new_account(ledger)
    await thresholds(ledger, 100)
    await fund(ledger, 150)
    crossing = await use(ledger, 60)                  # 90: crosses below 100
    await fund(ledger, 5)                             # 95: hovering below
    await use(ledger, 5)                              # 90
    await fund(ledger, 10)                            # 100: at the threshold is not below it: re-armed
    await use(ledger, 1)                              # 99: a real crossing again
    await use(ledger, 50)                             # 49

    alerts = await alerts_oldest_first(ledger)
    assert [a.key for a in alerts] == [policy.low_balance_key(T, 100, 2), policy.low_balance_key(T, 100, 6)]
    assert alerts[0].key == f"low_balance:{T}:100:2"
    assert dict(alerts[0].payload) == {"threshold": 100, "balance": 90, "entry_seq": 2}
    assert crossing.alert_ids == (alerts[0].alert_id,)


async def test_one_drop_through_several_thresholds_fires_each_highest_first(ledger):
    await new_account(ledger)
    change = await thresholds(ledger, 50, 100, 50)
    assert change.value == {"thresholds": [100, 50], "forecast_days": 7}
    assert await ledger.alert_settings(T) == AlertSettings((100, 50), 7)
    await fund(ledger, 150)
    posting = await use(ledger, 120)                  # 30: below both
    raised = [await ledger.get_alert(i) for i in posting.alert_ids]
    assert [(a.kind, a.payload["threshold"]) for a in raised] == [(AlertKind.LOW_BALANCE, 100),
                                                                  (AlertKind.LOW_BALANCE, 50)]


async def test_thresholds_are_judged_on_the_balance_after_recharges(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=100, trigger=100)
    await thresholds(ledger, 80)
    await fund(ledger, 150)
    posting = await use(ledger, 100)                  # 50 for a moment, 150 at the end of the unit
    assert posting.balance == 150 and await alert_kinds(ledger) == ["recharged"]


async def test_saving_thresholds_arms_only_those_at_or_below_the_balance(ledger):
    await new_account(ledger)
    await fund(ledger, 100)
    await thresholds(ledger, 200, 100, 50)            # 200 is already in alarm: no alert now, none later
    assert await ledger.alerts(T) == []
    await use(ledger, 60)                             # 40: crosses 100 and 50
    assert [a.payload["threshold"] for a in await alerts_oldest_first(ledger)] == [100, 50]


@pytest.mark.parametrize("settings, reason", [
    (AlertSettings((0,)), "threshold_not_positive"),
    (AlertSettings((-5,)), "threshold_not_positive"),
    (AlertSettings(tuple(range(1, 12))), "too_many_thresholds"),
    (AlertSettings((10,), forecast_days=0), "forecast_days"),
    (AlertSettings((1.5,)), "threshold_not_integer"),
])
async def test_alert_settings_that_cannot_work_are_refused(ledger, settings, reason):
    await new_account(ledger)
    with pytest.raises(InvalidSettings) as error:
        await ledger.set_alert_settings(T, settings, actor=ADMIN, key="a-1")
    assert error.value.reason == reason
    assert await ledger.alert_settings(T) == AlertSettings()


async def test_exhausted_fires_when_the_balance_reaches_zero_and_rearms_above_it(ledger):
    await new_account(ledger)
    await use(ledger, 10)                             # a new account starts at 0, already "exhausted": no alert
    assert await ledger.alerts(T) == []
    await fund(ledger, 60)                            # 50
    at_zero = await use(ledger, 50)                   # 0: exhausted
    await use(ledger, 10)                             # -10: still exhausted, no repeat
    await fund(ledger, 5)                             # -5: still
    await fund(ledger, 100)                           # 95: re-armed
    await use(ledger, 200)                            # -105: exhausted again
    alerts = await alerts_oldest_first(ledger)
    assert [a.key for a in alerts] == [policy.exhausted_key(T, 3), policy.exhausted_key(T, 7)]
    assert alerts[0].key == f"exhausted:{T}:3"
    assert dict(alerts[0].payload) == {"balance": 0, "entry_seq": 3}
    assert at_zero.alert_ids == (alerts[0].alert_id,)


async def test_alerts_of_one_operation_come_in_a_fixed_order(ledger):
    await new_account(ledger)
    await auto_recharge(ledger, amount=10, trigger=100, per_day=1)
    await thresholds(ledger, 50, 20)
    await fund(ledger, 100)
    posting = await use(ledger, 200)                  # -100, one recharge (-90), breaker
    kinds = [(await ledger.get_alert(i)).kind.value for i in posting.alert_ids]
    assert kinds == ["recharged", "recharge_blocked", "low_balance", "low_balance", "exhausted"]
    assert posting.balance == -90


# ==== subscriptions and the outbox ==============================================================================

async def test_destinations_are_the_subscriptions_when_the_alert_is_raised(ledger):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST, AlertKind.EXPIRING], actor=ADMIN, key=k())
    await ledger.subscribe(T, "admins", [AlertKind.EXPIRING], actor=ADMIN, key=k())
    forecast = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:1", {})
    expiring = await ledger.raise_alert(T, AlertKind.EXPIRING, "expiring:1", {})
    await fund(ledger, 10)
    [exhausted_id] = (await use(ledger, 10)).alert_ids
    nobody = await ledger.get_alert(exhausted_id)
    assert forecast.destinations == ("finance",) and forecast.status is AlertStatus.PENDING
    assert expiring.destinations == ("admins", "finance")
    assert nobody.kind is AlertKind.EXHAUSTED
    assert nobody.destinations == () and nobody.status is AlertStatus.DELIVERED   # nobody to tell

    await ledger.subscribe(T, "admins", [AlertKind.FORECAST], actor=ADMIN, key=k())   # replaces its kinds
    assert (await ledger.raise_alert(T, AlertKind.EXPIRING, "expiring:2", {})).destinations == ("finance",)
    assert (await ledger.get_alert(expiring.alert_id)).destinations == ("admins", "finance")   # earlier stay


async def test_subscribe_unsubscribe_and_disable(ledger, clock):
    await new_account(ledger)
    change = await ledger.subscribe(T, "conv-1", [AlertKind.EXHAUSTED, AlertKind.RECHARGED, AlertKind.RECHARGED],
                                    actor=ADMIN, key="sub-1")
    assert change.value == {"conversation_id": "conv-1", "kinds": ["recharged", "exhausted"],
                            "created_by": ADMIN, "created_at": clock.now.isoformat(), "enabled": True,
                            "disabled_reason": ""}
    [sub] = await ledger.subscriptions(T)
    assert (sub.conversation_id, sub.kinds, sub.enabled) == ("conv-1", (AlertKind.RECHARGED, AlertKind.EXHAUSTED),
                                                             True)
    await ledger.disable_subscription(T, "conv-1", reason="403 bot removed")
    [sub] = await ledger.subscriptions(T)
    assert (sub.enabled, sub.disabled_reason) == (False, "403 bot removed")
    await fund(ledger, 5)
    [exhausted_id] = (await use(ledger, 5)).alert_ids
    assert (await ledger.get_alert(exhausted_id)).destinations == ()

    await ledger.subscribe(T, "conv-1", [AlertKind.EXHAUSTED], actor=ADMIN2, key="sub-2")   # enabled again
    [sub] = await ledger.subscriptions(T)
    assert (sub.enabled, sub.kinds, sub.created_by) == (True, (AlertKind.EXHAUSTED,), ADMIN2)

    assert (await ledger.unsubscribe(T, "conv-1", actor=ADMIN, key="unsub-1")).value == {"conversation_id": "conv-1"}
    assert await ledger.subscriptions(T) == []
    with pytest.raises(NotFound):
        await ledger.unsubscribe(T, "conv-1", actor=ADMIN, key="unsub-2")
    assert (await ledger.unsubscribe(T, "conv-1", actor=ADMIN, key="unsub-1")).replayed
    with pytest.raises(InvalidSettings):
        await ledger.subscribe(T, "conv-2", [], actor=ADMIN, key=k())
    with pytest.raises(InvalidSettings):
        await ledger.subscribe(T, "conv-2", ["no-such-kind"], actor=ADMIN, key=k())
    await ledger.disable_subscription(T, "never-subscribed", reason="404")   # nothing to do, no error
    assert await audit_actions(ledger) == ["account_opened", "subscribe", "disable_subscription", "funds_added",
                                           "usage", "subscribe", "unsubscribe"]


async def test_raise_alert_is_idempotent_by_key(ledger, clock):
    await new_account(ledger)
    first = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:2026-01-15", {"days": 4})
    assert first.alert_id == policy.alert_id(T, "forecast:2026-01-15")
    assert (first.kind, first.key, first.created_at, dict(first.payload)) == \
        (AlertKind.FORECAST, "forecast:2026-01-15", clock.now, {"days": 4})
    clock.advance(hours=1)
    again = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:2026-01-15", {"days": 3})
    assert again == first
    assert len(await ledger.alerts(T)) == 1
    expiring = await ledger.raise_alert(T, AlertKind.EXPIRING, f"expiring:{T}:9", {"lot_id": 9})
    assert (expiring.kind, expiring.key) == (AlertKind.EXPIRING, f"expiring:{T}:9")


@pytest.mark.parametrize("kind, key", [
    (AlertKind.RECHARGED, "recharged:x"),          # the money operations raise these, with their own keys
    (AlertKind.RECHARGE_BLOCKED, "recharge_blocked:x"),
    (AlertKind.LOW_BALANCE, "low_balance:x"),
    (AlertKind.EXHAUSTED, "exhausted:x"),
    ("no-such-kind", "no-such-kind:x"),
    (AlertKind.FORECAST, "expiring:x"),            # the key must start with the kind
    (AlertKind.FORECAST, "forecast-1"),
    (AlertKind.FORECAST, "x:forecast:1"),
    (AlertKind.FORECAST, "Forecast:1"),
    (AlertKind.EXPIRING, ""),
    (AlertKind.EXPIRING, "forecast:1"),
])
async def test_raise_alert_takes_only_forecast_and_expiring_under_their_own_keys(ledger, kind, key):
    await new_account(ledger)
    await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:1", {})
    with pytest.raises(ValueError):
        await ledger.raise_alert(T, kind, key, {})
    assert [a.key for a in await ledger.alerts(T)] == ["forecast:1"]


async def test_raise_alert_checks_the_kind_before_the_key_is_looked_up(ledger):
    await new_account(ledger)
    await fund(ledger, 10)
    [exhausted_id] = (await use(ledger, 10)).alert_ids
    exhausted = await ledger.get_alert(exhausted_id)
    with pytest.raises(ValueError):                  # not an answer with the existing alert
        await ledger.raise_alert(T, AlertKind.EXHAUSTED, exhausted.key, {})


async def test_claim_leases_due_alerts_oldest_first(ledger, clock):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", list(AlertKind), actor=ADMIN, key=k())
    a1 = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:a1", {})
    clock.advance(seconds=1)
    a2 = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:b", {})
    a3 = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:g", {})   # same time as a2: creation order
    assert a3.alert_id < a2.alert_id                 # ... which is not the order of the ids

    claimed = await ledger.claim_alerts("w1", lease=timedelta(minutes=5), limit=2)
    assert [a.alert_id for a in claimed] == [a1.alert_id, a2.alert_id]
    assert all(a.lease_owner == "w1" and a.lease_until == clock.now + timedelta(minutes=5) for a in claimed)
    assert [a.attempts for a in claimed] == [1, 1]   # claiming counts the attempt
    assert [a.alert_id for a in await ledger.claim_alerts("w2", lease=timedelta(minutes=5))] == [a3.alert_id]
    assert await ledger.claim_alerts("w1", lease=timedelta(minutes=5)) == []   # live leases, even its own
    assert (await ledger.get_alert(a1.alert_id)).attempts == 1                 # a refused claim counts nothing

    clock.advance(minutes=5)                          # w1's lease ran out: w3 takes over
    taken = await ledger.claim_alerts("w3", lease=timedelta(minutes=5))
    assert [a.alert_id for a in taken] == [a1.alert_id, a2.alert_id, a3.alert_id]
    assert [a.attempts for a in taken] == [2, 2, 2]
    with pytest.raises(LeaseLost):
        await ledger.mark_delivered(a1.alert_id, "finance", worker="w1")
    with pytest.raises(LeaseLost):
        await ledger.release_alert(a1.alert_id, worker="w1", retry_at=clock.now, error="x")
    assert (await ledger.get_alert(a1.alert_id)).status is AlertStatus.PENDING


async def test_claim_serves_every_account(ledger, clock):
    for tenant in (T, OTHER):
        await new_account(ledger, tenant)
        await ledger.subscribe(tenant, f"chat-{tenant}", [AlertKind.FORECAST], actor=ADMIN, key="sub")
    first = await ledger.raise_alert(OTHER, AlertKind.FORECAST, "forecast:f", {})
    clock.advance(seconds=1)
    second = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:f", {})
    assert first.alert_id != second.alert_id       # the same key in two accounts is two alerts
    claimed = await ledger.claim_alerts("w", lease=timedelta(minutes=1))
    assert [(a.tenant_id, a.destinations) for a in claimed] == [(OTHER, (f"chat-{OTHER}",)), (T, (f"chat-{T}",))]


async def test_mark_delivered_serves_each_destination_then_the_alert(ledger, clock):
    await new_account(ledger)
    for conv in ("c-1", "c-2"):
        await ledger.subscribe(T, conv, [AlertKind.EXPIRING], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.EXPIRING, "expiring:x", {})
    await ledger.claim_alerts("w", lease=timedelta(minutes=1))

    half = await ledger.mark_delivered(alert.alert_id, "c-2", worker="w")
    assert half.status is AlertStatus.PENDING and half.delivered == ("c-2",) and half.pending_destinations == ("c-1",)
    with pytest.raises(NotFound):
        await ledger.mark_delivered(alert.alert_id, "c-3", worker="w")
    clock.advance(minutes=2)                          # the lease expired, but nobody took it over
    done = await ledger.mark_delivered(alert.alert_id, "c-1", worker="w")
    assert done.status is AlertStatus.DELIVERED and done.lease_owner is None and done.lease_until is None
    assert set(done.delivered) == {"c-1", "c-2"}
    assert await ledger.claim_alerts("w", lease=timedelta(minutes=1)) == []
    assert [a.alert_id for a in await ledger.alerts(T, status=AlertStatus.DELIVERED)] == [alert.alert_id]
    with pytest.raises(NotFound):
        await ledger.get_alert("no-such-alert")


async def test_release_retries_later_and_dead_letters_after_max_attempts(ledger, clock):
    await new_account(ledger)                         # the backends are opened with max_attempts=3
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:f", {})
    assert alert.attempts == 0
    lease = timedelta(minutes=1)
    for attempt in (1, 2):
        [claimed] = await ledger.claim_alerts("w", lease=lease)
        assert claimed.attempts == attempt            # counted when claimed
        released = await ledger.release_alert(claimed.alert_id, worker="w", retry_at=clock.now + timedelta(minutes=10),
                                              error=f"HTTP 502 #{attempt}")
        assert (released.attempts, released.status, released.last_error) == \
            (attempt, AlertStatus.PENDING, f"HTTP 502 #{attempt}")   # ... and not again when released
        assert released.lease_owner is None and released.next_attempt_at == clock.now + timedelta(minutes=10)
        clock.advance(minutes=9)
        assert await ledger.claim_alerts("w", lease=lease) == []       # not due yet
        clock.advance(minutes=1)
    [claimed] = await ledger.claim_alerts("w", lease=lease)
    assert claimed.attempts == 3 and claimed.status is AlertStatus.PENDING   # the last attempt is still made
    dead = await ledger.release_alert(claimed.alert_id, worker="w", retry_at=clock.now, error="HTTP 502 #3")
    assert (dead.status, dead.attempts, dead.last_error) == (AlertStatus.DEAD, 3, "HTTP 502 #3")
    assert dead.lease_owner is None and dead.lease_until is None
    clock.advance(days=1)
    assert await ledger.claim_alerts("w", lease=lease) == []
    assert [a.alert_id for a in await ledger.alerts(T, status=AlertStatus.DEAD)] == [alert.alert_id]
    assert await ledger.alerts(T, status=AlertStatus.PENDING) == []


async def test_an_alert_whose_worker_crashed_is_claimed_again_then_dies(ledger, clock):
    """A worker that crashes while sending never releases: the lease runs out, the next claim takes the alert
    again as a new attempt, and after max_attempts (3 here) such attempts the next claim makes it dead."""
    await new_account(ledger)
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:crash", {})
    lease = timedelta(minutes=1)
    for attempt, worker in ((1, "w1"), (2, "w2"), (3, "w3")):
        [claimed] = await ledger.claim_alerts(worker, lease=lease)
        assert (claimed.alert_id, claimed.attempts, claimed.lease_owner) == (alert.alert_id, attempt, worker)
        assert claimed.status is AlertStatus.PENDING and claimed.last_error == ""
        assert await ledger.claim_alerts("other", lease=lease) == []    # under a live lease
        clock.advance(lease)                                            # ... and then the worker is gone
    assert await ledger.claim_alerts("w4", lease=lease) == []           # not claimed a fourth time: dead
    dead = await ledger.get_alert(alert.alert_id)
    assert (dead.status, dead.attempts, dead.last_error) == \
        (AlertStatus.DEAD, 3, "lease expired after the last attempt")
    assert dead.lease_owner is None and dead.lease_until is None and dead.delivered == ()
    assert [a.alert_id for a in await ledger.alerts(T, status=AlertStatus.DEAD)] == [alert.alert_id]
    with pytest.raises(LeaseLost):                                      # the crashed worker comes back too late
        await ledger.mark_delivered(alert.alert_id, "finance", worker="w3")
    with pytest.raises(LeaseLost):
        await ledger.release_alert(alert.alert_id, worker="w3", retry_at=clock.now, error="late")
    clock.advance(days=1)
    assert await ledger.claim_alerts("w5", lease=lease) == []
    assert await ledger.get_alert(alert.alert_id) == dead


async def test_a_dead_lease_keeps_the_last_error_of_an_earlier_release(ledger, clock):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:mixed", {})
    lease = timedelta(minutes=1)
    await ledger.claim_alerts("w", lease=lease)                         # attempt 1: a clean failure
    await ledger.release_alert(alert.alert_id, worker="w", retry_at=clock.now, error="HTTP 429")
    for _ in range(2):                                                  # attempts 2 and 3: crashes
        [claimed] = await ledger.claim_alerts("w", lease=lease)
        assert claimed.last_error == "HTTP 429"
        clock.advance(lease)
    assert await ledger.claim_alerts("w", lease=lease) == []
    dead = await ledger.get_alert(alert.alert_id)
    assert (dead.status, dead.attempts, dead.last_error) == (AlertStatus.DEAD, 3, "HTTP 429")


async def test_a_late_release_after_the_last_attempt_is_dead_and_an_earlier_one_is_not(ledger, clock):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:late", {})
    lease = timedelta(minutes=1)
    await ledger.claim_alerts("w", lease=lease)
    clock.advance(minutes=2)                  # the lease ran out but nobody took the alert: w may still release
    first = await ledger.release_alert(alert.alert_id, worker="w", retry_at=clock.now, error="timeout")
    assert (first.status, first.attempts) == (AlertStatus.PENDING, 1)
    for _ in range(2):
        await ledger.claim_alerts("w", lease=lease)
        clock.advance(minutes=2)
    last = await ledger.release_alert(alert.alert_id, worker="w", retry_at=clock.now + timedelta(hours=1),
                                      error="timeout again")
    assert (last.status, last.attempts, last.last_error) == (AlertStatus.DEAD, 3, "timeout again")
    assert last.next_attempt_at == clock.now + timedelta(hours=1) and last.lease_owner is None


async def test_an_alert_dies_at_the_next_claim_whatever_its_limit(ledger, clock):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key=k())
    lease = timedelta(minutes=1)
    older = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:older", {})
    await ledger.claim_alerts("w", lease=lease)
    await ledger.release_alert(older.alert_id, worker="w", retry_at=clock.now + timedelta(hours=1), error="x")
    crashed = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:crashed", {})
    for _ in range(3):
        assert [a.alert_id for a in await ledger.claim_alerts("w", lease=lease)] == [crashed.alert_id]
        clock.advance(lease)
    clock.set(clock.now + timedelta(hours=1))        # the older alert is due again, the crashed one has no lease

    [claimed] = await ledger.claim_alerts("w", lease=lease, limit=1)
    assert (claimed.alert_id, claimed.attempts) == (older.alert_id, 2)
    assert (await ledger.get_alert(crashed.alert_id)).status is AlertStatus.DEAD   # judged although past the limit

    clock.advance(lease)
    newer = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:newer", {})
    taken = await ledger.claim_alerts("w", lease=lease)
    assert [(a.alert_id, a.attempts) for a in taken] == [(older.alert_id, 3), (newer.alert_id, 1)]
    clock.advance(lease)                             # both leases run out
    assert await ledger.claim_alerts("w", lease=lease, limit=0) == []
    assert (await ledger.get_alert(older.alert_id)).status is AlertStatus.DEAD     # even with limit 0
    still = await ledger.get_alert(newer.alert_id)                                # ... which claims nothing
    assert (still.status, still.attempts, still.lease_owner) == (AlertStatus.PENDING, 1, "w")


async def test_alerts_of_one_operation_are_claimed_and_listed_in_the_order_they_were_raised(ledger, clock):
    await new_account(ledger)
    await ledger.subscribe(T, "finance", list(AlertKind), actor=ADMIN, key=k())
    await auto_recharge(ledger, amount=10, trigger=100, per_day=1)
    await thresholds(ledger, 50, 20)
    await fund(ledger, 100)
    posting = await use(ledger, 200)                  # recharged, recharge_blocked, low x2, exhausted: one instant
    ids = list(posting.alert_ids)
    assert len(ids) == 5 and sorted(ids) != ids       # the order of the ids is not the order of creation
    raised = [await ledger.get_alert(i) for i in ids]
    assert {a.created_at for a in raised} == {clock.now}

    assert [a.alert_id for a in await ledger.alerts(T)] == ids[::-1]
    assert [a.alert_id for a in await ledger.alerts(T, status=AlertStatus.PENDING)] == ids[::-1]
    first = await ledger.claim_alerts("w", lease=timedelta(minutes=1), limit=2)
    rest = await ledger.claim_alerts("w", lease=timedelta(minutes=1))
    assert [a.alert_id for a in first + rest] == ids


async def test_pending_alerts_skip_a_destination_that_is_disabled_or_unsubscribed(ledger):
    await new_account(ledger)
    for conv in ("chat-a", "chat-b"):
        await ledger.subscribe(T, conv, [AlertKind.FORECAST], actor=ADMIN, key=k())
    alert = await ledger.raise_alert(T, AlertKind.FORECAST, "forecast:low", {})
    [claimed] = await ledger.claim_alerts("w", lease=timedelta(minutes=1))

    await ledger.disable_subscription(T, "chat-a", reason="404 conversation not found")
    now = await ledger.get_alert(alert.alert_id)
    assert now.skipped == ("chat-a",) and now.pending_destinations == ("chat-b",)
    assert now.status is AlertStatus.PENDING and now.lease_owner == "w"

    await ledger.unsubscribe(T, "chat-b", actor=ADMIN, key=k())
    done = await ledger.get_alert(alert.alert_id)
    assert done.status is AlertStatus.DELIVERED and done.lease_owner is None
    assert set(done.skipped) == {"chat-a", "chat-b"} and done.delivered == ()


async def test_alerts_are_listed_newest_first(ledger, clock):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    ids = []
    for n in range(5):
        ids.append((await ledger.raise_alert(T, AlertKind.FORECAST, f"forecast:f{n}", {})).alert_id)
        clock.advance(seconds=n % 2)
    assert ids[1] < ids[0]                 # f0 and f1 have the same created_at and ids in the other order
    await ledger.raise_alert(OTHER, AlertKind.FORECAST, "forecast:f0", {})
    assert [a.alert_id for a in await ledger.alerts(T)] == ids[::-1]
    assert [a.alert_id for a in await ledger.alerts(T, limit=2)] == ids[:2:-1]
    assert len(await ledger.alerts(OTHER)) == 1 and (await ledger.alerts(OTHER))[0].alert_id not in ids


# ==== conversations =============================================================================================

async def test_saved_conversations_are_upserted(ledger, clock):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    ref = ConversationRef("19:abc@thread.v2", T, {"serviceUrl": "https://smba.example/emea/", "n": 1}, clock.now)
    await ledger.save_conversation(ref)
    assert await ledger.conversation(T, "19:abc@thread.v2") == ref
    newer = ConversationRef("19:abc@thread.v2", T, {"serviceUrl": "https://smba.example/amer/", "n": 2},
                            clock.advance(hours=1))
    await ledger.save_conversation(newer)
    await ledger.save_conversation(ConversationRef("a:personal", T, {}, clock.now))
    await ledger.save_conversation(ConversationRef("elsewhere", OTHER, {}, clock.now))
    assert await ledger.conversation(T, "19:abc@thread.v2") == newer
    assert [r.conversation_id for r in await ledger.conversations(T)] == ["19:abc@thread.v2", "a:personal"]
    assert await ledger.conversation(T, "elsewhere") is None
    assert await ledger.conversation(T, "never-saved") is None
    assert [r.conversation_id for r in await ledger.conversations(OTHER)] == ["elsewhere"]
    assert await audit_actions(ledger) == ["account_opened"]    # not audited


async def test_saving_a_conversation_replaces_it_only_when_the_reference_changed(ledger, clock):
    await new_account(ledger)
    ref = ConversationRef("19:abc@thread.v2", T, {"serviceUrl": "https://smba.example/emea/"}, clock.now)
    assert await ledger.save_conversation(ref) is True          # new
    same = ConversationRef("19:abc@thread.v2", T, {"serviceUrl": "https://smba.example/emea/"},
                           clock.advance(minutes=1))
    assert await ledger.save_conversation(same) is False   # the bot saves on every activity: an identical one writes nothing
    assert await ledger.conversation(T, "19:abc@thread.v2") == ref
    moved = ConversationRef("19:abc@thread.v2", T, {"serviceUrl": "https://smba.example/amer/"},
                            clock.advance(minutes=1))
    assert await ledger.save_conversation(moved) is False  # a changed reference replaces the old one, with its time
    assert await ledger.conversation(T, "19:abc@thread.v2") == moved


async def test_of_concurrent_first_saves_of_a_conversation_exactly_one_is_new(ledger, clock):
    """Teams sends installationUpdate and conversationUpdate together: the bot must welcome once."""
    await new_account(ledger)
    refs = [ConversationRef(f"19:conv-{n % 3}@thread.v2", T, {"n": n}, clock.now) for n in range(12)]
    firsts = await asyncio.gather(*(ledger.save_conversation(r) for r in refs))
    assert sorted(r.conversation_id for r, new in zip(refs, firsts) if new) == \
        [f"19:conv-{n}@thread.v2" for n in range(3)]


async def test_a_conversation_needs_an_account(ledger, clock):
    with pytest.raises(AccountNotFound):     # the bot opens the account on first contact, then saves
        await ledger.save_conversation(ConversationRef("19:abc@thread.v2", T, {}, clock.now))
    with pytest.raises(AccountNotFound):
        await ledger.conversation(T, "19:abc@thread.v2")
    with pytest.raises(AccountNotFound):
        await ledger.conversations(T)
    await new_account(ledger)
    assert await ledger.conversations(T) == []          # the refused save left nothing behind
    assert await ledger.conversation(T, "19:abc@thread.v2") is None


# ==== approvals =================================================================================================

async def request(ledger, amount: int, *, tenant: str = T, actor: str = ADMIN, memo: str = "",
                  key: str | None = None):
    return await ledger.request_approval(tenant, amount, actor=actor, key=key or k("req"), memo=memo)


async def decide(ledger, approval_id: str, approve: bool = True, *, tenant: str = T, actor: str = ADMIN2,
                 key: str | None = None):
    return await ledger.decide_approval(tenant, approval_id, approve=approve, actor=actor, key=key or k("dec"))


async def test_a_request_moves_no_money_until_a_second_admin_approves_it(ledger, clock):
    await new_account(ledger)
    asked = await ledger.request_approval(T, 50_000, actor=ADMIN, key="req-1", memo="Q3 top-up")
    assert (asked.approval_id, asked.tenant_id, asked.amount, asked.memo) == \
        (policy.approval_id(T, "req-1"), T, 50_000, "Q3 top-up")
    assert (asked.requested_by, asked.requested_at, asked.status) == (ADMIN, clock.now, ApprovalStatus.PENDING)
    assert (asked.decided_by, asked.decided_at, asked.entry_seq) == ("", None, None)
    assert await balance(ledger) == 0 and await entries(ledger) == [] and await ledger.lots(T) == []
    assert await ledger.get_approval(T, asked.approval_id) == asked

    clock.advance(hours=2)
    decision = await ledger.decide_approval(T, asked.approval_id, approve=True, actor=ADMIN2, key="dec-1")
    assert not decision.replayed and decision.posting is not None and not decision.posting.replayed
    posting = decision.posting
    entry = posting.entry
    assert posting.entries == (entry,) and posting.balance == 50_000 and posting.alert_ids == ()
    assert (entry.seq, entry.kind, entry.amount, entry.balance_after, entry.at) == \
        (1, EntryKind.FUNDS_ADDED, 50_000, 50_000, clock.now)
    assert (entry.actor, entry.key, entry.memo, entry.reference, dict(entry.details)) == \
        (ADMIN2, "dec-1", "Q3 top-up", asked.approval_id, {"requested_by": ADMIN, "approval_id": asked.approval_id})
    assert decision.approval == replace(asked, status=ApprovalStatus.APPROVED, decided_by=ADMIN2,
                                        decided_at=clock.now, entry_seq=1)
    assert await ledger.get_approval(T, asked.approval_id) == decision.approval
    assert await balance(ledger) == 50_000 and await entries(ledger) == [entry]
    [lot] = await ledger.lots(T)
    assert (lot.lot_id, lot.amount, lot.remaining, lot.opened_at) == (1, 50_000, 50_000, clock.now)

    records = (await ledger.audit(T, limit=10)).items
    assert [(r.action, r.actor, r.key, dict(r.details)) for r in records[:2]] == [
        ("approval_decided", ADMIN2, "dec-1", {"approval_id": asked.approval_id, "approve": True, "entry_seq": 1}),
        ("approval_requested", ADMIN, "req-1", {"approval_id": asked.approval_id, "amount": 50_000,
                                                "memo": "Q3 top-up"}),
    ]
    assert await audit_actions(ledger) == ["account_opened", "approval_requested", "approval_decided"]
    assert (await ledger.verify()).ok


async def test_an_approval_raises_and_rearms_alerts_exactly_like_add_funds(ledger):
    """The same story on two accounts, credits by approval on one and by add_funds on the other."""
    for tenant in (T, OTHER):
        await new_account(ledger, tenant)
        await auto_recharge(ledger, amount=1_000, trigger=1_000, cap=1_000, tenant=tenant)
        await thresholds(ledger, 2_000, tenant=tenant)
        await ledger.subscribe(tenant, "conv", list(AlertKind), actor=ADMIN, key=k("sub"))

    async def credit(amount: int):
        asked = await request(ledger, amount)
        by_approval = (await decide(ledger, asked.approval_id)).posting
        by_add_funds = await fund(ledger, amount, tenant=OTHER)
        assert (by_approval.balance, by_approval.alert_ids, by_approval.recharge_blocked) == \
            (by_add_funds.balance, (), None)

    async def debit(amount: int):
        for tenant in (T, OTHER):
            await use(ledger, amount, tenant=tenant)

    await credit(3_000)     # re-arms exhausted and the threshold
    await debit(2_500)      # 500: recharged to 1_500 (the month's cap is used up), below 2_000
    await debit(1_000)      # 500: the recharge is blocked
    await credit(2_000)     # 2_500: back above the trigger and the threshold, both re-armed
    await debit(2_000)      # 500: blocked again, below 2_000 again
    await debit(600)        # -100: exhausted

    kinds = ["recharged", "low_balance", "recharge_blocked", "recharge_blocked", "low_balance", "exhausted"]
    assert await alert_kinds(ledger, T) == await alert_kinds(ledger, OTHER) == kinds
    assert [dict(a.payload) for a in await alerts_oldest_first(ledger, T)] == \
        [dict(a.payload) for a in await alerts_oldest_first(ledger, OTHER)]
    assert [(e.kind, e.amount, e.balance_after) for e in await entries(ledger, T)] == \
        [(e.kind, e.amount, e.balance_after) for e in await entries(ledger, OTHER)]
    assert [(l.lot_id, l.remaining) for l in await ledger.lots(T)] == \
        [(l.lot_id, l.remaining) for l in await ledger.lots(OTHER)]
    assert (await ledger.verify()).ok


async def test_a_rejected_request_adds_nothing(ledger, clock):
    await new_account(ledger)
    asked = await request(ledger, 7_000, memo="too much")
    clock.advance(minutes=3)
    decision = await ledger.decide_approval(T, asked.approval_id, approve=False, actor=ADMIN2, key="no-1")
    assert decision.posting is None and not decision.replayed
    assert decision.approval == replace(asked, status=ApprovalStatus.REJECTED, decided_by=ADMIN2,
                                        decided_at=clock.now, entry_seq=None)
    assert await balance(ledger) == 0 and await entries(ledger) == [] and await ledger.alerts(T) == []
    [record] = (await ledger.audit(T, limit=1)).items
    assert (record.action, record.actor, record.key, dict(record.details)) == \
        ("approval_decided", ADMIN2, "no-1", {"approval_id": asked.approval_id, "approve": False,
                                              "entry_seq": None})


async def test_the_requester_may_not_decide_their_own_request(ledger):
    await new_account(ledger)
    asked = await request(ledger, 1_000, actor=ADMIN)
    before = (await entries(ledger), await audit_actions(ledger), await ledger.approvals(T))
    for approve in (True, False):
        with pytest.raises(SelfApproval) as refused:
            await decide(ledger, asked.approval_id, approve, actor=ADMIN, key="self-1")
        assert refused.value.approval_id == asked.approval_id
    assert (await entries(ledger), await audit_actions(ledger), await ledger.approvals(T)) == before
    decision = await decide(ledger, asked.approval_id, actor=ADMIN2, key="self-1")   # the key stayed free
    assert not decision.replayed and decision.approval.status is ApprovalStatus.APPROVED


async def test_a_decided_approval_stays_decided(ledger):
    await new_account(ledger)
    approved = (await decide(ledger, (await request(ledger, 1_000)).approval_id, True)).approval
    rejected = (await decide(ledger, (await request(ledger, 2_000)).approval_id, False)).approval
    before = (await entries(ledger), await audit_actions(ledger), await ledger.approvals(T))
    for closed in (approved, rejected):
        for approve in (True, False):
            with pytest.raises(ApprovalClosed) as refused:
                await decide(ledger, closed.approval_id, approve, actor=ADMIN3)
            assert refused.value.approval == closed
        with pytest.raises(SelfApproval):          # the requester is refused as such, decided or not
            await decide(ledger, closed.approval_id, actor=ADMIN)
    assert (await entries(ledger), await audit_actions(ledger), await ledger.approvals(T)) == before
    assert await balance(ledger) == 1_000


async def test_approvals_replay_and_conflict_like_money(ledger, clock):
    await new_account(ledger)
    asked = await ledger.request_approval(T, 500, actor=ADMIN, key="req-1", memo="top-up")
    again = await ledger.request_approval(T, 500, actor=ADMIN2, key="req-1", memo="top-up")
    assert again == asked                      # an Approval has no replay flag: the same request, unchanged
    assert [a.approval_id for a in await ledger.approvals(T)] == [asked.approval_id]

    decision = await ledger.decide_approval(T, asked.approval_id, approve=True, actor=ADMIN2, key="dec-1")
    before = (await entries(ledger), await balance(ledger), await audit_actions(ledger), await ledger.approvals(T),
              await ledger.alerts(T))
    clock.advance(minutes=5)
    for actor in (ADMIN2, ADMIN3, ADMIN):      # a replay answers whoever asks, even the requester
        replay = await ledger.decide_approval(T, asked.approval_id, approve=True, actor=actor, key="dec-1")
        assert replay.replayed and replay.posting is not None and replay.posting.replayed
        assert replay.approval == decision.approval and replay.posting.entries == decision.posting.entries
        assert replay.posting.balance == decision.posting.balance == 500
    # the request replays as it was requested (pending), not as it stands now
    assert await ledger.request_approval(T, 500, actor=ADMIN, key="req-1", memo="top-up") == asked
    assert (await entries(ledger), await balance(ledger), await audit_actions(ledger), await ledger.approvals(T),
            await ledger.alerts(T)) == before

    rejected = await ledger.request_approval(T, 700, actor=ADMIN, key="req-2")
    no = await ledger.decide_approval(T, rejected.approval_id, approve=False, actor=ADMIN2, key="dec-2")
    no_again = await ledger.decide_approval(T, rejected.approval_id, approve=False, actor=ADMIN2, key="dec-2")
    assert no_again.replayed and no_again.posting is None and no_again.approval == no.approval

    conflicts = [
        lambda: ledger.request_approval(T, 501, actor=ADMIN, key="req-1", memo="top-up"),
        lambda: ledger.request_approval(T, 500, actor=ADMIN, key="req-1", memo="other"),
        lambda: ledger.request_approval(T, 500, actor=ADMIN, key="dec-1"),
        lambda: ledger.decide_approval(T, asked.approval_id, approve=False, actor=ADMIN2, key="dec-1"),
        lambda: ledger.decide_approval(T, rejected.approval_id, approve=True, actor=ADMIN2, key="dec-1"),
        lambda: ledger.decide_approval(T, asked.approval_id, approve=True, actor=ADMIN2, key="req-1"),
        lambda: ledger.add_funds(T, 500, actor=ADMIN, key="req-1", memo="top-up"),
        lambda: ledger.add_funds(T, 500, actor=ADMIN, key="dec-1"),
    ]
    for call in conflicts:
        with pytest.raises(IdempotencyConflict):
            await call()
    await fund(ledger, 10, key="fund-1")
    with pytest.raises(IdempotencyConflict):
        await ledger.request_approval(T, 10, actor=ADMIN, key="fund-1")
    assert await balance(ledger) == 510 and len(await ledger.approvals(T)) == 2
    assert (await ledger.verify()).ok


@pytest.mark.parametrize("amount, reason", [(0, "zero"), (-5, "negative"), (1.5, "not_a_number"),
                                            (10**16, "too_large")])
async def test_a_request_needs_an_amount_and_records_nothing_otherwise(ledger, amount, reason):
    await new_account(ledger)
    with pytest.raises(InvalidAmount) as refused:
        await ledger.request_approval(T, amount, actor=ADMIN, key="req-1")
    assert refused.value.reason == reason
    assert await ledger.approvals(T) == [] and await audit_actions(ledger) == ["account_opened"]
    assert not (await ledger.add_funds(T, 5, actor=ADMIN, key="req-1")).replayed   # the key stayed free


async def test_deciding_an_unknown_approval_is_not_found(ledger):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    elsewhere = await request(ledger, 100, tenant=OTHER)
    for approval_id in ("no-such-approval", elsewhere.approval_id):   # approvals belong to their account
        with pytest.raises(NotFound) as missing:
            await decide(ledger, approval_id, actor=ADMIN)       # not found comes before the requester check
        assert (missing.value.what, missing.value.ident) == ("approval", approval_id)
        with pytest.raises(NotFound):
            await ledger.get_approval(T, approval_id)
    assert await audit_actions(ledger) == ["account_opened"]


async def test_approve_must_be_a_bool(ledger):
    await new_account(ledger)
    asked = await request(ledger, 100)
    for approve in ("yes", "false", 1, None):
        with pytest.raises(ValueError):
            await ledger.decide_approval(T, asked.approval_id, approve=approve, actor=ADMIN2, key="d-1")
    assert (await ledger.get_approval(T, asked.approval_id)).status is ApprovalStatus.PENDING


async def test_approvals_are_listed_newest_first_by_status(ledger, clock):
    await new_account(ledger)
    first = await request(ledger, 100)
    clock.advance(minutes=1)
    second = await request(ledger, 200)
    third = await request(ledger, 300)               # the same instant: the order of the requests decides
    clock.advance(minutes=1)
    fourth = await request(ledger, 400)
    await decide(ledger, second.approval_id, True)
    await decide(ledger, fourth.approval_id, False)

    def ids(approvals):
        return [a.approval_id for a in approvals]
    assert ids(await ledger.approvals(T)) == ids([fourth, third, second, first])
    assert ids(await ledger.approvals(T, status=ApprovalStatus.PENDING)) == ids([third, first])
    assert ids(await ledger.approvals(T, status=ApprovalStatus.APPROVED)) == [second.approval_id]
    assert ids(await ledger.approvals(T, status=ApprovalStatus.REJECTED)) == [fourth.approval_id]
    assert [a.status for a in await ledger.approvals(T)] == [ApprovalStatus.REJECTED, ApprovalStatus.PENDING,
                                                             ApprovalStatus.APPROVED, ApprovalStatus.PENDING]
    await new_account(ledger, OTHER)
    assert await ledger.approvals(OTHER) == []


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "reference"])
async def test_approvals_survive_reopening_the_store(backend, tmp_path, clock):
    store = await open_backend(backend, tmp_path, clock)
    try:
        await new_account(store)
        approved = await request(store, 1_000, memo="first")
        pending = await request(store, 2_000, memo="second")
        rejected = await request(store, 3_000)
        decision = await decide(store, approved.approval_id, True, key="dec-1")
        await decide(store, rejected.approval_id, False)
        listed = await store.approvals(T)
    finally:
        await store.close()

    store = await open_backend(backend, tmp_path, clock)
    try:
        assert await store.approvals(T) == listed
        assert await store.get_approval(T, pending.approval_id) == pending
        replay = await decide(store, approved.approval_id, True, key="dec-1")
        assert replay.replayed and replay.approval == decision.approval
        assert replay.posting.entries == decision.posting.entries
        with pytest.raises(ApprovalClosed):
            await decide(store, approved.approval_id, True)
        clock.advance(hours=1)
        late = await decide(store, pending.approval_id, True, actor=ADMIN3)
        assert late.posting.balance == 3_000 and late.approval.entry_seq == 2
        listed = await store.approvals(T)
    finally:
        await store.close()

    store = await open_backend(backend, tmp_path, clock)
    try:
        assert await store.approvals(T) == listed
        assert [a.status for a in listed] == [ApprovalStatus.REJECTED, ApprovalStatus.APPROVED,
                                              ApprovalStatus.APPROVED]
        assert await balance(store) == 3_000 and (await store.verify()).ok
    finally:
        await store.close()


# ==== roles and audit ===========================================================================================

async def test_roles_are_granted_replaced_and_revoked(ledger, clock):
    await new_account(ledger)
    grant = await ledger.grant_role(T, "user-b", Role.READER, actor=ADMIN, key="g-1", display_name="Bea")
    assert grant.value == {"user_id": "user-b", "role": "reader", "granted_by": ADMIN,
                           "granted_at": clock.now.isoformat(), "display_name": "Bea"}
    await ledger.grant_role(T, "user-a", Role.ADMIN, actor=ADMIN, key="g-2")
    await ledger.grant_role(T, "user-b", Role.ADMIN, actor=ADMIN2, key="g-3")
    roles = await ledger.roles(T)
    assert [(r.user_id, r.role, r.granted_by) for r in roles] == [("user-a", Role.ADMIN, ADMIN),
                                                                  ("user-b", Role.ADMIN, ADMIN2)]
    assert (await ledger.grant_role(T, "user-b", Role.READER, actor=ADMIN, key="g-1", display_name="Bea")).replayed
    assert (await ledger.roles(T))[1].role is Role.ADMIN     # the replay changed nothing

    revoked = await ledger.revoke_role(T, "user-b", actor=ADMIN, key="r-1")
    assert revoked.value == {"user_id": "user-b", "role": "admin"}
    with pytest.raises(NotFound):
        await ledger.revoke_role(T, "user-b", actor=ADMIN, key="r-2")
    with pytest.raises(InvalidSettings):
        await ledger.grant_role(T, "user-c", "owner", actor=ADMIN, key="g-4")
    assert [r.user_id for r in await ledger.roles(T)] == ["user-a"]


async def test_every_change_is_audited_with_its_actor(ledger, clock):
    await new_account(ledger)
    await ledger.add_funds(T, 100, actor=ADMIN, key="f-1")
    await ledger.adjust(T, -10, actor=ADMIN2, key="a-1")
    await ledger.record_usage(T, row("u-1", 5))
    await ledger.set_recharge_settings(T, RechargeSettings(True, 50, 20), actor=ADMIN, key="s-1")
    await ledger.set_alert_settings(T, AlertSettings((30, 60)), actor=ADMIN2, key="s-2")
    await ledger.grant_role(T, "u", Role.READER, actor=ADMIN, key="g-1")
    await ledger.revoke_role(T, "u", actor=ADMIN2, key="g-2")
    await ledger.subscribe(T, "c", [AlertKind.EXHAUSTED], actor=ADMIN, key="sub")
    await ledger.unsubscribe(T, "c", actor=ADMIN, key="unsub")
    with pytest.raises(InsufficientFunds):                    # a refused change is not audited
        await ledger.adjust(T, -1000, actor=ADMIN, key="a-2")

    records = list(reversed((await ledger.audit(T, limit=100)).items))
    assert [(r.seq, r.action, r.actor, r.key) for r in records] == [
        (1, "account_opened", ADMIN, ""),
        (2, "funds_added", ADMIN, "f-1"),
        (3, "adjustment", ADMIN2, "a-1"),
        (4, "usage", "system", "u-1"),
        (5, "recharge_settings", ADMIN, "s-1"),
        (6, "alert_settings", ADMIN2, "s-2"),
        (7, "grant_role", ADMIN, "g-1"),
        (8, "revoke_role", ADMIN2, "g-2"),
        (9, "subscribe", ADMIN, "sub"),
        (10, "unsubscribe", ADMIN, "unsub"),
    ]
    assert all(r.tenant_id == T and r.at == clock.now for r in records)
    assert dict(records[1].details) == {"amount": 100, "entry_seq": 1, "recharge_seqs": []}
    assert dict(records[2].details) == {"amount": -10, "entry_seq": 2, "recharge_seqs": []}
    assert dict(records[3].details) == {"amount": -5, "entry_seq": 3, "recharge_seqs": []}
    assert dict(records[4].details) == RechargeSettings(True, 50, 20).to_dict()
    assert dict(records[5].details) == {"thresholds": [60, 30], "forecast_days": 7}
    assert dict(records[6].details) == {"user_id": "u", "role": "reader", "display_name": ""}
    assert dict(records[7].details) == {"user_id": "u", "role": "reader"}
    assert dict(records[8].details) == {"conversation_id": "c", "kinds": ["exhausted"]}
    assert dict(records[9].details) == {"conversation_id": "c"}


async def test_audit_pages_like_history(ledger):
    await new_account(ledger)
    for _ in range(6):
        await fund(ledger, 1)
    first = await ledger.audit(T, limit=4)
    assert [r.seq for r in first] == [7, 6, 5, 4] and first.older == 4
    second = await ledger.audit(T, limit=4, before=first.older)
    assert [r.seq for r in second] == [3, 2, 1] and second.older is None


# ==== reading ===================================================================================================

async def test_history_pages_newest_first(ledger):
    await new_account(ledger)
    for n in range(25):
        await fund(ledger, n + 1)
    pages, before = [], None
    while True:
        page = await ledger.history(T, limit=10, before=before)
        pages.append([e.seq for e in page])
        if page.older is None:
            break
        before = page.older
    assert pages == [list(range(25, 15, -1)), list(range(15, 5, -1)), list(range(5, 0, -1))]
    assert (await ledger.history(T, limit=5, before=6)).older is None     # ends exactly at seq 1
    assert len(await ledger.history(T)) == 10                              # default limit


async def test_history_of_a_new_account_is_empty(ledger):
    await new_account(ledger)
    page = await ledger.history(T)
    assert page.items == () and page.older is None


async def test_entries_since_is_oldest_first_and_inclusive(ledger, clock):
    await new_account(ledger)
    await fund(ledger, 1)
    clock.advance(days=1)
    start = clock.now
    await fund(ledger, 2)
    await use(ledger, 1)
    clock.advance(days=1)
    await fund(ledger, 3)
    assert [e.amount for e in await ledger.entries_since(T, start)] == [2, -1, 3]
    assert await ledger.entries_since(T, clock.now + timedelta(seconds=1)) == []


async def test_verify_finds_nothing_wrong_after_a_busy_day(ledger, clock):
    await new_account(ledger)
    await new_account(ledger, OTHER, "JPY")
    await auto_recharge(ledger, amount=50, trigger=100, cap=200, per_day=3)
    await thresholds(ledger, 75)
    await fund(ledger, 120)
    for n in range(8):
        await use(ledger, 40 + n)
        clock.advance(hours=5)
    await ledger.adjust(T, 10, actor=ADMIN, key=k())
    await fund(ledger, 5000, tenant=OTHER)
    await ledger.record_usage(OTHER, row(k(), 7000, currency="JPY"))
    clock.advance(days=370)
    await ledger.expire_lots()
    report = await ledger.verify()
    assert report.ok, report.problems
    assert report.accounts == 2
    assert report.entries == len(await entries(ledger)) + len(await entries(ledger, OTHER))
    assert (await ledger.verify(T)).ok and (await ledger.verify(T)).accounts == 1
    assert sum(e.amount for e in await entries(ledger)) == await balance(ledger)


async def test_ping_and_close(ledger):
    await ledger.ping()
    await ledger.close()
    await ledger.close()   # idempotent (the fixture closes once more)


# --- usage sync watermarks ------------------------------------------------------------------------------------

async def test_a_sync_watermark_only_moves_forward_per_source_and_account(ledger):
    await new_account(ledger)
    await new_account(ledger, OTHER)
    audited = (await ledger.audit(T, limit=100)).items
    assert await ledger.sync_watermark(T, "graph") is None
    first = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    assert await ledger.set_sync_watermark(T, "graph", first) == first
    assert await ledger.set_sync_watermark(T, "graph", first - timedelta(days=1)) == first   # never backwards
    later = first + timedelta(hours=6)
    local = later.astimezone(timezone(timedelta(hours=1)))
    assert await ledger.set_sync_watermark(T, "graph", local) == later                       # stored in UTC
    assert (await ledger.sync_watermark(T, "graph")).utcoffset() == timedelta(0)
    assert await ledger.sync_watermark(T, "csv") is None
    assert await ledger.sync_watermark(OTHER, "graph") is None
    with pytest.raises(ValueError):
        await ledger.set_sync_watermark(T, "graph", datetime(2026, 11, 21))
    with pytest.raises(AccountNotFound):
        await ledger.sync_watermark("nobody", "graph")
    with pytest.raises(AccountNotFound):
        await ledger.set_sync_watermark("nobody", "graph", first)
    assert (await ledger.audit(T, limit=100)).items == audited   # not audited: moves no money, no user's change


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "reference"])
async def test_sync_watermarks_survive_reopening_the_store(backend, tmp_path, clock):
    until = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    store = await open_backend(backend, tmp_path, clock)
    try:
        await new_account(store)
        await store.set_sync_watermark(T, "graph", until)
    finally:
        await store.close()
    store = await open_backend(backend, tmp_path, clock)
    try:
        assert await store.sync_watermark(T, "graph") == until
        assert (await store.verify()).ok
    finally:
        await store.close()


# --- scheduled jobs: one leader per store ------------------------------------------------------------------------

async def test_a_single_process_store_always_leads(ledger):
    async with ledger.leading("daily-jobs") as first:
        async with ledger.leading("daily-jobs") as again:
            assert first is True and (again is True or ledger.__class__.__name__ == "PostgresLedger")


async def test_postgres_lets_one_of_two_processes_lead_a_job_at_a_time(tmp_path, clock):
    from storage.postgres_store import PostgresLedger
    one = await open_backend("postgres", tmp_path, clock)
    other = await PostgresLedger.open(postgres_dsn(tmp_path), clock=clock)
    try:
        async with one.leading("usage-sync") as first:
            async with other.leading("usage-sync") as second, other.leading("daily-jobs") as third:
                assert (first, second, third) == (True, False, True)
        async with other.leading("usage-sync") as after:
            assert after is True                           # released when the leader's block ended
    finally:
        await other.close()
        await one.close()


async def test_postgres_itself_refuses_a_journal_that_does_not_add_up(tmp_path, clock):
    """The invariants hold in the database, not only in our code: a wrong running balance, a changed entry and a
    balance that is not the journal's are refused at commit."""
    import asyncpg

    store = await open_backend("postgres", tmp_path, clock)
    try:
        await new_account(store)
        await fund(store, 1_000)
        await use(store, 300)
    finally:
        await store.close()
    con = await asyncpg.connect(postgres_dsn(tmp_path))
    try:
        attempts = [
            "INSERT INTO entries (tenant_id, seq, kind, amount, balance_after, actor, key, at) "
            f"VALUES ('{T}', 3, 'usage', -100, 999, 'x', 'bad-1', now())",        # 700 - 100 is not 999
            f"UPDATE entries SET amount = -1 WHERE tenant_id = '{T}' AND seq = 2",
            f"DELETE FROM entries WHERE tenant_id = '{T}' AND seq = 2",
            f"UPDATE accounts SET balance = 5000, state = jsonb_set(state, '{{balance}}', '5000') "
            f"WHERE tenant_id = '{T}'",
        ]
        for statement in attempts:
            with pytest.raises(asyncpg.CheckViolationError):
                async with con.transaction():
                    await con.execute(statement)
        assert await con.fetchval("SELECT balance FROM accounts WHERE tenant_id = $1", T) == 700
    finally:
        await con.close()


# --- account_view: one call for what a chat turn reads --------------------------------------------------------

async def _composed_view(ledger, tenant: str = T, **kw):
    """The meaning of `account_view`: the contract's default, composed from the single reads."""
    from storage.ledger import Ledger
    return await Ledger.account_view(ledger, tenant, **kw)


async def test_account_view_matches_the_single_reads(ledger, clock):
    await new_account(ledger)
    empty = await ledger.account_view(T)
    assert empty == await _composed_view(ledger)
    assert (empty.account.balance, empty.roles, empty.expiring, empty.last_recharge, empty.window_usage) == \
        (0, (), (), None, 0)
    await ledger.grant_role(T, ADMIN, Role.ADMIN, actor=ADMIN, key=k("grant"), display_name="Ada")
    await thresholds(ledger, 5_00, 2_00)
    await fund(ledger, 100_00)                     # this lot expires first
    clock.advance(timedelta(days=40))
    await auto_recharge(ledger, 20_00, 80_00)     # the calls below take the balance under 80: one recharge
    await fund(ledger, 3_00)
    # calls that happened inside, at the edges of and outside the 30-day window; one recorded long after
    now = clock.now
    for i, (days_ago, amount) in enumerate([(0, 1_00), (29, 2_00), (30, 4_00), (31, 8_00), (45, 16_00)]):
        occurred = now - timedelta(days=days_ago)
        await ledger.record_usage(T, UsageRecord(f"w-{i}", amount, "USD", occurred, {"call_type": "out"}))
    view = await ledger.account_view(T)
    assert view == await _composed_view(ledger)
    assert view.window_usage == 1_00 + 2_00 + 4_00          # both ends of [now - 30 days, now] count
    assert view.last_recharge is not None and view.last_recharge.kind is EntryKind.AUTO_RECHARGE
    assert view.recharge.enabled and view.alert_settings.thresholds == (5_00, 2_00)
    assert [g.user_id for g in view.roles] == [ADMIN]
    assert view.expiring == ()                                # nothing expires within 30 days yet
    # eleven and a half months on: the first lots are within the notice, the newer ones not
    clock.advance(timedelta(days=320))
    later = await ledger.account_view(T)
    assert later == await _composed_view(ledger)
    assert later.expiring and all(lot.expires_at <= clock.now + timedelta(days=30) for lot in later.expiring)
    assert len(later.expiring) < len(await ledger.lots(T))
    assert later.window_usage == 0                            # no call in the last 30 days
    wide = await ledger.account_view(T, expiring_within=timedelta(days=400), burn_window=timedelta(days=400))
    assert wide == await _composed_view(ledger, expiring_within=timedelta(days=400), burn_window=timedelta(days=400))
    assert list(wide.expiring) == await ledger.lots(T)
    at = clock.now - timedelta(days=330)
    assert await ledger.account_view(T, now=at) == await _composed_view(ledger, now=at)


async def test_account_view_of_an_unknown_tenant_is_not_found(ledger):
    with pytest.raises(AccountNotFound):
        await ledger.account_view("ghost")
