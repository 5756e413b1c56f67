"""Money operations as values that a batch applies, one after another, to one locked account (`group`).

A `MoneyOp` knows the idempotency keys to look up with the lock (`keys`) and how to apply itself to the
account as the batch has left it (`apply`, pure Python: no I/O). `Batch` holds that account: its state, the
subscriptions read with the lock, and the operation records known so far (those read with the lock and those
of the batch's earlier operations), so that a replay and a conflict are decided exactly as if the operations
had run one transaction each, in order:

* each operation gets its own `Book` over the state the previous successful one left; an operation that
  raises leaves its book behind, so it records nothing and the next one sees the state as it was;
* a key already recorded (in the database, or earlier in the batch) with the same request returns the
  original posting with `replayed=True`; with another request it is `IdempotencyConflict`;
* what the successful operations collected (entries, audit records, alerts, operation records, the final
  state) is written together (`Written`, then `writes.PERSIST`), in the order it was produced.

The single-operation path is a batch of one: the same code, the same rows and results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol

from .. import engine, policy
from ..engine import Book, BookState
from ..errors import IdempotencyConflict
from ..model import Alert, AuditRecord, Entry, EntryKind, Posting, RowOutcome, RowStatus, Subscription, UsageRecord
from ..money import check_minor
from .group import Outcome

#: (key, operation, fingerprint, stored result) of one operation record.
OpRecord = tuple[str, str, str, dict[str, Any]]


def compact(posting: Posting) -> dict[str, Any]:
    """The stored result of a money operation: its entries' seqs, balance, alert ids, recharge block."""
    return {"e": [e.seq for e in posting.entries], "b": posting.balance, "a": list(posting.alert_ids),
            "x": posting.recharge_blocked}


def replayed(result: Mapping[str, Any], entries: Mapping[int, Entry]) -> Posting:
    """The posting an operation record describes (`compact`), from its entries."""
    return Posting(tuple(entries[s] for s in result["e"]), result["b"], tuple(result["a"]), result.get("x"),
                   replayed=True)


@dataclass
class Applied:
    """What applying one operation gave: the caller's `result`; for a new operation also the `book` holding
    what it wrote and its operation `record` (a replay has neither: it writes nothing)."""

    result: Any
    book: Book | None = None
    record: OpRecord | None = None


@dataclass
class Written:
    """What a batch writes, in the shape `PostgresLedger._persist` takes from a `Book`."""

    state: BookState
    entries: list[Entry] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    records: list[OpRecord] = field(default_factory=list)


class MoneyOp(Protocol):
    """An operation a batch can carry."""

    @property
    def keys(self) -> tuple[object, ...]:
        """The idempotency keys to look up under the lock."""

    def apply(self, batch: "Batch") -> Applied:
        """Apply to the account as `batch` has left it; raise (recording nothing) if the operation fails."""


@dataclass
class Batch:
    """One locked account during a batch: the state so far, and the operation records known so far."""

    state: BookState
    subscriptions: list[Subscription]
    known: dict[str, tuple[str, dict[str, Any]]]   # key -> (fingerprint, stored result)
    entries: dict[int, Entry]                      # seq -> entry, for every known result
    now: Callable[[], datetime]
    written: Written = field(init=False)

    def __post_init__(self) -> None:
        self.written = Written(self.state)

    def book(self) -> Book:
        """A book for the next operation, on its own copy of the state so far."""
        return Book(self.state, self.subscriptions, self.now())

    def lookup(self, key: str, fingerprint: str, operation: str) -> Posting | None:
        """Idempotency first: the original posting (replayed) for a known key with this request, None for a new
        key, `IdempotencyConflict` for a known key with another request."""
        hit = self.known.get(key)
        if hit is None:
            return None
        if hit[0] != fingerprint:
            raise IdempotencyConflict(key, operation)
        return replayed(hit[1], self.entries)

    def run(self, op: MoneyOp) -> Outcome:
        """Apply `op`; keep what it wrote if it succeeded, drop it if it raised."""
        try:
            applied = op.apply(self)
        except Exception as err:   # the operation's own failure: it records nothing, the batch goes on
            return Outcome(error=err)
        if applied.book is not None and applied.record is not None:
            self._accept(applied.book, applied.record)
        return Outcome(applied.result)

    def _accept(self, book: Book, record: OpRecord) -> None:
        self.state = book.state
        key, _, fingerprint, result = record
        self.known[key] = (fingerprint, result)
        self.entries.update((e.seq, e) for e in book.entries)
        w = self.written
        w.state = book.state
        w.entries.extend(book.entries)
        w.audit.extend(book.audit)
        w.alerts.extend(book.alerts)
        w.records.append(record)


@dataclass(frozen=True)
class FundsOp:
    """`add_funds` or `adjust` (`operation`), as `Ledger` defines them."""

    operation: str
    amount: int
    actor: str
    key: str
    memo: str
    reference: str

    @property
    def keys(self) -> tuple[object, ...]:
        return (self.key,)

    def apply(self, batch: Batch) -> Applied:
        policy.check_caller_key(self.key)
        fp = policy.fingerprint(self.operation, {"amount": self.amount, "memo": self.memo,
                                                 "reference": self.reference})
        done = batch.lookup(self.key, fp, self.operation)
        if done is not None:
            return Applied(done)
        check_minor(self.amount, allow_negative=self.operation == "adjust")
        book = batch.book()
        primary = self._primary(book)
        posting = book.settle(primary)
        book.record_posting(self.actor, "funds_added" if self.operation == "add_funds" else "adjustment", self.key,
                            posting)
        return Applied(posting, book, (self.key, self.operation, fp, compact(posting)))

    def _primary(self, book: Book) -> Entry:
        kw: dict[str, Any] = {"actor": self.actor, "key": self.key, "memo": self.memo, "reference": self.reference}
        if self.operation == "add_funds":
            return book.credit(EntryKind.FUNDS_ADDED, self.amount, **kw)
        if self.amount > 0:
            return book.credit(EntryKind.ADJUSTMENT, self.amount, **kw)
        return book.debit(EntryKind.ADJUSTMENT, -self.amount, may_go_negative=False, **kw)


@dataclass(frozen=True)
class UsageOp:
    """`record_usage` of one row (strict: a problem raises), audited as a money operation."""

    usage: UsageRecord
    actor: str

    @property
    def keys(self) -> tuple[object, ...]:
        return (getattr(self.usage, "usage_id", None),)

    def apply(self, batch: Batch) -> Applied:
        usage_id, fp, occurred_at = engine.usage_key(self.usage)
        done = batch.lookup(usage_id, fp, "record_usage")
        if done is not None:
            return Applied(done)
        book = batch.book()
        posting = engine.debit_usage(book, self.usage, self.actor, occurred_at)
        engine.audit_usage(book, self.actor, [RowOutcome(usage_id, RowStatus.RECORDED, posting=posting)],
                           single=True)
        return Applied(posting, book, (usage_id, "record_usage", fp, compact(posting)))
