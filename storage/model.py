"""Value types of the ledger: frozen, JSON-friendly, no behaviour beyond (de)serialisation.

Money is always `int` minor units of the account's currency. Times are timezone-aware UTC `datetime`s.
Every type round-trips through `to_dict()` / `from_dict()` with plain JSON values, which is how both backends
persist them and how an idempotent replay returns "the original result".
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Mapping


def iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("naive datetime: the ledger only stores UTC-aware times")
    return dt.astimezone(timezone.utc).isoformat()


def parse_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"naive timestamp {text!r}")
    return dt.astimezone(timezone.utc)


class EntryKind(StrEnum):
    FUNDS_ADDED = "funds_added"
    AUTO_RECHARGE = "auto_recharge"
    USAGE = "usage"
    ADJUSTMENT = "adjustment"
    EXPIRY = "expiry"


class AlertKind(StrEnum):
    RECHARGED = "recharged"
    RECHARGE_BLOCKED = "recharge_blocked"
    LOW_BALANCE = "low_balance"
    EXHAUSTED = "exhausted"
    EXPIRING = "expiring"
    FORECAST = "forecast"


class Role(StrEnum):
    ADMIN = "admin"
    READER = "reader"


class AlertStatus(StrEnum):
    PENDING = "pending"      # some destination still to be served
    DELIVERED = "delivered"  # every destination served (or disabled)
    DEAD = "dead"            # gave up after the maximum number of attempts


class ApprovalStatus(StrEnum):
    PENDING = "pending"      # waiting for a second admin
    APPROVED = "approved"    # funds added by the approver
    REJECTED = "rejected"    # closed without moving money


SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class Account:
    tenant_id: str
    currency: str
    created_at: datetime
    balance: int
    entry_count: int

    def to_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "currency": self.currency, "created_at": iso(self.created_at),
                "balance": self.balance, "entry_count": self.entry_count}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Account":
        return cls(d["tenant_id"], d["currency"], parse_iso(d["created_at"]), d["balance"], d["entry_count"])


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line. `seq` starts at 1 per account and has no gaps; `amount` is signed."""

    seq: int
    tenant_id: str
    kind: EntryKind
    amount: int
    balance_after: int
    actor: str
    key: str
    at: datetime
    memo: str = ""
    reference: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.tenant_id}:{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "tenant_id": self.tenant_id, "kind": self.kind.value, "amount": self.amount,
                "balance_after": self.balance_after, "actor": self.actor, "key": self.key, "at": iso(self.at),
                "memo": self.memo, "reference": self.reference, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Entry":
        return cls(d["seq"], d["tenant_id"], EntryKind(d["kind"]), d["amount"], d["balance_after"], d["actor"],
                   d["key"], parse_iso(d["at"]), d.get("memo", ""), d.get("reference", ""),
                   dict(d.get("details") or {}))


def last_usable_day(expires_at: datetime) -> date:
    """The last UTC calendar day on which money expiring at `expires_at` can still be used: the day of the last
    moment before it. A lot expiring at 2027-01-16 00:00 UTC (ADR 0008) is usable through 2027-01-15; one opened
    by older code, expiring at 2027-01-15 09:00, also through 2027-01-15. This is the date to show a user as
    "expires on", never `expires_at`'s own date (a day too late for every lot of the day rule)."""
    return (expires_at.astimezone(timezone.utc) - timedelta(microseconds=1)).date()


@dataclass(frozen=True, slots=True)
class Lot:
    """Credit that expires, consumed oldest first (by `opened_at`, then `lot_id`).

    Opened by a credit entry: `lot_id` is that entry's seq, `opened_at` its time. Credits of one UTC day share
    one `expires_at` (`policy.lot_expiry`, ADR 0008), and a credit expiring exactly when the newest open lot does
    is added to that lot (`amount` and `remaining` grow; id and opening time stay the first credit's), so
    `amount` is the sum of the credits the lot took in and `remaining` what is left of them. The money can be
    used while `now < expires_at`; `last_day` is the last calendar day (UTC) of that.
    """

    lot_id: int
    opened_at: datetime
    expires_at: datetime
    amount: int
    remaining: int

    @property
    def last_day(self) -> date:
        """The last UTC day the lot's money can be used (`last_usable_day(expires_at)`): what to display."""
        return last_usable_day(self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {"lot_id": self.lot_id, "opened_at": iso(self.opened_at), "expires_at": iso(self.expires_at),
                "amount": self.amount, "remaining": self.remaining}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Lot":
        return cls(d["lot_id"], parse_iso(d["opened_at"]), parse_iso(d["expires_at"]), d["amount"], d["remaining"])


@dataclass(frozen=True, slots=True)
class RechargeSettings:
    """Microsoft's auto-recharge: add `amount` when the balance is below `trigger`.

    `monthly_cap` bounds the money recharged per calendar month (UTC), None for no cap. `max_per_day` is the
    burst breaker: at most that many recharges in any rolling 24 hours.
    """

    enabled: bool = False
    amount: int = 0
    trigger: int = 0
    monthly_cap: int | None = None
    max_per_day: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "amount": self.amount, "trigger": self.trigger,
                "monthly_cap": self.monthly_cap, "max_per_day": self.max_per_day}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RechargeSettings":
        return cls(bool(d["enabled"]), d["amount"], d["trigger"], d.get("monthly_cap"), d.get("max_per_day", 3))


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Low-balance thresholds (minor units, descending) and the forecast horizon in days."""

    thresholds: tuple[int, ...] = ()
    forecast_days: int = 7

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds), "forecast_days": self.forecast_days}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AlertSettings":
        return cls(tuple(d.get("thresholds", ())), d.get("forecast_days", 7))


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One billed call, as Graph's getPstnCalls row or the admin center CSV gives it.

    `usage_id` is the row's unique id and the idempotency key. `amount` is `charge + connectionCharge` in minor
    units of `currency` (converted at the edge from Decimal). `details` keeps what forecasts group by
    (user id and name, call type, destination...).
    """

    usage_id: str
    amount: int
    currency: str
    occurred_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)

    def fingerprint_args(self) -> dict[str, Any]:
        return {"amount": self.amount, "currency": self.currency, "occurred_at": iso(self.occurred_at)}


