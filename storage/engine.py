"""The incremental bookkeeping of one account inside one atomic unit, shared by the persistent backends.

A backend loads an account's hot state (`BookState`), opens a `Book` over it for one operation, calls the
money verbs (`credit`, `debit`, `expire`, then `settle`), and persists what the book collected: the new entries,
alerts and audit records and the changed state. The book never does I/O, so a backend decides how the unit is
made atomic (a write-ahead journal for TinyDB, a transaction for PostgreSQL).

The rules themselves live in `policy`; the reference model applies the same rules from scratch, and the contract
suite checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping, Sequence

from . import policy
from .errors import CurrencyMismatch, InsufficientFunds, InvalidUsage
from .model import (Alert, AlertKind, AlertSettings, AlertStatus, AuditRecord, Entry, EntryKind, Lot, Posting,
                    RechargeSettings, RowOutcome, RowStatus, Subscription, SYSTEM_ACTOR, UsageRecord, iso, parse_iso)
from .money import check_minor


@dataclass
class BookState:
    """Everything an operation on one account needs, kept small: it does not grow with history.

    `lots` are the open lots (money left), oldest first; `deficit` is usage recorded beyond the lots (the
    balance is below zero by that much, and then no lot has money left). Invariant:
    `balance == sum(lot.remaining) - deficit`. Credits of one UTC day share one lot (ADR 0008), so `lots` holds
    at most about 366 lots whatever the number of credits.

    `day_lots_from` is the seq of the first entry whose credit follows the UTC-day rule of ADR 0008: 1 for an
    account opened since; for a state written by older code (which lacks the field) the entry after the last one
    it holds. Entries before it opened lots by the old rule (expiry to the second, no merging); `verify()`
    rebuilds each entry's lot by the rule in force when it was written.
    """

    tenant_id: str
    currency: str
    created_at: datetime
    balance: int = 0
    deficit: int = 0
    entry_count: int = 0
    audit_count: int = 0
    lots: list[Lot] = field(default_factory=list)
    recharge: RechargeSettings = field(default_factory=RechargeSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    recharge_month: str = ""
    recharged_in_month: int = 0
    recent_recharges: list[datetime] = field(default_factory=list)
    armed: dict[int, bool] = field(default_factory=dict)
    exhausted_armed: bool = False
    blocked_armed: bool = True
    alert_count: int = 0  # alerts raised so far: the creation order that breaks ties in `created_at`
    day_lots_from: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id, "currency": self.currency, "created_at": iso(self.created_at),
            "balance": self.balance, "deficit": self.deficit, "entry_count": self.entry_count,
            "audit_count": self.audit_count, "lots": [lot.to_dict() for lot in self.lots],
            "recharge": self.recharge.to_dict(), "alerts": self.alerts.to_dict(),
            "recharge_month": self.recharge_month, "recharged_in_month": self.recharged_in_month,
            "recent_recharges": [iso(t) for t in self.recent_recharges],
            "armed": {str(k): v for k, v in self.armed.items()},
            "exhausted_armed": self.exhausted_armed, "blocked_armed": self.blocked_armed,
            "alert_count": self.alert_count, "day_lots_from": self.day_lots_from,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BookState":
        return cls(
            d["tenant_id"], d["currency"], parse_iso(d["created_at"]), d["balance"], d["deficit"],
            d["entry_count"], d["audit_count"], [Lot.from_dict(x) for x in d["lots"]],
            RechargeSettings.from_dict(d["recharge"]), AlertSettings.from_dict(d["alerts"]),
            d["recharge_month"], d["recharged_in_month"], [parse_iso(t) for t in d["recent_recharges"]],
            {int(k): v for k, v in d["armed"].items()}, d["exhausted_armed"], d["blocked_armed"],
            d.get("alert_count", 0), day_lots_from=d.get("day_lots_from", d["entry_count"] + 1),
        )

    def copy(self) -> "BookState":
        """An independent copy: the containers are new, what they hold is immutable (frozen lots and settings,
        datetimes). Every operation copies the state; a round trip through `to_dict` re-parsed every lot's times."""
        return replace(self, lots=list(self.lots), recent_recharges=list(self.recent_recharges),
                       armed=dict(self.armed))


