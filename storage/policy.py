"""Pure rules of the ledger: no I/O, no clock, no state of their own.

Both the incremental engine used by the real backends and the from-scratch reference model call these, so the
rules are stated once; their correctness is tested directly (tests/test_policy.py) and through the contract
suite, where the two ways of applying them must agree.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import uuid
from json.encoder import encode_basestring_ascii as _json_string
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidSettings
from .model import AlertSettings, Lot, RechargeSettings, Role

LOT_LIFETIME_MONTHS = 12
BREAKER_WINDOW = timedelta(hours=24)
MAX_THRESHOLDS = 10
#: The burst breaker cannot be set above this: it is what bounds the recharge loop of one operation.
MAX_RECHARGES_PER_DAY = 100
#: Keys the ledger derives itself; callers may not use them.
_RESERVED_PREFIX = "expiry:"
_RESERVED_PART = ":recharge:"
_ALERT_NAMESPACE = uuid.UUID("6f0f5a0e-7b7a-4d0b-9d55-4a1f3f1c2b10")
_APPROVAL_NAMESPACE = uuid.UUID("3b9c1d52-8e4f-4c7a-a0d6-5f2e9b7c1a44")


# --- time -------------------------------------------------------------------------------------------------------

def add_months(moment: datetime, months: int) -> datetime:
    """Same day and time `months` later; the 29th-31st fall back to the month's last day (Feb 29 -> Feb 28)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of an aware moment."""
    return moment.astimezone(timezone.utc).date()


def lot_expiry(opened_at: datetime) -> datetime:
    """When a credit made at `opened_at` expires (ADR 0008): at 00:00 UTC of the day after the credit's UTC day
    plus `LOT_LIFETIME_MONTHS` calendar months (`add_months`: Jan 31 + 1 month is Feb 28). So every credit of one
    UTC day expires at the same moment, and the money can be used through the whole of that last day: never
    earlier than exactly 12 months after the credit, at most one day later. Always UTC.

    2026-01-15 00:00:00 and 2026-01-15 23:59:59 UTC both expire at 2027-01-16 00:00 UTC. Two days can share an
    expiry where the month end clamps: 2028-02-28 and 2028-02-29 both expire at 2029-03-01 00:00 UTC."""
    day = utc_day(opened_at)
    last_day = add_months(datetime(day.year, day.month, day.day, tzinfo=timezone.utc), LOT_LIFETIME_MONTHS)
    return last_day + timedelta(days=1)


def legacy_lot_expiry(opened_at: datetime) -> datetime:
    """The rule before ADR 0008: exactly `LOT_LIFETIME_MONTHS` calendar months after the credit, to the
    microsecond. Nothing opens lots by it any more; `verify()` needs it to rebuild the lots that older code opened
    (entries before `BookState.day_lots_from`)."""
    return add_months(opened_at, LOT_LIFETIME_MONTHS)


