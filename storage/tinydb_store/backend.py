"""`TinyLedger`: the embedded, single-process ledger on JSON files (TinyDB documents and JSON Lines logs).

Threads (ADR 0003):

* **One writer thread** runs every operation that changes something, one after another, so operations never
  interleave. It takes *every* operation waiting in its queue as one batch (group commit): it applies them in
  order, each on a `Book` over the account's working view (accounts.py), then makes the file changes of the whole
  batch durable with one record in the write-ahead log (files.py: one fsync), publishes the new views, and only
  then answers every operation of the batch. An operation that fails (a `LedgerError`, a bad argument) changed
  nothing: its book is dropped before anything of it is staged, and the others of the batch go on. A crash
  before the record's fsync loses the whole batch, none of which was acknowledged; after it, none of it.
* **Reads run on the caller's event loop**, without a thread hop and without waiting behind commits: they use
  the account's *published* view (committed, immutable) and log documents up to its counts. A read that needs a
  closed log chunk that is not cached goes to a reader thread instead (the loop never waits on disk), as do the
  heavy reads (`verify`, `export_account`).

If a batch cannot be made durable (an I/O error), the store stops: every later operation fails with that error,
and opening it again replays exactly the durable records.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from .. import engine, policy
from .. import transfer
from ..clock import Clock, utc_now
from ..engine import Book, BookState
from ..errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                      InvalidSettings, LeaseLost, LedgerError, NotFound, SelfApproval)
from ..forecast import DEFAULT_WINDOW, call_time
from ..ledger import DEFAULT_MAX_ATTEMPTS, EXPIRING_NOTICE, Ledger
from ..model import (Account, AccountView, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                     ApprovalStatus, AuditRecord, BatchResult, ConversationRef, Entry, EntryKind, Lot, Page,
                     Posting, RechargeSettings, Role, RoleGrant, RowOutcome, RowStatus, SettingsChange,
                     Subscription, SYSTEM_ACTOR, UsageRecord, VerifyReport, iso, parse_iso)
from ..money import check_minor, normalize_currency
from . import files
from .accounts import Batch, StoredAccount, View, alert_from, empty_view, load, load_accounts
from .index import KeyIndex, UsageWindow
from .layout import ChunkCache, ChunkedLog, NeedsDisk, account_dir, memory_only
from .lock import StoreLock

log = logging.getLogger(__name__)
T = TypeVar("T")

#: At most this many operations in one batch (a bound on how long the first one waits for its answer).
MAX_BATCH = 256
#: The usage window kept in memory for `account_view` (the default burn window and a margin); wider or older
#: windows read the journal.
USAGE_KEPT = DEFAULT_WINDOW + timedelta(days=2)
_STOP = object()


class StoreBroken(OSError):
    """A batch could not be made durable; the store takes no more writes until it is opened again."""


@dataclass
class _Unit:
    """What one operation writes: its book (entries, audit, alerts, new state) and its operation records."""

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


@dataclass
class _Prepared:
    """One operation's writes, encoded and checked (`TinyLedger._prepare`): staging them cannot fail."""

    view: View  # the account's next working view
    entry_lines: list[bytes]
    audit_lines: list[bytes]
    op_lines: list[bytes]
    keys: list[tuple[str, int]]  # idempotency key -> seq of its operation record
    queued: dict[str, bytes]  # alert id -> outbox document, for alerts (still) in the outbox
    archived: list[tuple[int, str, bytes]]  # archive seq, alert id, archive line, for delivered alerts
    usage: UsageWindow | None  # the window the new view uses, and the items to add to it
    used: list[tuple[datetime, datetime, int]]
    hot: set[str]  # hot files to rewrite at the end of the batch
    alerts: bool  # a pending alert was raised


