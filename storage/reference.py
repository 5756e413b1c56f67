"""The reference ledger: a trivially correct, in-memory model of the `Ledger` contract.

It is written to be *obviously* right, not fast. It keeps only plain facts per account (the list of entries,
the op records of idempotency keys, alerts, subscriptions, roles, audit records, settings, and the three kinds
of edge-trigger "armed" flags) and derives everything else **from scratch on every operation**:

* the balance is `sum(entry.amount)`;
* open lots are the replay of every entry in order through `policy.credit_lots` (credits: pay the deficit,
  then open a lot or, by the UTC-day rule of ADR 0008, add to the newest lot of the same expiry) and
  `policy.consume_fifo` (debits); an `expiry` entry takes exactly the lot named by `details["lot_id"]`;
* the money recharged this calendar month and the recharges of the last 24 hours are a scan of the
  `auto_recharge` entries.

There is no snapshot and no incremental state that could drift, so the contract suite and the property tests
can hold every real backend (TinyDB, PostgreSQL, both built on the incremental `storage.engine`) against it.
The rules themselves (fingerprints, alert ids and keys, the edge trigger, the recharge breaker and cap,
validation, lot expiry) come only from `storage.policy`, so a disagreement between this model and a backend is
a bug in how the backend *applies* the rules, never a second opinion about the rules.

Each public method does all of its work synchronously (no `await` inside), so it is one atomic unit on the event
loop; `_atomic()` additionally restores the previous state if anything raises half way (a `LedgerError` records
nothing; a crash must not leave half an operation behind either).

Conventions the backends share
==============================

These are decisions the contract (storage/ledger.py) leaves open. Every backend must produce the same values,
field for field, so that the contract suite can compare them.

Order of checks in a keyed mutation
    1. the account (`AccountNotFound`); 2. the key itself: `policy.check_caller_key(key)` in every keyed
    mutation by a caller (add_funds, adjust, set_currency, set_recharge_settings, set_alert_settings,
    grant_role, revoke_role, subscribe, unsubscribe, request_approval, decide_approval): an empty key or one
    in a reserved namespace (`policy.is_reserved_key`: `expiry:...`, `...:recharge:...`) is a programming
    error (`ValueError`), not a `LedgerError` (`decide_approval` then also refuses an `approve` that is not a
    `bool`); 3. the idempotency lookup (replay or `IdempotencyConflict`); 4. validation of the arguments
    (`InvalidAmount`, `InvalidCurrency`, `CurrencyMismatch`, `InvalidSettings`); 5. checks against state
    (`CurrencyLocked`, `InsufficientFunds`, `NotFound`, then `SelfApproval`, `ApprovalClosed`). Usage rows
    have their own order (see below).

Idempotency
    Keys are scoped to the account and shared by every operation. An op record keeps
    (operation, `policy.fingerprint(operation, args)`, result `to_dict()`). `actor` and `key` are never part of
    `args` (two admins pressing the same card button is one action, replayed for the second). Operation names
    and their `args`:
      add_funds             {"amount", "memo", "reference"}
      adjust                {"amount", "memo", "reference"}
      record_usage          `usage.fingerprint_args()` = {"amount", "currency", "occurred_at"}; the key is
                            `usage.usage_id`; the same for rows of `record_usage_batch`
      set_currency          {"currency"}  (as passed, not normalised)
      set_recharge_settings `settings.to_dict()` (as passed)
      set_alert_settings    `settings.to_dict()` (as passed, before sorting/deduplication)
      grant_role            {"user_id", "role", "display_name"}
      revoke_role           {"user_id"}
      subscribe             {"conversation_id", "kinds": sorted(set(str(k) for k in kinds))}
      unsubscribe           {"conversation_id"}
      expire_lot            {"lot_id"}  (key `expiry:{lot_id}`, written by `expire_lots`)
      request_approval      {"amount", "memo"}
      decide_approval       {"approval_id", "approve"}
    Entry keys stay unique per account because the only entry keys that are not op keys
    (`{key}:recharge:{n}`) are in a reserved namespace no caller may use (a `ValueError` before the lookup);
    `expiry:{lot}` keys are written only by `expire_lots`.
    A replay returns `Posting.from_dict(stored, replayed=True)` / `SettingsChange.from_dict(stored,
    replayed=True)` / `ApprovalDecision.from_dict(stored, replayed=True)` (its posting replayed too) /
    `Approval.from_dict(stored)` (an `Approval` has no replay flag: it is the approval as it was requested).

Money operations and their entries
    Every entry of one operation has `at` = the clock's time at the start of the operation. A Posting lists
    the primary entry first, then its recharges in order.
      add_funds    kind funds_added, amount +a, the caller's actor/key/memo/reference, details {}
      adjust       kind adjustment, signed amount, the caller's actor/key/memo/reference, details {}
      approval     (`decide_approval` with approve=True) kind funds_added, amount +approval.amount, actor = the
                   approver, key = the decision key, memo = the request's memo, reference = approval_id,
                   details {"requested_by", "approval_id"}; lots, recharges (none: a credit) and alerts exactly
                   as for add_funds
      record_usage kind usage, amount -usage.amount, actor as given (default "system"), key usage_id,
                   memo "", reference usage_id,
                   details = {**usage.details, "occurred_at": iso(usage.occurred_at)}
      expiry       kind expiry, amount -remaining, actor "system", key "expiry:{lot_id}", memo "",
                   reference "", details {"lot_id": lot_id}
      recharge n   (n = 1, 2, ... within the operation) kind auto_recharge, amount settings.amount,
                   actor "system", key f"{primary key}:recharge:{n}", memo "",
                   reference = primary entry id (f"{tenant}:{seq}"), details {"trigger_seq": primary seq}
    Usage validation order, after the account: 1. the row id (a non-empty `str`, not
    `policy.is_reserved_key`, else `InvalidUsage("bad_usage_id")`); 2. `occurred_at` (a timezone-aware
    `datetime`, else `InvalidUsage("bad_time")`); 3. the idempotency lookup (`usage.fingerprint_args()`);
    4. the currency (`usage.currency.strip().upper()` must equal the account's, else
    `CurrencyMismatch(account currency, usage.currency)`); 5. `money.check_minor(usage.amount)` (so zero and
    negative usage are `InvalidAmount`). `add_funds` uses `check_minor(amount)`, `adjust`
    `check_minor(amount, allow_negative=True)`; a negative adjustment larger than the balance is
    `InsufficientFunds(balance, -amount)`.
    Only debits (usage, negative adjustment, expiry) run the auto-recharge loop; each recharge is checked with
    `policy.recharge_block(settings, money recharged in month_key(now), times of all earlier recharges, now)`.
    `Posting.recharge_blocked` is the `Blocked` value when the loop stopped on a block (even when the
    `recharge_blocked` alert does not fire because it is disarmed).

Alerts raised by a money operation, in this order (also the order of `Posting.alert_ids`)
    recharged         once if the op recharged: key recharged_key(tenant, first recharge seq), payload
                      {"count": n, "total": n * amount, "balance": final balance, "entry_seqs": [recharge seqs]}
    recharge_blocked  if the loop was blocked and the flag is armed: key blocked_key(tenant, primary seq),
                      payload {"reason": "monthly_cap" | "breaker", "balance": final balance,
                      "entry_seq": primary seq}
    low_balance       per threshold (descending) that `policy.edge` fires on the final balance
                      (in alarm: balance < threshold): key low_balance_key(tenant, threshold, primary seq),
                      payload {"threshold": t, "balance": final balance, "entry_seq": primary seq}
    exhausted         `policy.edge` on the final balance (in alarm: balance <= 0): key
                      exhausted_key(tenant, primary seq), payload {"balance": final balance,
                      "entry_seq": primary seq}
    `recharge_blocked` flag, evaluated after the loop: a recharge made in this op re-arms it first; then a
    block fires (if armed) and disarms it; with no block, a final balance >= settings.trigger re-arms it (for
    every money op, credits included). Saving recharge settings re-arms it. Flags at account opening: blocked
    armed, exhausted *disarmed* (a new account is at 0, already "exhausted"), no thresholds. Saving alert
    settings sets each threshold's flag to `balance >= threshold`.
    `expire_lots`, per account in tenant order: first one expiry operation per lot with money left whose
    `expires_at <= now`, oldest lot first (each a Posting, with its recharges and alerts as above); then an
    `expiring` alert per lot still holding money with `now < expires_at <= now + EXPIRING_NOTICE`, oldest
    first: key expiring_key(tenant, lot_id), payload {"lot_id", "remaining", "expires_at": iso}. Expiring alerts
    are in no Posting. `now` only selects the lots; entries and alerts are stamped with the clock.
    An alert's id is `policy.alert_id(tenant, key)`; raising an existing key returns the existing alert.
    `raise_alert` checks, after the account and before the key lookup: the kind is in `policy.RAISABLE_KINDS`
    ("forecast", "expiring") and the key starts with f"{kind.value}:"; anything else is `ValueError`.
    Destinations: conversation ids of the enabled subscriptions whose kinds include the alert's kind, sorted;
    with no destination the alert is created `delivered`. `created_at` = clock.

Outbox
    "Oldest first" is (created_at, order of creation): alerts raised in one operation (same created_at) are
    claimed and listed in the order they were raised, never in the order of their ids. `claim_alerts` takes
    pending alerts whose `next_attempt_at` is unset or <= now and whose lease is unset or expired
    (`lease_until <= now`), whoever held it; an alert under a live lease is not claimable, not even by its own
    worker. `mark_delivered` and `release_alert` check `lease_owner == worker` only (an expired lease nobody
    took over still counts); `mark_delivered` of a destination that is not among the alert's destinations is
    `NotFound("destination")`; marking one destination twice under the lease changes nothing, but once the
    alert is delivered its lease is gone and a late mark is `LeaseLost` (checks in this order: alert
    `NotFound`, lease, destination).
    Attempts are counted at claim time: `claim_alerts` adds 1 to `attempts` of every alert it returns (and
    changes nothing else but the lease). A pending alert that is otherwise claimable (due, lease unset or
    expired) but already has attempts >= max_attempts (its last attempt's lease ran out: the worker crashed)
    becomes `dead` at the claim instead, whatever `limit` is and without counting against it: lease cleared,
    attempts and next_attempt_at unchanged, last_error kept, or `LEASE_EXPIRED_ERROR` ("lease expired after the
    last attempt") when empty; it is not returned. `release_alert` counts nothing: it sets last_error = error
    and next_attempt_at = retry_at, clears the lease, and makes the alert `dead` when attempts >= max_attempts.
    `unsubscribe` / `disable_subscription` add the conversation to `skipped` of every pending alert of the
    account still waiting for it; an alert left with nothing pending becomes `delivered` and its lease ends.
    `alerts()` is newest first (reverse of oldest first).

Approvals
    `request_approval`: after the idempotency lookup, `check_minor(amount)`; then a new `Approval`
    (approval_id = `policy.approval_id(tenant, key)`, requested_by = actor, requested_at = clock, status
    pending, decided_by "", decided_at/entry_seq None). It moves no money and does not lock the currency.
    `decide_approval`: after the key, `approve` must be a `bool` (else `ValueError`, a programming error); then
    the idempotency lookup, then `NotFound("approval", approval_id)`, `SelfApproval(approval_id)` when the actor
    is the requester, `ApprovalClosed(approval as it stands)` when it is not pending (a replay with the
    decision's own key still answers). The decision sets status approved/rejected, decided_by = actor,
    decided_at = clock, entry_seq = the funds_added entry's seq (None when rejected); `ApprovalDecision.posting`
    is that entry's Posting (None when rejected). `approvals()` is newest first: the reverse of
    (requested_at, order of request), filtered by status; `get_approval` of an unknown id is `NotFound`.

Settings results (`SettingsChange.value`)
      set_currency          {"currency": normalised code}
      set_recharge_settings settings.to_dict()
      set_alert_settings    validated (sorted descending, deduplicated) settings.to_dict()
      grant_role            RoleGrant.to_dict() (granted_by = actor, granted_at = clock)
      revoke_role           {"user_id", "role": the role removed}
      subscribe             Subscription.to_dict() (kinds deduplicated in AlertKind declaration order,
                            created_by = actor, created_at = clock, enabled, reason "")
      unsubscribe           {"conversation_id"}
    `set_currency` is `CurrencyLocked` whenever the account has an entry, even for its current currency.
    `subscribe` with no kinds or an unknown kind is `InvalidSettings("no_kinds" | "unknown_kind")`; it does not
    need a saved conversation reference. `grant_role` with an unknown role is `InvalidSettings("unknown_role")`.
    `unsubscribe` deletes the subscription (also a disabled one). `disable_subscription` of a conversation that
    is not subscribed, or already disabled, does nothing.

Audit (one record per change, newest first, `seq` from 1 per account; none for replays, failures,
`save_conversation`, `raise_alert` or the outbox)
      account_opened         actor, key "", {"currency"}
      currency               {"currency": new, "previous": old}
      funds_added            {"amount": signed entry amount, "entry_seq", "recharge_seqs": []}
      adjustment             same fields
      usage                  same fields (key = usage_id)
      usage_batch            key "", {"rows", "recorded", "replayed", "rejected", "conflict", "debited"},
                             one record per batch that recorded at least one row
      expiry                 actor "system", key "expiry:{lot_id}", same fields as funds_added
      recharge_settings      settings.to_dict()
      alert_settings         validated settings.to_dict()
      grant_role             {"user_id", "role", "display_name"}
      revoke_role            {"user_id", "role": the role removed}
      subscribe              {"conversation_id", "kinds": [values]}
      unsubscribe            {"conversation_id"}
      disable_subscription   actor "system", key "", {"conversation_id", "reason"}
      approval_requested     {"approval_id", "amount", "memo"}
      approval_decided       {"approval_id", "approve": bool, "entry_seq": seq or None}; an approval writes
                             only this record (no separate funds_added record)

Other choices
    `open_account` validates the currency first (`InvalidCurrency` even if the account exists). Batch rows:
    `REJECTED` with the reason of the row's error: the `InvalidUsage.reason` ("bad_usage_id", "bad_time"),
    "currency_mismatch", or the `InvalidAmount.reason` ("zero", "negative", "not_a_number", "too_large");
    `CONFLICT` with reason "idempotency_conflict"; `RowOutcome.usage_id` is the row's id as given, valid or not;
    a row id twice in one batch is handled like two calls. Conversation references need an account:
    `save_conversation`, `conversation()` and `conversations()` of an unknown tenant are `AccountNotFound`, like
    everything else about an unknown tenant (`verify(tenant)` included). Saving a reference equal to the stored
    one keeps the stored one (its `updated_at` is when the reference last changed).
    `history` / `audit`: `older` is the seq of the last item returned when older items exist, else None.
    `lots()` is ordered by (opened_at, lot_id). Lots expire when `expires_at <= now`. A credit's lot expires
    at `policy.lot_expiry(entry.at)` (00:00 UTC after the credit's UTC day + 12 months) and joins the newest open
    lot when both expire at the same moment (`policy.add_lot`: amount and remaining add up, lot_id and opened_at
    stay the first credit's); entries before the account's `day_lots_from` (written by code before ADR 0008,
    known only from an imported state) were opened by `policy.legacy_lot_expiry` and never merged.
    `policy.month_key` converts to UTC first (the monthly cap counts UTC calendar months whatever the offset);
    `policy.validate_recharge` also refuses a non-bool `enabled` ("enabled_not_bool") and `max_per_day` above
    `policy.MAX_RECHARGES_PER_DAY` ("breaker_too_high"); `money.to_minor` takes only plain ASCII decimals from a
    `str` ("1_000", non-ASCII digits, "1e5", "NaN", "Infinity": `InvalidAmount("not_a_number")`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

from . import policy
from .clock import Clock, utc_now
from .errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                     InsufficientFunds, InvalidAmount, InvalidSettings, InvalidUsage, LeaseLost, NotFound,
                     SelfApproval)
from .ledger import DEFAULT_MAX_ATTEMPTS, EXPIRING_NOTICE, Ledger
from .model import (Account, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                    ApprovalStatus, AuditRecord, BatchResult,
                    ConversationRef, Entry, EntryKind, Lot, Page, Posting, RechargeSettings, Role, RoleGrant,
                    RowOutcome, RowStatus, SettingsChange, Subscription, SYSTEM_ACTOR, UsageRecord,
                    VerifyReport, iso, parse_iso)
from .money import check_minor, normalize_currency

_CREDIT_KINDS = (EntryKind.FUNDS_ADDED, EntryKind.AUTO_RECHARGE, EntryKind.ADJUSTMENT)
#: `last_error` of an alert that dies at a claim because its last attempt's lease ran out, when it has none.
LEASE_EXPIRED_ERROR = "lease expired after the last attempt"


@dataclass
class _OpRecord:
    """What an idempotency key was used for, and the result to give back on a replay."""

    operation: str
    fingerprint: str
    result: dict[str, Any]


@dataclass
class _AccountState:
    """The plain facts of one account. Nothing here is derived: balance, lots and recharge counters are
    recomputed from `entries` whenever they are needed."""

    tenant_id: str
    currency: str
    created_at: datetime
    entries: list[Entry] = field(default_factory=list)
    ops: dict[str, _OpRecord] = field(default_factory=dict)
    recharge: RechargeSettings = field(default_factory=RechargeSettings)
    alert_settings: AlertSettings = field(default_factory=AlertSettings)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    roles: dict[str, RoleGrant] = field(default_factory=dict)
    approvals: dict[str, Approval] = field(default_factory=dict)   # in the order they were requested
    watermarks: dict[str, datetime] = field(default_factory=dict)  # usage source -> read completely up to
    audit: list[AuditRecord] = field(default_factory=list)
    threshold_armed: dict[int, bool] = field(default_factory=dict)
    exhausted_armed: bool = False   # a new account is at 0: already in the "exhausted" state
    blocked_armed: bool = True
    day_lots_from: int = 1   # first entry seq under the UTC-day lot rule (ADR 0008); > 1 only when imported

    def clone(self) -> "_AccountState":
        # Entries, records, grants... are immutable values: copying the containers is a full copy.
        return replace(self, entries=list(self.entries), ops=dict(self.ops),
                       subscriptions=dict(self.subscriptions), roles=dict(self.roles),
                       approvals=dict(self.approvals), watermarks=dict(self.watermarks), audit=list(self.audit),
                       threshold_armed=dict(self.threshold_armed))


# --- derivations from scratch --------------------------------------------------------------------------------

def balance_of(entries: Sequence[Entry]) -> int:
    return sum(e.amount for e in entries)


def replay_lots(entries: Sequence[Entry], day_lots_from: int = 1) -> tuple[list[Lot], int]:
    """Open lots (money left, oldest first) and the deficit, from the entries alone.

    Credits first pay the deficit, then open a lot or join the newest one of the same expiry
    (`policy.credit_lots`; entries before `day_lots_from` by the legacy rule: their own lot, expiring to the
    second); `expiry` entries empty the lot they name; every other debit consumes lots oldest first
    (`policy.consume_fifo`) and what the lots cannot cover becomes deficit. Raises `ValueError` if an expiry
    entry does not match its lot (verify() reports it)."""
    lots: list[Lot] = []
    deficit = 0
    for e in entries:
        if e.amount > 0:
            lots, deficit = policy.credit_lots(lots, e.seq, e.amount, e.at, deficit,
                                               by_day=e.seq >= day_lots_from)
        elif e.kind is EntryKind.EXPIRY:
            lot_id = e.details.get("lot_id")
            match = [lot for lot in lots if lot.lot_id == lot_id]
            if not match or match[0].remaining != -e.amount:
                raise ValueError(f"expiry entry {e.seq} does not empty lot {lot_id}")
            lots = [lot for lot in lots if lot.lot_id != lot_id]
        else:
            lots, shortfall = policy.consume_fifo(lots, -e.amount)
            deficit += shortfall
    return sorted(lots, key=lambda l: (l.opened_at, l.lot_id)), deficit


def _open_lots(acct: _AccountState) -> list[Lot]:
    """The account's open lots, replayed from its entries by the rules they were written with."""
    return replay_lots(acct.entries, acct.day_lots_from)[0]