@dataclass(frozen=True, slots=True)
class Posting:
    """The result of one money operation: its entries (the primary first, then any auto-recharges), the
    balance after, the ids of alerts it raised, and whether this call was a replay of an earlier one."""

    entries: tuple[Entry, ...]
    balance: int
    alert_ids: tuple[str, ...] = ()
    recharge_blocked: str | None = None  # "monthly_cap" | "breaker" when a needed recharge was not made
    replayed: bool = False

    @property
    def entry(self) -> Entry:
        return self.entries[0]

    @property
    def recharges(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind is EntryKind.AUTO_RECHARGE)

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "balance": self.balance,
                "alert_ids": list(self.alert_ids), "recharge_blocked": self.recharge_blocked}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, replayed: bool = False) -> "Posting":
        return cls(tuple(Entry.from_dict(e) for e in d["entries"]), d["balance"], tuple(d["alert_ids"]),
                   d.get("recharge_blocked"), replayed)

    def as_replay(self) -> "Posting":
        return replace(self, replayed=True)


class RowStatus(StrEnum):
    RECORDED = "recorded"
    REPLAYED = "replayed"    # the same row was recorded before: nothing changed
    REJECTED = "rejected"    # invalid (currency mismatch, bad amount): reported, nothing changed
    CONFLICT = "conflict"    # the row id was recorded before with other values: reported, nothing changed


