"""`TinyLedger`: the embedded, single-process ledger on TinyDB files.

Every public coroutine hands its work to one writer thread, so the event loop never waits on disk and the
operations of the process are serialised (one writer: no two operations interleave). An operation mutates only a
`Book` (a copy of the account's hot state); when it succeeds, its entries, operation record, audit records,
alerts and new state go to the files through one journal commit (files.py) and only then into the in-memory
view. A `LedgerError` before the commit leaves everything as it was.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from tinydb import Query

from .. import engine, policy
from ..clock import Clock, utc_now
from ..engine import Book, BookState
from ..errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                      InvalidSettings, LeaseLost, LedgerError, NotFound, SelfApproval)
from ..ledger import DEFAULT_MAX_ATTEMPTS, EXPIRING_NOTICE, Ledger
from ..model import (Account, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                     ApprovalStatus, AuditRecord, BatchResult,
                     ConversationRef, Entry, EntryKind, Lot, Page, Posting, RechargeSettings, Role, RoleGrant,
                     RowOutcome, RowStatus, SettingsChange, Subscription, SYSTEM_ACTOR, UsageRecord,
                     VerifyReport, iso, parse_iso)
from ..money import check_minor, normalize_currency
from .. import transfer
from . import files
from .layout import ACCOUNTS, ChunkedLog, FileSet, account_dir
from .lock import StoreLock

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRY_CHUNK = 256
OP_CHUNK = 512
AUDIT_CHUNK = 256
ALERT_CHUNK = 128


@dataclass
class _OpRecord:
    fingerprint: str
    seq: int


@dataclass
class _Account:
    """In-memory view of one account, always equal to what is committed on disk."""

    tenant_id: str
    folder: str
    state: BookState
    roles: dict[str, RoleGrant]
    subscriptions: dict[str, Subscription]
    conversations: dict[str, ConversationRef]
    outbox: dict[str, Alert]
    archived: dict[str, int]  # alert id -> archive seq
    order: dict[str, int]  # alert id -> creation number (ties in created_at are broken by it)
    archive_count: int
    op_count: int
    keys: dict[str, _OpRecord] | None = None  # loaded on first mutation
    approvals: dict[str, Approval] = field(default_factory=dict)  # in the order they were requested
    watermarks: dict[str, datetime] = field(default_factory=dict)  # usage source -> read completely up to
    entries: ChunkedLog = field(init=False)
    ops: ChunkedLog = field(init=False)
    audit_log: ChunkedLog = field(init=False)
    alert_log: ChunkedLog = field(init=False)

    def attach(self, fileset: FileSet) -> "_Account":
        self.entries = ChunkedLog(fileset, f"{self.folder}/entries", ENTRY_CHUNK)
        self.ops = ChunkedLog(fileset, f"{self.folder}/ops", OP_CHUNK)
        self.audit_log = ChunkedLog(fileset, f"{self.folder}/audit", AUDIT_CHUNK)
        self.alert_log = ChunkedLog(fileset, f"{self.folder}/alerts", ALERT_CHUNK)
        return self

    @property
    def state_file(self) -> str:
        return f"{self.folder}/state.json"

    @property
    def outbox_file(self) -> str:
        return f"{self.folder}/outbox.json"

    @property
    def conversations_file(self) -> str:
        return f"{self.folder}/conversations.json"

    def account(self) -> Account:
        s = self.state
        return Account(s.tenant_id, s.currency, s.created_at, s.balance, s.entry_count)


@dataclass
class _Unit:
    """What one operation writes, collected before anything touches a file."""

    book: Book | None = None
    ops: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # key, fingerprint, result


@dataclass
class _Change:
    """What a keyed settings change produced: its result value, its audit action and details, and the account
    tables it replaces (None: unchanged)."""

    value: dict[str, Any]
    action: str
    details: dict[str, Any]
    subscriptions: dict[str, Subscription] | None = None
    roles: dict[str, RoleGrant] | None = None
    approvals: list[Approval] = field(default_factory=list)  # approvals added or changed
    outbox: list[Alert] = field(default_factory=list)
    #: What the caller gets, when it is not `SettingsChange(value)`; `value` is then its stored form.
    result: Any = None

    def outcome(self) -> tuple[Any, dict[str, Any]]:
        """(what the caller gets, what the operation record keeps for a replay)."""
        if self.result is None:
            change = SettingsChange(self.value)
            return change, change.to_dict()
        return self.result, self.value


class TinyLedger(Ledger):
    """The embedded backend. Open with `await TinyLedger.open(path)`; one process per store."""

    works_off_the_loop = True

    def __init__(self, root: Path, *, clock: Clock, max_attempts: int) -> None:
        self._root = root
        self._clock = clock
        self._max_attempts = max_attempts
        self._lock = StoreLock(root)
        self._files = FileSet(root)
        self._accounts: dict[str, _Account] = {}
        self._alert_index: dict[str, str] = {}  # alert id -> tenant
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinydb-writer")
        self._closed = False
        # pending alerts committed (counted on the writer thread, compared on the loop: see `_call`)
        self._alerts_committed = 0
        self._alerts_announced = 0

    @classmethod
    async def open(cls, root: Path, *, clock: Clock = utc_now,
                   max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> "TinyLedger":
        ledger = cls(Path(root), clock=clock, max_attempts=max_attempts)
        try:
            await ledger._call(ledger._open)
        except BaseException:
            ledger._pool.shutdown(wait=True)
            raise
        return ledger

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            committed = self._alerts_committed
            if committed != self._alerts_announced:
                self._alerts_announced = committed
                self._alerts_queued()

    # --- opening ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            rewritten = files.recover(self._root)
            if rewritten:
                log.warning("store %s: finished an interrupted commit (%d files)", self._root, rewritten)
            for doc in self._files.table(ACCOUNTS).all():
                self._load(doc["tenant_id"], doc["folder"])
        except BaseException:
            self._lock.release()
            raise

    def _load(self, tenant_id: str, folder: str) -> _Account:
        f = self._files
        state_doc = f.table(f"{folder}/state.json", "state").get(doc_id=1)
        if state_doc is None:
            raise LedgerError(f"account folder {folder} has no state")
        acct = _Account(
            tenant_id, folder, BookState.from_dict(state_doc),
            roles={d["user_id"]: RoleGrant.from_dict(d) for d in f.table(f"{folder}/state.json", "roles").all()},
            subscriptions={d["conversation_id"]: Subscription.from_dict(d)
                           for d in f.table(f"{folder}/state.json", "subscriptions").all()},
            conversations={d["conversation_id"]: ConversationRef.from_dict(d)
                           for d in f.table(f"{folder}/conversations.json").all()},
            outbox={}, archived={}, order={}, archive_count=0, op_count=0,
            approvals={d["approval_id"]: Approval.from_dict(d)
                       for d in f.table(f"{folder}/state.json", "approvals").all()},
            watermarks={d["source"]: parse_iso(d["until"]) for d in f.table(f"{folder}/state.json", "sync").all()},
        ).attach(f)
        for d in f.table(f"{folder}/outbox.json").all():
            acct.outbox[d["alert_id"]] = _alert(d)
            acct.order[d["alert_id"]] = d["n"]
        acct.op_count = acct.ops.last_seq()
        acct.archive_count = acct.alert_log.last_seq()
        for doc in acct.alert_log.oldest_first(acct.archive_count):
            acct.archived[doc["alert_id"]] = doc["archive_seq"]
            acct.order[doc["alert_id"]] = doc["n"]
        for alert_id in list(acct.outbox) + list(acct.archived):
            self._alert_index[alert_id] = tenant_id
        self._accounts[tenant_id] = acct
        return acct

    def _keys(self, acct: _Account) -> dict[str, _OpRecord]:
        if acct.keys is None:
            acct.keys = {doc["k"]: _OpRecord(doc["f"], doc["seq"]) for doc in acct.ops.oldest_first(acct.op_count)}
        return acct.keys

    def _acct(self, tenant_id: str) -> _Account:
        acct = self._accounts.get(tenant_id)
        if acct is None:
            raise AccountNotFound(tenant_id)
        return acct

    # --- committing -------------------------------------------------------------------------------------------
    def _commit(self, acct: _Account, unit: _Unit, *, subscriptions: dict[str, Subscription] | None = None,
                roles: dict[str, RoleGrant] | None = None, approvals: Sequence[Approval] = (),
                outbox_changed: Iterable[Alert] = ()) -> None:
        """Write one unit through the journal, then publish it to the in-memory view. On an I/O failure the
        files are rolled back and the account is reloaded from disk."""
        book = unit.book
        f = self._files
        keys = self._keys(acct)
        new_outbox = dict(acct.outbox)
        new_archived: list[tuple[int, Alert]] = []
        order = dict(acct.order)
        if book is not None:
            order.update(book.alert_numbers)
        archive_count = acct.archive_count
        try:
            if book is not None:
                acct.entries.append([(e.seq, e.to_dict()) for e in book.entries])
                acct.audit_log.append([(r.seq, r.to_dict()) for r in book.audit])
                f.table(acct.state_file, "state").upsert(_doc(book.state.to_dict(), 1))
            changed = list(outbox_changed) + (book.alerts if book is not None else [])
            outbox_table = f.table(acct.outbox_file)
            for alert in changed:
                if alert.status is AlertStatus.DELIVERED:
                    archive_count += 1
                    new_archived.append((archive_count, alert))
                    new_outbox.pop(alert.alert_id, None)
                else:
                    new_outbox[alert.alert_id] = alert
            if changed:
                outbox_table.truncate()
                outbox_table.insert_multiple([{**a.to_dict(), "n": order[a.alert_id]} for a in new_outbox.values()])
                acct.alert_log.append([(seq, {**a.to_dict(), "archive_seq": seq, "n": order[a.alert_id]})
                                       for seq, a in new_archived])
            op_docs = []
            for i, (key, fp, result) in enumerate(unit.ops, start=acct.op_count + 1):
                op_docs.append((i, {"seq": i, "k": key, "f": fp, "r": result}))
            acct.ops.append(op_docs)
            if subscriptions is not None:
                table = f.table(acct.state_file, "subscriptions")
                table.truncate()
                table.insert_multiple([s.to_dict() for s in subscriptions.values()])
            if roles is not None:
                table = f.table(acct.state_file, "roles")
                table.truncate()
                table.insert_multiple([g.to_dict() for g in roles.values()])
            if approvals:
                table = f.table(acct.state_file, "approvals")
                for approval in approvals:   # in place: the table keeps the order of the requests
                    table.upsert(approval.to_dict(), Query().approval_id == approval.approval_id)
            f.commit()
        except BaseException:
            f.rollback()
            if self._accounts.pop(acct.tenant_id, None) is not None:
                self._load(acct.tenant_id, acct.folder)  # back to what the files hold
            raise
        if book is not None:
            acct.state = book.state
        for seq, doc in op_docs:
            keys[doc["k"]] = _OpRecord(doc["f"], seq)
        acct.op_count += len(op_docs)
        acct.outbox = new_outbox
        acct.order = order
        for seq, alert in new_archived:
            acct.archived[alert.alert_id] = seq
        acct.archive_count = archive_count
        for alert in changed:
            self._alert_index[alert.alert_id] = acct.tenant_id
        if book is not None and any(a.status is AlertStatus.PENDING for a in book.alerts):
            self._alerts_committed += 1
        if subscriptions is not None:
            acct.subscriptions = subscriptions
        if roles is not None:
            acct.roles = roles
        if approvals:
            acct.approvals = {**acct.approvals, **{a.approval_id: a for a in approvals}}

    def _check_key(self, acct: _Account, key: str, operation: str, args: Mapping[str, Any]) -> tuple[str, dict | None]:
        """Idempotency first: (fingerprint, stored result) for a replay, (fingerprint, None) for a new key."""
        fp = policy.fingerprint(operation, args)
        return fp, self._stored(acct, key, operation, fp)

    def _stored(self, acct: _Account, key: str, operation: str, fp: str) -> dict | None:
        """The stored result under `key`, None for a new key; `IdempotencyConflict` for another fingerprint."""
        hit = self._keys(acct).get(key)
        if hit is None:
            return None
        if hit.fingerprint != fp:
            raise IdempotencyConflict(key, operation)
        doc = acct.ops.get(hit.seq)
        assert doc is not None, f"operation record {hit.seq} missing"
        return doc["r"]

    def _posting_from(self, acct: _Account, result: Mapping[str, Any]) -> Posting:
        entries = tuple(Entry.from_dict(acct.entries.get(seq) or {}) for seq in result["e"])
        return Posting(entries, result["b"], tuple(result["a"]), result.get("x"), replayed=True)

    @staticmethod
    def _compact(posting: Posting) -> dict[str, Any]:
        return {"e": [e.seq for e in posting.entries], "b": posting.balance, "a": list(posting.alert_ids),
                "x": posting.recharge_blocked}

    def _book(self, acct: _Account) -> Book:
        return Book(acct.state, list(acct.subscriptions.values()), self._clock())

    def _keyed_change(self, tenant_id: str, actor: str, key: str, operation: str, args: Mapping[str, Any],
                      change: Callable[[_Account, Book], "_Change"],
                      replay: Callable[[_Account, dict[str, Any]], Any] | None = None) -> Any:
        """The shape of every keyed change by a caller: account, caller's key, idempotency lookup (a replay
        returns the stored result: `replay(acct, stored)`, by default a replayed `SettingsChange`), then `change`
        (which validates and may raise, changing nothing, and may write entries through the book), then one
        commit of the new state, its audit record and the operation record."""
        acct = self._acct(tenant_id)
        policy.check_caller_key(key)
        fp, done = self._check_key(acct, key, operation, args)
        if done is not None:
            return replay(acct, done) if replay is not None else SettingsChange.from_dict(done, replayed=True)
        book = self._book(acct)
        outcome = change(acct, book)
        book.record(actor, outcome.action, key, outcome.details)
        result, stored = outcome.outcome()
        self._commit(acct, _Unit(book, [(key, fp, stored)]), subscriptions=outcome.subscriptions,
                     roles=outcome.roles, approvals=outcome.approvals, outbox_changed=outcome.outbox)
        return result

    # --- accounts -----------------------------------------------------------------------------------------------
    async def open_account(self, tenant_id: str, currency: str, *, actor: str = SYSTEM_ACTOR) -> Account:
        return await self._call(self._open_account, tenant_id, currency, actor)

    def _open_account(self, tenant_id: str, currency: str, actor: str) -> Account:
        code = normalize_currency(currency)
        if tenant_id in self._accounts:
            return self._accounts[tenant_id].account()
        if not isinstance(tenant_id, str) or not tenant_id:
            raise NotFound("tenant", str(tenant_id))
        folder = account_dir(tenant_id)
        state = BookState(tenant_id, code, self._clock())
        acct = _Account(tenant_id, folder, state, {}, {}, {}, {}, {}, {}, 0, 0, keys={}).attach(self._files)
        book = Book(state, [], self._clock())
        book.record(actor, "account_opened", "", {"currency": code})
        try:
            self._files.table(ACCOUNTS).insert({"tenant_id": tenant_id, "folder": folder})
        except BaseException:
            self._files.rollback()
            raise
        self._commit(acct, _Unit(book))
        self._accounts[tenant_id] = acct
        return acct.account()

    async def get_account(self, tenant_id: str) -> Account:
        return await self._call(lambda: self._acct(tenant_id).account())

    async def tenants(self) -> list[str]:
        return await self._call(lambda: sorted(self._accounts))

    async def set_currency(self, tenant_id: str, currency: str, *, actor: str, key: str) -> SettingsChange:
        return await self._call(self._set_currency, tenant_id, currency, actor, key)

    def _set_currency(self, tenant_id: str, currency: str, actor: str, key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            code = normalize_currency(currency)
            if acct.state.entry_count:
                raise CurrencyLocked(acct.state.currency)
            previous, book.state.currency = book.state.currency, code
            return _Change({"currency": code}, "currency", {"currency": code, "previous": previous})
        return self._keyed_change(tenant_id, actor, key, "set_currency", {"currency": currency}, change)

    # --- money --------------------------------------------------------------------------------------------------
    async def add_funds(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                        reference: str = "") -> Posting:
        return await self._call(self._money, tenant_id, "add_funds", amount, actor, key, memo, reference)

    async def adjust(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                     reference: str = "") -> Posting:
        return await self._call(self._money, tenant_id, "adjust", amount, actor, key, memo, reference)

    def _money(self, tenant_id: str, operation: str, amount: int, actor: str, key: str, memo: str,
               reference: str) -> Posting:
        acct = self._acct(tenant_id)
        policy.check_caller_key(key)
        args = {"amount": amount, "memo": memo, "reference": reference}
        fp, done = self._check_key(acct, key, operation, args)
        if done is not None:
            return self._posting_from(acct, done)
        check_minor(amount, allow_negative=operation == "adjust")
        book = self._book(acct)
        if operation == "add_funds":
            primary = book.credit(EntryKind.FUNDS_ADDED, amount, actor=actor, key=key, memo=memo, reference=reference)
        elif amount > 0:
            primary = book.credit(EntryKind.ADJUSTMENT, amount, actor=actor, key=key, memo=memo, reference=reference)
        else:
            primary = book.debit(EntryKind.ADJUSTMENT, -amount, actor=actor, key=key, memo=memo,
                                 reference=reference, may_go_negative=False)
        posting = book.settle(primary)
        book.record_posting(actor, "funds_added" if operation == "add_funds" else "adjustment", key, posting)
        self._commit(acct, _Unit(book, [(key, fp, self._compact(posting))]))
        return posting

    # --- approvals ----------------------------------------------------------------------------------------------
    async def request_approval(self, tenant_id: str, amount: int, *, actor: str, key: str,
                               memo: str = "") -> Approval:
        return await self._call(self._request_approval, tenant_id, amount, actor, key, memo)

    def _request_approval(self, tenant_id: str, amount: int, actor: str, key: str, memo: str) -> Approval:
        def change(acct: _Account, book: Book) -> _Change:
            check_minor(amount)
            approval = Approval(policy.approval_id(tenant_id, key), tenant_id, amount, memo, actor, book.now,
                                ApprovalStatus.PENDING)
            return _Change(approval.to_dict(), "approval_requested",
                           {"approval_id": approval.approval_id, "amount": amount, "memo": memo},
                           approvals=[approval], result=approval)
        return self._keyed_change(tenant_id, actor, key, "request_approval", {"amount": amount, "memo": memo},
                                  change, lambda acct, stored: Approval.from_dict(stored))

    async def decide_approval(self, tenant_id: str, approval_id: str, *, approve: bool, actor: str,
                              key: str) -> ApprovalDecision:
        return await self._call(self._decide_approval, tenant_id, approval_id, approve, actor, key)

    def _decide_approval(self, tenant_id: str, approval_id: str, approve: bool, actor: str,
                         key: str) -> ApprovalDecision:
        self._acct(tenant_id)   # the account and the key come before the type of `approve`
        policy.check_caller_key(key)
        if not isinstance(approve, bool):
            raise ValueError(f"approve must be a bool, not {approve!r}")

        def change(acct: _Account, book: Book) -> _Change:
            approval = acct.approvals.get(approval_id)
            if approval is None:
                raise NotFound("approval", approval_id)
            if actor == approval.requested_by:
                raise SelfApproval(approval_id)
            if approval.status is not ApprovalStatus.PENDING:
                raise ApprovalClosed(approval)
            posting: Posting | None = None
            if approve:
                primary = book.credit(EntryKind.FUNDS_ADDED, approval.amount, actor=actor, key=key,
                                      memo=approval.memo, reference=approval_id,
                                      details={"requested_by": approval.requested_by, "approval_id": approval_id})
                posting = book.settle(primary)
            decided = replace(approval, status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
                              decided_by=actor, decided_at=book.now,
                              entry_seq=posting.entry.seq if posting is not None else None)
            stored = {"approval": decided.to_dict(),
                      "posting": self._compact(posting) if posting is not None else None}
            return _Change(stored, "approval_decided",
                           {"approval_id": approval_id, "approve": approve, "entry_seq": decided.entry_seq},
                           approvals=[decided], result=ApprovalDecision(decided, posting))

        def replay(acct: _Account, stored: dict[str, Any]) -> ApprovalDecision:
            posting = stored["posting"]
            return ApprovalDecision(Approval.from_dict(stored["approval"]),
                                    self._posting_from(acct, posting) if posting is not None else None,
                                    replayed=True)
        return self._keyed_change(tenant_id, actor, key, "decide_approval",
                                  {"approval_id": approval_id, "approve": approve}, change, replay)

    async def approvals(self, tenant_id: str, *, status: ApprovalStatus | None = None) -> list[Approval]:
        def read() -> list[Approval]:
            requested = list(self._acct(tenant_id).approvals.values())   # in the order they were requested
            oldest_first = sorted(range(len(requested)), key=lambda i: (requested[i].requested_at, i))
            return [requested[i] for i in reversed(oldest_first)
                    if status is None or requested[i].status == status]
        return await self._call(read)

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        def read() -> Approval:
            approval = self._acct(tenant_id).approvals.get(approval_id)
            if approval is None:
                raise NotFound("approval", approval_id)
            return approval
        return await self._call(read)

    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        return await self._call(self._record_usage, tenant_id, usage, actor)

    def _record_usage(self, tenant_id: str, usage: UsageRecord, actor: str) -> Posting:
        result = self._usage_rows(tenant_id, [usage], actor, strict=True)
        row = result.rows[0]
        assert row.posting is not None
        return row.posting

    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        return await self._call(self._usage_rows, tenant_id, list(rows), actor, False)

    def _usage_rows(self, tenant_id: str, rows: list[UsageRecord], actor: str, strict: bool) -> BatchResult:
        """Rows one after another in one Book and one commit. In strict mode (a single row) a problem raises;
        in a batch it is reported for that row and the others go on."""
        acct = self._acct(tenant_id)
        book = self._book(acct)
        unit = _Unit(book)
        outcomes: list[RowOutcome] = []
        seen: dict[str, tuple[str, Posting]] = {}
        for usage in rows:
            try:
                outcomes.append(self._usage_row(acct, book, unit, seen, usage, actor))
            except LedgerError as err:
                if strict:
                    raise
                status = RowStatus.CONFLICT if isinstance(err, IdempotencyConflict) else RowStatus.REJECTED
                outcomes.append(RowOutcome(getattr(usage, "usage_id", ""), status, _reason(err)))
        recorded = any(o.status is RowStatus.RECORDED for o in outcomes)
        if recorded:
            engine.audit_usage(book, actor, outcomes, single=strict)
            self._commit(acct, unit)
        return BatchResult(tuple(outcomes), book.state.balance if recorded else acct.state.balance)

    def _usage_row(self, acct: _Account, book: Book, unit: _Unit, seen: dict[str, tuple[str, Posting]],
                   usage: UsageRecord, actor: str) -> RowOutcome:
        usage_id, fp, occurred_at = engine.usage_key(usage)
        if usage_id in seen:
            if seen[usage_id][0] != fp:
                raise IdempotencyConflict(usage_id, "record_usage")
            return RowOutcome(usage_id, RowStatus.REPLAYED, posting=seen[usage_id][1].as_replay())
        done = self._stored(acct, usage_id, "record_usage", fp)
        if done is not None:
            return RowOutcome(usage_id, RowStatus.REPLAYED, posting=self._posting_from(acct, done))
        posting = engine.debit_usage(book, usage, actor, occurred_at)
        unit.ops.append((usage_id, fp, self._compact(posting)))
        seen[usage_id] = (fp, posting)
        return RowOutcome(usage_id, RowStatus.RECORDED, posting=posting)

    async def expire_lots(self, now: datetime | None = None) -> list[Posting]:
        return await self._call(self._expire_lots, now)

    def _expire_lots(self, now: datetime | None) -> list[Posting]:
        moment = now or self._clock()  # selects the lots; what is written is stamped with the clock
        postings: list[Posting] = []
        for tenant_id in sorted(self._accounts):
            acct = self._accounts[tenant_id]
            book = self._book(acct)
            unit = _Unit(book)
            for lot in engine.expired_lots(book.state, moment):
                key = f"expiry:{lot.lot_id}"
                if key in self._keys(acct):  # pragma: no cover - an expired lot leaves the open lots
                    continue
                primary = book.expire(lot)
                posting = book.settle(primary)
                book.record_posting(SYSTEM_ACTOR, "expiry", key, posting)
                unit.ops.append((key, policy.fingerprint("expire_lot", {"lot_id": lot.lot_id}),
                                 self._compact(posting)))
                postings.append(posting)
            known = set(acct.outbox) | set(acct.archived)
            for lot in book.state.lots:
                if lot.remaining > 0 and moment < lot.expires_at <= moment + EXPIRING_NOTICE:
                    key = policy.expiring_key(tenant_id, lot.lot_id)
                    if policy.alert_id(tenant_id, key) not in known:
                        book.raise_alert(AlertKind.EXPIRING, key, {
                            "lot_id": lot.lot_id, "remaining": lot.remaining, "expires_at": iso(lot.expires_at)})
            if book.entries or book.alerts:
                self._commit(acct, unit)
        return postings

    # --- reading ------------------------------------------------------------------------------------------------
    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        return await self._call(self._history, tenant_id, limit, before)

    def _history(self, tenant_id: str, limit: int, before: int | None) -> Page:
        acct = self._acct(tenant_id)
        return _page(acct.entries, acct.state.entry_count, limit, before, Entry.from_dict)

    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        return await self._call(self._entries_since, tenant_id, since)

    def _entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        acct = self._acct(tenant_id)
        found: list[Entry] = []
        for doc in acct.entries.newest_first(acct.state.entry_count + 1):
            entry = Entry.from_dict(doc)
            if entry.at < since:
                break
            found.append(entry)
        return found[::-1]

    async def lots(self, tenant_id: str) -> list[Lot]:
        return await self._call(lambda: [l for l in self._acct(tenant_id).state.lots if l.remaining > 0])

    async def recharge_settings(self, tenant_id: str) -> RechargeSettings:
        return await self._call(lambda: self._acct(tenant_id).state.recharge)

    async def alert_settings(self, tenant_id: str) -> AlertSettings:
        return await self._call(lambda: self._acct(tenant_id).state.alerts)

    async def set_recharge_settings(self, tenant_id: str, settings: RechargeSettings, *, actor: str,
                                    key: str) -> SettingsChange:
        return await self._call(self._set_recharge, tenant_id, settings, actor, key)

    def _set_recharge(self, tenant_id: str, settings: RechargeSettings, actor: str, key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            valid = policy.validate_recharge(settings)
            engine.change_recharge(book.state, valid)
            return _Change(valid.to_dict(), "recharge_settings", valid.to_dict())
        return self._keyed_change(tenant_id, actor, key, "set_recharge_settings", _settings_args(settings), change)

    async def set_alert_settings(self, tenant_id: str, settings: AlertSettings, *, actor: str,
                                 key: str) -> SettingsChange:
        return await self._call(self._set_alerts, tenant_id, settings, actor, key)

    def _set_alerts(self, tenant_id: str, settings: AlertSettings, actor: str, key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            valid = policy.validate_alerts(settings)
            engine.rearm_thresholds(book.state, valid)
            return _Change(valid.to_dict(), "alert_settings", valid.to_dict())
        return self._keyed_change(tenant_id, actor, key, "set_alert_settings", _settings_args(settings), change)

    # --- outbox -------------------------------------------------------------------------------------------------
    async def raise_alert(self, tenant_id: str, kind: AlertKind, key: str, payload: Mapping[str, Any]) -> Alert:
        return await self._call(self._raise_alert, tenant_id, kind, key, dict(payload))

    def _raise_alert(self, tenant_id: str, kind: AlertKind, key: str, payload: dict[str, Any]) -> Alert:
        acct = self._acct(tenant_id)
        if str(kind) not in policy.RAISABLE_KINDS or not isinstance(key, str) or not key.startswith(f"{kind}:"):
            raise ValueError(f"raise_alert takes forecast or expiring alerts keyed '{{kind}}:...', not {kind}/{key!r}")
        kind = AlertKind(kind)
        existing = self._find_alert(policy.alert_id(tenant_id, key))
        if existing is not None:
            return existing
        book = self._book(acct)
        alert = book.raise_alert(kind, key, payload)
        self._commit(acct, _Unit(book))
        return alert

    def _find_alert(self, alert_id: str) -> Alert | None:
        tenant = self._alert_index.get(alert_id)
        if tenant is None:
            return None
        acct = self._accounts[tenant]
        if alert_id in acct.outbox:
            return acct.outbox[alert_id]
        doc = acct.alert_log.get(acct.archived[alert_id])
        assert doc is not None
        return _alert(doc)

    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        return await self._call(self._claim, worker, lease, limit)

    def _claim(self, worker: str, lease: timedelta, limit: int) -> list[Alert]:
        now = self._clock()
        due = sorted(((a, acct.order[a.alert_id]) for acct in self._accounts.values() for a in acct.outbox.values()
                      if a.status is AlertStatus.PENDING
                      and (a.next_attempt_at is None or a.next_attempt_at <= now)
                      and (a.lease_until is None or a.lease_until <= now)),
                     key=lambda pair: (pair[0].created_at, pair[1]))
        claimed: list[Alert] = []
        changed: dict[str, list[Alert]] = {}
        for alert, _ in due:
            if alert.attempts < self._max_attempts and len(claimed) == limit:
                continue  # past the limit, only the dead are still settled
            if alert.attempts >= self._max_attempts:  # its lease ran out after the last attempt: give up
                alert = replace(alert, status=AlertStatus.DEAD, lease_owner=None, lease_until=None,
                                last_error=alert.last_error or "lease expired after the last attempt")
                log.error("alert %s (%s) dead: %s", alert.alert_id, alert.kind, alert.last_error)
            else:
                alert = replace(alert, attempts=alert.attempts + 1, lease_owner=worker, lease_until=now + lease)
                claimed.append(alert)
            changed.setdefault(alert.tenant_id, []).append(alert)
        for tenant_id, alerts in changed.items():
            self._commit(self._accounts[tenant_id], _Unit(None), outbox_changed=alerts)
        return claimed

    def _leased(self, alert_id: str, worker: str) -> tuple[_Account, Alert]:
        alert = self._find_alert(alert_id)
        if alert is None:
            raise NotFound("alert", alert_id)
        if alert.status is not AlertStatus.PENDING or alert.lease_owner != worker:
            raise LeaseLost(alert_id, worker)
        return self._accounts[alert.tenant_id], alert

    async def mark_delivered(self, alert_id: str, destination: str, *, worker: str) -> Alert:
        return await self._call(self._mark_delivered, alert_id, destination, worker)

    def _mark_delivered(self, alert_id: str, destination: str, worker: str) -> Alert:
        acct, alert = self._leased(alert_id, worker)
        if destination not in alert.destinations:
            raise NotFound("destination", destination)
        if destination not in alert.delivered:
            alert = replace(alert, delivered=alert.delivered + (destination,))
        alert = _settled(alert)
        self._commit(acct, _Unit(None), outbox_changed=[alert])
        return alert

    async def release_alert(self, alert_id: str, *, worker: str, retry_at: datetime, error: str) -> Alert:
        return await self._call(self._release, alert_id, worker, retry_at, error)

    def _release(self, alert_id: str, worker: str, retry_at: datetime, error: str) -> Alert:
        acct, alert = self._leased(alert_id, worker)
        dead = alert.attempts >= self._max_attempts
        alert = replace(alert, next_attempt_at=retry_at, lease_owner=None, lease_until=None, last_error=error,
                        status=AlertStatus.DEAD if dead else AlertStatus.PENDING)
        self._commit(acct, _Unit(None), outbox_changed=[alert])
        if dead:
            log.error("alert %s (%s) dead after %d attempts: %s", alert.alert_id, alert.kind, alert.attempts,
                      alert.last_error[:500])
        return alert

    async def get_alert(self, alert_id: str) -> Alert:
        def find() -> Alert:
            alert = self._find_alert(alert_id)
            if alert is None:
                raise NotFound("alert", alert_id)
            return alert
        return await self._call(find)

    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        return await self._call(self._alerts, tenant_id, status, limit)

    def _alerts(self, tenant_id: str, status: AlertStatus | None, limit: int) -> list[Alert]:
        acct = self._acct(tenant_id)
        found = [a for a in acct.outbox.values() if status is None or a.status is status]
        if status in (None, AlertStatus.DELIVERED):
            # archived in delivery order, which is close to creation order: read until enough are certain
            for doc in acct.alert_log.newest_first(acct.archive_count + 1):
                if len(found) >= limit + len(acct.outbox) + 50:
                    break
                found.append(_alert(doc))
        found.sort(key=lambda a: (a.created_at, acct.order[a.alert_id]), reverse=True)
        return found[:limit]

    # --- conversations and subscriptions ------------------------------------------------------------------------
    async def save_conversation(self, ref: ConversationRef) -> bool:
        return await self._call(self._save_conversation, ref)

    def _save_conversation(self, ref: ConversationRef) -> bool:
        acct = self._acct(ref.tenant_id)
        old = acct.conversations.get(ref.conversation_id)
        if old is not None and dict(old.reference) == dict(ref.reference):
            return False  # unchanged: saving on every activity costs no write
        table = self._files.table(acct.conversations_file)
        try:
            table.upsert(ref.to_dict(), Query().conversation_id == ref.conversation_id)
            self._files.commit()
        except BaseException:
            self._files.rollback()
            raise
        acct.conversations[ref.conversation_id] = ref
        return old is None

    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None:
        return await self._call(lambda: self._acct(tenant_id).conversations.get(conversation_id))

    async def conversations(self, tenant_id: str) -> list[ConversationRef]:
        return await self._call(lambda: sorted(self._acct(tenant_id).conversations.values(),
                                               key=lambda c: c.conversation_id))

    async def subscribe(self, tenant_id: str, conversation_id: str, kinds: Iterable[AlertKind], *, actor: str,
                        key: str) -> SettingsChange:
        return await self._call(self._subscribe, tenant_id, conversation_id, list(kinds), actor, key)

    def _subscribe(self, tenant_id: str, conversation_id: str, kinds: list[AlertKind], actor: str,
                   key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            try:
                wanted = {AlertKind(k) for k in kinds}
            except ValueError:
                raise InvalidSettings("unknown_kind") from None
            if not wanted:
                raise InvalidSettings("no_kinds")
            ordered = tuple(k for k in AlertKind if k in wanted)
            sub = Subscription(conversation_id, ordered, actor, book.now)
            return _Change(sub.to_dict(), "subscribe",
                           {"conversation_id": conversation_id, "kinds": [k.value for k in ordered]},
                           subscriptions={**acct.subscriptions, conversation_id: sub})
        args = {"conversation_id": conversation_id, "kinds": sorted({str(k) for k in kinds})}
        return self._keyed_change(tenant_id, actor, key, "subscribe", args, change)

    async def unsubscribe(self, tenant_id: str, conversation_id: str, *, actor: str, key: str) -> SettingsChange:
        return await self._call(self._unsubscribe, tenant_id, conversation_id, actor, key)

    def _unsubscribe(self, tenant_id: str, conversation_id: str, actor: str, key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            if conversation_id not in acct.subscriptions:
                raise NotFound("subscription", conversation_id)
            return _Change({"conversation_id": conversation_id}, "unsubscribe", {"conversation_id": conversation_id},
                           subscriptions={k: v for k, v in acct.subscriptions.items() if k != conversation_id},
                           outbox=_skip_destination(acct.outbox.values(), conversation_id))
        return self._keyed_change(tenant_id, actor, key, "unsubscribe", {"conversation_id": conversation_id}, change)

    async def disable_subscription(self, tenant_id: str, conversation_id: str, *, reason: str) -> None:
        await self._call(self._disable, tenant_id, conversation_id, reason)

    def _disable(self, tenant_id: str, conversation_id: str, reason: str) -> None:
        acct = self._acct(tenant_id)
        sub = acct.subscriptions.get(conversation_id)
        if sub is None or not sub.enabled:
            return
        subs = {**acct.subscriptions, conversation_id: replace(sub, enabled=False, disabled_reason=reason)}
        book = self._book(acct)
        book.record(SYSTEM_ACTOR, "disable_subscription", "", {"conversation_id": conversation_id, "reason": reason})
        self._commit(acct, _Unit(book), subscriptions=subs,
                     outbox_changed=_skip_destination(acct.outbox.values(), conversation_id))

    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        return await self._call(lambda: self._acct(tenant_id).watermarks.get(source))

    async def set_sync_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        if until.tzinfo is None:
            raise ValueError("a watermark must be an aware datetime")
        return await self._call(self._set_watermark, tenant_id, source, until.astimezone(timezone.utc))

    def _set_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        acct = self._acct(tenant_id)
        current = acct.watermarks.get(source)
        if current is not None and until <= current:
            return current
        try:
            self._files.table(acct.state_file, "sync").upsert({"source": source, "until": iso(until)},
                                                              Query().source == source)
            self._files.commit()
        except BaseException:
            self._files.rollback()
            raise
        acct.watermarks = {**acct.watermarks, source: until}
        return until

    async def subscriptions(self, tenant_id: str) -> list[Subscription]:
        return await self._call(lambda: sorted(self._acct(tenant_id).subscriptions.values(),
                                               key=lambda s: s.conversation_id))

    # --- roles and audit ----------------------------------------------------------------------------------------
    async def grant_role(self, tenant_id: str, user_id: str, role: Role, *, actor: str, key: str,
                         display_name: str = "") -> SettingsChange:
        return await self._call(self._grant, tenant_id, user_id, role, actor, key, display_name)

    def _grant(self, tenant_id: str, user_id: str, role: Role, actor: str, key: str,
               display_name: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            try:
                valid = Role(role)
            except ValueError:
                raise InvalidSettings("unknown_role") from None
            grant = RoleGrant(user_id, valid, actor, book.now, display_name)
            return _Change(grant.to_dict(), "grant_role",
                           {"user_id": user_id, "role": valid.value, "display_name": display_name},
                           roles={**acct.roles, user_id: grant})
        args = {"user_id": user_id, "role": str(role), "display_name": display_name}
        return self._keyed_change(tenant_id, actor, key, "grant_role", args, change)

    async def revoke_role(self, tenant_id: str, user_id: str, *, actor: str, key: str) -> SettingsChange:
        return await self._call(self._revoke, tenant_id, user_id, actor, key)

    def _revoke(self, tenant_id: str, user_id: str, actor: str, key: str) -> SettingsChange:
        def change(acct: _Account, book: Book) -> _Change:
            if user_id not in acct.roles:
                raise NotFound("role", user_id)
            removed = acct.roles[user_id].role.value
            return _Change({"user_id": user_id, "role": removed}, "revoke_role", {"user_id": user_id, "role": removed},
                           roles={k: v for k, v in acct.roles.items() if k != user_id})
        return self._keyed_change(tenant_id, actor, key, "revoke_role", {"user_id": user_id}, change)

    async def roles(self, tenant_id: str) -> list[RoleGrant]:
        return await self._call(lambda: sorted(self._acct(tenant_id).roles.values(), key=lambda g: g.user_id))

    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        def read() -> Page:
            acct = self._acct(tenant_id)
            return _page(acct.audit_log, acct.state.audit_count, limit, before, AuditRecord.from_dict)
        return await self._call(read)

    # --- copying a store (storage/transfer.py) --------------------------------------------------------------------
    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        return await self._call(self._export_account, tenant_id)

    def _export_account(self, tenant_id: str) -> dict[str, Any]:
        acct = self._acct(tenant_id)
        entries = [Entry.from_dict(d).to_dict() for d in acct.entries.oldest_first(acct.state.entry_count)]
        kinds = {e["seq"]: e["kind"] for e in entries}
        ops = [{"key": d["k"], "operation": transfer.infer_operation(d["k"], d["r"], kinds), "fingerprint": d["f"],
                "result": d["r"]} for d in acct.ops.oldest_first(acct.op_count)]
        alerts = [{**a.to_dict(), "n": acct.order[a.alert_id]} for a in acct.outbox.values()]
        alerts += [{**_alert(d).to_dict(), "n": d["n"]} for d in acct.alert_log.oldest_first(acct.archive_count)]
        alerts.sort(key=lambda a: (parse_iso(a["created_at"]), a["n"]))
        return {
            "format": transfer.FORMAT, "tenant_id": tenant_id, "state": acct.state.to_dict(),
            "entries": entries, "ops": ops, "alerts": alerts,
            "audit": [AuditRecord.from_dict(d).to_dict() for d in acct.audit_log.oldest_first(acct.state.audit_count)],
            "subscriptions": [s.to_dict() for s in sorted(acct.subscriptions.values(), key=lambda s: s.conversation_id)],
            "roles": [g.to_dict() for g in sorted(acct.roles.values(), key=lambda g: g.user_id)],
            "approvals": [a.to_dict() for a in acct.approvals.values()],
            "conversations": [c.to_dict() for c in sorted(acct.conversations.values(),
                                                          key=lambda c: c.conversation_id)],
            "watermarks": {source: iso(until) for source, until in sorted(acct.watermarks.items())},
        }

    async def import_account(self, data: Mapping[str, Any]) -> None:
        tenant_id = transfer.check_export(data)
        await self._call(self._import_account, tenant_id, data)

    def _import_account(self, tenant_id: str, data: Mapping[str, Any]) -> None:
        """Write every file of the account through one journal commit, then load it like at `open`."""
        if tenant_id in self._accounts:
            raise ValueError(f"the store already has an account for tenant {tenant_id!r}")
        state = BookState.from_dict(data["state"])
        if state.tenant_id != tenant_id:
            raise ValueError("the export's state belongs to another tenant")
        folder = account_dir(tenant_id)
        f = self._files
        state_file = f"{folder}/state.json"
        try:
            f.table(ACCOUNTS).insert({"tenant_id": tenant_id, "folder": folder})
            f.table(state_file, "state").upsert(_doc(state.to_dict(), 1))
            if data["roles"]:
                f.table(state_file, "roles").insert_multiple([RoleGrant.from_dict(d).to_dict() for d in data["roles"]])
            if data["subscriptions"]:
                f.table(state_file, "subscriptions").insert_multiple(
                    [Subscription.from_dict(d).to_dict() for d in data["subscriptions"]])
            if data["approvals"]:
                f.table(state_file, "approvals").insert_multiple(
                    [Approval.from_dict(d).to_dict() for d in data["approvals"]])
            if data["watermarks"]:
                f.table(state_file, "sync").insert_multiple(
                    [{"source": source, "until": iso(parse_iso(until))} for source, until in data["watermarks"].items()])
            if data["conversations"]:
                f.table(f"{folder}/conversations.json").insert_multiple(
                    [ConversationRef.from_dict(d).to_dict() for d in data["conversations"]])
            # creation numbers per account, in the export's order (oldest first), like `Book.raise_alert`'s
            pending, archived = [], []
            for n, doc in enumerate(data["alerts"], start=1):
                alert = _alert(doc)
                (archived if alert.status is AlertStatus.DELIVERED else pending).append((n, alert))
            if pending:
                f.table(f"{folder}/outbox.json").insert_multiple([{**a.to_dict(), "n": n} for n, a in pending])
            ChunkedLog(f, f"{folder}/alerts", ALERT_CHUNK).append(
                [(seq, {**a.to_dict(), "archive_seq": seq, "n": n}) for seq, (n, a) in enumerate(archived, start=1)])
            entries = [Entry.from_dict(d) for d in data["entries"]]
            if [e.seq for e in entries] != list(range(1, len(entries) + 1)):
                raise ValueError("the export's entries are not numbered 1, 2, ...")
            ChunkedLog(f, f"{folder}/entries", ENTRY_CHUNK).append([(e.seq, e.to_dict()) for e in entries])
            records = [AuditRecord.from_dict(d) for d in data["audit"]]
            if [r.seq for r in records] != list(range(1, len(records) + 1)):
                raise ValueError("the export's audit records are not numbered 1, 2, ...")
            ChunkedLog(f, f"{folder}/audit", AUDIT_CHUNK).append([(r.seq, r.to_dict()) for r in records])
            ChunkedLog(f, f"{folder}/ops", OP_CHUNK).append(
                [(i, {"seq": i, "k": op["key"], "f": op["fingerprint"], "r": op["result"]})
                 for i, op in enumerate(data["ops"], start=1)])
            f.commit()
        except BaseException:
            f.rollback()
            raise
        self._load(tenant_id, folder)

    # --- health -------------------------------------------------------------------------------------------------
    async def verify(self, tenant_id: str | None = None) -> VerifyReport:
        return await self._call(self._verify, tenant_id)

    def _verify(self, tenant_id: str | None) -> VerifyReport:
        tenants = [tenant_id] if tenant_id is not None else sorted(self._accounts)
        problems: list[str] = []
        total = 0
        for t in tenants:
            acct = self._acct(t)
            entries = [Entry.from_dict(d) for d in acct.entries.oldest_first(acct.state.entry_count)]
            total += len(entries)
            problems.extend(f"{t}: {p}" for p in engine.verify_journal(acct.state, entries))
            keys = self._keys(acct)
            for entry in entries:
                if entry.kind is not EntryKind.AUTO_RECHARGE and entry.key not in keys:
                    problems.append(f"{t}: entry {entry.seq} has no operation record for key {entry.key!r}")
        return VerifyReport(len(tenants), total, tuple(problems))

    async def ping(self) -> None:
        def check() -> None:
            if not (self._root / "LOCK").exists():
                raise OSError(f"store {self._root} is gone")
        await self._call(check)

    async def close(self) -> None:
        if self._closed:
            return
        await self._call(self._lock.release)
        self._closed = True
        self._pool.shutdown(wait=True)


# --- helpers --------------------------------------------------------------------------------------------------------

def _doc(data: dict[str, Any], doc_id: int):  # type: ignore[no-untyped-def]
    from tinydb.table import Document
    return Document(data, doc_id=doc_id)


def _page(log_: ChunkedLog, count: int, limit: int, before: int | None, parse: Callable[[dict], Any]) -> Page:
    limit = max(1, min(int(limit), 500))
    start = count + 1 if before is None else min(before, count + 1)
    items = []
    for doc in log_.newest_first(start):
        items.append(parse(doc))
        if len(items) == limit:
            break
    older = items[-1].seq if items and items[-1].seq > 1 else None
    return Page(tuple(items), older)


def _settings_args(settings: RechargeSettings | AlertSettings) -> dict[str, Any]:
    try:
        return settings.to_dict()
    except Exception:  # malformed values still need a fingerprint; validation explains them next
        return {"repr": repr(settings)}


def _reason(err: LedgerError) -> str:
    """Stable code of why a batch row was not recorded."""
    if isinstance(err, IdempotencyConflict):
        return "idempotency_conflict"
    if isinstance(err, CurrencyMismatch):
        return "currency_mismatch"
    return getattr(err, "reason", "") or type(err).__name__


def _alert(doc: Mapping[str, Any]) -> Alert:
    """An alert from its stored document (which also carries our bookkeeping: `n`, `archive_seq`)."""
    return Alert.from_dict({k: v for k, v in doc.items() if k not in ("n", "archive_seq")})


def _settled(alert: Alert) -> Alert:
    if not alert.pending_destinations:
        return replace(alert, status=AlertStatus.DELIVERED, lease_owner=None, lease_until=None)
    return alert


def _skip_destination(alerts: Iterable[Alert], conversation_id: str) -> list[Alert]:
    changed = []
    for alert in alerts:
        if alert.status is AlertStatus.PENDING and conversation_id in alert.pending_destinations:
            changed.append(_settled(replace(alert, skipped=alert.skipped + (conversation_id,))))
    return changed