def recharges_of(entries: Sequence[Entry]) -> list[Entry]:
    return [e for e in entries if e.kind is EntryKind.AUTO_RECHARGE]


def recharged_in_month(entries: Sequence[Entry], now: datetime) -> int:
    month = policy.month_key(now)
    return sum(e.amount for e in recharges_of(entries) if policy.month_key(e.at) == month)


class ReferenceLedger(Ledger):
    """In-memory `Ledger` that recomputes everything from the stored facts. See the module docstring."""

    def __init__(self, *, clock: Clock = utc_now, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._clock = clock
        self._max_attempts = max_attempts
        self._accounts: dict[str, _AccountState] = {}
        self._alerts: list[Alert] = []   # every alert of every account, in order of creation
        self._conversations: dict[tuple[str, str], ConversationRef] = {}
        self._closed = False

    # --- plumbing ------------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock returned a naive datetime")
        return now.astimezone(timezone.utc)

    def _open(self) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Run a mutation all-or-nothing: on any exception the previous state comes back."""
        self._open()
        saved = ({t: a.clone() for t, a in self._accounts.items()}, list(self._alerts),
                 dict(self._conversations))
        try:
            yield
        except BaseException:
            self._accounts, self._alerts, self._conversations = saved
            raise

    def _account(self, tenant_id: str) -> _AccountState:
        self._open()
        try:
            return self._accounts[tenant_id]
        except KeyError:
            raise AccountNotFound(tenant_id) from None

    def _keyed(self, tenant_id: str, key: str) -> _AccountState:
        """The first two checks of a caller's keyed mutation: the account, then the key itself (empty or in a
        namespace the ledger reserves: `ValueError`)."""
        acct = self._account(tenant_id)
        policy.check_caller_key(key)
        return acct

    @staticmethod
    def _stored(acct: _AccountState, key: str, operation: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """The idempotency lookup, before any other check on the arguments or the state: the stored result for
        a replay, None for a new key, `IdempotencyConflict` for a key used otherwise."""
        record = acct.ops.get(key)
        if record is None:
            return None
        if record.operation != operation or record.fingerprint != policy.fingerprint(operation, args):
            raise IdempotencyConflict(key, record.operation)
        return record.result

    @staticmethod
    def _remember(acct: _AccountState, key: str, operation: str, args: Mapping[str, Any],
                  result: dict[str, Any]) -> None:
        acct.ops[key] = _OpRecord(operation, policy.fingerprint(operation, args), result)

    def _audit(self, acct: _AccountState, actor: str, action: str, key: str, details: Mapping[str, Any],
               at: datetime) -> None:
        acct.audit.append(AuditRecord(len(acct.audit) + 1, acct.tenant_id, at, actor, action, key,
                                      dict(details)))

    # --- alerts -----------------------------------------------------------------------------------------------
    def _find_alert(self, alert_id: str) -> int:
        for i, alert in enumerate(self._alerts):
            if alert.alert_id == alert_id:
                return i
        raise NotFound("alert", alert_id)

    def _raise(self, acct: _AccountState, kind: AlertKind, key: str, payload: Mapping[str, Any],
               now: datetime) -> Alert:
        ident = policy.alert_id(acct.tenant_id, key)
        for alert in self._alerts:
            if alert.alert_id == ident:
                return alert
        destinations = tuple(sorted(s.conversation_id for s in acct.subscriptions.values()
                                    if s.enabled and kind in s.kinds))
        alert = Alert(ident, acct.tenant_id, kind, key, now, dict(payload), destinations,
                      status=AlertStatus.PENDING if destinations else AlertStatus.DELIVERED)
        self._alerts.append(alert)
        if alert.status is AlertStatus.PENDING:
            self._alerts_queued()
        return alert

    def _skip_destination(self, tenant_id: str, conversation_id: str) -> None:
        for i, alert in enumerate(self._alerts):
            if (alert.tenant_id == tenant_id and alert.status is AlertStatus.PENDING
                    and conversation_id in alert.pending_destinations):
                alert = replace(alert, skipped=alert.skipped + (conversation_id,))
                if not alert.pending_destinations:
                    alert = replace(alert, status=AlertStatus.DELIVERED, lease_owner=None, lease_until=None)
                self._alerts[i] = alert

    # --- the money path -------------------------------------------------------------------------------------
    def _append(self, acct: _AccountState, kind: EntryKind, amount: int, *, actor: str, key: str, at: datetime,
                memo: str = "", reference: str = "", details: Mapping[str, Any] | None = None) -> Entry:
        entry = Entry(len(acct.entries) + 1, acct.tenant_id, kind, amount, balance_of(acct.entries) + amount,
                      actor, key, at, memo, reference, dict(details or {}))
        acct.entries.append(entry)
        return entry

    def _money_op(self, acct: _AccountState, kind: EntryKind, amount: int, *, actor: str, key: str,
                  at: datetime, memo: str = "", reference: str = "",
                  details: Mapping[str, Any] | None = None) -> Posting:
        """One atomic money operation: the primary entry, the auto-recharge loop after a debit, the alerts."""
        primary = self._append(acct, kind, amount, actor=actor, key=key, at=at, memo=memo, reference=reference,
                               details=details)
        recharges: list[Entry] = []
        blocked: policy.Blocked | None = None
        if amount < 0:
            settings = acct.recharge
            while policy.needs_recharge(settings, balance_of(acct.entries)):
                blocked = policy.recharge_block(settings, recharged_in_month(acct.entries, at),
                                                [e.at for e in recharges_of(acct.entries)], at)
                if blocked is not None:
                    break
                recharges.append(self._append(
                    acct, EntryKind.AUTO_RECHARGE, settings.amount, actor=SYSTEM_ACTOR,
                    key=f"{key}:recharge:{len(recharges) + 1}", at=at, reference=primary.id,
                    details={"trigger_seq": primary.seq}))
        alerts = self._alerts_after(acct, primary, recharges, blocked, at)
        return Posting((primary, *recharges), balance_of(acct.entries), tuple(a.alert_id for a in alerts),
                       blocked.value if blocked is not None else None)

    def _alerts_after(self, acct: _AccountState, primary: Entry, recharges: Sequence[Entry],
                      blocked: policy.Blocked | None, at: datetime) -> list[Alert]:
        """Alerts of a money operation, decided on the final balance (see "Conventions the backends share")."""
        final = balance_of(acct.entries)
        tenant = acct.tenant_id
        raised: list[Alert] = []
        if recharges:
            acct.blocked_armed = True
            raised.append(self._raise(acct, AlertKind.RECHARGED, policy.recharged_key(tenant, recharges[0].seq),
                                      {"count": len(recharges), "total": sum(e.amount for e in recharges),
                                       "balance": final, "entry_seqs": [e.seq for e in recharges]}, at))
        if blocked is not None:
            if acct.blocked_armed:
                raised.append(self._raise(acct, AlertKind.RECHARGE_BLOCKED, policy.blocked_key(tenant, primary.seq),
                                          {"reason": blocked.value, "balance": final, "entry_seq": primary.seq},
                                          at))
            acct.blocked_armed = False
        elif final >= acct.recharge.trigger:
            acct.blocked_armed = True
        for threshold in acct.alert_settings.thresholds:
            fire, acct.threshold_armed[threshold] = policy.edge(acct.threshold_armed.get(threshold, False),
                                                                final < threshold)
            if fire:
                raised.append(self._raise(acct, AlertKind.LOW_BALANCE,
                                          policy.low_balance_key(tenant, threshold, primary.seq),
                                          {"threshold": threshold, "balance": final, "entry_seq": primary.seq},
                                          at))
        fire, acct.exhausted_armed = policy.edge(acct.exhausted_armed, final <= 0)
        if fire:
            raised.append(self._raise(acct, AlertKind.EXHAUSTED, policy.exhausted_key(tenant, primary.seq),
                                      {"balance": final, "entry_seq": primary.seq}, at))
        return raised

    @staticmethod
    def _money_audit(posting: Posting) -> dict[str, Any]:
        return {"amount": posting.entry.amount, "entry_seq": posting.entry.seq,
                "recharge_seqs": [e.seq for e in posting.recharges]}

    # --- accounts -------------------------------------------------------------------------------------------
    async def open_account(self, tenant_id: str, currency: str, *, actor: str = SYSTEM_ACTOR) -> Account:
        code = normalize_currency(currency)
        with self._atomic():
            if tenant_id not in self._accounts:
                now = self._now()
                acct = _AccountState(tenant_id, code, now)
                self._accounts[tenant_id] = acct
                self._audit(acct, actor, "account_opened", "", {"currency": code}, now)
        return await self.get_account(tenant_id)

    async def get_account(self, tenant_id: str) -> Account:
        acct = self._account(tenant_id)
        return Account(acct.tenant_id, acct.currency, acct.created_at, balance_of(acct.entries), len(acct.entries))

    async def tenants(self) -> list[str]:
        self._open()
        return sorted(self._accounts)

    async def set_currency(self, tenant_id: str, currency: str, *, actor: str, key: str) -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"currency": currency}
            if (stored := self._stored(acct, key, "set_currency", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            code = normalize_currency(currency)
            if acct.entries:
                raise CurrencyLocked(acct.currency)
            previous, acct.currency = acct.currency, code
            change = SettingsChange({"currency": code})
            self._remember(acct, key, "set_currency", args, change.to_dict())
            self._audit(acct, actor, "currency", key, {"currency": code, "previous": previous}, self._now())
            return change

    # --- money ---------------------------------------------------------------------------------------------
    async def add_funds(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                        reference: str = "") -> Posting:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"amount": amount, "memo": memo, "reference": reference}
            if (stored := self._stored(acct, key, "add_funds", args)) is not None:
                return Posting.from_dict(stored, replayed=True)
            check_minor(amount)
            now = self._now()
            posting = self._money_op(acct, EntryKind.FUNDS_ADDED, amount, actor=actor, key=key, at=now, memo=memo,
                                     reference=reference)
            self._remember(acct, key, "add_funds", args, posting.to_dict())
            self._audit(acct, actor, "funds_added", key, self._money_audit(posting), now)
            return posting

    async def adjust(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                     reference: str = "") -> Posting:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"amount": amount, "memo": memo, "reference": reference}
            if (stored := self._stored(acct, key, "adjust", args)) is not None:
                return Posting.from_dict(stored, replayed=True)
            check_minor(amount, allow_negative=True)
            balance = balance_of(acct.entries)
            if amount < 0 and balance + amount < 0:
                raise InsufficientFunds(balance, -amount)
            now = self._now()
            posting = self._money_op(acct, EntryKind.ADJUSTMENT, amount, actor=actor, key=key, at=now, memo=memo,
                                     reference=reference)
            self._remember(acct, key, "adjust", args, posting.to_dict())
            self._audit(acct, actor, "adjustment", key, self._money_audit(posting), now)
            return posting

    # --- approvals ------------------------------------------------------------------------------------------
    async def request_approval(self, tenant_id: str, amount: int, *, actor: str, key: str,
                               memo: str = "") -> Approval:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"amount": amount, "memo": memo}
            if (stored := self._stored(acct, key, "request_approval", args)) is not None:
                return Approval.from_dict(stored)
            check_minor(amount)
            now = self._now()
            approval = Approval(policy.approval_id(tenant_id, key), tenant_id, amount, memo, actor, now,
                                ApprovalStatus.PENDING)
            acct.approvals[approval.approval_id] = approval
            self._remember(acct, key, "request_approval", args, approval.to_dict())
            self._audit(acct, actor, "approval_requested", key,
                        {"approval_id": approval.approval_id, "amount": amount, "memo": memo}, now)
            return approval

    async def decide_approval(self, tenant_id: str, approval_id: str, *, approve: bool, actor: str,
                              key: str) -> ApprovalDecision:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            if not isinstance(approve, bool):
                raise ValueError(f"approve must be a bool, not {approve!r}")
            args = {"approval_id": approval_id, "approve": approve}
            if (stored := self._stored(acct, key, "decide_approval", args)) is not None:
                return ApprovalDecision.from_dict(stored, replayed=True)
            approval = acct.approvals.get(approval_id)
            if approval is None:
                raise NotFound("approval", approval_id)
            if actor == approval.requested_by:
                raise SelfApproval(approval_id)
            if approval.status is not ApprovalStatus.PENDING:
                raise ApprovalClosed(approval)
            now = self._now()
            posting: Posting | None = None
            if approve:
                posting = self._money_op(acct, EntryKind.FUNDS_ADDED, approval.amount, actor=actor, key=key, at=now,
                                         memo=approval.memo, reference=approval_id,
                                         details={"requested_by": approval.requested_by,
                                                  "approval_id": approval_id})
            decided = replace(approval, status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
                              decided_by=actor, decided_at=now,
                              entry_seq=posting.entry.seq if posting is not None else None)
            acct.approvals[approval_id] = decided
            decision = ApprovalDecision(decided, posting)
            self._remember(acct, key, "decide_approval", args, decision.to_dict())
            self._audit(acct, actor, "approval_decided", key,
                        {"approval_id": approval_id, "approve": approve, "entry_seq": decided.entry_seq}, now)
            return decision

    async def approvals(self, tenant_id: str, *, status: ApprovalStatus | None = None) -> list[Approval]:
        acct = self._account(tenant_id)
        requested = list(acct.approvals.values())   # in the order they were requested
        oldest_first = sorted(range(len(requested)), key=lambda i: (requested[i].requested_at, i))
        return [requested[i] for i in reversed(oldest_first) if status is None or requested[i].status == status]

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        acct = self._account(tenant_id)
        try:
            return acct.approvals[approval_id]
        except KeyError:
            raise NotFound("approval", approval_id) from None

    def _usage(self, acct: _AccountState, usage: UsageRecord, actor: str) -> tuple[Posting, bool]:
        """Record one usage row (or replay it). Returns (posting, replayed). Raises like `record_usage`, checking
        in this order: the row id, the time, the idempotency key, the currency, the amount."""
        if not isinstance(usage.usage_id, str) or not usage.usage_id or policy.is_reserved_key(usage.usage_id):
            raise InvalidUsage("bad_usage_id", repr(usage.usage_id))
        when = usage.occurred_at
        if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise InvalidUsage("bad_time", repr(when))
        args = usage.fingerprint_args()
        if (stored := self._stored(acct, usage.usage_id, "record_usage", args)) is not None:
            return Posting.from_dict(stored, replayed=True), True
        if not isinstance(usage.currency, str) or usage.currency.strip().upper() != acct.currency:
            raise CurrencyMismatch(acct.currency, usage.currency)
        check_minor(usage.amount, what="usage")
        details = {**dict(usage.details), "occurred_at": iso(usage.occurred_at)}
        posting = self._money_op(acct, EntryKind.USAGE, -usage.amount, actor=actor, key=usage.usage_id,
                                 at=self._now(), reference=usage.usage_id, details=details)
        self._remember(acct, usage.usage_id, "record_usage", args, posting.to_dict())
        return posting, False

    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        with self._atomic():
            acct = self._account(tenant_id)
            posting, replayed = self._usage(acct, usage, actor)
            if not replayed:
                self._audit(acct, actor, "usage", usage.usage_id, self._money_audit(posting), posting.entry.at)
            return posting

    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        with self._atomic():
            acct = self._account(tenant_id)
            outcomes: list[RowOutcome] = []
            for row in rows:
                try:
                    posting, replayed = self._usage(acct, row, actor)
                except IdempotencyConflict:
                    outcomes.append(RowOutcome(row.usage_id, RowStatus.CONFLICT, "idempotency_conflict"))
                except CurrencyMismatch:
                    outcomes.append(RowOutcome(row.usage_id, RowStatus.REJECTED, "currency_mismatch"))
                except (InvalidUsage, InvalidAmount) as exc:
                    outcomes.append(RowOutcome(row.usage_id, RowStatus.REJECTED, exc.reason))
                else:
                    status = RowStatus.REPLAYED if replayed else RowStatus.RECORDED
                    outcomes.append(RowOutcome(row.usage_id, status, "", posting))
            result = BatchResult(tuple(outcomes), balance_of(acct.entries))
            if result.count(RowStatus.RECORDED):
                self._audit(acct, actor, "usage_batch", "",
                            {"rows": len(outcomes), "recorded": result.count(RowStatus.RECORDED),
                             "replayed": result.count(RowStatus.REPLAYED),
                             "rejected": result.count(RowStatus.REJECTED),
                             "conflict": result.count(RowStatus.CONFLICT), "debited": result.debited},
                            self._now())
            return result

    async def expire_lots(self, now: datetime | None = None) -> list[Posting]:
        with self._atomic():
            at = self._now()
            if now is None:
                now = at
            if now.tzinfo is None:
                raise ValueError("expire_lots needs an aware datetime")
            postings: list[Posting] = []
            for tenant in sorted(self._accounts):
                acct = self._accounts[tenant]
                expired = [lot for lot in _open_lots(acct) if lot.expires_at <= now]
                for lot in expired:
                    # Recompute the lot: an earlier expiry of this run cannot touch it, but from scratch is
                    # the rule here.
                    current = next(l for l in _open_lots(acct) if l.lot_id == lot.lot_id)
                    key = f"expiry:{lot.lot_id}"
                    args = {"lot_id": lot.lot_id}
                    if self._stored(acct, key, "expire_lot", args) is not None:
                        continue
                    posting = self._money_op(acct, EntryKind.EXPIRY, -current.remaining, actor=SYSTEM_ACTOR,
                                             key=key, at=at, details={"lot_id": lot.lot_id})
                    self._remember(acct, key, "expire_lot", args, posting.to_dict())
                    self._audit(acct, SYSTEM_ACTOR, "expiry", key, self._money_audit(posting), at)
                    postings.append(posting)
                for lot in _open_lots(acct):
                    if now < lot.expires_at <= now + EXPIRING_NOTICE:
                        self._raise(acct, AlertKind.EXPIRING, policy.expiring_key(tenant, lot.lot_id),
                                    {"lot_id": lot.lot_id, "remaining": lot.remaining,
                                     "expires_at": iso(lot.expires_at)}, at)
            return postings

    # --- reading -------------------------------------------------------------------------------------------
    @staticmethod
    def _page(items: Sequence[Any], limit: int, before: int | None) -> Page:
        """Newest first from items ordered by seq (1, 2, ...)."""
        chosen = [i for i in reversed(items) if before is None or i.seq < before][:max(limit, 0)]
        older = chosen[-1].seq if chosen and chosen[-1].seq > 1 else None
        return Page(tuple(chosen), older)

    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        return self._page(self._account(tenant_id).entries, limit, before)

    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        return [e for e in self._account(tenant_id).entries if e.at >= since]

    async def lots(self, tenant_id: str) -> list[Lot]:
        return _open_lots(self._account(tenant_id))

    async def recharge_settings(self, tenant_id: str) -> RechargeSettings:
        return self._account(tenant_id).recharge

    async def set_recharge_settings(self, tenant_id: str, settings: RechargeSettings, *, actor: str,
                                    key: str) -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = settings.to_dict()
            if (stored := self._stored(acct, key, "set_recharge_settings", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            acct.recharge = policy.validate_recharge(settings)
            acct.blocked_armed = True
            change = SettingsChange(settings.to_dict())
            self._remember(acct, key, "set_recharge_settings", args, change.to_dict())
            self._audit(acct, actor, "recharge_settings", key, settings.to_dict(), self._now())
            return change

    async def alert_settings(self, tenant_id: str) -> AlertSettings:
        return self._account(tenant_id).alert_settings

    async def set_alert_settings(self, tenant_id: str, settings: AlertSettings, *, actor: str,
                                 key: str) -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = settings.to_dict()
            if (stored := self._stored(acct, key, "set_alert_settings", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            valid = policy.validate_alerts(settings)
            balance = balance_of(acct.entries)
            acct.alert_settings = valid
            acct.threshold_armed = {t: balance >= t for t in valid.thresholds}
            change = SettingsChange(valid.to_dict())
            self._remember(acct, key, "set_alert_settings", args, change.to_dict())
            self._audit(acct, actor, "alert_settings", key, valid.to_dict(), self._now())
            return change

    # --- outbox --------------------------------------------------------------------------------------------
    async def raise_alert(self, tenant_id: str, kind: AlertKind, key: str,
                          payload: Mapping[str, Any]) -> Alert:
        with self._atomic():
            acct = self._account(tenant_id)
            kind = AlertKind(kind)   # not a kind at all: ValueError
            if kind.value not in policy.RAISABLE_KINDS:
                raise ValueError(f"{kind.value} alerts are raised by the money operations, not by raise_alert")
            if not isinstance(key, str) or not key.startswith(f"{kind.value}:"):
                raise ValueError(f"the key of a {kind.value} alert starts with {kind.value + ':'!r}: {key!r}")
            return self._raise(acct, kind, key, payload, self._now())

    @staticmethod
    def _oldest_first(alerts: Sequence[Alert]) -> list[Alert]:
        order = {id(a): i for i, a in enumerate(alerts)}
        return sorted(alerts, key=lambda a: (a.created_at, order[id(a)]))

    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        with self._atomic():
            now = self._now()
            claimed: list[Alert] = []
            for alert in self._oldest_first(self._alerts):
                due = alert.next_attempt_at is None or alert.next_attempt_at <= now
                free = alert.lease_until is None or alert.lease_until <= now
                if not (alert.status is AlertStatus.PENDING and due and free):
                    continue
                i = self._alerts.index(alert)
                if alert.attempts >= self._max_attempts:
                    # Its last allowed attempt was claimed and never released (the worker crashed): it ends
                    # here, whatever `limit` is, and is not returned.
                    self._alerts[i] = replace(alert, status=AlertStatus.DEAD, lease_owner=None, lease_until=None,
                                              last_error=alert.last_error or LEASE_EXPIRED_ERROR)
                elif len(claimed) < limit:
                    leased = replace(alert, attempts=alert.attempts + 1, lease_owner=worker,
                                     lease_until=now + lease)
                    self._alerts[i] = leased
                    claimed.append(leased)
            return claimed

    async def mark_delivered(self, alert_id: str, destination: str, *, worker: str) -> Alert:
        with self._atomic():
            i = self._find_alert(alert_id)
            alert = self._alerts[i]
            if alert.lease_owner != worker:
                raise LeaseLost(alert_id, worker)
            if destination not in alert.destinations:
                raise NotFound("destination", destination)
            if destination not in alert.delivered:
                alert = replace(alert, delivered=alert.delivered + (destination,))
            if not alert.pending_destinations:
                alert = replace(alert, status=AlertStatus.DELIVERED, lease_owner=None, lease_until=None)
            self._alerts[i] = alert
            return alert

    async def release_alert(self, alert_id: str, *, worker: str, retry_at: datetime, error: str) -> Alert:
        with self._atomic():
            if retry_at.tzinfo is None:
                raise ValueError("retry_at must be aware")
            i = self._find_alert(alert_id)
            alert = self._alerts[i]
            if alert.lease_owner != worker:
                raise LeaseLost(alert_id, worker)
            # The attempt was counted when the alert was claimed.
            dead = alert.attempts >= self._max_attempts
            alert = replace(alert, last_error=error, next_attempt_at=retry_at, lease_owner=None, lease_until=None,
                            status=AlertStatus.DEAD if dead else AlertStatus.PENDING)
            self._alerts[i] = alert
            return alert

    async def get_alert(self, alert_id: str) -> Alert:
        self._open()
        return self._alerts[self._find_alert(alert_id)]

    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        self._account(tenant_id)
        mine = [a for a in self._alerts if a.tenant_id == tenant_id and (status is None or a.status is status)]
        return list(reversed(self._oldest_first(mine)))[:max(limit, 0)]

    # --- conversations and subscriptions --------------------------------------------------------------------
    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        return self._account(tenant_id).watermarks.get(source)

    async def set_sync_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        if until.tzinfo is None:
            raise ValueError("a watermark must be an aware datetime")
        with self._atomic():
            acct = self._account(tenant_id)
            until = until.astimezone(timezone.utc)
            current = acct.watermarks.get(source)
            if current is None or until > current:
                acct.watermarks[source] = until
            return acct.watermarks[source]

    async def save_conversation(self, ref: ConversationRef) -> bool:
        with self._atomic():
            self._account(ref.tenant_id)
            old = self._conversations.get((ref.tenant_id, ref.conversation_id))
            if old is None or dict(old.reference) != dict(ref.reference):
                self._conversations[(ref.tenant_id, ref.conversation_id)] = ref
            return old is None

    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None:
        self._account(tenant_id)
        return self._conversations.get((tenant_id, conversation_id))

    async def conversations(self, tenant_id: str) -> list[ConversationRef]:
        self._account(tenant_id)
        return sorted((r for (t, _), r in self._conversations.items() if t == tenant_id),
                      key=lambda r: r.conversation_id)

    async def subscribe(self, tenant_id: str, conversation_id: str, kinds: Iterable[AlertKind], *,
                        actor: str, key: str) -> SettingsChange:
        kinds = list(kinds)   # an iterator is read once, before anything else
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"conversation_id": conversation_id, "kinds": sorted({str(k) for k in kinds})}
            if (stored := self._stored(acct, key, "subscribe", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            try:
                wanted = {AlertKind(k) for k in kinds}
            except ValueError:
                raise InvalidSettings("unknown_kind") from None
            if not wanted:
                raise InvalidSettings("no_kinds")
            ordered = tuple(k for k in AlertKind if k in wanted)
            now = self._now()
            sub = Subscription(conversation_id, ordered, actor, now)
            acct.subscriptions[conversation_id] = sub
            change = SettingsChange(sub.to_dict())
            self._remember(acct, key, "subscribe", args, change.to_dict())
            self._audit(acct, actor, "subscribe", key,
                        {"conversation_id": conversation_id, "kinds": [k.value for k in ordered]}, now)
            return change

    async def unsubscribe(self, tenant_id: str, conversation_id: str, *, actor: str, key: str) -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"conversation_id": conversation_id}
            if (stored := self._stored(acct, key, "unsubscribe", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            if conversation_id not in acct.subscriptions:
                raise NotFound("subscription", conversation_id)
            del acct.subscriptions[conversation_id]
            self._skip_destination(tenant_id, conversation_id)
            change = SettingsChange({"conversation_id": conversation_id})
            self._remember(acct, key, "unsubscribe", args, change.to_dict())
            self._audit(acct, actor, "unsubscribe", key, {"conversation_id": conversation_id}, self._now())
            return change

    async def disable_subscription(self, tenant_id: str, conversation_id: str, *, reason: str) -> None:
        with self._atomic():
            acct = self._account(tenant_id)
            sub = acct.subscriptions.get(conversation_id)
            if sub is None or not sub.enabled:
                return
            acct.subscriptions[conversation_id] = replace(sub, enabled=False, disabled_reason=reason)
            self._skip_destination(tenant_id, conversation_id)
            self._audit(acct, SYSTEM_ACTOR, "disable_subscription", "",
                        {"conversation_id": conversation_id, "reason": reason}, self._now())

    async def subscriptions(self, tenant_id: str) -> list[Subscription]:
        acct = self._account(tenant_id)
        return [acct.subscriptions[c] for c in sorted(acct.subscriptions)]

    # --- roles and audit ------------------------------------------------------------------------------------
    async def grant_role(self, tenant_id: str, user_id: str, role: Role, *, actor: str, key: str,
                         display_name: str = "") -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"user_id": user_id, "role": str(role), "display_name": display_name}
            if (stored := self._stored(acct, key, "grant_role", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            try:
                role = Role(role)
            except ValueError:
                raise InvalidSettings("unknown_role") from None
            now = self._now()
            grant = RoleGrant(user_id, role, actor, now, display_name)
            acct.roles[user_id] = grant
            change = SettingsChange(grant.to_dict())
            self._remember(acct, key, "grant_role", args, change.to_dict())
            self._audit(acct, actor, "grant_role", key,
                        {"user_id": user_id, "role": role.value, "display_name": display_name}, now)
            return change

    async def revoke_role(self, tenant_id: str, user_id: str, *, actor: str, key: str) -> SettingsChange:
        with self._atomic():
            acct = self._keyed(tenant_id, key)
            args = {"user_id": user_id}
            if (stored := self._stored(acct, key, "revoke_role", args)) is not None:
                return SettingsChange.from_dict(stored, replayed=True)
            grant = acct.roles.pop(user_id, None)
            if grant is None:
                raise NotFound("role", user_id)
            change = SettingsChange({"user_id": user_id, "role": grant.role.value})
            self._remember(acct, key, "revoke_role", args, change.to_dict())
            self._audit(acct, actor, "revoke_role", key, {"user_id": user_id, "role": grant.role.value},
                        self._now())
            return change

    async def roles(self, tenant_id: str) -> list[RoleGrant]:
        acct = self._account(tenant_id)
        return [acct.roles[u] for u in sorted(acct.roles)]

    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        return self._page(self._account(tenant_id).audit, limit, before)

    # --- copying a store (storage/transfer.py) ----------------------------------------------------------------
    def _book_state(self, acct: _AccountState) -> dict[str, Any]:
        """What the incremental backends would keep as the account's hot state, derived from the facts."""
        lots, deficit = replay_lots(acct.entries, acct.day_lots_from)
        recharges = recharges_of(acct.entries)
        month = policy.month_key(recharges[-1].at) if recharges else ""
        now = self._now()
        return {
            "tenant_id": acct.tenant_id, "currency": acct.currency, "created_at": iso(acct.created_at),
            "balance": balance_of(acct.entries), "deficit": deficit, "entry_count": len(acct.entries),
            "audit_count": len(acct.audit), "lots": [lot.to_dict() for lot in lots],
            "recharge": acct.recharge.to_dict(), "alerts": acct.alert_settings.to_dict(),
            "recharge_month": month,
            "recharged_in_month": sum(e.amount for e in recharges if policy.month_key(e.at) == month),
            "recent_recharges": [iso(e.at) for e in recharges if now - e.at < policy.BREAKER_WINDOW],
            "armed": {str(t): v for t, v in acct.threshold_armed.items()},
            "exhausted_armed": acct.exhausted_armed, "blocked_armed": acct.blocked_armed,
            "alert_count": sum(1 for a in self._alerts if a.tenant_id == acct.tenant_id),
            "day_lots_from": acct.day_lots_from,
        }

    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        from . import transfer
        acct = self._account(tenant_id)
        mine = self._oldest_first([a for a in self._alerts if a.tenant_id == tenant_id])
        return {
            "format": transfer.FORMAT, "tenant_id": tenant_id, "state": self._book_state(acct),
            "entries": [e.to_dict() for e in acct.entries],
            "ops": [{"key": key, "operation": r.operation, "fingerprint": r.fingerprint,
                     "result": transfer.compact_result(r.operation, r.result)} for key, r in acct.ops.items()],
            "alerts": [{**a.to_dict(), "n": n} for n, a in enumerate(mine, start=1)],
            "audit": [r.to_dict() for r in acct.audit],
            "subscriptions": [acct.subscriptions[c].to_dict() for c in sorted(acct.subscriptions)],
            "roles": [acct.roles[u].to_dict() for u in sorted(acct.roles)],
            "approvals": [a.to_dict() for a in acct.approvals.values()],
            "conversations": [r.to_dict() for r in await self.conversations(tenant_id)],
            "watermarks": {source: iso(until) for source, until in sorted(acct.watermarks.items())},
        }

    async def import_account(self, data: Mapping[str, Any]) -> None:
        from . import transfer
        tenant = transfer.check_export(data)
        with self._atomic():
            if tenant in self._accounts:
                raise ValueError(f"the store already has an account for tenant {tenant!r}")
            state = data["state"]
            entries = {e["seq"]: e for e in data["entries"]}
            acct = _AccountState(
                tenant, state["currency"], parse_iso(state["created_at"]),
                entries=[Entry.from_dict(e) for e in data["entries"]],
                ops={o["key"]: _OpRecord(o["operation"], o["fingerprint"],
                                         transfer.expand_result(o["operation"], o["result"], entries))
                     for o in data["ops"]},
                recharge=RechargeSettings.from_dict(state["recharge"]),
                alert_settings=AlertSettings.from_dict(state["alerts"]),
                subscriptions={d["conversation_id"]: Subscription.from_dict(d) for d in data["subscriptions"]},
                roles={d["user_id"]: RoleGrant.from_dict(d) for d in data["roles"]},
                approvals={d["approval_id"]: Approval.from_dict(d) for d in data["approvals"]},
                watermarks={source: parse_iso(until) for source, until in data["watermarks"].items()},
                audit=[AuditRecord.from_dict(d) for d in data["audit"]],
                threshold_armed={int(t): v for t, v in state["armed"].items()},
                exhausted_armed=state["exhausted_armed"], blocked_armed=state["blocked_armed"],
                # a state written before ADR 0008 has no field: all its entries opened lots by the old rule
                day_lots_from=state.get("day_lots_from", state["entry_count"] + 1))
            self._accounts[tenant] = acct
            self._alerts.extend(Alert.from_dict({k: v for k, v in d.items() if k != "n"}) for d in data["alerts"])
            for d in data["conversations"]:
                ref = ConversationRef.from_dict(d)
                self._conversations[(tenant, ref.conversation_id)] = ref

    # --- health ---------------------------------------------------------------------------------------------
    async def verify(self, tenant_id: str | None = None) -> VerifyReport:
        self._open()
        tenants = [self._account(tenant_id).tenant_id] if tenant_id is not None else sorted(self._accounts)
        problems: list[str] = []
        entries = 0
        for tenant in tenants:
            acct = self._accounts[tenant]
            entries += len(acct.entries)
            running = 0
            for number, e in enumerate(acct.entries, start=1):
                running += e.amount
                if e.seq != number:
                    problems.append(f"{tenant}: entry {number} has seq {e.seq}")
                if e.balance_after != running:
                    problems.append(f"{tenant}: entry {e.seq} balance_after {e.balance_after} != {running}")
                if e.tenant_id != tenant:
                    problems.append(f"{tenant}: entry {e.seq} belongs to {e.tenant_id}")
                sign_ok = (e.amount != 0 if e.kind is EntryKind.ADJUSTMENT
                           else (e.amount > 0) == (e.kind in _CREDIT_KINDS))
                if not sign_ok:
                    problems.append(f"{tenant}: entry {e.seq} of kind {e.kind.value} has amount {e.amount}")
            keys = [e.key for e in acct.entries]
            if len(keys) != len(set(keys)):
                problems.append(f"{tenant}: entry keys are not unique")
            try:
                lots, deficit = replay_lots(acct.entries, acct.day_lots_from)
            except ValueError as exc:
                problems.append(f"{tenant}: {exc}")
            else:
                if deficit < 0 or (deficit and lots):
                    problems.append(f"{tenant}: deficit {deficit} with {len(lots)} open lots")
                if sum(lot.remaining for lot in lots) - deficit != balance_of(acct.entries):
                    problems.append(f"{tenant}: lots minus deficit != balance")
            alert_keys = [a.key for a in self._alerts if a.tenant_id == tenant]
            if len(alert_keys) != len(set(alert_keys)):
                problems.append(f"{tenant}: an alert key is used twice")
            if [a.seq for a in acct.audit] != list(range(1, len(acct.audit) + 1)):
                problems.append(f"{tenant}: audit seqs have gaps")
        return VerifyReport(len(tenants), entries, tuple(problems))

    async def ping(self) -> None:
        self._open()

    async def close(self) -> None:
        self._closed = True


__all__ = ["ReferenceLedger", "balance_of", "recharged_in_month", "replay_lots"]
