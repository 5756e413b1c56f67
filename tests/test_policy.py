"""Table tests of the pure rules in storage/policy.py (no ledger, no clock)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import policy
from storage.errors import InvalidSettings
from storage.model import AlertKind, AlertSettings, Lot, RechargeSettings, Role, UsageRecord, last_usable_day
from storage.policy import Blocked, Capability


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# --- time -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("moment, months, expected", [
    (utc(2026, 1, 15, 9, 30), 0, utc(2026, 1, 15, 9, 30)),
    (utc(2026, 1, 15, 9, 30), 1, utc(2026, 2, 15, 9, 30)),
    (utc(2026, 1, 31), 1, utc(2026, 2, 28)),                  # no Feb 31: the last day of February
    (utc(2028, 1, 31), 1, utc(2028, 2, 29)),                  # a leap year has Feb 29
    (utc(2028, 2, 29, 10), 12, utc(2029, 2, 28, 10)),         # a credit on a leap day expires Feb 28
    (utc(2028, 2, 29), 48, utc(2032, 2, 29)),                 # ... or Feb 29 four years on
    (utc(2026, 5, 31), 1, utc(2026, 6, 30)),
    (utc(2026, 8, 31, 23, 59, 59), 12, utc(2027, 8, 31, 23, 59, 59)),
    (utc(2026, 12, 15), 1, utc(2027, 1, 15)),                 # over the year end
    (utc(2026, 11, 30), 3, utc(2027, 2, 28)),
    (utc(2026, 3, 31), -1, utc(2026, 2, 28)),                 # backwards too
    (utc(2026, 1, 10), -1, utc(2025, 12, 10)),
    (utc(2026, 1, 10), 25, utc(2028, 2, 10)),
])
def test_add_months(moment, months, expected):
    assert policy.add_months(moment, months) == expected


def test_add_months_keeps_time_zone_and_microseconds():
    moment = datetime(2026, 1, 31, 8, 7, 6, 5, tzinfo=timezone.utc)
    assert policy.add_months(moment, 1) == datetime(2026, 2, 28, 8, 7, 6, 5, tzinfo=timezone.utc)
    assert policy.add_months(moment, 1).tzinfo is timezone.utc


def test_a_lot_lives_twelve_months():
    assert policy.LOT_LIFETIME_MONTHS == 12
    assert policy.lot_expiry(utc(2026, 1, 15, 9)) == utc(2027, 1, 16)
    assert policy.lot_expiry(utc(2028, 2, 29, 9)) == utc(2029, 3, 1)


@pytest.mark.parametrize("opened_at, expires_at", [     # ADR 0008: at the end of the UTC day 12 months on
    (utc(2026, 1, 15, 0, 0, 0), utc(2027, 1, 16)),
    (utc(2026, 1, 15, 9, 30), utc(2027, 1, 16)),
    (datetime(2026, 1, 15, 23, 59, 59, 999_999, tzinfo=timezone.utc), utc(2027, 1, 16)),
    (utc(2026, 1, 16, 0, 0, 0), utc(2027, 1, 17)),                     # the next UTC day: the next expiry
    (utc(2026, 12, 31, 12), utc(2028, 1, 1)),                          # over the year end
    (utc(2027, 1, 31, 12), utc(2028, 2, 1)),
    (utc(2028, 2, 28, 12), utc(2029, 3, 1)),
    (utc(2028, 2, 29, 12), utc(2029, 3, 1)),                           # leap day: usable through Feb 28
    (utc(2027, 2, 28, 12), utc(2028, 2, 29)),                          # ... and into a leap year
    (datetime(2026, 1, 16, 1, 0, tzinfo=timezone(timedelta(hours=2))), utc(2027, 1, 16)),   # Jan 15, 23:00 UTC
    (datetime(2026, 1, 15, 20, 0, tzinfo=timezone(timedelta(hours=-5))), utc(2027, 1, 17)),  # Jan 16, 01:00 UTC
])
def test_lot_expiry_is_the_end_of_the_utc_day_twelve_months_on(opened_at, expires_at):
    expiry = policy.lot_expiry(opened_at)
    assert expiry == expires_at and expiry.tzinfo is timezone.utc


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 12, 31),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-11)),
                                               timezone(timedelta(hours=13, minutes=45))])))
@settings(max_examples=300)
def test_lot_expiry_is_never_before_twelve_months_and_at_most_a_day_later(opened_at):
    exact = policy.legacy_lot_expiry(opened_at.astimezone(timezone.utc))   # 12 months on, in UTC
    expiry = policy.lot_expiry(opened_at)
    assert exact <= expiry <= exact + timedelta(days=1)
    assert (expiry.hour, expiry.minute, expiry.second, expiry.microsecond) == (0, 0, 0, 0)
    assert expiry.tzinfo is timezone.utc
    midnight = datetime.combine(policy.utc_day(opened_at), datetime.min.time(), timezone.utc)
    assert policy.lot_expiry(midnight) == expiry == policy.lot_expiry(midnight + timedelta(days=1, microseconds=-1))


def test_the_legacy_expiry_is_to_the_microsecond():
    moment = datetime(2026, 1, 15, 9, 30, 15, 123, tzinfo=timezone.utc)
    assert policy.legacy_lot_expiry(moment) == datetime(2027, 1, 15, 9, 30, 15, 123, tzinfo=timezone.utc)
    assert policy.legacy_lot_expiry(utc(2028, 2, 29, 9)) == utc(2029, 2, 28, 9)


@pytest.mark.parametrize("expires_at, day", [
    (utc(2027, 1, 16), date(2027, 1, 15)),                 # the day rule: usable through the day before
    (utc(2027, 1, 15, 9), date(2027, 1, 15)),              # a lot of the old rule: usable until 09:00 that day
    (datetime(2027, 1, 15, 0, 0, 0, 1, tzinfo=timezone.utc), date(2027, 1, 15)),
    (utc(2029, 3, 1), date(2029, 2, 28)),
    (datetime(2027, 1, 16, 1, 0, tzinfo=timezone(timedelta(hours=1))), date(2027, 1, 15)),   # 00:00 UTC
])
def test_the_last_day_is_the_day_of_the_last_usable_moment(expires_at, day):
    assert last_usable_day(expires_at) == day
    assert Lot(1, utc(2026, 1, 15), expires_at, 10, 10).last_day == day


@pytest.mark.parametrize("moment, key", [
    (utc(2026, 1, 1), "2026-01"),
    (utc(2026, 1, 31, 23, 59, 59), "2026-01"),
    (utc(2026, 12, 31), "2026-12"),
    (utc(999, 3, 1), "0999-03"),
    (datetime(2026, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), "2026-01"),      # Jan 31, 23:00 UTC
    (datetime(2026, 1, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-02"),   # Feb 1, 01:00 UTC
    (datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))), "2027-01"), # over the year end
    (datetime(2026, 3, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))), "2026-02"),
])
def test_month_key(moment, key):
    assert policy.month_key(moment) == key


def test_month_key_counts_in_utc_whatever_the_offset():
    one_am_in_cest = datetime(2026, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))   # Jan 31, 23:00 UTC
    assert policy.month_key(one_am_in_cest) == "2026-01"
    assert policy.month_key(one_am_in_cest) == policy.month_key(one_am_in_cest.astimezone(timezone.utc))


# --- lots -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, deficit, remaining, deficit_after", [
    (100, 0, 100, 0),
    (100, 30, 70, 0),            # a credit pays the deficit first
    (100, 100, 0, 0),
    (100, 150, 0, 50),
])
def test_open_lot_pays_the_deficit_first(amount, deficit, remaining, deficit_after):
    lot, left = policy.open_lot(7, amount, utc(2026, 1, 15, 9), deficit)
    assert (lot.lot_id, lot.amount, lot.remaining, left) == (7, amount, remaining, deficit_after)
    assert (lot.opened_at, lot.expires_at) == (utc(2026, 1, 15, 9), utc(2027, 1, 16))
    legacy, _ = policy.open_lot(7, amount, utc(2026, 1, 15, 9), deficit, by_day=False)
    assert legacy == Lot(7, utc(2026, 1, 15, 9), utc(2027, 1, 15, 9), amount, remaining)


def day_lot(lot_id: int, opened_at: datetime, amount: int, remaining: int | None = None) -> Lot:
    return Lot(lot_id, opened_at, policy.lot_expiry(opened_at), amount, amount if remaining is None else remaining)


def test_a_credit_of_the_newest_lots_day_is_added_to_it():
    lots = [day_lot(1, utc(2026, 1, 14, 9), 100), day_lot(2, utc(2026, 1, 15, 9), 50, 20)]
    after = policy.add_lot(lots, day_lot(5, utc(2026, 1, 15, 23, 59, 59), 30))
    assert after == [lots[0], Lot(2, utc(2026, 1, 15, 9), utc(2027, 1, 16), 80, 50)]
    assert [l.lot_id for l in lots] == [1, 2] and lots[1].amount == 50     # the input is left alone


def test_a_credit_of_another_day_opens_a_lot():
    lots = [day_lot(2, utc(2026, 1, 15, 9), 50)]
    new = day_lot(5, utc(2026, 1, 16, 0, 0, 0), 30)                         # one second after 23:59:59
    assert policy.add_lot(lots, new) == [lots[0], new]
    assert policy.add_lot([], new) == [new]


def test_only_the_newest_lot_takes_a_credit():
    """The newest lot is the last in FIFO order (opening time, then id), wherever it is in the list; an older
    lot of the same expiry (possible only with a clock that went back) is never merged into."""
    older = day_lot(1, utc(2026, 1, 15, 1), 10)
    newest = day_lot(3, utc(2026, 1, 16, 1), 10)
    assert policy.add_lot([newest, older], day_lot(4, utc(2026, 1, 16, 5), 5)) == \
        [replace(newest, amount=15, remaining=15), older]
    assert policy.add_lot([older, newest], day_lot(5, utc(2026, 1, 15, 5), 5))[-1].lot_id == 5


def test_a_lot_of_the_old_rule_does_not_merge_with_a_new_one():
    old = Lot(1, utc(2026, 1, 15, 9), utc(2027, 1, 15, 9), 100, 100)         # to the second, by older code
    new = day_lot(2, utc(2026, 1, 15, 10), 30)
    assert policy.add_lot([old], new) == [old, new]


def test_a_lot_that_went_to_a_deficit_is_not_added():
    lots = [day_lot(2, utc(2026, 1, 15, 9), 50)]
    assert policy.add_lot(lots, day_lot(5, utc(2026, 1, 15, 10), 30, 0)) == lots


@pytest.mark.parametrize("by_day", [True, False])
def test_credit_lots_pays_the_deficit_then_merges_by_the_rule_in_force(by_day):
    at = utc(2026, 1, 15, 9)
    lots, deficit = policy.credit_lots([], 1, 100, at, 30, by_day=by_day)
    assert deficit == 0 and [(l.lot_id, l.amount, l.remaining) for l in lots] == [(1, 100, 70)]
    lots, deficit = policy.credit_lots(lots, 2, 40, at, deficit, by_day=by_day)
    expected = [(1, 140, 110)] if by_day else [(1, 100, 70), (2, 40, 40)]   # the old rule never merged
    assert deficit == 0 and [(l.lot_id, l.amount, l.remaining) for l in lots] == expected
    assert policy.credit_lots([], 3, 20, at, 50, by_day=by_day) == ([], 30)     # all of it pays the deficit


def lot(lot_id: int, day: int, remaining: int) -> Lot:
    return Lot(lot_id, utc(2026, 1, day), utc(2027, 1, day), 100, remaining)


@pytest.mark.parametrize("lots, amount, left, shortfall", [
    ([lot(1, 1, 100), lot(2, 2, 100)], 0, [(1, 100), (2, 100)], 0),
    ([lot(1, 1, 100), lot(2, 2, 100)], 30, [(1, 70), (2, 100)], 0),
    ([lot(1, 1, 100), lot(2, 2, 100)], 100, [(2, 100)], 0),              # an emptied lot is dropped
    ([lot(1, 1, 100), lot(2, 2, 100)], 150, [(2, 50)], 0),
    ([lot(1, 1, 100), lot(2, 2, 100)], 200, [], 0),
    ([lot(1, 1, 100), lot(2, 2, 100)], 250, [], 50),                    # what the lots cannot cover
    ([lot(2, 2, 100), lot(1, 1, 100)], 30, [(1, 70), (2, 100)], 0),      # oldest by time, not by list order
    ([lot(5, 1, 100), lot(3, 1, 100)], 30, [(3, 70), (5, 100)], 0),      # same time: lower id first
    ([lot(9, 3, 100), lot(4, 1, 0)], 10, [(9, 90)], 0),                  # an empty lot takes nothing
    ([], 10, [], 10),
])
def test_consume_fifo(lots, amount, left, shortfall):
    kept, short = policy.consume_fifo(lots, amount)
    assert [(l.lot_id, l.remaining) for l in kept] == left
    assert short == shortfall
    assert all(l.amount == 100 for l in kept)   # the original amount stays on the lot


# --- auto-recharge ----------------------------------------------------------------------------------------------

NOW = utc(2026, 1, 15, 12)
ON = RechargeSettings(enabled=True, amount=50, trigger=100, monthly_cap=200, max_per_day=3)


@pytest.mark.parametrize("settings, this_month, recent, expected", [
    (ON, 0, [], None),
    (ON, 150, [], None),                                          # 150 + 50 == cap: still fits
    (ON, 151, [], Blocked.MONTHLY_CAP),
    (ON, 200, [], Blocked.MONTHLY_CAP),
    (RechargeSettings(True, 50, 100, None, 3), 10**12, [], None),  # no cap
    (ON, 0, [NOW - timedelta(hours=1)] * 2, None),
    (ON, 0, [NOW - timedelta(hours=1)] * 3, Blocked.BREAKER),
    (ON, 0, [NOW] * 3, Blocked.BREAKER),                          # recharges of this very moment count
    (ON, 0, [NOW - timedelta(hours=23, minutes=59)] * 3, Blocked.BREAKER),
    (ON, 0, [NOW - timedelta(hours=24)] * 3, None),               # exactly 24 h ago no longer counts
    (ON, 0, [NOW - timedelta(days=3)] * 10, None),
    (ON, 190, [NOW] * 3, Blocked.MONTHLY_CAP),                    # both: the cap is named
    (RechargeSettings(True, 50, 100, None, 1), 0, [NOW - timedelta(hours=2)], Blocked.BREAKER),
])
def test_recharge_block(settings, this_month, recent, expected):
    assert policy.recharge_block(settings, this_month, recent, NOW) == expected


@pytest.mark.parametrize("settings, balance, expected", [
    (ON, 99, True),
    (ON, 100, False),             # at the trigger is enough
    (ON, -500, True),
    (RechargeSettings(False, 50, 100), 0, False),
    (RechargeSettings(True, 0, 100), 0, False),
    (RechargeSettings(True, 50, 0), 0, False),
    (RechargeSettings(True, 50, 0), -1, True),
])
def test_needs_recharge(settings, balance, expected):
    assert policy.needs_recharge(settings, balance) is expected


@pytest.mark.parametrize("settings", [
    RechargeSettings(),
    RechargeSettings(False, 0, 0, None, 3),
    RechargeSettings(False, 0, 0, 0, 3),                       # off: the cap is not checked against the amount
    RechargeSettings(True, 1, 0, None, 1),
    RechargeSettings(True, 50, 100, 50, 3),                    # a cap of exactly one recharge
    RechargeSettings(True, 10**15, 10**15, 10**15, 100),
    RechargeSettings(True, 1, 0, None, policy.MAX_RECHARGES_PER_DAY),   # the breaker's ceiling itself
])
def test_validate_recharge_accepts(settings):
    assert policy.validate_recharge(settings) is settings


@pytest.mark.parametrize("settings, reason", [
    (RechargeSettings(1, 50, 100), "enabled_not_bool"),
    (RechargeSettings(0, 50, 100), "enabled_not_bool"),
    (RechargeSettings("yes", 50, 100), "enabled_not_bool"),
    (RechargeSettings(None, 50, 100), "enabled_not_bool"),
    (RechargeSettings(1, 1.5, 100), "enabled_not_bool"),                # checked first
    (RechargeSettings(True, 1.5, 100), "amount_not_integer"),
    (RechargeSettings(True, True, 100), "amount_not_integer"),
    (RechargeSettings(True, 50, "100"), "trigger_not_integer"),
    (RechargeSettings(True, 50, 100, max_per_day=2.0), "max_per_day_not_integer"),
    (RechargeSettings(True, 50, 100, monthly_cap=500.0), "monthly_cap_not_integer"),
    (RechargeSettings(True, 50, 100, monthly_cap=True), "monthly_cap_not_integer"),
    (RechargeSettings(True, -50, 100), "negative"),
    (RechargeSettings(False, 50, -1), "negative"),
    (RechargeSettings(True, 10**15 + 1, 100), "too_large"),
    (RechargeSettings(True, 50, 100, monthly_cap=10**15 + 1), "too_large"),
    (RechargeSettings(True, 50, 100, max_per_day=0), "breaker_below_one"),
    (RechargeSettings(False, 0, 0, max_per_day=0), "breaker_below_one"),
    (RechargeSettings(True, 50, 100, max_per_day=101), "breaker_too_high"),
    (RechargeSettings(False, 50, 100, max_per_day=10**6), "breaker_too_high"),   # even when off
    (RechargeSettings(True, 0, 100), "amount_zero"),
    (RechargeSettings(True, 50, 100, monthly_cap=49), "cap_below_amount"),
    (RechargeSettings(True, 50, 100, monthly_cap=0), "cap_below_amount"),
])
def test_validate_recharge_refuses(settings, reason):
    with pytest.raises(InvalidSettings) as error:
        policy.validate_recharge(settings)
    assert error.value.reason == reason


def test_the_breaker_ceiling_is_one_hundred():
    assert policy.MAX_RECHARGES_PER_DAY == 100


# --- alerts -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, thresholds", [
    ((), ()),
    ((100,), (100,)),
    ((50, 100, 20), (100, 50, 20)),                           # sorted, highest first
    ((50, 100, 50, 100), (100, 50)),                          # duplicates once
    (tuple(range(1, 11)), tuple(range(10, 0, -1))),           # ten is the most
    (tuple(range(1, 11)) + (5, 5), tuple(range(10, 0, -1))),  # ... counted without duplicates
    ((10**15,), (10**15,)),
])
def test_validate_alerts_accepts(given, thresholds):
    assert policy.validate_alerts(AlertSettings(given, 7)) == AlertSettings(thresholds, 7)


@pytest.mark.parametrize("settings, reason", [
    (AlertSettings((0,)), "threshold_not_positive"),
    (AlertSettings((100, -1)), "threshold_not_positive"),
    (AlertSettings((1.5,)), "threshold_not_integer"),
    (AlertSettings((True,)), "threshold_not_integer"),
    (AlertSettings(("100",)), "threshold_not_integer"),
    (AlertSettings((10**15 + 1,)), "too_large"),
    (AlertSettings(tuple(range(1, 12))), "too_many_thresholds"),
    (AlertSettings((), 0), "forecast_days"),
    (AlertSettings((), 366), "forecast_days"),
    (AlertSettings((), True), "forecast_days"),
    (AlertSettings((), 7.0), "forecast_days"),
])
def test_validate_alerts_refuses(settings, reason):
    with pytest.raises(InvalidSettings) as error:
        policy.validate_alerts(settings)
    assert error.value.reason == reason


@pytest.mark.parametrize("days", [1, 7, 365])
def test_forecast_days_range(days):
    assert policy.validate_alerts(AlertSettings((), days)).forecast_days == days


@pytest.mark.parametrize("armed, in_alarm, fire, armed_after", [
    (True, True, True, False),      # the crossing: fire once, disarm
    (False, True, False, False),    # still in alarm: silence
    (False, False, False, True),    # good again: re-arm
    (True, False, False, True),     # good and armed: nothing to say
])
def test_edge(armed, in_alarm, fire, armed_after):
    assert policy.edge(armed, in_alarm) == (fire, armed_after)


def test_edge_over_a_hovering_series_fires_once_per_crossing():
    armed, fired = True, []
    for balance in [150, 90, 95, 90, 99, 100, 99, 50, 200, 10]:
        fire, armed = policy.edge(armed, balance < 100)
        fired.append(fire)
    assert [b for b, f in zip([150, 90, 95, 90, 99, 100, 99, 50, 200, 10], fired) if f] == [90, 99, 10]


def test_alert_ids_are_deterministic_uuids():
    first = policy.alert_id("tenant-1", "low_balance:tenant-1:100:7")
    assert first == policy.alert_id("tenant-1", "low_balance:tenant-1:100:7")
    assert uuid.UUID(first).version == 5
    assert first != policy.alert_id("tenant-2", "low_balance:tenant-1:100:7")
    assert first != policy.alert_id("tenant-1", "low_balance:tenant-1:100:8")


def test_alert_key_formats():
    assert policy.low_balance_key("t", 10_000, 7) == "low_balance:t:10000:7"
    assert policy.exhausted_key("t", 7) == "exhausted:t:7"
    assert policy.recharged_key("t", 8) == "recharged:t:8"
    assert policy.blocked_key("t", 7) == "recharge_blocked:t:7"
    assert policy.expiring_key("t", 3) == "expiring:t:3"


# --- idempotency ------------------------------------------------------------------------------------------------

def test_fingerprints_are_stable_and_discriminating():
    base = policy.fingerprint("add_funds", {"amount": 100, "memo": "x", "reference": ""})
    assert base == policy.fingerprint("add_funds", {"reference": "", "memo": "x", "amount": 100})   # key order
    assert len(base) == 64 and int(base, 16) >= 0
    assert base != policy.fingerprint("adjust", {"amount": 100, "memo": "x", "reference": ""})
    assert base != policy.fingerprint("add_funds", {"amount": 101, "memo": "x", "reference": ""})
    assert base != policy.fingerprint("add_funds", {"amount": "100", "memo": "x", "reference": ""})
    assert base != policy.fingerprint("add_funds", {"amount": 100, "memo": "x"})
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert policy.fingerprint("x", {"at": when}) == policy.fingerprint("x", {"at": when})   # non-JSON via str


@pytest.mark.parametrize("key, reserved", [
    ("activity-1", False),
    ("graph-row-1", False),
    ("expiry", False),
    ("xexpiry:1", False),
    ("recharge:1", False),                 # only ":recharge:" inside a key is the ledger's
    ("call-1:recharge", False),
    ("expiry:1", True),
    ("expiry:", True),
    ("call-1:recharge:1", True),
    (":recharge:", True),
    ("a:recharge:b:c", True),
])
def test_is_reserved_key(key, reserved):
    assert policy.is_reserved_key(key) is reserved


@pytest.mark.parametrize("key", ["activity-1", "19:abc@thread.v2", "x", "expiry-1", "EXPIRY:1"])
def test_check_caller_key_accepts(key):
    assert policy.check_caller_key(key) == key


@pytest.mark.parametrize("key", ["", None, 7, b"key", "expiry:7", "call-1:recharge:1", "a:recharge:"])
def test_check_caller_key_refuses(key):
    with pytest.raises(ValueError):
        policy.check_caller_key(key)


def test_raisable_kinds_are_forecast_and_expiring():
    assert policy.RAISABLE_KINDS == {"forecast", "expiring"}
    assert policy.RAISABLE_KINDS <= {kind.value for kind in AlertKind}


# --- roles ------------------------------------------------------------------------------------------------------

BOOT = ["boot-admin"]


@pytest.mark.parametrize("stored, user, has_admin, expected", [
    (Role.READER, "someone", True, Role.READER),
    (Role.ADMIN, "someone", True, Role.ADMIN),
    (Role.READER, "boot-admin", False, Role.READER),     # a stored grant wins, even over configuration
    (None, "boot-admin", False, Role.ADMIN),             # bootstrap admin while the tenant has no admin
    (None, "boot-admin", True, None),                    # ... and not once it has one
    (None, "someone", False, None),                      # deny by default
    (None, "", False, None),
])
def test_effective_role(stored, user, has_admin, expected):
    assert policy.effective_role(stored, user, account_has_admin=has_admin, bootstrap_admins=BOOT) == expected


def test_effective_role_reads_bootstrap_admins_from_any_iterable():
    admins = (a for a in ["x", "boot-admin"])
    assert policy.effective_role(None, "boot-admin", account_has_admin=False, bootstrap_admins=admins) is Role.ADMIN


@pytest.mark.parametrize("role, allowed", [
    (Role.ADMIN, set(Capability)),
    (Role.READER, {Capability.READ}),
    (None, set()),
])
def test_allows(role, allowed):
    assert {c for c in Capability if policy.allows(role, c)} == allowed


# --- the usage fingerprint's fast path ----------------------------------------------------------------------------

@given(amount=st.integers(), currency=st.text(), occurred_at=st.datetimes(timezones=st.timezones()))
@settings(max_examples=300)
def test_the_usage_fingerprint_is_the_general_one_byte_for_byte(amount, currency, occurred_at):
    """The digests are stored: a re-import compares against them, so the fast path may never differ."""
    args = UsageRecord("u", amount, currency, occurred_at).fingerprint_args()
    assert policy.usage_fingerprint(args) == policy.fingerprint("record_usage", args)


@pytest.mark.parametrize("args", [
    {"amount": True, "currency": "USD", "occurred_at": "2026-01-01T00:00:00+00:00"},      # bool is not an int here
    {"amount": 5, "currency": None, "occurred_at": "2026-01-01T00:00:00+00:00"},
    {"amount": 5, "currency": "USD", "occurred_at": "2026-01-01T00:00:00+00:00", "extra": 1},
    {"amount": "5", "currency": "USD", "occurred_at": "x"},
])
def test_other_shapes_take_the_general_path(args):
    assert policy.usage_fingerprint(args) == policy.fingerprint("record_usage", args)