def month_key(moment: datetime) -> str:
    """Calendar month (UTC) that the monthly recharge cap counts in."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment.month:02d}"


# --- lots -------------------------------------------------------------------------------------------------------

def open_lot(lot_id: int, amount: int, opened_at: datetime, deficit: int, *,
             by_day: bool = True) -> tuple[Lot, int]:
    """A credit of `amount` pays the deficit first; the rest is the new lot's remaining. Returns (lot, deficit).
    The lot expires by `lot_expiry` (the UTC-day rule), or by `legacy_lot_expiry` when `by_day` is false (only
    to rebuild lots that code before ADR 0008 opened)."""
    paid = min(amount, deficit)
    expires_at = lot_expiry(opened_at) if by_day else legacy_lot_expiry(opened_at)
    return Lot(lot_id, opened_at, expires_at, amount, amount - paid), deficit - paid


def _fifo_key(lot: Lot) -> tuple[datetime, int]:
    """The order lots are consumed in: oldest first, by opening time, then id."""
    return lot.opened_at, lot.lot_id


def add_lot(lots: Sequence[Lot], lot: Lot) -> list[Lot]:
    """The open lots with a credit's new `lot` in them (ADR 0008): when the newest open lot (the last in FIFO
    order) expires at exactly the same moment, the credit is added to it (amount and remaining grow; its id and
    opening time stay); otherwise `lot` is appended. A lot with nothing left (its credit went to a deficit) is
    not added. Only the newest lot can take a credit, so FIFO order and every lot's expiry keep their meaning;
    lots of different expiries (a lot of the old to-the-second rule and a new one) never merge."""
    if not lot.remaining:
        return list(lots)
    if lots:
        newest = max(range(len(lots)), key=lambda i: _fifo_key(lots[i]))
        into = lots[newest]
        if into.expires_at == lot.expires_at:
            merged = replace(into, amount=into.amount + lot.amount, remaining=into.remaining + lot.remaining)
            return [*lots[:newest], merged, *lots[newest + 1:]]
    return [*lots, lot]


def credit_lots(lots: Sequence[Lot], lot_id: int, amount: int, opened_at: datetime, deficit: int, *,
                by_day: bool = True) -> tuple[list[Lot], int]:
    """Open lots and deficit after a credit of `amount` made at `opened_at` by entry `lot_id`: it pays the
    deficit first (`open_lot`), and what is left goes into the lots. By the UTC-day rule (`by_day`, every entry
    written since ADR 0008) through `add_lot`, merging into the newest lot of the same expiry; by the legacy rule
    as a lot of its own (older code never merged). The engine and `verify()`'s rebuild both call this, so a
    journal rebuilds to exactly the lots it was written with."""
    lot, deficit = open_lot(lot_id, amount, opened_at, deficit, by_day=by_day)
    if by_day:
        return add_lot(lots, lot), deficit
    return ([*lots, lot] if lot.remaining else list(lots)), deficit


def consume_fifo(lots: Sequence[Lot], amount: int) -> tuple[list[Lot], int]:
    """Take `amount` from open lots, oldest first (by opening time, then id). Returns the lots still holding
    money (in order) and the part of `amount` they could not cover (the shortfall)."""
    left = amount
    kept: list[Lot] = []
    for lot in sorted(lots, key=_fifo_key):
        if left and lot.remaining:
            take = min(lot.remaining, left)
            left -= take
            lot = Lot(lot.lot_id, lot.opened_at, lot.expires_at, lot.amount, lot.remaining - take)
        if lot.remaining:
            kept.append(lot)
    return kept, left


# --- auto-recharge ----------------------------------------------------------------------------------------------

class Blocked(StrEnum):
    MONTHLY_CAP = "monthly_cap"
    BREAKER = "breaker"


def recharge_block(settings: RechargeSettings, recharged_this_month: int, recent: Sequence[datetime],
                   now: datetime) -> Blocked | None:
    """Why one more recharge may not happen now, or None if it may. `recent` are the times of earlier
    recharges; only those within the rolling 24 hours before `now` count."""
    if settings.monthly_cap is not None and recharged_this_month + settings.amount > settings.monthly_cap:
        return Blocked.MONTHLY_CAP
    if sum(1 for t in recent if now - t < BREAKER_WINDOW) >= settings.max_per_day:
        return Blocked.BREAKER
    return None


def needs_recharge(settings: RechargeSettings, balance: int) -> bool:
    return settings.enabled and settings.amount > 0 and balance < settings.trigger


def validate_recharge(settings: RechargeSettings) -> RechargeSettings:
    if not isinstance(settings.enabled, bool):
        raise InvalidSettings("enabled_not_bool")
    for name in ("amount", "trigger", "max_per_day"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSettings(f"{name}_not_integer")
    if settings.monthly_cap is not None and (isinstance(settings.monthly_cap, bool)
                                             or not isinstance(settings.monthly_cap, int)):
        raise InvalidSettings("monthly_cap_not_integer")
    if settings.amount < 0 or settings.trigger < 0:
        raise InvalidSettings("negative")
    if max(settings.amount, settings.trigger, settings.monthly_cap or 0) > 10**15:
        raise InvalidSettings("too_large")
    if settings.max_per_day < 1:
        raise InvalidSettings("breaker_below_one")
    if settings.max_per_day > MAX_RECHARGES_PER_DAY:
        raise InvalidSettings("breaker_too_high")
    if settings.enabled:
        if settings.amount == 0:
            raise InvalidSettings("amount_zero")
        if settings.monthly_cap is not None and settings.monthly_cap < settings.amount:
            raise InvalidSettings("cap_below_amount")
    return settings


# --- alerts -----------------------------------------------------------------------------------------------------

def validate_alerts(settings: AlertSettings) -> AlertSettings:
    values = settings.thresholds
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise InvalidSettings("threshold_not_integer")
    if any(v <= 0 for v in values):
        raise InvalidSettings("threshold_not_positive")
    if any(v > 10**15 for v in values):
        raise InvalidSettings("too_large")
    if len(set(values)) > MAX_THRESHOLDS:
        raise InvalidSettings("too_many_thresholds")
    if isinstance(settings.forecast_days, bool) or not isinstance(settings.forecast_days, int) \
            or not 1 <= settings.forecast_days <= 365:
        raise InvalidSettings("forecast_days")
    return AlertSettings(tuple(sorted(set(values), reverse=True)), settings.forecast_days)


def edge(armed: bool, in_alarm: bool) -> tuple[bool, bool]:
    """Edge trigger: (fire, armed_after). Fires on the step from a good state (armed) into alarm; re-arms only
    when the state is good again. Repeating the alarm state is not a new alert."""
    return armed and in_alarm, not in_alarm


def alert_id(tenant_id: str, key: str) -> str:
    """Deterministic id of an alert: the same cause gives the same id in every backend and every resend."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{tenant_id}\n{key}"))