class TinyLedger(Ledger):
    """The embedded backend. Open with `await TinyLedger.open(path)`; one process per store."""

    works_off_the_loop = True

    def __init__(self, root: Path, *, clock: Clock, max_attempts: int) -> None:
        self._root = root
        self._clock = clock
        self._max_attempts = max_attempts
        self._lock = StoreLock(root)
        self._store = files.Store(root)
        self._cache = ChunkCache()
        self._accounts: dict[str, StoredAccount] = {}  # the writer's, with accounts opened by the current batch
        self._published: dict[str, StoredAccount] = {}  # what readers see (replaced whole, never changed in place)
        self._batch: Batch | None = None
        self._building: dict[str, asyncio.Future[View]] = {}  # tenant -> `account_view`'s index being built
        self._broken: BaseException | None = None
        self._closed = False
        self._queue: queue.SimpleQueue[tuple[Any, tuple[Any, ...], asyncio.Future[Any]]] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="tinydb-writer", daemon=True)
        self._readers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinydb-reader")
        self.batches = 0  # batches that wrote something, and the operations they held (for measurements)
        self.operations = 0

    @classmethod
    async def open(cls, root: Path, *, clock: Clock = utc_now,
                   max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> "TinyLedger":
        ledger = cls(Path(root), clock=clock, max_attempts=max_attempts)
        ledger._writer.start()
        try:
            await ledger._write(ledger._open)
        except BaseException:
            await ledger._stop()
            raise
        return ledger

    # --- the writer thread ----------------------------------------------------------------------------------------
    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the writer thread in the next batch; answer once that batch is durable."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, args, future))
        return await future

    def _write_loop(self) -> None:
        while True:
            tasks = [self._queue.get()]
            while len(tasks) < MAX_BATCH:
                try:
                    tasks.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = next((i for i, task in enumerate(tasks) if task[0] is _STOP), None)
            late: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            if stop is not None:   # `close` refuses new work before it asks to stop: nothing should follow it
                late = [(task[2], None, RuntimeError("the ledger is closed")) for task in tasks[stop + 1:]]
                stop_task, tasks = tasks[stop], tasks[:stop]
            results, alerts = self._run_batch(tasks) if tasks else ([], False)
            if stop is not None:   # after the batch before it is durable
                try:
                    self._shut()
                    results.append((stop_task[2], None, None))
                except BaseException as exc:
                    results.append((stop_task[2], None, exc))
                results += late
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
            for result in results:
                by_loop.setdefault(result[0].get_loop(), []).append(result)
            for loop, answers in by_loop.items():
                try:
                    loop.call_soon_threadsafe(self._answer, answers, alerts)   # one wake-up per batch
                except RuntimeError:   # pragma: no cover - the caller's loop is closed: nobody is waiting
                    pass
            if stop is not None:
                return

    def _run_batch(self, tasks: list[tuple[Any, tuple[Any, ...], asyncio.Future[Any]]]
                   ) -> tuple[list[tuple[asyncio.Future[Any], Any, BaseException | None]], bool]:
        """Apply the operations in order, commit what they staged as one unit, publish. Returns each operation's
        (future, value, exception) and whether pending alerts were queued."""
        if self._broken is not None:
            refused = StoreBroken(f"the store stopped after a failed commit: {self._broken!r}")
            return [(future, None, refused) for _, _, future in tasks], False
        batch = self._batch = Batch()
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for fn, args, future in tasks:
            try:
                results.append((future, fn(*args), None))
            except BaseException as exc:   # the operation staged nothing (see `_stage`): the batch goes on
                results.append((future, None, exc))
        self._batch = None
        try:
            wrote = self._commit(batch)
        except BaseException as exc:
            self._broken = exc
            log.critical("store %s: a commit failed (%r); no more writes until it is opened again", self._root, exc)
            failed = StoreBroken(f"the commit failed: {exc!r}")
            return [(f, None, err if err is not None else failed) for f, _, err in results], False
        if wrote:
            self.batches += 1
            self.operations += len(tasks)
        return results, batch.alerts

    def _commit(self, batch: Batch) -> bool:
        """Make the batch durable (one record, one fsync), then publish its views. False if it wrote nothing."""
        if self._broken is not None:   # an operation's staging failed half way (`_Staging`)
            raise self._broken
        changes = batch.changes(self._accounts.values())
        self._store.commit(changes)
        for acct in batch.touched.values():   # publish: each account with one assignment
            acct.published = acct.work
        if batch.accounts_file:
            self._published = dict(self._accounts)
        return bool(changes)

    def _answer(self, answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]], alerts: bool) -> None:
        """On the caller's loop: every operation of a durable batch gets its answer; then the notifier's hint."""
        for future, value, exc in answers:
            if future.cancelled():
                continue
            if exc is not None:
                future.set_exception(exc if not isinstance(exc, StopIteration) else RuntimeError(repr(exc)))
            else:
                future.set_result(value)
        if alerts:
            self._alerts_queued()

    def _stage_guard(self) -> "_Staging":
        return _Staging(self)

    # --- reads off the writer ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")

    def _pub(self, tenant_id: str) -> StoredAccount:
        """A published account (for readers), or `AccountNotFound`."""
        self._check_open()
        acct = self._published.get(tenant_id)
        if acct is None:
            raise AccountNotFound(tenant_id)
        return acct

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read on the loop from memory; if it needs a closed chunk from disk, on the reader thread."""
        self._check_open()
        try:
            with memory_only():
                return fn(*args)
        except NeedsDisk:
            return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def _read_off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """A heavy read (it may read every chunk of an account): on the reader thread."""
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    # --- opening and closing ------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            replayed = self._store.open()
            if replayed:
                log.warning("store %s: finished interrupted commits (%d file changes)", self._root, replayed)
            for tenant_id, folder in load_accounts(self._root):
                self._accounts[tenant_id] = load(self._root, self._cache, tenant_id, folder)
            self._published = dict(self._accounts)
        except BaseException:
            self._store.close(clean=False)
            self._lock.release()
            raise

    def _shut(self) -> None:
        """The last task of the writer: checkpoint (unless broken), close the files, release the lock."""
        try:
            self._store.close(clean=self._broken is None)
        finally:
            self._lock.release()

    async def _stop(self) -> None:
        self._closed = True   # no new work from now on; what is queued already is done before the stop
        if self._writer.is_alive():
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.put((_STOP, (), future))
            await future
        self._readers.shutdown(wait=False)

    async def close(self) -> None:
        if self._closed:
            return
        await self._stop()

    # --- staging (writer) ---------------------------------------------------------------------------------------
    def _acct(self, tenant_id: str) -> StoredAccount:
        acct = self._accounts.get(tenant_id)
        if acct is None:
            raise AccountNotFound(tenant_id)
        return acct

    def _keys(self, acct: StoredAccount) -> KeyIndex:
        if acct.keys is None:
            keys = KeyIndex()
            for doc in acct.ops.oldest_first(acct.work.op_count):
                keys.add(doc["k"], doc["seq"])
            acct.keys = keys
        return acct.keys

    def _stage(self, acct: StoredAccount, unit: _Unit, *, subscriptions: dict[str, Subscription] | None = None,
               roles: dict[str, RoleGrant] | None = None, approvals: Sequence[Approval] = (),
               outbox_changed: Iterable[Alert] = ()) -> None:
        """Add one operation's writes to the batch and to the account's working view: first everything that can
        fail (`_prepare`: encoding, the key index), which leaves no trace when it does, then the changes, which
        cannot fail (`_apply`)."""
        prepared = self._prepare(acct, unit, subscriptions, roles, approvals, list(outbox_changed))
        self._apply(acct, prepared)

    def _stage_accounts(self, units: list[tuple[StoredAccount, _Unit, list[Alert]]]) -> None:
        """`_stage` for an operation over several accounts (expiry, claims): all of it is prepared before any of
        it is staged, so that it stays all or nothing."""
        prepared = [(acct, self._prepare(acct, unit, None, None, (), alerts)) for acct, unit, alerts in units]
        for acct, ready in prepared:
            self._apply(acct, ready)

    def _prepare(self, acct: StoredAccount, unit: _Unit, subscriptions: dict[str, Subscription] | None,
                 roles: dict[str, RoleGrant] | None, approvals: Sequence[Approval],
                 outbox_changed: list[Alert]) -> "_Prepared":
        """An operation's new documents, encoded, and the account's next working view; changes nothing."""
        book = unit.book
        w = acct.work
        if unit.ops:
            self._keys(acct)   # built before anything is staged: it may read the disk
        entries = book.entries if book is not None else []
        changed = [*outbox_changed, *(book.alerts if book is not None else [])]
        numbers = {**w.order, **(book.alert_numbers if book is not None else {})}
        outbox, queued, archived = _outbox_changes(w, changed, numbers)
        recharges = [e for e in entries if e.kind is EntryKind.AUTO_RECHARGE]
        usage, used = w.usage, [(e.at, call_time(e), -e.amount) for e in entries if e.kind is EntryKind.USAGE]
        if usage is not None and book is not None and usage.since < book.now - USAGE_KEPT - timedelta(days=1):
            usage = usage.pruned(book.now - USAGE_KEPT)   # a new window: published ones only ever grow
        first_op = w.op_count + 1
        view = replace(
            w, state=book.state if book is not None else w.state,
            subscriptions=subscriptions if subscriptions is not None else w.subscriptions,
            roles=roles if roles is not None else w.roles,
            approvals={**w.approvals, **{a.approval_id: a for a in approvals}} if approvals else w.approvals,
            outbox=outbox if changed else w.outbox,
            order={k: n for k, n in numbers.items() if k in outbox} if changed else w.order,
            op_count=w.op_count + len(unit.ops), archive_count=w.archive_count + len(archived),
            last_recharge=recharges[-1] if recharges else w.last_recharge,
            recharge_known=w.recharge_known or bool(recharges),
            usage=usage, usage_count=(len(usage.items) + len(used)) if usage is not None else 0)
        hot = {"state"} if book is not None or subscriptions is not None or roles is not None or approvals else set()
        return _Prepared(
            view,
            entry_lines=[files.line(e.to_dict()) for e in entries],
            audit_lines=[files.line(r.to_dict()) for r in book.audit] if book is not None else [],
            op_lines=[files.line({"seq": seq, "k": key, "f": fp, "r": result})
                      for seq, (key, fp, result) in enumerate(unit.ops, start=first_op)],
            keys=[(key, seq) for seq, (key, _, _) in enumerate(unit.ops, start=first_op)],
            queued=queued, archived=archived, usage=usage, used=used,
            hot=hot | ({"outbox"} if changed else set()),
            alerts=book is not None and any(a.status is AlertStatus.PENDING for a in book.alerts))

    def _apply(self, acct: StoredAccount, prepared: "_Prepared") -> None:
        """Stage what `_prepare` made: the log appends into the batch, the indexes, the new working view."""
        with self._stage_guard() as batch:
            batch.add(acct.entries.append(prepared.entry_lines))
            batch.add(acct.audit_log.append(prepared.audit_lines))
            batch.add(acct.ops.append(prepared.op_lines))
            batch.add(acct.alert_log.append([line for _, _, line in prepared.archived]))
            for seq, alert_id, _ in prepared.archived:
                acct.archived.add(alert_id, seq)
                acct.outbox_docs.pop(alert_id, None)
            acct.outbox_docs.update(prepared.queued)
            if acct.keys is not None:
                for key, seq in prepared.keys:
                    acct.keys.add(key, seq)
            if prepared.usage is not None:
                prepared.usage.items.extend(prepared.used)
            acct.work = prepared.view
            batch.touch(acct, *prepared.hot)
            batch.alerts = batch.alerts or prepared.alerts

    def _check_key(self, acct: StoredAccount, key: str, operation: str,
                   args: Mapping[str, Any]) -> tuple[str, dict | None]:
        """Idempotency first: (fingerprint, stored result) for a replay, (fingerprint, None) for a new key."""
        fp = policy.fingerprint(operation, args)
        return fp, self._stored(acct, key, operation, fp)

    def _record_of(self, acct: StoredAccount, key: str) -> dict[str, Any] | None:
        """The operation record stored under `key` (committed or staged in this batch), None if there is none."""
        for seq in sorted(set(self._keys(acct).candidates(key))):
            doc = acct.ops.get(seq)
            if doc is not None and doc["k"] == key:
                return doc
        return None

    def _stored(self, acct: StoredAccount, key: str, operation: str, fp: str) -> dict | None:
        """The stored result under `key`, None for a new key; `IdempotencyConflict` for another fingerprint."""
        doc = self._record_of(acct, key)
        if doc is None:
            return None
        if doc["f"] != fp:
            raise IdempotencyConflict(key, operation)
        return doc["r"]

    def _posting_from(self, acct: StoredAccount, result: Mapping[str, Any]) -> Posting:
        entries = tuple(Entry.from_dict(acct.entries.get(seq) or {}) for seq in result["e"])
        return Posting(entries, result["b"], tuple(result["a"]), result.get("x"), replayed=True)

    @staticmethod
    def _compact(posting: Posting) -> dict[str, Any]:
        return {"e": [e.seq for e in posting.entries], "b": posting.balance, "a": list(posting.alert_ids),
                "x": posting.recharge_blocked}

    def _book(self, acct: StoredAccount) -> Book:
        return Book(acct.work.state, list(acct.work.subscriptions.values()), self._clock())

    def _keyed_change(self, tenant_id: str, actor: str, key: str, operation: str, args: Mapping[str, Any],
                      change: Callable[[StoredAccount, Book], "_Change"],
                      replay: Callable[[StoredAccount, dict[str, Any]], Any] | None = None) -> Any:
        """The shape of every keyed change by a caller: account, caller's key, idempotency lookup (a replay
        returns the stored result: `replay(acct, stored)`, by default a replayed `SettingsChange`), then `change`
        (which validates and may raise, changing nothing, and may write entries through the book), then the new
        state, its audit record and the operation record, staged together."""
        acct = self._acct(tenant_id)
        policy.check_caller_key(key)
        fp, done = self._check_key(acct, key, operation, args)
        if done is not None:
            return replay(acct, done) if replay is not None else SettingsChange.from_dict(done, replayed=True)
        book = self._book(acct)
        outcome = change(acct, book)
        book.record(actor, outcome.action, key, outcome.details)
        result, stored = outcome.outcome()
        self._stage(acct, _Unit(book, [(key, fp, stored)]), subscriptions=outcome.subscriptions,
                    roles=outcome.roles, approvals=outcome.approvals, outbox_changed=outcome.outbox)
        return result

    # --- accounts -----------------------------------------------------------------------------------------------
    async def open_account(self, tenant_id: str, currency: str, *, actor: str = SYSTEM_ACTOR) -> Account:
        return await self._write(self._open_account, tenant_id, currency, actor)

    def _open_account(self, tenant_id: str, currency: str, actor: str) -> Account:
        code = normalize_currency(currency)
        if tenant_id in self._accounts:
            return self._accounts[tenant_id].work.account()
        if not isinstance(tenant_id, str) or not tenant_id:
            raise NotFound("tenant", str(tenant_id))
        state = BookState(tenant_id, code, self._clock())
        acct = StoredAccount(self._root, self._cache, tenant_id, account_dir(tenant_id), empty_view(state))
        for log_ in (acct.entries, acct.ops, acct.audit_log, acct.alert_log):
            log_.load()
        acct.keys = KeyIndex()
        book = Book(state, [], self._clock())
        book.record(actor, "account_opened", "", {"currency": code})
        self._stage(acct, _Unit(book))
        with self._stage_guard() as batch:
            self._accounts[tenant_id] = acct
            batch.accounts_file = True
        return acct.work.account()

    async def get_account(self, tenant_id: str) -> Account:
        return self._pub(tenant_id).published.account()

    async def tenants(self) -> list[str]:
        self._check_open()
        return sorted(self._published)

    async def set_currency(self, tenant_id: str, currency: str, *, actor: str, key: str) -> SettingsChange:
        return await self._write(self._set_currency, tenant_id, currency, actor, key)

    def _set_currency(self, tenant_id: str, currency: str, actor: str, key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            code = normalize_currency(currency)
            if acct.work.state.entry_count:
                raise CurrencyLocked(acct.work.state.currency)
            previous, book.state.currency = book.state.currency, code
            return _Change({"currency": code}, "currency", {"currency": code, "previous": previous})
        return self._keyed_change(tenant_id, actor, key, "set_currency", {"currency": currency}, change)

    # --- money --------------------------------------------------------------------------------------------------
    async def add_funds(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                        reference: str = "") -> Posting:
        return await self._write(self._money, tenant_id, "add_funds", amount, actor, key, memo, reference)

    async def adjust(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                     reference: str = "") -> Posting:
        return await self._write(self._money, tenant_id, "adjust", amount, actor, key, memo, reference)

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
        self._stage(acct, _Unit(book, [(key, fp, self._compact(posting))]))
        return posting

    # --- approvals ----------------------------------------------------------------------------------------------
    async def request_approval(self, tenant_id: str, amount: int, *, actor: str, key: str,
                               memo: str = "") -> Approval:
        return await self._write(self._request_approval, tenant_id, amount, actor, key, memo)

    def _request_approval(self, tenant_id: str, amount: int, actor: str, key: str, memo: str) -> Approval:
        def change(acct: StoredAccount, book: Book) -> _Change:
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
        return await self._write(self._decide_approval, tenant_id, approval_id, approve, actor, key)

    def _decide_approval(self, tenant_id: str, approval_id: str, approve: bool, actor: str,
                         key: str) -> ApprovalDecision:
        self._acct(tenant_id)   # the account and the key come before the type of `approve`
        policy.check_caller_key(key)
        if not isinstance(approve, bool):
            raise ValueError(f"approve must be a bool, not {approve!r}")

        def change(acct: StoredAccount, book: Book) -> _Change:
            approval = acct.work.approvals.get(approval_id)
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

        def replay(acct: StoredAccount, stored: dict[str, Any]) -> ApprovalDecision:
            posting = stored["posting"]
            return ApprovalDecision(Approval.from_dict(stored["approval"]),
                                    self._posting_from(acct, posting) if posting is not None else None,
                                    replayed=True)
        return self._keyed_change(tenant_id, actor, key, "decide_approval",
                                  {"approval_id": approval_id, "approve": approve}, change, replay)

    async def approvals(self, tenant_id: str, *, status: ApprovalStatus | None = None) -> list[Approval]:
        requested = list(self._pub(tenant_id).published.approvals.values())   # in the order they were requested
        oldest_first = sorted(range(len(requested)), key=lambda i: (requested[i].requested_at, i))
        return [requested[i] for i in reversed(oldest_first) if status is None or requested[i].status == status]

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        approval = self._pub(tenant_id).published.approvals.get(approval_id)
        if approval is None:
            raise NotFound("approval", approval_id)
        return approval

    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        return await self._write(self._record_usage, tenant_id, usage, actor)

    def _record_usage(self, tenant_id: str, usage: UsageRecord, actor: str) -> Posting:
        result = self._usage_rows(tenant_id, [usage], actor, strict=True)
        row = result.rows[0]
        assert row.posting is not None
        return row.posting

    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        return await self._write(self._usage_rows, tenant_id, list(rows), actor, False)

    def _usage_rows(self, tenant_id: str, rows: list[UsageRecord], actor: str, strict: bool) -> BatchResult:
        """Rows one after another in one Book, staged as one operation. In strict mode (a single row) a problem
        raises; in a batch it is reported for that row and the others go on."""
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
            self._stage(acct, unit)
        return BatchResult(tuple(outcomes), book.state.balance if recorded else acct.work.state.balance)

    def _usage_row(self, acct: StoredAccount, book: Book, unit: _Unit, seen: dict[str, tuple[str, Posting]],
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
        return await self._write(self._expire_lots, now)

    def _expire_lots(self, now: datetime | None) -> list[Posting]:
        moment = now or self._clock()  # selects the lots; what is written is stamped with the clock
        postings: list[Posting] = []
        units: list[tuple[StoredAccount, _Unit, list[Alert]]] = []
        for tenant_id in sorted(self._accounts):
            acct = self._accounts[tenant_id]
            book = self._book(acct)
            unit = _Unit(book)
            for lot in engine.expired_lots(book.state, moment):
                key = f"expiry:{lot.lot_id}"
                if self._record_of(acct, key) is not None:  # pragma: no cover - an expired lot leaves the open lots
                    continue
                primary = book.expire(lot)
                posting = book.settle(primary)
                book.record_posting(SYSTEM_ACTOR, "expiry", key, posting)
                unit.ops.append((key, policy.fingerprint("expire_lot", {"lot_id": lot.lot_id}),
                                 self._compact(posting)))
                postings.append(posting)
            for lot in book.state.lots:
                if lot.remaining > 0 and moment < lot.expires_at <= moment + EXPIRING_NOTICE:
                    key = policy.expiring_key(tenant_id, lot.lot_id)
                    if not self._alert_known(acct, policy.alert_id(tenant_id, key)):
                        book.raise_alert(AlertKind.EXPIRING, key, {
                            "lot_id": lot.lot_id, "remaining": lot.remaining, "expires_at": iso(lot.expires_at)})
            if book.entries or book.alerts:
                units.append((acct, unit, []))
        self._stage_accounts(units)
        return postings

    def _alert_known(self, acct: StoredAccount, alert_id: str) -> bool:
        return alert_id in acct.work.outbox or acct.archived_alert(alert_id, acct.work) is not None

    # --- reading ------------------------------------------------------------------------------------------------
    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        acct = self._pub(tenant_id)
        return await self._read(lambda: _page(acct.entries, acct.published.state.entry_count, limit, before,
                                              Entry.from_dict))

    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        acct = self._pub(tenant_id)
        return await self._read(_entries_since, acct, acct.published, since)

    async def lots(self, tenant_id: str) -> list[Lot]:
        return [lot for lot in self._pub(tenant_id).published.state.lots if lot.remaining > 0]

    async def recharge_settings(self, tenant_id: str) -> RechargeSettings:
        return self._pub(tenant_id).published.state.recharge

    async def alert_settings(self, tenant_id: str) -> AlertSettings:
        return self._pub(tenant_id).published.state.alerts

    async def account_view(self, tenant_id: str, *, now: datetime | None = None,
                           expiring_within: timedelta = EXPIRING_NOTICE,
                           burn_window: timedelta = DEFAULT_WINDOW) -> AccountView:
        """One consistent published view, answered on the loop: the last recharge and the recent usage are kept
        in it, so only a window wider or older than the one kept reads the journal. The first call for an
        account after open builds what is kept from the journal (on the reader thread if it needs the disk) and
        hands it to the writer without waiting for it."""
        acct = self._pub(tenant_id)
        view = acct.published
        if view.usage is None or not view.recharge_known:
            view = await self._indexed(acct, view)
        moment = now if now is not None else self._clock()
        start = moment - burn_window
        assert view.usage is not None
        if view.usage.since <= start:
            used = view.usage.used(view.usage_count, start, moment)
        else:
            used = await self._read(_usage_in, acct, view, start, moment)
        horizon = moment + expiring_within
        expiring = tuple(lot for lot in view.state.lots if lot.remaining > 0 and lot.expires_at <= horizon)
        return AccountView(view.account(), tuple(sorted(view.roles.values(), key=lambda g: g.user_id)),
                           view.state.recharge, view.state.alerts, expiring, view.last_recharge, used)

    async def _indexed(self, acct: StoredAccount, view: View) -> View:
        """`view` with what `account_view` keeps, built from the journal up to `view` (one build at a time per
        account); the writer adopts it for the views to come (`_adopt`)."""
        building = self._building.get(acct.tenant_id)
        if building is None:
            since = self._clock() - USAGE_KEPT
            building = asyncio.ensure_future(self._read(_with_index, acct, view, since))
            self._building[acct.tenant_id] = building
            building.add_done_callback(lambda _: self._building.pop(acct.tenant_id, None))
        built = await building
        if built.state.entry_count != view.state.entry_count:   # built for another view: build on ours
            assert built.usage is not None
            built = await self._read(_with_index, acct, view, built.usage.since)
        if not self._closed:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_ignore)   # nobody waits: a failure only means the next view builds again
            self._queue.put((self._adopt, (acct.tenant_id, built), future))
        return built

    def _adopt(self, tenant_id: str, built: View) -> None:
        """Keep what a reader built for `account_view` (writer): the usage window, extended with the entries
        staged since the view it was built on, and the last recharge (if none was staged since, the reader's
        is still the newest)."""
        acct = self._acct(tenant_id)
        w = acct.work
        if (w.usage is not None and w.recharge_known) or built.usage is None:
            return
        usage = w.usage
        if usage is None:
            usage = built.usage
            for seq in range(built.state.entry_count + 1, w.state.entry_count + 1):
                entry = Entry.from_dict(acct.entries.get(seq) or {})
                if entry.kind is EntryKind.USAGE and entry.at >= usage.since:
                    usage.items.append((entry.at, call_time(entry), -entry.amount))
        view = replace(w, usage=usage, usage_count=len(usage.items),
                       last_recharge=w.last_recharge if w.recharge_known else built.last_recharge,
                       recharge_known=True)
        with self._stage_guard() as batch:
            acct.work = view
            # a last recharge found by searching is written (`derived`), so that the next open need not search
            batch.touch(acct, *([] if w.recharge_known else ["state"]))

    async def set_recharge_settings(self, tenant_id: str, settings: RechargeSettings, *, actor: str,
                                    key: str) -> SettingsChange:
        return await self._write(self._set_recharge, tenant_id, settings, actor, key)

    def _set_recharge(self, tenant_id: str, settings: RechargeSettings, actor: str, key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            valid = policy.validate_recharge(settings)
            engine.change_recharge(book.state, valid)
            return _Change(valid.to_dict(), "recharge_settings", valid.to_dict())
        return self._keyed_change(tenant_id, actor, key, "set_recharge_settings", _settings_args(settings), change)

    async def set_alert_settings(self, tenant_id: str, settings: AlertSettings, *, actor: str,
                                 key: str) -> SettingsChange:
        return await self._write(self._set_alerts, tenant_id, settings, actor, key)

    def _set_alerts(self, tenant_id: str, settings: AlertSettings, actor: str, key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            valid = policy.validate_alerts(settings)
            engine.rearm_thresholds(book.state, valid)
            return _Change(valid.to_dict(), "alert_settings", valid.to_dict())
        return self._keyed_change(tenant_id, actor, key, "set_alert_settings", _settings_args(settings), change)

    # --- outbox -------------------------------------------------------------------------------------------------
    async def raise_alert(self, tenant_id: str, kind: AlertKind, key: str, payload: Mapping[str, Any]) -> Alert:
        return await self._write(self._raise_alert, tenant_id, kind, key, dict(payload))

    def _raise_alert(self, tenant_id: str, kind: AlertKind, key: str, payload: dict[str, Any]) -> Alert:
        acct = self._acct(tenant_id)
        if str(kind) not in policy.RAISABLE_KINDS or not isinstance(key, str) or not key.startswith(f"{kind}:"):
            raise ValueError(f"raise_alert takes forecast or expiring alerts keyed '{{kind}}:...', not {kind}/{key!r}")
        kind = AlertKind(kind)
        alert_id = policy.alert_id(tenant_id, key)
        existing = acct.work.outbox.get(alert_id) or acct.archived_alert(alert_id, acct.work)
        if existing is not None:
            return existing
        book = self._book(acct)
        alert = book.raise_alert(kind, key, payload)
        self._stage(acct, _Unit(book))
        return alert

    def _find_alert(self, alert_id: str, *, published: bool) -> tuple[StoredAccount, Alert] | None:
        """The alert and its account, from the published views (readers) or the working ones (writer)."""
        accounts = self._published if published else self._accounts
        views = [(acct, acct.published if published else acct.work) for acct in accounts.values()]
        for acct, view in views:   # the outbox first: it is small, and most lookups are for pending alerts
            alert = view.outbox.get(alert_id)
            if alert is not None:
                return acct, alert
        for acct, view in views:
            alert = acct.archived_alert(alert_id, view)
            if alert is not None:
                return acct, alert
        return None

    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        return await self._write(self._claim, worker, lease, limit)

    def _claim(self, worker: str, lease: timedelta, limit: int) -> list[Alert]:
        now = self._clock()
        due = sorted(((a, acct.work.order[a.alert_id]) for acct in self._accounts.values()
                      for a in acct.work.outbox.values()
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
        self._stage_accounts([(self._accounts[tenant], _Unit(None), alerts) for tenant, alerts in changed.items()])
        return claimed

    def _leased(self, alert_id: str, worker: str) -> tuple[StoredAccount, Alert]:
        found = self._find_alert(alert_id, published=False)
        if found is None:
            raise NotFound("alert", alert_id)
        acct, alert = found
        if alert.status is not AlertStatus.PENDING or alert.lease_owner != worker:
            raise LeaseLost(alert_id, worker)
        return acct, alert

    async def mark_delivered(self, alert_id: str, destination: str, *, worker: str) -> Alert:
        return await self._write(self._mark_delivered, alert_id, destination, worker)

    def _mark_delivered(self, alert_id: str, destination: str, worker: str) -> Alert:
        acct, alert = self._leased(alert_id, worker)
        if destination not in alert.destinations:
            raise NotFound("destination", destination)
        if destination not in alert.delivered:
            alert = replace(alert, delivered=alert.delivered + (destination,))
        alert = _settled(alert)
        self._stage(acct, _Unit(None), outbox_changed=[alert])
        return alert

    async def release_alert(self, alert_id: str, *, worker: str, retry_at: datetime, error: str) -> Alert:
        return await self._write(self._release, alert_id, worker, retry_at, error)

    def _release(self, alert_id: str, worker: str, retry_at: datetime, error: str) -> Alert:
        acct, alert = self._leased(alert_id, worker)
        dead = alert.attempts >= self._max_attempts
        alert = replace(alert, next_attempt_at=retry_at, lease_owner=None, lease_until=None, last_error=error,
                        status=AlertStatus.DEAD if dead else AlertStatus.PENDING)
        self._stage(acct, _Unit(None), outbox_changed=[alert])
        if dead:
            log.error("alert %s (%s) dead after %d attempts: %s", alert.alert_id, alert.kind, alert.attempts,
                      alert.last_error[:500])
        return alert

    async def get_alert(self, alert_id: str) -> Alert:
        def find() -> Alert:
            found = self._find_alert(alert_id, published=True)
            if found is None:
                raise NotFound("alert", alert_id)
            return found[1]
        return await self._read(find)

    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        acct = self._pub(tenant_id)
        return await self._read(_alerts, acct, acct.published, status, limit)

    # --- conversations and subscriptions ------------------------------------------------------------------------
    async def save_conversation(self, ref: ConversationRef) -> bool:
        acct = self._published.get(ref.tenant_id) if not self._closed else None
        if acct is not None:   # unchanged (the usual case: the bot saves on every activity): no write, no hop
            old = acct.published.conversations.get(ref.conversation_id)
            if old is not None and dict(old.reference) == dict(ref.reference):
                return False
        return await self._write(self._save_conversation, ref)

    def _save_conversation(self, ref: ConversationRef) -> bool:
        acct = self._acct(ref.tenant_id)
        w = acct.work
        old = w.conversations.get(ref.conversation_id)
        if old is not None and dict(old.reference) == dict(ref.reference):
            return False  # unchanged: saving on every activity costs no write
        doc = files.encode(ref.to_dict())
        with self._stage_guard() as batch:
            acct.conversation_docs[ref.conversation_id] = doc
            acct.work = replace(w, conversations={**w.conversations, ref.conversation_id: ref})
            batch.touch(acct, "conversations")
        return old is None

    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None:
        return self._pub(tenant_id).published.conversations.get(conversation_id)

    async def conversations(self, tenant_id: str) -> list[ConversationRef]:
        return sorted(self._pub(tenant_id).published.conversations.values(), key=lambda c: c.conversation_id)

    async def subscribe(self, tenant_id: str, conversation_id: str, kinds: Iterable[AlertKind], *, actor: str,
                        key: str) -> SettingsChange:
        return await self._write(self._subscribe, tenant_id, conversation_id, list(kinds), actor, key)

    def _subscribe(self, tenant_id: str, conversation_id: str, kinds: list[AlertKind], actor: str,
                   key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
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
                           subscriptions={**acct.work.subscriptions, conversation_id: sub})
        args = {"conversation_id": conversation_id, "kinds": sorted({str(k) for k in kinds})}
        return self._keyed_change(tenant_id, actor, key, "subscribe", args, change)

    async def unsubscribe(self, tenant_id: str, conversation_id: str, *, actor: str, key: str) -> SettingsChange:
        return await self._write(self._unsubscribe, tenant_id, conversation_id, actor, key)

    def _unsubscribe(self, tenant_id: str, conversation_id: str, actor: str, key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            subs = acct.work.subscriptions
            if conversation_id not in subs:
                raise NotFound("subscription", conversation_id)
            return _Change({"conversation_id": conversation_id}, "unsubscribe", {"conversation_id": conversation_id},
                           subscriptions={k: v for k, v in subs.items() if k != conversation_id},
                           outbox=_skip_destination(acct.work.outbox.values(), conversation_id))
        return self._keyed_change(tenant_id, actor, key, "unsubscribe", {"conversation_id": conversation_id}, change)

    async def disable_subscription(self, tenant_id: str, conversation_id: str, *, reason: str) -> None:
        await self._write(self._disable, tenant_id, conversation_id, reason)

    def _disable(self, tenant_id: str, conversation_id: str, reason: str) -> None:
        acct = self._acct(tenant_id)
        sub = acct.work.subscriptions.get(conversation_id)
        if sub is None or not sub.enabled:
            return
        subs = {**acct.work.subscriptions, conversation_id: replace(sub, enabled=False, disabled_reason=reason)}
        book = self._book(acct)
        book.record(SYSTEM_ACTOR, "disable_subscription", "", {"conversation_id": conversation_id, "reason": reason})
        self._stage(acct, _Unit(book), subscriptions=subs,
                    outbox_changed=_skip_destination(acct.work.outbox.values(), conversation_id))

    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        return self._pub(tenant_id).published.watermarks.get(source)

    async def set_sync_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        if until.tzinfo is None:
            raise ValueError("a watermark must be an aware datetime")
        return await self._write(self._set_watermark, tenant_id, source, until.astimezone(timezone.utc))

    def _set_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        acct = self._acct(tenant_id)
        w = acct.work
        current = w.watermarks.get(source)
        if current is not None and until <= current:
            return current
        with self._stage_guard() as batch:
            acct.work = replace(w, watermarks={**w.watermarks, source: until})
            batch.touch(acct, "state")
        return until

    async def subscriptions(self, tenant_id: str) -> list[Subscription]:
        return sorted(self._pub(tenant_id).published.subscriptions.values(), key=lambda s: s.conversation_id)

    # --- roles and audit ----------------------------------------------------------------------------------------
    async def grant_role(self, tenant_id: str, user_id: str, role: Role, *, actor: str, key: str,
                         display_name: str = "") -> SettingsChange:
        return await self._write(self._grant, tenant_id, user_id, role, actor, key, display_name)

    def _grant(self, tenant_id: str, user_id: str, role: Role, actor: str, key: str,
               display_name: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            try:
                valid = Role(role)
            except ValueError:
                raise InvalidSettings("unknown_role") from None
            grant = RoleGrant(user_id, valid, actor, book.now, display_name)
            return _Change(grant.to_dict(), "grant_role",
                           {"user_id": user_id, "role": valid.value, "display_name": display_name},
                           roles={**acct.work.roles, user_id: grant})
        args = {"user_id": user_id, "role": str(role), "display_name": display_name}
        return self._keyed_change(tenant_id, actor, key, "grant_role", args, change)

    async def revoke_role(self, tenant_id: str, user_id: str, *, actor: str, key: str) -> SettingsChange:
        return await self._write(self._revoke, tenant_id, user_id, actor, key)

    def _revoke(self, tenant_id: str, user_id: str, actor: str, key: str) -> SettingsChange:
        def change(acct: StoredAccount, book: Book) -> _Change:
            roles = acct.work.roles
            if user_id not in roles:
                raise NotFound("role", user_id)
            removed = roles[user_id].role.value
            return _Change({"user_id": user_id, "role": removed}, "revoke_role", {"user_id": user_id, "role": removed},
                           roles={k: v for k, v in roles.items() if k != user_id})
        return self._keyed_change(tenant_id, actor, key, "revoke_role", {"user_id": user_id}, change)

    async def roles(self, tenant_id: str) -> list[RoleGrant]:
        return sorted(self._pub(tenant_id).published.roles.values(), key=lambda g: g.user_id)

    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        acct = self._pub(tenant_id)
        return await self._read(lambda: _page(acct.audit_log, acct.published.state.audit_count, limit, before,
                                              AuditRecord.from_dict))

    # --- copying a store (storage/transfer.py) --------------------------------------------------------------------
    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        acct = self._pub(tenant_id)
        return await self._read_off_loop(_export, acct, acct.published)

    async def import_account(self, data: Mapping[str, Any]) -> None:
        tenant_id = transfer.check_export(data)
        await self._write(self._import_account, tenant_id, data)

    def _import_account(self, tenant_id: str, data: Mapping[str, Any]) -> None:
        """Stage every file of the account in this batch (one commit), like an account opened with its history."""
        if tenant_id in self._accounts:
            raise ValueError(f"the store already has an account for tenant {tenant_id!r}")
        parts = _Imported.read(tenant_id, data)
        acct = StoredAccount(self._root, self._cache, tenant_id, account_dir(tenant_id), parts.view)
        for log_ in (acct.entries, acct.ops, acct.audit_log, acct.alert_log):
            log_.load()
        with self._stage_guard() as batch:
            batch.add(acct.entries.append(parts.entry_lines))
            batch.add(acct.audit_log.append(parts.audit_lines))
            batch.add(acct.ops.append(parts.op_lines))
            batch.add(acct.alert_log.append([line for _, _, line in parts.archived]))
            acct.keys = KeyIndex()
            for seq, key in enumerate(parts.keys, start=1):
                acct.keys.add(key, seq)
            for seq, alert_id, _ in parts.archived:
                acct.archived.add(alert_id, seq)
            acct.outbox_docs = parts.outbox_docs
            acct.conversation_docs = parts.conversation_docs
            self._accounts[tenant_id] = acct
            batch.accounts_file = True
            batch.touch(acct, "state", "outbox", "conversations")

    # --- health -------------------------------------------------------------------------------------------------
    async def verify(self, tenant_id: str | None = None) -> VerifyReport:
        self._check_open()
        accounts = self._published
        tenants = [tenant_id] if tenant_id is not None else sorted(accounts)
        chosen = [self._pub(t) for t in tenants]
        return await self._read_off_loop(_verify, [(a, a.published) for a in chosen])

    async def ping(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise StoreBroken(f"the store stopped after a failed commit: {self._broken}")

        def check() -> None:
            if not (self._root / "LOCK").exists():
                raise OSError(f"store {self._root} is gone")
        await self._read_off_loop(check)


@dataclass
class _Imported:
    """An exported account (storage/transfer.py), checked and encoded for `import_account`."""

    view: View
    entry_lines: list[bytes]
    audit_lines: list[bytes]
    op_lines: list[bytes]
    keys: list[str]  # the operation records' keys, in order
    archived: list[tuple[int, str, bytes]]  # archive seq, alert id, archive line
    outbox_docs: dict[str, bytes]
    conversation_docs: dict[str, bytes]

    @classmethod
    def read(cls, tenant_id: str, data: Mapping[str, Any]) -> "_Imported":
        """`ValueError` for an export that does not hold together (another tenant's state, gaps in the seqs)."""
        state = BookState.from_dict(data["state"])
        if state.tenant_id != tenant_id:
            raise ValueError("the export's state belongs to another tenant")
        entries = [Entry.from_dict(d) for d in data["entries"]]
        if [e.seq for e in entries] != list(range(1, len(entries) + 1)):
            raise ValueError("the export's entries are not numbered 1, 2, ...")
        records = [AuditRecord.from_dict(d) for d in data["audit"]]
        if [r.seq for r in records] != list(range(1, len(records) + 1)):
            raise ValueError("the export's audit records are not numbered 1, 2, ...")
        # creation numbers per account, in the export's order (oldest first), like `Book.raise_alert`'s
        pending: dict[str, Alert] = {}
        order: dict[str, int] = {}
        outbox_docs: dict[str, bytes] = {}
        archived: list[tuple[int, str, bytes]] = []
        for n, doc in enumerate(data["alerts"], start=1):
            alert = alert_from(doc)
            if alert.status is AlertStatus.DELIVERED:
                seq = len(archived) + 1
                archived.append((seq, alert.alert_id, files.line({**alert.to_dict(), "archive_seq": seq, "n": n})))
            else:
                pending[alert.alert_id], order[alert.alert_id] = alert, n
                outbox_docs[alert.alert_id] = files.encode({**alert.to_dict(), "n": n})
        ops = [(op["key"], op["fingerprint"], op["result"]) for op in data["ops"]]
        conversations = {c.conversation_id: c for c in map(ConversationRef.from_dict, data["conversations"])}
        recharges = [e for e in entries if e.kind is EntryKind.AUTO_RECHARGE]
        view = View(
            state, roles={g.user_id: g for g in map(RoleGrant.from_dict, data["roles"])},
            subscriptions={s.conversation_id: s for s in map(Subscription.from_dict, data["subscriptions"])},
            conversations=conversations, outbox=pending, order=order,
            approvals={a.approval_id: a for a in map(Approval.from_dict, data["approvals"])},
            watermarks={source: parse_iso(until) for source, until in data["watermarks"].items()},
            op_count=len(ops), archive_count=len(archived), last_recharge=recharges[-1] if recharges else None)
        return cls(
            view, [files.line(e.to_dict()) for e in entries], [files.line(r.to_dict()) for r in records],
            [files.line({"seq": i, "k": k, "f": f, "r": r}) for i, (k, f, r) in enumerate(ops, start=1)],
            [k for k, _, _ in ops], archived, outbox_docs,
            {cid: files.encode(c.to_dict()) for cid, c in conversations.items()})


class _Staging:
    """`with ledger._stage_guard() as batch:` around the part of an operation that changes the working view and
    the batch. Those changes cannot fail; if one does anyway, the store stops (the view would be half changed)."""

    def __init__(self, ledger: TinyLedger) -> None:
        self._ledger = ledger

    def __enter__(self) -> Batch:
        batch = self._ledger._batch
        assert batch is not None, "staging outside a batch"
        return batch

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._ledger._broken = exc


# --- reads (any thread, on a published view) -----------------------------------------------------------------------

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


def _entries_since(acct: StoredAccount, view: View, since: datetime) -> list[Entry]:
    """Every entry of `view` recorded at or after `since`, oldest first (the journal is in time order)."""
    found: list[Entry] = []
    for doc in acct.entries.newest_first(view.state.entry_count + 1):
        entry = Entry.from_dict(doc)
        if entry.at < since:
            break
        found.append(entry)
    return found[::-1]


def _with_index(acct: StoredAccount, view: View, since: datetime) -> View:
    """`view` with the usage entries recorded since `since` and the newest recharge, read from the journal."""
    usage, last = view.usage, view.last_recharge
    if usage is None:
        usage = UsageWindow(since, [(e.at, call_time(e), -e.amount) for e in _entries_since(acct, view, since)
                                    if e.kind is EntryKind.USAGE])
    if not view.recharge_known:
        last = next((Entry.from_dict(doc) for doc in acct.entries.newest_first(view.state.entry_count + 1)
                     if doc["kind"] == EntryKind.AUTO_RECHARGE), None)
    return replace(view, usage=usage, usage_count=len(usage.items), last_recharge=last, recharge_known=True)


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _usage_in(acct: StoredAccount, view: View, start: datetime, now: datetime) -> int:
    """Money used by calls in [start, now], of usage entries recorded since `start`, read from the journal."""
    return sum(-e.amount for e in _entries_since(acct, view, start)
               if e.kind is EntryKind.USAGE and start <= call_time(e) <= now)


def _alerts(acct: StoredAccount, view: View, status: AlertStatus | None, limit: int) -> list[Alert]:
    found = [a for a in view.outbox.values() if status is None or a.status is status]
    numbers = dict(view.order)
    if status in (None, AlertStatus.DELIVERED):
        # archived in delivery order, which is close to creation order: read until enough are certain
        for doc in acct.alert_log.newest_first(view.archive_count + 1):
            if len(found) >= limit + len(view.outbox) + 50:
                break
            found.append(alert_from(doc))
            numbers[doc["alert_id"]] = doc["n"]
    found.sort(key=lambda a: (a.created_at, numbers[a.alert_id]), reverse=True)
    return found[:limit]


def _export(acct: StoredAccount, view: View) -> dict[str, Any]:
    entries = [Entry.from_dict(d).to_dict() for d in acct.entries.oldest_first(view.state.entry_count)]
    kinds = {e["seq"]: e["kind"] for e in entries}
    ops = [{"key": d["k"], "operation": transfer.infer_operation(d["k"], d["r"], kinds), "fingerprint": d["f"],
            "result": d["r"]} for d in acct.ops.oldest_first(view.op_count)]
    alerts = [{**a.to_dict(), "n": view.order[a.alert_id]} for a in view.outbox.values()]
    alerts += [{**alert_from(d).to_dict(), "n": d["n"]} for d in acct.alert_log.oldest_first(view.archive_count)]
    alerts.sort(key=lambda a: (parse_iso(a["created_at"]), a["n"]))
    return {
        "format": transfer.FORMAT, "tenant_id": acct.tenant_id, "state": view.state.to_dict(),
        "entries": entries, "ops": ops, "alerts": alerts,
        "audit": [AuditRecord.from_dict(d).to_dict() for d in acct.audit_log.oldest_first(view.state.audit_count)],
        "subscriptions": [s.to_dict() for s in sorted(view.subscriptions.values(), key=lambda s: s.conversation_id)],
        "roles": [g.to_dict() for g in sorted(view.roles.values(), key=lambda g: g.user_id)],
        "approvals": [a.to_dict() for a in view.approvals.values()],
        "conversations": [c.to_dict() for c in sorted(view.conversations.values(), key=lambda c: c.conversation_id)],
        "watermarks": {source: iso(until) for source, until in sorted(view.watermarks.items())},
    }


def _verify(accounts: list[tuple[StoredAccount, View]]) -> VerifyReport:
    problems: list[str] = []
    total = 0
    for acct, view in accounts:
        t = acct.tenant_id
        entries = [Entry.from_dict(d) for d in acct.entries.oldest_first(view.state.entry_count)]
        total += len(entries)
        problems.extend(f"{t}: {p}" for p in engine.verify_journal(view.state, entries))
        keys = {doc["k"] for doc in acct.ops.oldest_first(view.op_count)}
        for entry in entries:
            if entry.kind is not EntryKind.AUTO_RECHARGE and entry.key not in keys:
                problems.append(f"{t}: entry {entry.seq} has no operation record for key {entry.key!r}")
    return VerifyReport(len(accounts), total, tuple(problems))


# --- helpers --------------------------------------------------------------------------------------------------------

def _outbox_changes(view: View, changed: list[Alert], numbers: Mapping[str, int]
                    ) -> tuple[dict[str, Alert], dict[str, bytes], list[tuple[int, str, bytes]]]:
    """The outbox after `changed` (alerts raised or updated), the documents of those that stay in it, and the
    archive lines of those now delivered (numbered after `view`'s archive)."""
    outbox = dict(view.outbox)
    queued: dict[str, bytes] = {}
    archived: list[tuple[int, str, bytes]] = []
    for alert in changed:
        doc = {**alert.to_dict(), "n": numbers[alert.alert_id]}
        if alert.status is AlertStatus.DELIVERED:
            seq = view.archive_count + len(archived) + 1
            archived.append((seq, alert.alert_id, files.line({**doc, "archive_seq": seq})))
            outbox.pop(alert.alert_id, None)
            queued.pop(alert.alert_id, None)
        else:
            outbox[alert.alert_id] = alert
            queued[alert.alert_id] = files.encode(doc)
    return outbox, queued, archived


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
