"""The `Ledger` contract: what every backend (TinyDB, PostgreSQL, the reference model) promises.

Semantics (DESIGN.md section 3, decided in docs/decisions/):

* **Accounts** are per Entra tenant, with one ISO 4217 currency fixed before the first entry. Money is `int`
  minor units. The balance is the sum of the entries; a stored snapshot must always equal it (`verify()`).
* **Idempotency first.** Every mutation carries a key, scoped to the account. The key is looked up before
  anything else (before the balance, before validation against state): the same key with the same operation
  and arguments returns the original result with `replayed=True` and changes nothing; the same key with
  anything else raises `IdempotencyConflict`. A failed operation (a `LedgerError`) records nothing, so its key
  stays free.
* **Lots.** Each credit (`funds_added`, `auto_recharge`, positive `adjustment`) goes into a lot expiring at the
  end of the UTC day 12 calendar months after its own UTC day; the credits of one day share one lot (ADR 0008);
  debits consume open lots oldest first. Usage is a fact and is recorded even below zero (the
  shortfall is a *deficit* that the next credits pay first); manual debits (negative adjustments) may not go
  below zero (`InsufficientFunds`). `expire_lots(now)` writes an `expiry` entry for what is left in each expired
  lot and raises an `expiring` alert once per lot with money left that expires within 30 days.
* **Auto-recharge** (Microsoft's semantics): after any debit that leaves the balance below the trigger, add the
  fixed amount as many times as needed to be back at or above the trigger, each a separate `auto_recharge`
  entry, in the same atomic unit as the debit. Each recharge must fit the monthly cap (money recharged in the
  calendar month, UTC) and the burst breaker (at most `max_per_day` in any rolling 24 hours); the first one that
  does not fit is not written, the rest of the loop stops, and a `recharge_blocked` alert is raised (once until a
  recharge succeeds again or the balance is back at or above the trigger). Saving settings moves no money.
* **Alerts** go to an outbox in the same atomic unit as their cause, with deterministic keys, so none is lost
  and none doubled. Thresholds are edge-triggered on the balance at the end of the atomic unit (after any
  recharge): `low_balance` fires once when the balance goes from at-or-above a threshold to below it and re-arms
  only when it is back at or above; `exhausted` likewise at zero (balance <= 0). `recharged` is raised once per
  operation that recharged, listing its recharges. Destinations are the enabled subscriptions for the kind at
  the time the alert is raised.
* **Outbox delivery**: `claim_alerts` leases due alerts to a worker and counts an attempt for each (so an alert
  whose sending crashes the worker, and whose lease therefore just runs out, still ends); `mark_delivered` records
  each (alert, destination); `release_alert` gives the alert back with a retry time. An alert that has used
  `max_attempts` attempts is dead (listed by `alerts(status=DEAD)`): at its release, or at the next claim after
  its lease ran out.
* **Keys** are the callers' (activity ids, card nonces, usage row ids) except two namespaces the ledger derives
  itself: `expiry:{lot}` and `{key}:recharge:{n}`. A caller's key there is a `ValueError` (a usage row id
  there is `InvalidUsage`).
* **Approvals** (optional, DESIGN.md: adding funds above a threshold needs a second admin): `request_approval`
  records a pending request and moves no money; `decide_approval` by *another* admin closes it. Approving writes,
  in the same atomic unit, the `funds_added` entry the request asked for (the approver is its actor, the
  decision key its key, the approval id its reference), with the lots, recharges and alerts of `add_funds`;
  rejecting moves no money. A decided approval stays decided (`ApprovalClosed`); the requester may never decide
  their own (`SelfApproval`). Which amounts need an approval is the caller's policy, not the ledger's.
* **Roles and audit**: roles are stored per account (`admin`, `reader`); every change is audited with the
  actor (the chat user's Entra object id, or `system`) in the same atomic unit.

All methods are coroutines; backends keep the event loop free. Times come from the backend's clock.
"""

from __future__ import annotations

import abc
import contextlib
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Sequence

from .model import (Account, AccountView, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                    ApprovalStatus, BatchResult, ConversationRef, Entry, Lot, Page, Posting,
                    RechargeSettings, Role, RoleGrant, SettingsChange, Subscription, SYSTEM_ACTOR, UsageRecord,
                    VerifyReport, EntryKind)
from .forecast import DEFAULT_WINDOW, call_time