def low_balance_key(tenant_id: str, threshold: int, entry_seq: int) -> str:
    return f"low_balance:{tenant_id}:{threshold}:{entry_seq}"


def exhausted_key(tenant_id: str, entry_seq: int) -> str:
    return f"exhausted:{tenant_id}:{entry_seq}"


def recharged_key(tenant_id: str, first_recharge_seq: int) -> str:
    return f"recharged:{tenant_id}:{first_recharge_seq}"


def blocked_key(tenant_id: str, entry_seq: int) -> str:
    return f"recharge_blocked:{tenant_id}:{entry_seq}"


def expiring_key(tenant_id: str, lot_id: int) -> str:
    return f"expiring:{tenant_id}:{lot_id}"


# --- approvals --------------------------------------------------------------------------------------------------

def approval_id(tenant_id: str, key: str) -> str:
    """Deterministic id of an approval request: the request's key in its account, in every backend."""
    return str(uuid.uuid5(_APPROVAL_NAMESPACE, f"{tenant_id}\n{key}"))


# --- idempotency ------------------------------------------------------------------------------------------------

def is_reserved_key(key: str) -> bool:
    """Keys the ledger writes itself: `expiry:{lot}` and `{operation key}:recharge:{n}`."""
    return key.startswith(_RESERVED_PREFIX) or _RESERVED_PART in key


def check_caller_key(key: object) -> str:
    """A caller's idempotency key: a non-empty string outside the reserved namespaces. Keys come from code
    (activity ids, card nonces), so a bad one is a programming error (`ValueError`), not a user's mistake."""
    if not isinstance(key, str) or not key:
        raise ValueError("every mutation needs a non-empty idempotency key")
    if is_reserved_key(key):
        raise ValueError(f"idempotency key {key!r} is in a namespace the ledger reserves")
    return key


#: Kinds that `Ledger.raise_alert` may raise; the others belong to money operations and are raised with them.
RAISABLE_KINDS = frozenset({"forecast", "expiring"})


def fingerprint(operation: str, args: Mapping[str, Any]) -> str:
    """Stable digest of an operation and its arguments; a key reused with another digest is a conflict."""
    canonical = json.dumps({"op": operation, "args": args}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def usage_fingerprint(args: Mapping[str, Any]) -> str:
    """`fingerprint("record_usage", args)`, byte for byte, for the usual shape of a usage row's arguments
    (`UsageRecord.fingerprint_args`: an int and two strings), without the general encoder: an import computes
    one per row. Any other shape takes the general path. The digests are stored, so the two must never differ
    (a property test holds them to that)."""
    amount, currency, occurred_at = args.get("amount"), args.get("currency"), args.get("occurred_at")
    if len(args) == 3 and type(amount) is int and type(currency) is str and type(occurred_at) is str:
        canonical = (f'{{"args":{{"amount":{amount},"currency":{_json_string(currency)},'
                     f'"occurred_at":{_json_string(occurred_at)}}},"op":"record_usage"}}')
        return hashlib.sha256(canonical.encode()).hexdigest()
    return fingerprint("record_usage", args)


# --- roles ------------------------------------------------------------------------------------------------------

class Capability(StrEnum):
    READ = "read"                    # balance, history, usage, forecast, settings, whoami
    MOVE_MONEY = "move_money"        # add funds, adjustments, usage import/sync
    CHANGE_SETTINGS = "change_settings"  # auto-recharge, alert thresholds, currency
    MANAGE_ROLES = "manage_roles"
    MANAGE_SUBSCRIPTIONS = "manage_subscriptions"


_ROLE_CAPABILITIES: Mapping[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.READER: frozenset({Capability.READ}),
}


def effective_role(stored: Role | None, user_id: str, *, account_has_admin: bool,
                   bootstrap_admins: Iterable[str]) -> Role | None:
    """The role that counts for `user_id`. Stored grants win. Bootstrap admins (configuration) are admins of
    every tenant until that tenant has an admin of its own. Everyone else has no role: deny by default."""
    if stored is not None:
        return stored
    if not account_has_admin and user_id and user_id in set(bootstrap_admins):
        return Role.ADMIN
    return None


def allows(role: Role | None, capability: Capability) -> bool:
    return role is not None and capability in _ROLE_CAPABILITIES[role]