class Book:
    """One atomic unit on one account. Mutates a *copy* of the state; the caller persists `state`, `entries`,
    `alerts` and `audit` together, or drops the book to abandon the unit (nothing was written)."""

    def __init__(self, state: BookState, subscriptions: Sequence[Subscription], now: datetime) -> None:
        self.state = state.copy()
        self.now = now
        self._subscriptions = subscriptions
        self.entries: list[Entry] = []
        self.alerts: list[Alert] = []
        self.alert_numbers: dict[str, int] = {}  # alert id -> creation number in the account
        self.audit: list[AuditRecord] = []

    # --- entries ----------------------------------------------------------------------------------------------
    def _append(self, kind: EntryKind, amount: int, actor: str, key: str, memo: str, reference: str,
                details: Mapping[str, Any]) -> Entry:
        s = self.state
        s.entry_count += 1
        s.balance += amount
        entry = Entry(s.entry_count, s.tenant_id, kind, amount, s.balance, actor, key, self.now, memo, reference,
                      dict(details))
        self.entries.append(entry)
        return entry

    def credit(self, kind: EntryKind, amount: int, *, actor: str, key: str, memo: str = "",
               reference: str = "", details: Mapping[str, Any] | None = None) -> Entry:
        """Add money: it pays any deficit first; what is left opens a lot expiring by the UTC-day rule, or is
        added to the newest open lot when that one expires at the same moment (`policy.credit_lots`)."""
        entry = self._append(kind, amount, actor, key, memo, reference, details or {})
        s = self.state
        s.lots, s.deficit = policy.credit_lots(s.lots, entry.seq, amount, self.now, s.deficit,
                                               by_day=lots_by_day(entry.seq, s.day_lots_from))
        return entry

    def debit(self, kind: EntryKind, amount: int, *, actor: str, key: str, memo: str = "", reference: str = "",
              details: Mapping[str, Any] | None = None, may_go_negative: bool) -> Entry:
        """Take money from the oldest lots. Without `may_go_negative` a shortfall is `InsufficientFunds` and
        the book is left untouched."""
        if not may_go_negative and amount > self.state.balance:
            raise InsufficientFunds(self.state.balance, amount)
        self.state.lots, shortfall = policy.consume_fifo(self.state.lots, amount)
        self.state.deficit += shortfall
        return self._append(kind, -amount, actor, key, memo, reference, details or {})

    def expire(self, lot: Lot) -> Entry:
        """Write off what is left in one expired lot."""
        self.state.lots = [l for l in self.state.lots if l.lot_id != lot.lot_id]
        return self._append(EntryKind.EXPIRY, -lot.remaining, SYSTEM_ACTOR, f"expiry:{lot.lot_id}", "", "",
                            {"lot_id": lot.lot_id})

    # --- after the primary entry ------------------------------------------------------------------------------
    def settle(self, primary: Entry) -> Posting:
        """Finish a money operation: auto-recharge after a debit, then the edge-triggered balance alerts on the
        final balance. Returns the operation's posting (primary entry first, then the recharges)."""
        s = self.state
        first = len(self.entries) - 1
        blocked: policy.Blocked | None = None
        if primary.amount < 0:
            blocked = self._auto_recharge(primary)
        recharges = [e for e in self.entries[first:] if e.kind is EntryKind.AUTO_RECHARGE]
        alert_ids: list[str] = []
        if recharges:
            total = sum(e.amount for e in recharges)
            alert_ids.append(self.raise_alert(AlertKind.RECHARGED, policy.recharged_key(s.tenant_id, recharges[0].seq), {
                "count": len(recharges), "total": total, "balance": s.balance,
                "entry_seqs": [e.seq for e in recharges]}).alert_id)
        if recharges or s.balance >= s.recharge.trigger:
            s.blocked_armed = True
        if blocked is not None:
            fire, s.blocked_armed = s.blocked_armed, False
            if fire:
                alert_ids.append(self.raise_alert(AlertKind.RECHARGE_BLOCKED, policy.blocked_key(s.tenant_id, primary.seq), {
                    "reason": blocked.value, "balance": s.balance, "entry_seq": primary.seq}).alert_id)
        alert_ids.extend(self._balance_alerts(primary))
        return Posting(tuple(self.entries[first:]), s.balance, tuple(alert_ids),
                       blocked.value if blocked is not None else None)

    def _auto_recharge(self, primary: Entry) -> policy.Blocked | None:
        s = self.state
        n = 0
        while policy.needs_recharge(s.recharge, s.balance):
            month = policy.month_key(self.now)
            if s.recharge_month != month:
                s.recharge_month, s.recharged_in_month = month, 0
            s.recent_recharges = [t for t in s.recent_recharges if self.now - t < policy.BREAKER_WINDOW]
            block = policy.recharge_block(s.recharge, s.recharged_in_month, s.recent_recharges, self.now)
            if block is not None:
                return block
            n += 1
            self.credit(EntryKind.AUTO_RECHARGE, s.recharge.amount, actor=SYSTEM_ACTOR,
                        key=f"{primary.key}:recharge:{n}", reference=primary.id,
                        details={"trigger_seq": primary.seq})
            s.recharged_in_month += s.recharge.amount
            s.recent_recharges.append(self.now)
        return None

    def _balance_alerts(self, cause: Entry) -> list[str]:
        s = self.state
        fired: list[str] = []
        for threshold in s.alerts.thresholds:
            fire, s.armed[threshold] = policy.edge(s.armed.get(threshold, True), s.balance < threshold)
            if fire:
                fired.append(self.raise_alert(AlertKind.LOW_BALANCE, policy.low_balance_key(s.tenant_id, threshold, cause.seq), {
                    "threshold": threshold, "balance": s.balance, "entry_seq": cause.seq}).alert_id)
        fire, s.exhausted_armed = policy.edge(s.exhausted_armed, s.balance <= 0)
        if fire:
            fired.append(self.raise_alert(AlertKind.EXHAUSTED, policy.exhausted_key(s.tenant_id, cause.seq), {
                "balance": s.balance, "entry_seq": cause.seq}).alert_id)
        return fired

    # --- alerts and audit -------------------------------------------------------------------------------------
    def raise_alert(self, kind: AlertKind, key: str, payload: Mapping[str, Any]) -> Alert:
        """Queue an alert for the enabled subscriptions of its kind; with none it is delivered at once (kept for
        the record, nothing to send)."""
        destinations = tuple(sorted(sub.conversation_id for sub in self._subscriptions
                                    if sub.enabled and kind in sub.kinds))
        alert = Alert(policy.alert_id(self.state.tenant_id, key), self.state.tenant_id, kind, key, self.now,
                      dict(payload), destinations,
                      status=AlertStatus.PENDING if destinations else AlertStatus.DELIVERED)
        self.state.alert_count += 1
        self.alert_numbers[alert.alert_id] = self.state.alert_count
        self.alerts.append(alert)
        return alert

    def record_posting(self, actor: str, action: str, key: str, posting: Posting) -> AuditRecord:
        """The audit record of a money operation: signed amount, primary entry, recharges it caused."""
        return self.record(actor, action, key, {"amount": posting.entry.amount, "entry_seq": posting.entry.seq,
                                                "recharge_seqs": [e.seq for e in posting.recharges]})

    def record(self, actor: str, action: str, key: str, details: Mapping[str, Any] | None = None) -> AuditRecord:
        self.state.audit_count += 1
        record = AuditRecord(self.state.audit_count, self.state.tenant_id, self.now, actor, action, key,
                             dict(details or {}))
        self.audit.append(record)
        return record