@dataclass(frozen=True, slots=True)
class RowOutcome:
    usage_id: str
    status: RowStatus
    reason: str = ""
    posting: Posting | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-row outcomes of `record_usage_batch`, in input order, and totals of what was debited."""

    rows: tuple[RowOutcome, ...]
    balance: int

    def count(self, status: RowStatus) -> int:
        return sum(1 for r in self.rows if r.status is status)

    @property
    def debited(self) -> int:
        """Minor units debited by rows recorded in this call (replays excluded)."""
        return sum(-r.posting.entry.amount for r in self.rows
                   if r.status is RowStatus.RECORDED and r.posting is not None)

    @property
    def postings(self) -> tuple[Posting, ...]:
        return tuple(r.posting for r in self.rows if r.posting is not None and r.status is RowStatus.RECORDED)


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """Result of a keyed settings change (recharge, alerts, currency, role, subscription)."""

    value: Mapping[str, Any]
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"value": dict(self.value)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, replayed: bool = False) -> "SettingsChange":
        return cls(dict(d["value"]), replayed)


@dataclass(frozen=True, slots=True)
class Approval:
    """A request to add funds that needs a second admin (`Ledger.request_approval`). Moves no money until it is
    approved; then `entry_seq` is the `funds_added` entry the approval wrote. `approval_id` is
    `policy.approval_id(tenant, request key)`."""

    approval_id: str
    tenant_id: str
    amount: int
    memo: str
    requested_by: str
    requested_at: datetime
    status: ApprovalStatus
    decided_by: str = ""
    decided_at: datetime | None = None
    entry_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"approval_id": self.approval_id, "tenant_id": self.tenant_id, "amount": self.amount,
                "memo": self.memo, "requested_by": self.requested_by, "requested_at": iso(self.requested_at),
                "status": self.status.value, "decided_by": self.decided_by,
                "decided_at": iso(self.decided_at) if self.decided_at else None, "entry_seq": self.entry_seq}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Approval":
        return cls(d["approval_id"], d["tenant_id"], d["amount"], d.get("memo", ""), d["requested_by"],
                   parse_iso(d["requested_at"]), ApprovalStatus(d["status"]), d.get("decided_by", ""),
                   parse_iso(d["decided_at"]) if d.get("decided_at") else None, d.get("entry_seq"))


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """Result of `Ledger.decide_approval`: the approval as decided, and the posting of its `funds_added` entry
    (None for a rejection). A replay returns the original decision with `replayed` set (on the posting too)."""

    approval: Approval
    posting: Posting | None
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"approval": self.approval.to_dict(),
                "posting": self.posting.to_dict() if self.posting is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, replayed: bool = False) -> "ApprovalDecision":
        posting = d.get("posting")
        return cls(Approval.from_dict(d["approval"]),
                   Posting.from_dict(posting, replayed=replayed) if posting is not None else None, replayed)


@dataclass(frozen=True, slots=True)
class Alert:
    """An outbox row. `key` is deterministic (for example `low_balance:{tenant}:{threshold}:{entry seq}`), so
    the same crossing can never enqueue twice. `destinations` are the conversation ids subscribed to the kind
    when the alert was raised; `delivered` the ones served so far."""

    alert_id: str
    tenant_id: str
    kind: AlertKind
    key: str
    created_at: datetime
    payload: Mapping[str, Any]
    destinations: tuple[str, ...]
    delivered: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    status: AlertStatus = AlertStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str = ""

    @property
    def pending_destinations(self) -> tuple[str, ...]:
        done = set(self.delivered) | set(self.skipped)
        return tuple(d for d in self.destinations if d not in done)

    def to_dict(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "tenant_id": self.tenant_id, "kind": self.kind.value, "key": self.key,
                "created_at": iso(self.created_at), "payload": dict(self.payload),
                "destinations": list(self.destinations), "delivered": list(self.delivered),
                "skipped": list(self.skipped), "status": self.status.value, "attempts": self.attempts,
                "next_attempt_at": iso(self.next_attempt_at) if self.next_attempt_at else None,
                "lease_owner": self.lease_owner,
                "lease_until": iso(self.lease_until) if self.lease_until else None,
                "last_error": self.last_error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Alert":
        return cls(d["alert_id"], d["tenant_id"], AlertKind(d["kind"]), d["key"], parse_iso(d["created_at"]),
                   dict(d["payload"]), tuple(d["destinations"]), tuple(d.get("delivered", ())),
                   tuple(d.get("skipped", ())), AlertStatus(d["status"]), d["attempts"],
                   parse_iso(d["next_attempt_at"]) if d.get("next_attempt_at") else None,
                   d.get("lease_owner"), parse_iso(d["lease_until"]) if d.get("lease_until") else None,
                   d.get("last_error", ""))


@dataclass(frozen=True, slots=True)
class Subscription:
    """A conversation that receives alerts of `kinds` for an account. Disabled (with a reason) when Teams says
    the bot is gone from it (403/404); never retried forever."""

    conversation_id: str
    kinds: tuple[AlertKind, ...]
    created_by: str
    created_at: datetime
    enabled: bool = True
    disabled_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "kinds": [k.value for k in self.kinds],
                "created_by": self.created_by, "created_at": iso(self.created_at), "enabled": self.enabled,
                "disabled_reason": self.disabled_reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Subscription":
        return cls(d["conversation_id"], tuple(AlertKind(k) for k in d["kinds"]), d["created_by"],
                   parse_iso(d["created_at"]), d.get("enabled", True), d.get("disabled_reason", ""))


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """An opaque Bot Framework conversation reference, stored with the tenant beside it (botbuilder's
    `ConversationReference.serialize()` drops the tenant)."""

    conversation_id: str
    tenant_id: str
    reference: Mapping[str, Any]
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "tenant_id": self.tenant_id,
                "reference": dict(self.reference), "updated_at": iso(self.updated_at)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ConversationRef":
        return cls(d["conversation_id"], d["tenant_id"], dict(d["reference"]), parse_iso(d["updated_at"]))


@dataclass(frozen=True, slots=True)
class RoleGrant:
    user_id: str
    role: Role
    granted_by: str
    granted_at: datetime
    display_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "role": self.role.value, "granted_by": self.granted_by,
                "granted_at": iso(self.granted_at), "display_name": self.display_name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RoleGrant":
        return cls(d["user_id"], Role(d["role"]), d["granted_by"], parse_iso(d["granted_at"]),
                   d.get("display_name", ""))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what, when, with which key. Written in the same atomic unit as the change it records."""

    seq: int
    tenant_id: str
    at: datetime
    actor: str
    action: str
    key: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "tenant_id": self.tenant_id, "at": iso(self.at), "actor": self.actor,
                "action": self.action, "key": self.key, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditRecord":
        return cls(d["seq"], d["tenant_id"], parse_iso(d["at"]), d["actor"], d["action"], d["key"],
                   dict(d.get("details") or {}))


@dataclass(frozen=True, slots=True)
class AccountView:
    """What a chat turn reads about an account, in one ledger call (`Ledger.account_view`).

    `expiring`: open lots (money left) expiring at or before `now + expiring_within`, oldest first.
    `last_recharge`: the newest `auto_recharge` entry, None if there never was one.
    `window_usage`: money used by calls that *happened* in `[now - burn_window, now]` (usage entries by their
    call time, `forecast.call_time`), a positive number of minor units: the forecast's input.
    """

    account: Account
    roles: tuple[RoleGrant, ...]
    recharge: RechargeSettings
    alert_settings: AlertSettings
    expiring: tuple[Lot, ...]
    last_recharge: "Entry | None"
    window_usage: int


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a journal, newest first. `older` is the cursor for the next page (None at the start of
    history); pass it as `before` to get older items."""

    items: tuple[Any, ...]
    older: int | None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of `verify()`: one line per broken invariant, empty when the store is consistent."""

    accounts: int
    entries: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def dataclass_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))