#: Alerts are given up after this many failed delivery attempts unless a backend is told otherwise.
DEFAULT_MAX_ATTEMPTS = 8
#: An `expiring` alert is raised for a lot with money left this long before it expires.
EXPIRING_NOTICE = timedelta(days=30)


class Ledger(abc.ABC):
    """Async ledger of Communications Credits. See the module docstring for the semantics every backend keeps."""

    _alert_listeners: tuple[Callable[[], None], ...] = ()
    #: True when the backend does its work in its own thread (TinyDB's writer), so the event loop stays free for
    #: the caller's own CPU work (parsing an import); False when the work runs on the loop (asyncpg).
    works_off_the_loop: bool = False

    # --- waking the notifier ------------------------------------------------------------------------------------
    def add_alert_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (no arguments, on the event loop, after the operation returned or failed) whenever
        an operation of this object may have queued a pending alert. A hint, never a promise: it can come for
        nothing (a rolled-back unit), and alerts queued by another process over the same store do not cause it,
        so a notifier still polls. The listener must be quick and must not raise (it sets an event)."""
        self._alert_listeners = (*self._alert_listeners, listener)

    @contextlib.asynccontextmanager
    async def leading(self, job: str) -> AsyncIterator[bool]:
        """Whether this process should run the scheduled `job` (usage sync, daily jobs) now: with several
        processes over one store, one at a time. A single-process store (TinyDB, the reference model) always
        leads; PostgreSQL holds an advisory lock for the duration of the `async with` block."""
        yield True

    def _alerts_queued(self) -> None:
        """For backends: tell the listeners that alerts may be waiting."""
        for listener in self._alert_listeners:
            listener()

    # --- accounts -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open_account(self, tenant_id: str, currency: str, *, actor: str = SYSTEM_ACTOR) -> Account:
        """Create the tenant's account if it does not exist; return it either way (an existing account keeps its
        currency: use `set_currency` to change it before the first entry)."""

    @abc.abstractmethod
    async def get_account(self, tenant_id: str) -> Account:
        """The account with its current balance, or `AccountNotFound`."""

    @abc.abstractmethod
    async def tenants(self) -> list[str]:
        """Every tenant with an account, sorted."""

    @abc.abstractmethod
    async def set_currency(self, tenant_id: str, currency: str, *, actor: str, key: str) -> SettingsChange:
        """Change the account's currency; `CurrencyLocked` once it has an entry."""

    # --- money ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_funds(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                        reference: str = "") -> Posting:
        """Credit `amount` (> 0 minor units) as `funds_added`, opening a lot."""

    @abc.abstractmethod
    async def adjust(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                     reference: str = "") -> Posting:
        """A signed correction (non-zero). Positive opens a lot; negative consumes lots and may not take the
        balance below zero; a negative adjustment can trigger auto-recharge like any debit."""

    @abc.abstractmethod
    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        """Debit one billed call, keyed by `usage.usage_id`. Recorded even below zero. `CurrencyMismatch` when
        the row is in another currency than the account's; `InvalidAmount` for a zero or negative charge (free
        calls are the sync's to skip); `InvalidUsage` for a missing or reserved row id or a naive time."""

    @abc.abstractmethod
    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        """Record many rows in one atomic unit, each under its own key, in the given order. Rows that are
        invalid or conflicting are reported per row and change nothing; the others are recorded as if by
        `record_usage` one after another (recharges and alerts included)."""

    @abc.abstractmethod
    async def expire_lots(self, now: datetime | None = None) -> list[Posting]:
        """For every account: write an `expiry` entry for each lot expired at `now` with money left (keyed
        `expiry:{lot_id}`), and raise an `expiring` alert once per lot with money left that expires within 30
        days. Returns the postings written (empty when there was nothing to do)."""

    # --- approvals ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def request_approval(self, tenant_id: str, amount: int, *, actor: str, key: str,
                               memo: str = "") -> Approval:
        """Ask a second admin to approve adding `amount` (> 0 minor units). Keyed like `add_funds` (account, key,
        idempotency lookup, then `InvalidAmount`); the id is `policy.approval_id(tenant, key)`. Moves no money.
        A replay returns the approval as it was requested (pending), not as it stands now."""

    @abc.abstractmethod
    async def decide_approval(self, tenant_id: str, approval_id: str, *, approve: bool, actor: str,
                              key: str) -> ApprovalDecision:
        """Approve or reject a pending approval. Checks, in order: the account, the key, the idempotency lookup,
        `NotFound("approval")`, `SelfApproval` (`actor` requested it), `ApprovalClosed` (already decided).
        Approving writes the `funds_added` entry in the same atomic unit (see the module docstring);
        rejecting only closes the approval."""

    @abc.abstractmethod
    async def approvals(self, tenant_id: str, *, status: ApprovalStatus | None = None) -> list[Approval]:
        """The account's approvals, newest first, optionally of one status."""

    @abc.abstractmethod
    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        """One approval as it stands, or `NotFound("approval")`."""

    # --- reading -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        """Entries newest first, at most `limit`, with `seq < before` when `before` is given."""

    @abc.abstractmethod
    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        """Every entry at or after `since`, oldest first (for forecasts and reports)."""

    @abc.abstractmethod
    async def lots(self, tenant_id: str) -> list[Lot]:
        """Open lots (money left), oldest first."""

    async def account_view(self, tenant_id: str, *, now: datetime | None = None,
                           expiring_within: timedelta = EXPIRING_NOTICE,
                           burn_window: timedelta = DEFAULT_WINDOW) -> AccountView:
        """Everything a chat turn reads about an account (see `AccountView`), as of `now` (default: the
        backend's clock), in one call: a backend answers it from one consistent state in one hop (one thread
        hop on TinyDB, one round trip on PostgreSQL). `AccountNotFound` for an unknown tenant.

        This composition of the single reads is the meaning; backends override it to make it cheap."""
        account = await self.get_account(tenant_id)
        now = now if now is not None else self._now()
        expiring = tuple(lot for lot in await self.lots(tenant_id) if lot.expires_at <= now + expiring_within)
        last_recharge, before = None, None
        while last_recharge is None:
            page = await self.history(tenant_id, limit=200, before=before)
            last_recharge = next((e for e in page.items if e.kind is EntryKind.AUTO_RECHARGE), None)
            if page.older is None:
                break
            before = page.older
        start = now - burn_window
        used = sum(-e.amount for e in await self.entries_since(tenant_id, start)
                   if e.kind is EntryKind.USAGE and start <= call_time(e) <= now)
        return AccountView(account, tuple(await self.roles(tenant_id)), await self.recharge_settings(tenant_id),
                           await self.alert_settings(tenant_id), expiring, last_recharge, used)

    def _now(self) -> datetime:
        """The backend's clock (every backend keeps it as `_clock`)."""
        return self._clock()  # type: ignore[attr-defined]

    @abc.abstractmethod
    async def recharge_settings(self, tenant_id: str) -> RechargeSettings: ...

    @abc.abstractmethod
    async def set_recharge_settings(self, tenant_id: str, settings: RechargeSettings, *, actor: str,
                                    key: str) -> SettingsChange:
        """Replace the auto-recharge settings. `InvalidSettings` when enabled with a zero amount, a negative
        trigger, a cap below one recharge, or a breaker below 1. Moves no money."""

    @abc.abstractmethod
    async def alert_settings(self, tenant_id: str) -> AlertSettings: ...

    @abc.abstractmethod
    async def set_alert_settings(self, tenant_id: str, settings: AlertSettings, *, actor: str,
                                 key: str) -> SettingsChange:
        """Replace the low-balance thresholds (positive, at most 10) and forecast horizon. Each threshold is
        armed if the balance is at or above it; saving raises no alert."""

    # --- outbox --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def raise_alert(self, tenant_id: str, kind: AlertKind, key: str,
                          payload: Mapping[str, Any]) -> Alert:
        """Enqueue an alert raised outside a money operation: `forecast` or `expiring` only, with a key that
        starts with `{kind}:` (else `ValueError`). Idempotent by `key`: a second call with the same key returns
        the first alert unchanged."""

    @abc.abstractmethod
    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        """Lease up to `limit` pending alerts that are due (`next_attempt_at` passed or unset) and not under a
        live lease, oldest first, counting one attempt each. One whose lease ran out after its last allowed
        attempt becomes dead instead of being claimed."""

    @abc.abstractmethod
    async def mark_delivered(self, alert_id: str, destination: str, *, worker: str) -> Alert:
        """Record that `destination` received the alert. When every destination is served the alert becomes
        `delivered` and its lease ends. `LeaseLost` if the alert is not leased to `worker`."""

    @abc.abstractmethod
    async def release_alert(self, alert_id: str, *, worker: str, retry_at: datetime, error: str) -> Alert:
        """Give a leased alert back after a failed attempt: keep `error`, retry at `retry_at`; when the alert has
        used `max_attempts` attempts it is `dead` instead."""

    @abc.abstractmethod
    async def get_alert(self, alert_id: str) -> Alert: ...

    @abc.abstractmethod
    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        """The account's alerts, newest first, optionally of one status."""

    # --- usage sync ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        """Up to when usage from `source` (for example "graph") was read completely for the account, or None
        before the first sync. `AccountNotFound` for an unknown account."""

    @abc.abstractmethod
    async def set_sync_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        """Record that `source` was read completely up to `until` (aware). Never moves backwards: an earlier
        `until` than the stored one changes nothing. Returns the watermark as stored. Not audited (it moves no
        money and is not a user's change); the debits themselves are."""

    # --- conversations and subscriptions --------------------------------------------------------------------
    @abc.abstractmethod
    async def save_conversation(self, ref: ConversationRef) -> bool:
        """Insert or replace the reference of a conversation of an existing account (`AccountNotFound`
        otherwise: the bot opens the account on first contact). Saving a reference equal to the stored one
        changes nothing (no write, `updated_at` stays: it is when the reference last changed), because the bot
        saves on every activity. Not audited: it is not a user's change.

        True when this call made the conversation known, decided atomically: of two concurrent first saves
        (Teams sends installationUpdate and conversationUpdate together) exactly one is True, so the bot
        welcomes a conversation once."""

    @abc.abstractmethod
    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None: ...

    @abc.abstractmethod
    async def conversations(self, tenant_id: str) -> list[ConversationRef]: ...

    @abc.abstractmethod
    async def subscribe(self, tenant_id: str, conversation_id: str, kinds: Iterable[AlertKind], *,
                        actor: str, key: str) -> SettingsChange:
        """Make the conversation a destination for `kinds` (replacing its previous kinds, enabling it again)."""

    @abc.abstractmethod
    async def unsubscribe(self, tenant_id: str, conversation_id: str, *, actor: str, key: str) -> SettingsChange:
        """Stop sending alerts there; `NotFound` if it was not subscribed. Pending alerts skip it."""

    @abc.abstractmethod
    async def disable_subscription(self, tenant_id: str, conversation_id: str, *, reason: str) -> None:
        """Disable a destination that refuses delivery (bot removed: 403/404); pending alerts skip it."""

    @abc.abstractmethod
    async def subscriptions(self, tenant_id: str) -> list[Subscription]: ...

    # --- roles and audit ------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def grant_role(self, tenant_id: str, user_id: str, role: Role, *, actor: str, key: str,
                         display_name: str = "") -> SettingsChange: ...

    @abc.abstractmethod
    async def revoke_role(self, tenant_id: str, user_id: str, *, actor: str, key: str) -> SettingsChange:
        """Remove the user's role; `NotFound` if they had none."""

    @abc.abstractmethod
    async def roles(self, tenant_id: str) -> list[RoleGrant]:
        """Stored grants, sorted by user id."""

    @abc.abstractmethod
    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        """Audit records newest first (same paging as `history`)."""

    # --- copying a store (storage/transfer.py) --------------------------------------------------------------
    @abc.abstractmethod
    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        """Every fact of the account as plain JSON-safe data (`storage.transfer` documents the format):
        {"format": 1, "tenant_id", "state": BookState dict, "entries" (oldest first), "ops" (neutral
        {"key", "operation", "fingerprint", "result"}), "alerts" (oldest first, each with its creation
        number "n"), "audit", "subscriptions", "roles", "approvals" (in request order), "conversations",
        "watermarks": {source: iso}}. `AccountNotFound` for an unknown tenant."""

    @abc.abstractmethod
    async def import_account(self, data: Mapping[str, Any]) -> None:
        """Write an exported account as it is (no rule is run again) into this store, in one atomic unit.
        `ValueError` if the tenant already has an account here, or if `data` is not an export this code reads."""

    # --- health ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def verify(self, tenant_id: str | None = None) -> VerifyReport:
        """Check every invariant from what is stored: snapshot balance == sum of entries, each entry's
        `balance_after` is the running sum, seqs have no gaps, open lots replayed from the entries equal the
        stored lots, lots minus deficit equal the balance."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the store is not reachable (readiness)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending work and release the store (locks, pools, threads). Idempotent."""

    async def __aenter__(self) -> "Ledger":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