def rearm_thresholds(state: BookState, settings: AlertSettings) -> None:
    """New thresholds start armed where the balance is at or above them; saving raises no alert."""
    state.alerts = settings
    state.armed = {t: state.balance >= t for t in settings.thresholds}


def change_recharge(state: BookState, settings: RechargeSettings) -> None:
    state.recharge = settings
    state.blocked_armed = True


def expired_lots(state: BookState, now: datetime) -> list[Lot]:
    return [lot for lot in state.lots if lot.expires_at <= now and lot.remaining > 0]


def lots_by_day(seq: int, day_lots_from: int) -> bool:
    """Whether entry `seq` opened (or merged) its lot by the UTC-day rule of ADR 0008, or by the old rule."""
    return seq >= day_lots_from


def lots_replayed(entries: Sequence[Entry], day_lots_from: int = 1) -> tuple[list[Lot], int]:
    """Open lots and deficit as they follow from a full journal (used by `verify()`), each credit applied by
    the rule in force when it was written (`lots_by_day`), exactly as `Book.credit` applied it."""
    lots: list[Lot] = []
    deficit = 0
    for e in entries:
        if e.kind is EntryKind.EXPIRY:
            lot_id = e.details["lot_id"]
            lots = [l for l in lots if l.lot_id != lot_id]
        elif e.amount > 0:
            lots, deficit = policy.credit_lots(lots, e.seq, e.amount, e.at, deficit,
                                               by_day=lots_by_day(e.seq, day_lots_from))
        else:
            lots, shortfall = policy.consume_fifo(lots, -e.amount)
            deficit += shortfall
    return lots, deficit


