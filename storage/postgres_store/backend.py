"""`PostgresLedger`: the ledger on PostgreSQL (asyncpg), for several processes over one database.

Every operation is one transaction. A keyed mutation first locks the account row (`SELECT ... FOR UPDATE`), so
the operations on one account are serialised across processes: the idempotency lookup, the money verbs of the
shared `storage.engine.Book` and the writes (entries, operation record, audit, alerts, new `BookState`) happen
under that lock and commit together, or not at all (a `LedgerError` rolls the transaction back). The outbox is
claimed with `FOR UPDATE SKIP LOCKED`, so workers in several processes never take the same alert.

Times come from the injected clock, never from `now()` in SQL. Money is `bigint`. The schema lives in numbered
SQL files (migrations/), applied in order at `open` (see `migrate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

import asyncpg
import orjson

from .. import engine, policy, transfer
from ..clock import Clock, utc_now
from ..engine import Book, BookState
from ..errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                      InvalidSettings, LeaseLost, LedgerError, NotFound, SelfApproval)
from ..ledger import DEFAULT_MAX_ATTEMPTS, EXPIRING_NOTICE, Ledger
from ..model import (Account, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                     ApprovalStatus, AuditRecord, BatchResult, ConversationRef, Entry, EntryKind, Lot, Page,
                     Posting, RechargeSettings, Role, RoleGrant, RowOutcome, RowStatus, SettingsChange,
                     Subscription, SYSTEM_ACTOR, UsageRecord, VerifyReport, iso, parse_iso)
from ..money import check_minor, normalize_currency

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises migration runs (any constant shared by every process).
MIGRATION_LOCK = 0x63726564697473  # "credits"
LEASE_EXPIRED_ERROR = "lease expired after the last attempt"

_ALERT_COLUMNS = ("alert_id, tenant_id, kind, key, created_at, payload, destinations, delivered, skipped, status, "
                  "attempts, next_attempt_at, lease_owner, lease_until, last_error")
_ENTRY_COLUMNS = "seq, tenant_id, kind, amount, balance_after, actor, key, at, memo, reference, details"
_APPROVAL_COLUMNS = ("approval_id, tenant_id, amount, memo, requested_by, requested_at, status, decided_by, "
                     "decided_at, entry_seq")


# --- migrations -------------------------------------------------------------------------------------------------

def migration_files() -> list[tuple[str, str]]:
    """(name, SQL) of every migration shipped with the package, in order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = sorted((p.name, p) for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, p.read_text(encoding="utf-8")) for name, p in found]