def with_status(alert: Alert, **changes: Any) -> Alert:
    return replace(alert, **changes)


def verify_journal(state: BookState, entries: Sequence[Entry]) -> list[str]:
    """Invariants between a hot state and the full journal it claims to summarise."""
    problems: list[str] = []
    running = 0
    for i, entry in enumerate(entries, start=1):
        if entry.seq != i:
            problems.append(f"entry seq {entry.seq} where {i} was expected")
            break
        running += entry.amount
        if entry.balance_after != running:
            problems.append(f"entry {entry.seq}: balance_after {entry.balance_after} != running sum {running}")
            break
    if state.entry_count != len(entries):
        problems.append(f"entry count {state.entry_count} != {len(entries)} entries stored")
    if state.balance != running:
        problems.append(f"balance snapshot {state.balance} != sum of entries {running}")
    if not 1 <= state.day_lots_from <= state.entry_count + 1:
        problems.append(f"day_lots_from {state.day_lots_from} outside 1..{state.entry_count + 1}")
    lots, deficit = lots_replayed(entries, state.day_lots_from)
    stored = [(l.lot_id, l.amount, l.remaining, l.expires_at) for l in state.lots]
    replayed = [(l.lot_id, l.amount, l.remaining, l.expires_at) for l in lots]
    if stored != replayed:
        problems.append(f"open lots {stored} != lots replayed from entries {replayed}")
    if deficit != state.deficit:
        problems.append(f"deficit {state.deficit} != replayed {deficit}")
    if sum(l.remaining for l in state.lots) - state.deficit != state.balance:
        problems.append("open lots minus deficit != balance")
    if state.deficit and any(l.remaining for l in state.lots):
        problems.append("a deficit while lots hold money")
    return problems


# --- usage rows (the same steps in every backend; the backend looks the key up between them) -----------------------

def usage_key(usage: UsageRecord) -> tuple[str, str, str]:
    """What a usage row must carry before its key is looked up: a usable id (not empty, not in a namespace the
    ledger reserves) and an aware call time, else `InvalidUsage`. Returns the id (the idempotency key), the
    row's fingerprint, and the call time as stored (ISO 8601, UTC) for `debit_usage`."""
    usage_id = getattr(usage, "usage_id", None)
    if not isinstance(usage_id, str) or not usage_id or policy.is_reserved_key(usage_id):
        raise InvalidUsage("bad_usage_id", repr(usage_id)[:80])
    when = getattr(usage, "occurred_at", None)
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise InvalidUsage("bad_time", usage_id)
    args = usage.fingerprint_args()
    return usage_id, policy.usage_fingerprint(args), args["occurred_at"]


def debit_usage(book: Book, usage: UsageRecord, actor: str, occurred_at: str) -> Posting:
    """A new usage row's debit (it may take the balance below zero: usage is a fact), then what follows it
    (auto-recharge, alerts). `occurred_at` is the call time `usage_key` gave. `CurrencyMismatch` or
    `InvalidAmount` leave the book untouched."""
    if not isinstance(usage.currency, str) or usage.currency.strip().upper() != book.state.currency:
        raise CurrencyMismatch(book.state.currency, str(usage.currency))
    check_minor(usage.amount)
    primary = book.debit(EntryKind.USAGE, usage.amount, actor=actor, key=usage.usage_id, reference=usage.usage_id,
                         details={**usage.details, "occurred_at": occurred_at}, may_go_negative=True)
    return book.settle(primary)


def audit_usage(book: Book, actor: str, outcomes: Sequence[RowOutcome], *, single: bool) -> None:
    """The audit record of a usage call that recorded something: a single row is audited like any money
    operation; a batch gets one record with its counts and the money it debited."""
    recorded = [o for o in outcomes if o.status is RowStatus.RECORDED and o.posting is not None]
    if single:
        book.record_posting(actor, "usage", recorded[0].usage_id, recorded[0].posting)  # type: ignore[arg-type]
        return
    counts = {status.value: sum(1 for o in outcomes if o.status is status) for status in RowStatus}
    book.record(actor, "usage_batch", "", {"rows": len(outcomes), **counts,
                                           "debited": sum(-o.posting.entry.amount for o in recorded)})  # type: ignore[union-attr]