async def _migrate(con: asyncpg.Connection) -> list[str]:
    applied: list[str] = []
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await con.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                          "name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await con.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            await con.execute(sql)
            await con.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    return applied


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations the database does not have yet, in order, in one transaction under an advisory
    lock (two processes starting together do not race). Returns the names applied (empty when up to date)."""
    con = await asyncpg.connect(dsn)
    try:
        return await _migrate(con)
    finally:
        await con.close()


async def _init_connection(con: asyncpg.Connection) -> None:
    # jsonb in binary form (a version byte, then the JSON text), so that COPY can carry it too
    await con.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog",
                             format="binary")


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


#: A usage batch is computed and written in chunks of this many rows (see `PostgresLedger._usage_rows`).
USAGE_CHUNK = 500

#: Above this many rows an insert goes through COPY (a usage batch), below it through executemany.
COPY_THRESHOLD = 64


async def _insert(con: asyncpg.Connection, table: str, columns: Sequence[str], records: list[tuple[Any, ...]]) -> None:
    if not records:
        return
    if len(records) >= COPY_THRESHOLD:
        await con.copy_records_to_table(table, records=records, columns=list(columns))
    else:
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        await con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", records)


async def _write_journal(con: asyncpg.Connection, tenant: str, entries: Sequence[Entry],
                         ops: Sequence[tuple[str, str, str, dict[str, Any]]]) -> None:
    if entries:
        await _insert(con, "entries", ("tenant_id", "seq", "kind", "amount", "balance_after", "actor", "key", "at",
                                       "memo", "reference", "details"),
                      [(tenant, e.seq, e.kind.value, e.amount, e.balance_after, e.actor, e.key, e.at, e.memo,
                        e.reference, dict(e.details)) for e in entries])
    if ops:
        await _insert(con, "ops", ("tenant_id", "key", "operation", "fingerprint", "result"),
                      [(tenant, key, op, fp, result) for key, op, fp, result in ops])


# --- rows -------------------------------------------------------------------------------------------------------

def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(timezone.utc) if value is not None else None


def _entry(r: Mapping[str, Any]) -> Entry:
    return Entry(r["seq"], r["tenant_id"], EntryKind(r["kind"]), r["amount"], r["balance_after"], r["actor"],
                 r["key"], _utc(r["at"]), r["memo"], r["reference"], dict(r["details"] or {}))


def _alert(r: Mapping[str, Any]) -> Alert:
    return Alert(r["alert_id"], r["tenant_id"], AlertKind(r["kind"]), r["key"], _utc(r["created_at"]),
                 dict(r["payload"] or {}), tuple(r["destinations"]), tuple(r["delivered"]), tuple(r["skipped"]),
                 AlertStatus(r["status"]), r["attempts"], _utc(r["next_attempt_at"]), r["lease_owner"],
                 _utc(r["lease_until"]), r["last_error"])


def _approval(r: Mapping[str, Any]) -> Approval:
    return Approval(r["approval_id"], r["tenant_id"], r["amount"], r["memo"], r["requested_by"],
                    _utc(r["requested_at"]), ApprovalStatus(r["status"]), r["decided_by"], _utc(r["decided_at"]),
                    r["entry_seq"])


def _subscription(r: Mapping[str, Any]) -> Subscription:
    return Subscription(r["conversation_id"], tuple(AlertKind(k) for k in r["kinds"]), r["created_by"],
                        _utc(r["created_at"]), r["enabled"], r["disabled_reason"])


def _grant(r: Mapping[str, Any]) -> RoleGrant:
    return RoleGrant(r["user_id"], Role(r["role"]), r["granted_by"], _utc(r["granted_at"]), r["display_name"])


def _audit(r: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(r["seq"], r["tenant_id"], _utc(r["at"]), r["actor"], r["action"], r["key"],
                       dict(r["details"] or {}))


def _conversation(r: Mapping[str, Any]) -> ConversationRef:
    return ConversationRef(r["conversation_id"], r["tenant_id"], dict(r["reference"]), _utc(r["updated_at"]))


@dataclass
class _Change:
    """What a keyed settings change produced (see TinyLedger's `_Change`): its stored value, audit action and
    details, and what the caller gets when it is not `SettingsChange(value)`."""

    value: dict[str, Any]
    action: str
    details: dict[str, Any]
    result: Any = None

    def outcome(self) -> tuple[Any, dict[str, Any]]:
        if self.result is None:
            change = SettingsChange(self.value)
            return change, change.to_dict()
        return self.result, self.value


@dataclass
class _Tx:
    """One transaction on one locked account."""

    con: asyncpg.Connection
    state: BookState
    queued: bool = False          # a pending alert was written: wake the notifier after the commit
    ops: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)  # key, operation, fp, result
    entries_written: int = 0      # how many of the book's entries are already in the table (a long usage batch)


class PostgresLedger(Ledger):
    """The PostgreSQL backend. Open with `await PostgresLedger.open(dsn)`; any number of processes per database."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Clock, max_attempts: int) -> None:
        self._pool = pool
        self._clock = clock
        self._max_attempts = max_attempts
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, clock: Clock = utc_now, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                   min_size: int = 1, max_size: int = 10) -> "PostgresLedger":
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
        return cls(pool, clock=clock, max_attempts=max_attempts)

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self._clock()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[asyncpg.Connection]:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        async with self._pool.acquire() as con:
            yield con

    @contextlib.asynccontextmanager
    async def _account(self, tenant_id: str) -> AsyncIterator[_Tx]:
        """A transaction holding the account's row lock; `AccountNotFound` for an unknown tenant. Nothing is
        written unless the block ends normally (then the transaction commits)."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        tx: _Tx | None = None
        async with self._pool.acquire() as con:
            async with con.transaction():
                row = await con.fetchrow("SELECT state FROM accounts WHERE tenant_id = $1 FOR UPDATE", tenant_id)
                if row is None:
                    raise AccountNotFound(tenant_id)
                tx = _Tx(con, BookState.from_dict(row["state"]))
                yield tx
        if tx.queued:
            self._alerts_queued()

    async def _exists(self, con: asyncpg.Connection, tenant_id: str) -> None:
        if await con.fetchval("SELECT 1 FROM accounts WHERE tenant_id = $1", tenant_id) is None:
            raise AccountNotFound(tenant_id)

    async def _subscriptions(self, con: asyncpg.Connection, tenant_id: str) -> list[Subscription]:
        rows = await con.fetch("SELECT * FROM subscriptions WHERE tenant_id = $1 ORDER BY conversation_id",
                               tenant_id)
        return [_subscription(r) for r in rows]

    async def _book(self, tx: _Tx) -> Book:
        return Book(tx.state, await self._subscriptions(tx.con, tx.state.tenant_id), self._now())

    async def _check_key(self, tx: _Tx, key: str, operation: str,
                         args: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Idempotency first: (fingerprint, stored result) for a replay, (fingerprint, None) for a new key."""
        fp = policy.fingerprint(operation, args)
        row = await tx.con.fetchrow("SELECT fingerprint, result FROM ops WHERE tenant_id = $1 AND key = $2",
                                    tx.state.tenant_id, key)
        if row is None:
            return fp, None
        if row["fingerprint"] != fp:
            raise IdempotencyConflict(key, operation)
        return fp, row["result"]

    async def _posting_from(self, con: asyncpg.Connection, tenant_id: str, result: Mapping[str, Any]) -> Posting:
        return self._replayed(result, await self._entries_by_seq(con, tenant_id, result["e"]))

    @staticmethod
    async def _entries_by_seq(con: asyncpg.Connection, tenant_id: str, seqs: Iterable[int]) -> dict[int, Entry]:
        rows = await con.fetch(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 AND seq = ANY($2::int[])",
                               tenant_id, list(seqs))
        return {r["seq"]: _entry(r) for r in rows}

    @staticmethod
    def _replayed(result: Mapping[str, Any], entries: Mapping[int, Entry]) -> Posting:
        """The posting an operation record describes (`_compact`), from its entries."""
        return Posting(tuple(entries[s] for s in result["e"]), result["b"], tuple(result["a"]), result.get("x"),
                       replayed=True)

    @staticmethod
    def _compact(posting: Posting) -> dict[str, Any]:
        return {"e": [e.seq for e in posting.entries], "b": posting.balance, "a": list(posting.alert_ids),
                "x": posting.recharge_blocked}

    async def _persist(self, tx: _Tx, book: Book | None) -> None:
        """Write what the book collected and the operation records, and the new state (same transaction)."""
        con = tx.con
        tenant = tx.state.tenant_id
        await self._write_journal(tx, book)
        if book is not None:
            if book.audit:
                await _insert(con, "audit", ("tenant_id", "seq", "at", "actor", "action", "key", "details"),
                              [(tenant, r.seq, r.at, r.actor, r.action, r.key, dict(r.details)) for r in book.audit])
            for alert in book.alerts:   # one by one, in the order raised: `n` is the order of creation
                await con.execute(
                    "INSERT INTO alerts (alert_id, tenant_id, created_at, kind, key, payload, destinations, "
                    "delivered, skipped, status, attempts, next_attempt_at, lease_owner, lease_until, last_error) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    alert.alert_id, tenant, alert.created_at, alert.kind.value, alert.key, dict(alert.payload),
                    list(alert.destinations), list(alert.delivered), list(alert.skipped), alert.status.value,
                    alert.attempts, alert.next_attempt_at, alert.lease_owner, alert.lease_until, alert.last_error)
                if alert.status is AlertStatus.PENDING:
                    tx.queued = True
            s = book.state
            await con.execute(
                "UPDATE accounts SET currency = $2, balance = $3, entry_count = $4, audit_count = $5, state = $6 "
                "WHERE tenant_id = $1", tenant, s.currency, s.balance, s.entry_count, s.audit_count, s.to_dict())
            tx.state = s

    def _write_journal(self, tx: _Tx, book: Book | None) -> Awaitable[None]:
        """Write the book's entries not written yet and the pending operation records. What is written is taken
        now, so the book may go on while the returned awaitable runs (see `_usage_rows`)."""
        entries = book.entries[tx.entries_written:] if book is not None else []
        tx.entries_written += len(entries)
        ops, tx.ops = tx.ops, []
        return _write_journal(tx.con, tx.state.tenant_id, entries, ops)

    async def _save_alerts(self, con: asyncpg.Connection, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            await con.execute(
                "UPDATE alerts SET delivered = $2, skipped = $3, status = $4, attempts = $5, next_attempt_at = $6, "
                "lease_owner = $7, lease_until = $8, last_error = $9 WHERE alert_id = $1",
                a.alert_id, list(a.delivered), list(a.skipped), a.status.value, a.attempts, a.next_attempt_at,
                a.lease_owner, a.lease_until, a.last_error)

    async def _skip_destination(self, con: asyncpg.Connection, tenant_id: str, conversation_id: str) -> None:
        rows = await con.fetch(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 AND status = 'pending' "
            "AND $2 = ANY(destinations) AND NOT ($2 = ANY(delivered)) AND NOT ($2 = ANY(skipped)) "
            "ORDER BY created_at, n FOR UPDATE", tenant_id, conversation_id)
        changed = []
        for alert in map(_alert, rows):
            changed.append(_settled(replace(alert, skipped=alert.skipped + (conversation_id,))))
        await self._save_alerts(con, changed)

    async def _keyed_change(self, tenant_id: str, actor: str, key: str, operation: str, args: Mapping[str, Any],
                            change: Callable[[_Tx, Book], Awaitable[_Change]],
                            replay: Callable[[_Tx, dict[str, Any]], Awaitable[Any]] | None = None,
                            *, before_lookup: Callable[[], None] | None = None) -> Any:
        """Account (locked), caller's key, idempotency lookup (a replay returns the stored result), then `change`
        (validates, may raise and change nothing, may write through the book and its own tables), then the
        audit record, the operation record and the new state, all in one transaction."""
        async with self._account(tenant_id) as tx:
            policy.check_caller_key(key)
            if before_lookup is not None:
                before_lookup()
            fp, done = await self._check_key(tx, key, operation, args)
            if done is not None:
                return await replay(tx, done) if replay is not None else SettingsChange.from_dict(done, replayed=True)
            book = await self._book(tx)
            outcome = await change(tx, book)
            book.record(actor, outcome.action, key, outcome.details)
            result, stored = outcome.outcome()
            tx.ops.append((key, operation, fp, stored))
            await self._persist(tx, book)
            return result

    # --- accounts ---------------------------------------------------------------------------------------------
    async def open_account(self, tenant_id: str, currency: str, *, actor: str = SYSTEM_ACTOR) -> Account:
        code = normalize_currency(currency)
        if not isinstance(tenant_id, str) or not tenant_id:
            raise NotFound("tenant", str(tenant_id))
        if self._closed:
            raise RuntimeError("the ledger is closed")
        now = self._now()
        state = BookState(tenant_id, code, now)
        book = Book(state, [], now)
        book.record(actor, "account_opened", "", {"currency": code})
        async with self._pool.acquire() as con:
            async with con.transaction():
                inserted = await con.fetchval(
                    "INSERT INTO accounts (tenant_id, currency, created_at, balance, entry_count, audit_count, state) "
                    "VALUES ($1, $2, $3, 0, 0, 0, $4) ON CONFLICT (tenant_id) DO NOTHING RETURNING 1",
                    tenant_id, code, now, state.to_dict())
                if inserted:
                    await self._persist(_Tx(con, state), book)
            return await self._get_account(con, tenant_id)

    async def _get_account(self, con: asyncpg.Connection, tenant_id: str) -> Account:
        row = await con.fetchrow("SELECT tenant_id, currency, created_at, balance, entry_count FROM accounts "
                                 "WHERE tenant_id = $1", tenant_id)
        if row is None:
            raise AccountNotFound(tenant_id)
        return Account(row["tenant_id"], row["currency"], _utc(row["created_at"]), row["balance"], row["entry_count"])

    async def get_account(self, tenant_id: str) -> Account:
        async with self._read() as con:
            return await self._get_account(con, tenant_id)

    async def tenants(self) -> list[str]:
        async with self._read() as con:
            return [r["tenant_id"] for r in await con.fetch("SELECT tenant_id FROM accounts ORDER BY tenant_id")]

    async def set_currency(self, tenant_id: str, currency: str, *, actor: str, key: str) -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            code = normalize_currency(currency)
            if tx.state.entry_count:
                raise CurrencyLocked(tx.state.currency)
            previous, book.state.currency = book.state.currency, code
            return _Change({"currency": code}, "currency", {"currency": code, "previous": previous})
        return await self._keyed_change(tenant_id, actor, key, "set_currency", {"currency": currency}, change)

    # --- money ------------------------------------------------------------------------------------------------
    async def add_funds(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                        reference: str = "") -> Posting:
        return await self._money(tenant_id, "add_funds", amount, actor, key, memo, reference)

    async def adjust(self, tenant_id: str, amount: int, *, actor: str, key: str, memo: str = "",
                     reference: str = "") -> Posting:
        return await self._money(tenant_id, "adjust", amount, actor, key, memo, reference)

    async def _money(self, tenant_id: str, operation: str, amount: int, actor: str, key: str, memo: str,
                     reference: str) -> Posting:
        async with self._account(tenant_id) as tx:
            policy.check_caller_key(key)
            args = {"amount": amount, "memo": memo, "reference": reference}
            fp, done = await self._check_key(tx, key, operation, args)
            if done is not None:
                return await self._posting_from(tx.con, tenant_id, done)
            check_minor(amount, allow_negative=operation == "adjust")
            book = await self._book(tx)
            if operation == "add_funds":
                primary = book.credit(EntryKind.FUNDS_ADDED, amount, actor=actor, key=key, memo=memo,
                                      reference=reference)
            elif amount > 0:
                primary = book.credit(EntryKind.ADJUSTMENT, amount, actor=actor, key=key, memo=memo,
                                      reference=reference)
            else:
                primary = book.debit(EntryKind.ADJUSTMENT, -amount, actor=actor, key=key, memo=memo,
                                     reference=reference, may_go_negative=False)
            posting = book.settle(primary)
            book.record_posting(actor, "funds_added" if operation == "add_funds" else "adjustment", key, posting)
            tx.ops.append((key, operation, fp, self._compact(posting)))
            await self._persist(tx, book)
            return posting

    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        result = await self._usage_rows(tenant_id, [usage], actor, strict=True)
        posting = result.rows[0].posting
        assert posting is not None
        return posting

    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        return await self._usage_rows(tenant_id, list(rows), actor, strict=False)

    async def _usage_rows(self, tenant_id: str, rows: list[UsageRecord], actor: str, strict: bool) -> BatchResult:
        """Rows one after another in one Book and one transaction. In strict mode (a single row) a problem
        raises; in a batch it is reported for that row and the others go on.

        A batch is computed in chunks of `USAGE_CHUNK` rows, and each chunk's entries and operation records are
        written while the next chunk is computed: the server inserts (indexes, constraints, the journal trigger)
        while this process works out the next debits. The writes stay in order, one at a time, on the
        transaction's connection, which nothing else uses meanwhile (replays are read before the first chunk)."""
        async with self._account(tenant_id) as tx:
            before = tx.state.balance
            ids = [u.usage_id for u in rows if isinstance(getattr(u, "usage_id", None), str)]
            known = {r["key"]: (r["fingerprint"], r["result"]) for r in await tx.con.fetch(
                "SELECT key, fingerprint, result FROM ops WHERE tenant_id = $1 AND key = ANY($2::text[])",
                tenant_id, ids)} if ids else {}
            replayed = await self._entries_by_seq(tx.con, tenant_id, {seq for _, result in known.values()
                                                                      for seq in result["e"]}) if known else {}
            book = await self._book(tx)
            outcomes: list[RowOutcome] = []
            seen: dict[str, tuple[str, Posting]] = {}
            writing: asyncio.Future[None] | None = None
            try:
                for start in range(0, len(rows), USAGE_CHUNK):
                    for usage in rows[start:start + USAGE_CHUNK]:
                        try:
                            outcomes.append(self._usage_row(tx, book, known, replayed, seen, usage, actor))
                        except LedgerError as err:
                            if strict:
                                raise
                            status = RowStatus.CONFLICT if isinstance(err, IdempotencyConflict) else RowStatus.REJECTED
                            outcomes.append(RowOutcome(getattr(usage, "usage_id", ""), status, _reason(err)))
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(self._write_journal(tx, book))
                if writing is not None:
                    await writing
            except BaseException:
                if writing is not None and not writing.done():   # never leave a write running on the connection
                    with contextlib.suppress(Exception):
                        await writing
                raise
            recorded = any(o.status is RowStatus.RECORDED for o in outcomes)
            if recorded:
                engine.audit_usage(book, actor, outcomes, single=strict)
                await self._persist(tx, book)
            return BatchResult(tuple(outcomes), book.state.balance if recorded else before)

    def _usage_row(self, tx: _Tx, book: Book, known: Mapping[str, tuple[str, dict[str, Any]]],
                   replayed: Mapping[int, Entry], seen: dict[str, tuple[str, Posting]], usage: UsageRecord,
                   actor: str) -> RowOutcome:
        usage_id, fp, occurred_at = engine.usage_key(usage)
        if usage_id in seen:
            if seen[usage_id][0] != fp:
                raise IdempotencyConflict(usage_id, "record_usage")
            return RowOutcome(usage_id, RowStatus.REPLAYED, posting=seen[usage_id][1].as_replay())
        hit = known.get(usage_id)
        if hit is not None:
            if hit[0] != fp:
                raise IdempotencyConflict(usage_id, "record_usage")
            return RowOutcome(usage_id, RowStatus.REPLAYED, posting=self._replayed(hit[1], replayed))
        posting = engine.debit_usage(book, usage, actor, occurred_at)
        tx.ops.append((usage_id, "record_usage", fp, self._compact(posting)))
        seen[usage_id] = (fp, posting)
        return RowOutcome(usage_id, RowStatus.RECORDED, posting=posting)

    async def expire_lots(self, now: datetime | None = None) -> list[Posting]:
        moment = now or self._now()   # selects the lots; what is written is stamped with the clock
        postings: list[Posting] = []
        for tenant_id in await self.tenants():
            async with self._account(tenant_id) as tx:
                book = await self._book(tx)
                for lot in engine.expired_lots(book.state, moment):
                    key = f"expiry:{lot.lot_id}"
                    primary = book.expire(lot)
                    posting = book.settle(primary)
                    book.record_posting(SYSTEM_ACTOR, "expiry", key, posting)
                    tx.ops.append((key, "expire_lot", policy.fingerprint("expire_lot", {"lot_id": lot.lot_id}),
                                   self._compact(posting)))
                    postings.append(posting)
                candidates = [lot for lot in book.state.lots
                              if lot.remaining > 0 and moment < lot.expires_at <= moment + EXPIRING_NOTICE]
                if candidates:
                    ids = {policy.alert_id(tenant_id, policy.expiring_key(tenant_id, lot.lot_id)): lot
                           for lot in candidates}
                    known = {r["alert_id"] for r in await tx.con.fetch(
                        "SELECT alert_id FROM alerts WHERE alert_id = ANY($1::text[])", list(ids))}
                    for lot in candidates:
                        key = policy.expiring_key(tenant_id, lot.lot_id)
                        if policy.alert_id(tenant_id, key) not in known:
                            book.raise_alert(AlertKind.EXPIRING, key, {
                                "lot_id": lot.lot_id, "remaining": lot.remaining, "expires_at": iso(lot.expires_at)})
                if book.entries or book.alerts:
                    await self._persist(tx, book)
        return postings

    # --- approvals --------------------------------------------------------------------------------------------
    async def request_approval(self, tenant_id: str, amount: int, *, actor: str, key: str,
                               memo: str = "") -> Approval:
        async def change(tx: _Tx, book: Book) -> _Change:
            check_minor(amount)
            approval = Approval(policy.approval_id(tenant_id, key), tenant_id, amount, memo, actor, book.now,
                                ApprovalStatus.PENDING)
            await self._save_approval(tx.con, approval)
            return _Change(approval.to_dict(), "approval_requested",
                           {"approval_id": approval.approval_id, "amount": amount, "memo": memo}, result=approval)

        async def replay(tx: _Tx, stored: dict[str, Any]) -> Approval:
            return Approval.from_dict(stored)
        return await self._keyed_change(tenant_id, actor, key, "request_approval", {"amount": amount, "memo": memo},
                                        change, replay)

    async def _save_approval(self, con: asyncpg.Connection, a: Approval) -> None:
        await con.execute(
            "INSERT INTO approvals (approval_id, tenant_id, amount, memo, requested_by, requested_at, status, "
            "decided_by, decided_at, entry_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (tenant_id, approval_id) DO UPDATE SET status = EXCLUDED.status, "
            "decided_by = EXCLUDED.decided_by, decided_at = EXCLUDED.decided_at, entry_seq = EXCLUDED.entry_seq",
            a.approval_id, a.tenant_id, a.amount, a.memo, a.requested_by, a.requested_at, a.status.value,
            a.decided_by, a.decided_at, a.entry_seq)

    async def decide_approval(self, tenant_id: str, approval_id: str, *, approve: bool, actor: str,
                              key: str) -> ApprovalDecision:
        def check_approve() -> None:   # the account and the key come before the type of `approve`
            if not isinstance(approve, bool):
                raise ValueError(f"approve must be a bool, not {approve!r}")

        async def change(tx: _Tx, book: Book) -> _Change:
            row = await tx.con.fetchrow(f"SELECT {_APPROVAL_COLUMNS} FROM approvals "
                                        "WHERE tenant_id = $1 AND approval_id = $2", tenant_id, approval_id)
            if row is None:
                raise NotFound("approval", approval_id)
            approval = _approval(row)
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
            await self._save_approval(tx.con, decided)
            return _Change(stored, "approval_decided",
                           {"approval_id": approval_id, "approve": approve, "entry_seq": decided.entry_seq},
                           result=ApprovalDecision(decided, posting))

        async def replay(tx: _Tx, stored: dict[str, Any]) -> ApprovalDecision:
            posting = stored["posting"]
            return ApprovalDecision(Approval.from_dict(stored["approval"]),
                                    await self._posting_from(tx.con, tenant_id, posting) if posting is not None
                                    else None, replayed=True)

        return await self._keyed_change(tenant_id, actor, key, "decide_approval",
                                        {"approval_id": approval_id, "approve": approve}, change, replay,
                                        before_lookup=check_approve)

    async def approvals(self, tenant_id: str, *, status: ApprovalStatus | None = None) -> list[Approval]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 "
                                   "AND ($2::text IS NULL OR status = $2) ORDER BY requested_at DESC, n DESC",
                                   tenant_id, None if status is None else ApprovalStatus(status).value)
            return [_approval(r) for r in rows]

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            row = await con.fetchrow(f"SELECT {_APPROVAL_COLUMNS} FROM approvals "
                                     "WHERE tenant_id = $1 AND approval_id = $2", tenant_id, approval_id)
            if row is None:
                raise NotFound("approval", approval_id)
            return _approval(row)

    # --- reading ----------------------------------------------------------------------------------------------
    async def _page(self, table: str, columns: str, parse: Callable[[Mapping[str, Any]], Any], tenant_id: str,
                    limit: int, before: int | None) -> Page:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch(f"SELECT {columns} FROM {table} WHERE tenant_id = $1 "
                                   "AND ($2::int IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
                                   tenant_id, before, max(int(limit), 0))
        items = [parse(r) for r in rows]
        older = items[-1].seq if items and items[-1].seq > 1 else None
        return Page(tuple(items), older)

    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        return await self._page("entries", _ENTRY_COLUMNS, _entry, tenant_id, limit, before)

    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 AND at >= $2 "
                                   "ORDER BY seq", tenant_id, since)
            return [_entry(r) for r in rows]

    async def _state(self, tenant_id: str) -> BookState:
        async with self._read() as con:
            row = await con.fetchrow("SELECT state FROM accounts WHERE tenant_id = $1", tenant_id)
        if row is None:
            raise AccountNotFound(tenant_id)
        return BookState.from_dict(row["state"])

    async def lots(self, tenant_id: str) -> list[Lot]:
        return [lot for lot in (await self._state(tenant_id)).lots if lot.remaining > 0]

    async def recharge_settings(self, tenant_id: str) -> RechargeSettings:
        return (await self._state(tenant_id)).recharge

    async def alert_settings(self, tenant_id: str) -> AlertSettings:
        return (await self._state(tenant_id)).alerts

    async def set_recharge_settings(self, tenant_id: str, settings: RechargeSettings, *, actor: str,
                                    key: str) -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            valid = policy.validate_recharge(settings)
            engine.change_recharge(book.state, valid)
            return _Change(valid.to_dict(), "recharge_settings", valid.to_dict())
        return await self._keyed_change(tenant_id, actor, key, "set_recharge_settings", _settings_args(settings),
                                        change)

    async def set_alert_settings(self, tenant_id: str, settings: AlertSettings, *, actor: str,
                                 key: str) -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            valid = policy.validate_alerts(settings)
            engine.rearm_thresholds(book.state, valid)
            return _Change(valid.to_dict(), "alert_settings", valid.to_dict())
        return await self._keyed_change(tenant_id, actor, key, "set_alert_settings", _settings_args(settings),
                                        change)

    # --- outbox -----------------------------------------------------------------------------------------------
    async def raise_alert(self, tenant_id: str, kind: AlertKind, key: str, payload: Mapping[str, Any]) -> Alert:
        payload = dict(payload)
        async with self._account(tenant_id) as tx:
            if str(kind) not in policy.RAISABLE_KINDS or not isinstance(key, str) or not key.startswith(f"{kind}:"):
                raise ValueError(
                    f"raise_alert takes forecast or expiring alerts keyed '{{kind}}:...', not {kind}/{key!r}")
            kind = AlertKind(kind)
            row = await tx.con.fetchrow(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = $1",
                                        policy.alert_id(tenant_id, key))
            if row is not None:
                return _alert(row)
            book = await self._book(tx)
            alert = book.raise_alert(kind, key, payload)
            await self._persist(tx, book)
            return alert

    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        now = self._now()
        claimable = ("status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) "
                     "AND (lease_until IS NULL OR lease_until <= $1)")
        async with self._read() as con:
            async with con.transaction():
                dead = await con.fetch(
                    "UPDATE alerts SET status = 'dead', lease_owner = NULL, lease_until = NULL, "
                    "last_error = CASE WHEN last_error = '' THEN $3 ELSE last_error END "
                    f"WHERE alert_id IN (SELECT alert_id FROM alerts WHERE {claimable} AND attempts >= $2 "
                    "FOR UPDATE SKIP LOCKED) RETURNING alert_id, kind, last_error",
                    now, self._max_attempts, LEASE_EXPIRED_ERROR)
                for r in dead:
                    log.error("alert %s (%s) dead: %s", r["alert_id"], r["kind"], r["last_error"])
                if limit <= 0:
                    return []
                rows = await con.fetch(
                    "WITH picked AS (SELECT alert_id FROM alerts "
                    f"WHERE {claimable} AND attempts < $2 ORDER BY created_at, n LIMIT $3 FOR UPDATE SKIP LOCKED) "
                    "UPDATE alerts a SET attempts = a.attempts + 1, lease_owner = $4, lease_until = $5 "
                    f"FROM picked WHERE a.alert_id = picked.alert_id RETURNING a.n, {_qualified('a')}",
                    now, self._max_attempts, limit, worker, now + lease)
        rows = sorted(rows, key=lambda r: (r["created_at"], r["n"]))
        return [_alert(r) for r in rows]

    async def _leased(self, con: asyncpg.Connection, alert_id: str, worker: str) -> Alert:
        row = await con.fetchrow(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id)
        if row is None:
            raise NotFound("alert", alert_id)
        alert = _alert(row)
        if alert.status is not AlertStatus.PENDING or alert.lease_owner != worker:
            raise LeaseLost(alert_id, worker)
        return alert

    async def mark_delivered(self, alert_id: str, destination: str, *, worker: str) -> Alert:
        async with self._read() as con:
            async with con.transaction():
                alert = await self._leased(con, alert_id, worker)
                if destination not in alert.destinations:
                    raise NotFound("destination", destination)
                if destination not in alert.delivered:
                    alert = replace(alert, delivered=alert.delivered + (destination,))
                alert = _settled(alert)
                await self._save_alerts(con, [alert])
                return alert

    async def release_alert(self, alert_id: str, *, worker: str, retry_at: datetime, error: str) -> Alert:
        async with self._read() as con:
            async with con.transaction():
                alert = await self._leased(con, alert_id, worker)
                dead = alert.attempts >= self._max_attempts
                alert = replace(alert, next_attempt_at=retry_at, lease_owner=None, lease_until=None,
                                last_error=error, status=AlertStatus.DEAD if dead else AlertStatus.PENDING)
                await self._save_alerts(con, [alert])
        if dead:
            log.error("alert %s (%s) dead after %d attempts: %s", alert.alert_id, alert.kind, alert.attempts,
                      alert.last_error[:500])
        return alert

    async def get_alert(self, alert_id: str) -> Alert:
        async with self._read() as con:
            row = await con.fetchrow(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = $1", alert_id)
        if row is None:
            raise NotFound("alert", alert_id)
        return _alert(row)

    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 "
                                   "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, n DESC LIMIT $3",
                                   tenant_id, None if status is None else AlertStatus(status).value,
                                   max(int(limit), 0))
            return [_alert(r) for r in rows]

    # --- usage sync -------------------------------------------------------------------------------------------
    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            return _utc(await con.fetchval("SELECT until FROM sync_watermarks WHERE tenant_id = $1 AND source = $2",
                                           tenant_id, source))

    async def set_sync_watermark(self, tenant_id: str, source: str, until: datetime) -> datetime:
        if until.tzinfo is None:
            raise ValueError("a watermark must be an aware datetime")
        until = until.astimezone(timezone.utc)
        async with self._read() as con:
            async with con.transaction():
                await self._exists(con, tenant_id)
                stored = await con.fetchval(
                    "INSERT INTO sync_watermarks (tenant_id, source, until) VALUES ($1, $2, $3) "
                    "ON CONFLICT (tenant_id, source) DO UPDATE SET until = EXCLUDED.until "
                    "WHERE sync_watermarks.until < EXCLUDED.until RETURNING until", tenant_id, source, until)
                if stored is None:
                    stored = await con.fetchval("SELECT until FROM sync_watermarks WHERE tenant_id = $1 "
                                                "AND source = $2", tenant_id, source)
                return _utc(stored)

    # --- conversations and subscriptions ----------------------------------------------------------------------
    async def save_conversation(self, ref: ConversationRef) -> bool:
        async with self._read() as con:
            async with con.transaction():
                await self._exists(con, ref.tenant_id)
                inserted = await con.fetchval(   # of concurrent first saves, one inserts; the others conflict
                    "INSERT INTO conversations (tenant_id, conversation_id, reference, updated_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, conversation_id) DO NOTHING RETURNING true",
                    ref.tenant_id, ref.conversation_id, dict(ref.reference), ref.updated_at)
                if inserted:
                    return True
                await con.execute(
                    "UPDATE conversations SET reference = $3, updated_at = $4 WHERE tenant_id = $1 "
                    "AND conversation_id = $2 AND reference IS DISTINCT FROM $3",
                    ref.tenant_id, ref.conversation_id, dict(ref.reference), ref.updated_at)
                return False

    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            row = await con.fetchrow("SELECT * FROM conversations WHERE tenant_id = $1 AND conversation_id = $2",
                                     tenant_id, conversation_id)
            return _conversation(row) if row is not None else None

    async def conversations(self, tenant_id: str) -> list[ConversationRef]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch("SELECT * FROM conversations WHERE tenant_id = $1 ORDER BY conversation_id",
                                   tenant_id)
            return [_conversation(r) for r in rows]

    async def subscribe(self, tenant_id: str, conversation_id: str, kinds: Iterable[AlertKind], *, actor: str,
                        key: str) -> SettingsChange:
        kinds = list(kinds)

        async def change(tx: _Tx, book: Book) -> _Change:
            try:
                wanted = {AlertKind(k) for k in kinds}
            except ValueError:
                raise InvalidSettings("unknown_kind") from None
            if not wanted:
                raise InvalidSettings("no_kinds")
            ordered = tuple(k for k in AlertKind if k in wanted)
            sub = Subscription(conversation_id, ordered, actor, book.now)
            await tx.con.execute(
                "INSERT INTO subscriptions (tenant_id, conversation_id, kinds, created_by, created_at, enabled, "
                "disabled_reason) VALUES ($1, $2, $3, $4, $5, true, '') ON CONFLICT (tenant_id, conversation_id) "
                "DO UPDATE SET kinds = EXCLUDED.kinds, created_by = EXCLUDED.created_by, "
                "created_at = EXCLUDED.created_at, enabled = true, disabled_reason = ''",
                tenant_id, conversation_id, [k.value for k in ordered], actor, book.now)
            return _Change(sub.to_dict(), "subscribe",
                           {"conversation_id": conversation_id, "kinds": [k.value for k in ordered]})
        args = {"conversation_id": conversation_id, "kinds": sorted({str(k) for k in kinds})}
        return await self._keyed_change(tenant_id, actor, key, "subscribe", args, change)

    async def unsubscribe(self, tenant_id: str, conversation_id: str, *, actor: str, key: str) -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            deleted = await tx.con.fetchval("DELETE FROM subscriptions WHERE tenant_id = $1 AND conversation_id = $2 "
                                            "RETURNING 1", tenant_id, conversation_id)
            if deleted is None:
                raise NotFound("subscription", conversation_id)
            await self._skip_destination(tx.con, tenant_id, conversation_id)
            return _Change({"conversation_id": conversation_id}, "unsubscribe", {"conversation_id": conversation_id})
        return await self._keyed_change(tenant_id, actor, key, "unsubscribe", {"conversation_id": conversation_id},
                                        change)

    async def disable_subscription(self, tenant_id: str, conversation_id: str, *, reason: str) -> None:
        async with self._account(tenant_id) as tx:
            changed = await tx.con.fetchval(
                "UPDATE subscriptions SET enabled = false, disabled_reason = $3 "
                "WHERE tenant_id = $1 AND conversation_id = $2 AND enabled RETURNING 1",
                tenant_id, conversation_id, reason)
            if changed is None:
                return
            book = Book(tx.state, [], self._now())
            book.record(SYSTEM_ACTOR, "disable_subscription", "", {"conversation_id": conversation_id,
                                                                    "reason": reason})
            await self._skip_destination(tx.con, tenant_id, conversation_id)
            await self._persist(tx, book)

    async def subscriptions(self, tenant_id: str) -> list[Subscription]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            return await self._subscriptions(con, tenant_id)

    # --- roles and audit --------------------------------------------------------------------------------------
    async def grant_role(self, tenant_id: str, user_id: str, role: Role, *, actor: str, key: str,
                         display_name: str = "") -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            try:
                valid = Role(role)
            except ValueError:
                raise InvalidSettings("unknown_role") from None
            grant = RoleGrant(user_id, valid, actor, book.now, display_name)
            await tx.con.execute(
                "INSERT INTO roles (tenant_id, user_id, role, granted_by, granted_at, display_name) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role, "
                "granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at, "
                "display_name = EXCLUDED.display_name",
                tenant_id, user_id, valid.value, actor, book.now, display_name)
            return _Change(grant.to_dict(), "grant_role",
                           {"user_id": user_id, "role": valid.value, "display_name": display_name})
        args = {"user_id": user_id, "role": str(role), "display_name": display_name}
        return await self._keyed_change(tenant_id, actor, key, "grant_role", args, change)

    async def revoke_role(self, tenant_id: str, user_id: str, *, actor: str, key: str) -> SettingsChange:
        async def change(tx: _Tx, book: Book) -> _Change:
            removed = await tx.con.fetchval("DELETE FROM roles WHERE tenant_id = $1 AND user_id = $2 RETURNING role",
                                            tenant_id, user_id)
            if removed is None:
                raise NotFound("role", user_id)
            return _Change({"user_id": user_id, "role": removed}, "revoke_role", {"user_id": user_id, "role": removed})
        return await self._keyed_change(tenant_id, actor, key, "revoke_role", {"user_id": user_id}, change)

    async def roles(self, tenant_id: str) -> list[RoleGrant]:
        async with self._read() as con:
            await self._exists(con, tenant_id)
            rows = await con.fetch("SELECT * FROM roles WHERE tenant_id = $1 ORDER BY user_id", tenant_id)
            return [_grant(r) for r in rows]

    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        return await self._page("audit", "seq, tenant_id, at, actor, action, key, details", _audit, tenant_id,
                                limit, before)

    # --- copying a store (storage/transfer.py) ----------------------------------------------------------------
    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        async with self._read() as con:
            async with con.transaction(isolation="repeatable_read", readonly=True):
                row = await con.fetchrow("SELECT state FROM accounts WHERE tenant_id = $1", tenant_id)
                if row is None:
                    raise AccountNotFound(tenant_id)
                t = tenant_id
                entries = [_entry(r) for r in await con.fetch(
                    f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 ORDER BY seq", t)]
                ops = await con.fetch("SELECT key, operation, fingerprint, result FROM ops WHERE tenant_id = $1 "
                                      "ORDER BY key", t)
                alerts = await con.fetch(f"SELECT n, {_ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 "
                                         "ORDER BY created_at, n", t)
                audit = await con.fetch("SELECT seq, tenant_id, at, actor, action, key, details FROM audit "
                                        "WHERE tenant_id = $1 ORDER BY seq", t)
                subscriptions = await self._subscriptions(con, t)
                roles = await con.fetch("SELECT * FROM roles WHERE tenant_id = $1 ORDER BY user_id", t)
                approvals = await con.fetch(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 "
                                            "ORDER BY n", t)
                conversations = await con.fetch("SELECT * FROM conversations WHERE tenant_id = $1 "
                                                "ORDER BY conversation_id", t)
                watermarks = await con.fetch("SELECT source, until FROM sync_watermarks WHERE tenant_id = $1 "
                                             "ORDER BY source", t)
        return {
            "format": transfer.FORMAT, "tenant_id": tenant_id, "state": BookState.from_dict(row["state"]).to_dict(),
            "entries": [e.to_dict() for e in entries],
            "ops": [{"key": r["key"], "operation": r["operation"], "fingerprint": r["fingerprint"],
                     "result": r["result"]} for r in ops],
            "alerts": [{**_alert(r).to_dict(), "n": r["n"]} for r in alerts],
            "audit": [_audit(r).to_dict() for r in audit],
            "subscriptions": [s.to_dict() for s in subscriptions],
            "roles": [_grant(r).to_dict() for r in roles],
            "approvals": [_approval(r).to_dict() for r in approvals],
            "conversations": [_conversation(r).to_dict() for r in conversations],
            "watermarks": {r["source"]: iso(_utc(r["until"])) for r in watermarks},
        }

    async def import_account(self, data: Mapping[str, Any]) -> None:
        """One transaction: the account row first (a tenant that exists already is a `ValueError`, and a
        concurrent import of the same tenant waits on the row and then finds it), then every table."""
        tenant = transfer.check_export(data)
        s = BookState.from_dict(data["state"])
        if s.tenant_id != tenant:
            raise ValueError("the export's state belongs to another tenant")
        entries = [Entry.from_dict(d) for d in data["entries"]]
        records = [AuditRecord.from_dict(d) for d in data["audit"]]
        alerts = [Alert.from_dict({k: v for k, v in d.items() if k != "n"}) for d in data["alerts"]]
        approvals = [Approval.from_dict(d) for d in data["approvals"]]
        subscriptions = [Subscription.from_dict(d) for d in data["subscriptions"]]
        grants = [RoleGrant.from_dict(d) for d in data["roles"]]
        conversations = [ConversationRef.from_dict(d) for d in data["conversations"]]
        async with self._read() as con:
            async with con.transaction():
                inserted = await con.fetchval(
                    "INSERT INTO accounts (tenant_id, currency, created_at, balance, entry_count, audit_count, state) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id) DO NOTHING RETURNING 1",
                    tenant, s.currency, s.created_at, s.balance, s.entry_count, s.audit_count, s.to_dict())
                if not inserted:
                    raise ValueError(f"the store already has an account for tenant {tenant!r}")
                await _insert(con, "entries", ("tenant_id", "seq", "kind", "amount", "balance_after", "actor", "key",
                                               "at", "memo", "reference", "details"),
                              [(tenant, e.seq, e.kind.value, e.amount, e.balance_after, e.actor, e.key, e.at, e.memo,
                                e.reference, dict(e.details)) for e in entries])
                await _insert(con, "audit", ("tenant_id", "seq", "at", "actor", "action", "key", "details"),
                              [(tenant, r.seq, r.at, r.actor, r.action, r.key, dict(r.details)) for r in records])
                await _insert(con, "ops", ("tenant_id", "key", "operation", "fingerprint", "result"),
                              [(tenant, o["key"], o["operation"], o["fingerprint"], o["result"])
                               for o in data["ops"]])
                for a in alerts:   # one by one, oldest first: `n` keeps the order of creation
                    await con.execute(
                        "INSERT INTO alerts (alert_id, tenant_id, created_at, kind, key, payload, destinations, "
                        "delivered, skipped, status, attempts, next_attempt_at, lease_owner, lease_until, "
                        "last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                        a.alert_id, tenant, a.created_at, a.kind.value, a.key, dict(a.payload), list(a.destinations),
                        list(a.delivered), list(a.skipped), a.status.value, a.attempts, a.next_attempt_at,
                        a.lease_owner, a.lease_until, a.last_error)
                for a in approvals:   # in request order: `n`
                    await self._save_approval(con, a)
                if subscriptions:
                    await con.executemany(
                        "INSERT INTO subscriptions (tenant_id, conversation_id, kinds, created_by, created_at, "
                        "enabled, disabled_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        [(tenant, x.conversation_id, [k.value for k in x.kinds], x.created_by, x.created_at,
                          x.enabled, x.disabled_reason) for x in subscriptions])
                if grants:
                    await con.executemany(
                        "INSERT INTO roles (tenant_id, user_id, role, granted_by, granted_at, display_name) "
                        "VALUES ($1, $2, $3, $4, $5, $6)",
                        [(tenant, g.user_id, g.role.value, g.granted_by, g.granted_at, g.display_name)
                         for g in grants])
                if conversations:
                    await con.executemany(
                        "INSERT INTO conversations (tenant_id, conversation_id, reference, updated_at) "
                        "VALUES ($1, $2, $3, $4)",
                        [(tenant, c.conversation_id, dict(c.reference), c.updated_at) for c in conversations])
                if data["watermarks"]:
                    await con.executemany(
                        "INSERT INTO sync_watermarks (tenant_id, source, until) VALUES ($1, $2, $3)",
                        [(tenant, source, parse_iso(until)) for source, until in data["watermarks"].items()])
        if any(a.status is AlertStatus.PENDING for a in alerts):
            self._alerts_queued()

    # --- health -----------------------------------------------------------------------------------------------
    async def verify(self, tenant_id: str | None = None) -> VerifyReport:
        problems: list[str] = []
        total = 0
        async with self._read() as con:
            async with con.transaction(isolation="repeatable_read", readonly=True):
                if tenant_id is not None:
                    await self._exists(con, tenant_id)
                    tenants = [tenant_id]
                else:
                    tenants = [r["tenant_id"] for r in await con.fetch("SELECT tenant_id FROM accounts "
                                                                       "ORDER BY tenant_id")]
                for t in tenants:
                    acct = await con.fetchrow("SELECT balance, entry_count, audit_count, state FROM accounts "
                                              "WHERE tenant_id = $1", t)
                    state = BookState.from_dict(acct["state"])
                    rows = await con.fetch(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 ORDER BY seq", t)
                    entries = [_entry(r) for r in rows]
                    total += len(entries)
                    found = [f"{t}: {p}" for p in engine.verify_journal(state, entries)]
                    running = sum(e.amount for e in entries)
                    if acct["balance"] != running:
                        found.append(f"{t}: balance column {acct['balance']} != sum of entries {running}")
                    if acct["entry_count"] != len(entries):
                        found.append(f"{t}: entry_count column {acct['entry_count']} != {len(entries)} entries")
                    audit_count = await con.fetchval("SELECT count(*) FROM audit WHERE tenant_id = $1", t)
                    if audit_count != acct["audit_count"] or audit_count != state.audit_count:
                        found.append(f"{t}: {audit_count} audit records, state says {state.audit_count}")
                    orphans = await con.fetch(
                        "SELECT e.seq, e.key FROM entries e WHERE e.tenant_id = $1 AND e.kind <> 'auto_recharge' "
                        "AND NOT EXISTS (SELECT 1 FROM ops o WHERE o.tenant_id = e.tenant_id AND o.key = e.key) "
                        "ORDER BY e.seq", t)
                    found.extend(f"{t}: entry {r['seq']} has no operation record for key {r['key']!r}"
                                 for r in orphans)
                    problems.extend(found)
        return VerifyReport(len(tenants), total, tuple(problems))

    @contextlib.asynccontextmanager
    async def leading(self, job: str) -> AsyncIterator[bool]:
        """True for the one process holding the session advisory lock of `job` for the block; the others get
        False at once (`pg_try_advisory_lock`), and take over after the holder's connection ends."""
        async with self._pool.acquire() as con:
            got = await con.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"credits-job:{job}")
            try:
                yield bool(got)
            finally:
                if got:
                    await con.execute("SELECT pg_advisory_unlock(hashtext($1))", f"credits-job:{job}")

    async def ping(self) -> None:
        async with self._read() as con:
            await con.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()


# --- helpers --------------------------------------------------------------------------------------------------------

def _qualified(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _ALERT_COLUMNS.split(","))


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
