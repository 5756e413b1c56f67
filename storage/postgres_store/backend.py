"""`PostgresLedger`: the ledger on PostgreSQL (asyncpg), for several processes over one database.

Every operation is one transaction. A keyed mutation first locks the account row (`SELECT ... FOR UPDATE`), so
the operations on one account are serialised across processes: the idempotency lookup, the money verbs of the
shared `storage.engine.Book` and the writes (entries, operation record, audit, alerts, new `BookState`) happen
under that lock and commit together, or not at all (a `LedgerError` rolls the transaction back). The outbox is
claimed with `FOR UPDATE SKIP LOCKED`, so workers in several processes never take the same alert.

Times come from the injected clock, never from `now()` in SQL. Money is `bigint`. The schema lives in numbered
SQL files (migrations/), applied in order at `open` (see `migrate`).

Round trips are what a chat turn pays for here (issue #9), so each call makes few: a read is one statement with
its account check (`reads`), `account_view` one statement, a money operation four round trips (BEGIN; the lock
with the idempotency lookup and the subscriptions, `credits_lock_account`; every write in one statement,
`writes.PERSIST`; COMMIT), and giving a connection back to the pool none (`session.reset_session`).
tests/test_postgres_round_trips.py holds the hot calls to these counts.

Group commit (`group`, `batch`): `add_funds`, `adjust` and a single `record_usage` on one tenant, when they
overlap in one process, share one transaction: the operations queued while a transaction is in flight are
applied in arrival order to the locked account, each on its own copy of the state, written in one statement and
committed once (tests/test_postgres_group_commit.py). A lone operation is a batch of one (the four round trips
above). The other keyed operations (settings, approvals, roles, subscriptions, usage batches) run alone; they take
the same row lock, so they serialise with the batches, in this process and in the others.
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

from .. import engine, policy, transfer
from ..clock import Clock, utc_now
from ..engine import Book, BookState
from ..errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                      InvalidSettings, LeaseLost, LedgerError, NotFound, SelfApproval)
from ..forecast import DEFAULT_WINDOW
from ..ledger import DEFAULT_MAX_ATTEMPTS, EXPIRING_NOTICE, Ledger
from ..model import (Account, AccountView, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                     ApprovalStatus, AuditRecord, BatchResult, ConversationRef, Entry, EntryKind, Lot, Page,
                     Posting, RechargeSettings, Role, RoleGrant, RowOutcome, RowStatus, SettingsChange,
                     Subscription, SYSTEM_ACTOR, UsageRecord, VerifyReport, iso, parse_iso)
from ..money import check_minor, normalize_currency
from . import reads
from .batch import Batch, FundsOp, MoneyOp, UsageOp, Written, compact, replayed
from .group import GroupCommit, Outcome, Pending
from .rows import (ALERT_COLUMNS, APPROVAL_COLUMNS, ENTRY_COLUMNS, as_alert, as_approval, as_audit, as_conversation,
                   as_entry, as_grant, as_subscription, as_utc)
from .session import create_pool
from .writes import PERSIST, persist_args

log = logging.getLogger(__name__)

#: Key of the advisory lock that serialises migration runs (any constant shared by every process).
MIGRATION_LOCK = 0x63726564697473  # "credits"
LEASE_EXPIRED_ERROR = "lease expired after the last attempt"



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

def _lookup_keys(keys: Iterable[object]) -> list[str]:
    """The keys worth looking up: strings PostgreSQL can hold. Anything else is no stored key (the caller's own
    check then rejects it, after `AccountNotFound`, as before the lookup)."""
    return [k for k in keys if isinstance(k, str) and "\x00" not in k]


def _known_ops(row: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """key -> (fingerprint, result) of the operation records `credits_lock_account` found."""
    if row["known_keys"] is None:
        return {}
    return {key: (fp, result) for key, fp, result in zip(row["known_keys"], row["known_fingerprints"],
                                                         row["known_results"])}


def _posting_seqs(result: object) -> list[int]:
    """The entry seqs of a money operation's stored result (`batch.compact`); none for any other record."""
    seqs = result.get("e") if isinstance(result, Mapping) else None
    if isinstance(seqs, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seqs):
        return seqs
    return []


# --- statements of the reads (`reads.of_account`: $1 is the tenant, and the account check comes with the rows) --------

_ROLES = reads.of_account("SELECT r.*, true AS present FROM roles r WHERE r.tenant_id = a.tenant_id", "x.user_id")
_SUBSCRIPTIONS = reads.of_account("SELECT s.*, true AS present FROM subscriptions s WHERE s.tenant_id = a.tenant_id",
                                  "x.conversation_id")
_CONVERSATIONS = reads.of_account("SELECT c.*, true AS present FROM conversations c WHERE c.tenant_id = a.tenant_id",
                                  "x.conversation_id")
_CONVERSATION = reads.of_account("SELECT c.*, true AS present FROM conversations c WHERE c.tenant_id = a.tenant_id "
                                 "AND c.conversation_id = $2", "x.conversation_id")
_WATERMARK = reads.of_account("SELECT w.until, true AS present FROM sync_watermarks w "
                              "WHERE w.tenant_id = a.tenant_id AND w.source = $2", "x.until")
_ENTRY_PAGE = reads.of_account(f"SELECT {ENTRY_COLUMNS}, true AS present FROM entries e "
                               "WHERE e.tenant_id = a.tenant_id AND ($2::int IS NULL OR e.seq < $2) "
                               "ORDER BY e.seq DESC LIMIT $3", "x.seq DESC")
_AUDIT_PAGE = reads.of_account("SELECT seq, tenant_id, at, actor, action, key, details, true AS present FROM audit u "
                               "WHERE u.tenant_id = a.tenant_id AND ($2::int IS NULL OR u.seq < $2) "
                               "ORDER BY u.seq DESC LIMIT $3", "x.seq DESC")
_ENTRIES_SINCE = reads.of_account(f"SELECT {ENTRY_COLUMNS}, true AS present FROM entries e "
                                  "WHERE e.tenant_id = a.tenant_id AND e.at >= $2", "x.seq")
_ALERTS = reads.of_account(f"SELECT {ALERT_COLUMNS}, n, true AS present FROM alerts l WHERE l.tenant_id = a.tenant_id "
                           "AND ($2::text IS NULL OR l.status = $2) ORDER BY l.created_at DESC, l.n DESC LIMIT $3",
                           "x.created_at DESC, x.n DESC")
_APPROVALS = reads.of_account(f"SELECT {APPROVAL_COLUMNS}, n, true AS present FROM approvals p "
                              "WHERE p.tenant_id = a.tenant_id AND ($2::text IS NULL OR p.status = $2)",
                              "x.requested_at DESC, x.n DESC")
_APPROVAL = reads.of_account(f"SELECT {APPROVAL_COLUMNS}, true AS present FROM approvals p "
                             "WHERE p.tenant_id = a.tenant_id AND p.approval_id = $2", "x.approval_id")

#: Parts of the state jsonb, taken out by the server.
_OPEN_LOTS = ("SELECT jsonb_path_query_array(state -> 'lots', '$[*] ? (@.remaining > 0)') FROM accounts "
              "WHERE tenant_id = $1")
_RECHARGE_SETTINGS = "SELECT state -> 'recharge' FROM accounts WHERE tenant_id = $1"
_ALERT_SETTINGS = "SELECT state -> 'alerts' FROM accounts WHERE tenant_id = $1"

# --- the outbox: $1 now, $2 max attempts, $3 the error of a lease that ran out after the last attempt ------------

_ALERT_COLUMNS_OF_A = ", ".join(f"a.{c.strip()}" for c in ALERT_COLUMNS.split(","))
_CLAIMABLE = ("status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) "
              "AND (lease_until IS NULL OR lease_until <= $1)")
_BURY_DEAD_ALERTS = (
    "UPDATE alerts SET status = 'dead', lease_owner = NULL, lease_until = NULL, "
    "last_error = CASE WHEN last_error = '' THEN $3 ELSE last_error END "
    f"WHERE alert_id IN (SELECT alert_id FROM alerts WHERE {_CLAIMABLE} AND attempts >= $2 FOR UPDATE SKIP LOCKED) "
    "RETURNING alert_id, kind, last_error")
#: Bury the dead and lease up to $4 others to $5 until $6, in one statement: the two sets are disjoint (attempts
#: used up or not). One row per claimed alert, each with the list of the dead (`dead`), or one row without an
#: alert when none was claimed.
_CLAIM_ALERTS = f"""
WITH dead AS ({_BURY_DEAD_ALERTS}),
picked AS (SELECT alert_id FROM alerts WHERE {_CLAIMABLE} AND attempts < $2 ORDER BY created_at, n LIMIT $4
           FOR UPDATE SKIP LOCKED),
claimed AS (UPDATE alerts a SET attempts = a.attempts + 1, lease_owner = $5, lease_until = $6 FROM picked
            WHERE a.alert_id = picked.alert_id RETURNING a.n, {_ALERT_COLUMNS_OF_A})
SELECT d.dead, c.*
FROM (SELECT coalesce(jsonb_agg(jsonb_build_object('alert_id', x.alert_id, 'kind', x.kind,
                                                   'last_error', x.last_error)), '[]'::jsonb) AS dead
      FROM dead x) d
LEFT JOIN claimed c ON true
"""

#: See `save_conversation`. $1 tenant, $2 conversation, $3 reference, $4 when.
_SAVE_CONVERSATION = """
WITH account AS (SELECT a.tenant_id FROM accounts a WHERE a.tenant_id = $1),
known AS (SELECT 1 FROM conversations c WHERE c.tenant_id = $1 AND c.conversation_id = $2),
changed AS (UPDATE conversations c SET reference = $3, updated_at = $4
            WHERE c.tenant_id = $1 AND c.conversation_id = $2 AND c.reference IS DISTINCT FROM $3),
inserted AS (INSERT INTO conversations (tenant_id, conversation_id, reference, updated_at)
             SELECT account.tenant_id, $2, $3, $4 FROM account WHERE NOT EXISTS (SELECT 1 FROM known)
             ON CONFLICT (tenant_id, conversation_id) DO NOTHING RETURNING 1)
SELECT EXISTS (SELECT 1 FROM account) AS account, EXISTS (SELECT 1 FROM known) AS known,
       EXISTS (SELECT 1 FROM inserted) AS inserted
"""
_UPDATE_CONVERSATION = ("UPDATE conversations SET reference = $3, updated_at = $4 WHERE tenant_id = $1 "
                        "AND conversation_id = $2 AND reference IS DISTINCT FROM $3")


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
    """One transaction on one locked account: its state, and what was read with the lock (`_account`)."""

    con: asyncpg.Connection
    state: BookState
    known: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # key -> (fingerprint, result)
    subscriptions: list[Subscription] = field(default_factory=list)
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
        self._group: GroupCommit[MoneyOp] = GroupCommit(self._money_batch)

    @classmethod
    async def open(cls, dsn: str, *, clock: Clock = utc_now, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                   min_size: int = 1, max_size: int = 10) -> "PostgresLedger":
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        await migrate(dsn)
        pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
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

    async def _exists(self, con: asyncpg.Connection, tenant_id: str) -> None:
        """`AccountNotFound` for an unknown tenant (a round trip of its own: only where nothing else is read)."""
        if await con.fetchval("SELECT 1 FROM accounts WHERE tenant_id = $1", tenant_id) is None:
            raise AccountNotFound(tenant_id)

    async def _account_rows(self, tenant_id: str, sql: str, args: Callable[[], Sequence[Any]] = tuple) -> list[Any]:
        """The rows of one `reads.of_account` statement (`$1` the tenant, then `args()`), one round trip; an
        unknown tenant is `AccountNotFound` (`reads.listed`).

        The account used to be checked before the other arguments were even looked at; so, when `args()` or
        their encoding fails, the account is checked first, and only then the error raised."""
        async with self._read() as con:
            try:
                return await con.fetch(sql, tenant_id, *args())
            except (TypeError, ValueError, asyncpg.DataError):   # DataError: an argument asyncpg cannot encode
                await self._exists(con, tenant_id)
                raise

    @contextlib.asynccontextmanager
    async def _account(self, tenant_id: str, keys: Iterable[object] = ()) -> AsyncIterator[_Tx]:
        """A transaction holding the account's row lock; `AccountNotFound` for an unknown tenant. Nothing is
        written unless the block ends normally (then the transaction commits).

        One round trip after BEGIN (`credits_lock_account`, migration 0003): the lock, then, read under it, the
        state, the operation records of `keys` (`_Tx.known`: the idempotency lookup of the operation's keys) and
        the subscriptions (`_Tx.subscriptions`)."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        async with self._locked(tenant_id, keys) as tx:
            yield tx

    @contextlib.asynccontextmanager
    async def _locked(self, tenant_id: str, keys: Iterable[object]) -> AsyncIterator[_Tx]:
        """`_account` without the check that the ledger is open (a batch queued before `close` still runs)."""
        tx: _Tx | None = None
        async with self._pool.acquire() as con:
            async with con.transaction():
                row = await con.fetchrow("SELECT * FROM credits_lock_account($1, $2::text[])", tenant_id,
                                         _lookup_keys(keys))
                if row is None:
                    raise AccountNotFound(tenant_id)
                tx = _Tx(con, BookState.from_dict(row["account_state"]), _known_ops(row),
                         [Subscription.from_dict(d) for d in row["subscription_list"]])
                yield tx
        if tx.queued:
            self._alerts_queued()

    async def _subscriptions(self, con: asyncpg.Connection, tenant_id: str) -> list[Subscription]:
        rows = await con.fetch("SELECT * FROM subscriptions WHERE tenant_id = $1 ORDER BY conversation_id",
                               tenant_id)
        return [as_subscription(r) for r in rows]

    def _book(self, tx: _Tx) -> Book:
        """A book on the locked state, with the subscriptions read under the lock."""
        return Book(tx.state, tx.subscriptions, self._now())

    @staticmethod
    def _check_key(tx: _Tx, key: str, operation: str, args: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Idempotency first: (fingerprint, stored result) for a replay, (fingerprint, None) for a new key. The
        lookup itself was made under the lock (`_account(tenant, keys=[key])`)."""
        fp = policy.fingerprint(operation, args)
        hit = tx.known.get(key)
        if hit is None:
            return fp, None
        if hit[0] != fp:
            raise IdempotencyConflict(key, operation)
        return fp, hit[1]

    async def _posting_from(self, con: asyncpg.Connection, tenant_id: str, result: Mapping[str, Any]) -> Posting:
        return self._replayed(result, await self._entries_by_seq(con, tenant_id, result["e"]))

    async def _known_entries(self, tx: _Tx) -> dict[int, Entry]:
        """The entries of the money operation records read with the lock (what a replay's posting shows), in
        one round trip; none (no round trip) when no such key was known. Records of other operations (settings,
        approvals) hold no entries: their keys can only conflict with a money operation."""
        seqs = {seq for _, result in tx.known.values() for seq in _posting_seqs(result)}
        return await self._entries_by_seq(tx.con, tx.state.tenant_id, seqs) if seqs else {}

    @staticmethod
    async def _entries_by_seq(con: asyncpg.Connection, tenant_id: str, seqs: Iterable[int]) -> dict[int, Entry]:
        rows = await con.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 AND seq = ANY($2::int[])",
                               tenant_id, list(seqs))
        return {r["seq"]: as_entry(r) for r in rows}

    _replayed = staticmethod(replayed)
    _compact = staticmethod(compact)

    async def _persist(self, tx: _Tx, book: Book | Written) -> None:
        """Write what the book collected (entries not written yet, audit, alerts), the pending operation records
        and the new state, in one statement (`writes.PERSIST`) of the transaction. Many journal rows (the last
        chunk of a usage batch) go through COPY first (`_write_journal`)."""
        entries = book.entries[tx.entries_written:]
        if len(entries) >= COPY_THRESHOLD or len(tx.ops) >= COPY_THRESHOLD:
            await self._write_journal(tx, book)
            entries = []
        tx.entries_written += len(entries)
        ops, tx.ops = tx.ops, []
        await tx.con.execute(PERSIST, *persist_args(tx.state.tenant_id, entries, ops, book.audit, book.alerts,
                                                    book.state))
        if any(alert.status is AlertStatus.PENDING for alert in book.alerts):
            tx.queued = True
        tx.state = book.state

    def _write_journal(self, tx: _Tx, book: Book | Written) -> Awaitable[None]:
        """Write the book's entries not written yet and the pending operation records. What is written is taken
        now, so the book may go on while the returned awaitable runs (see `_usage_rows`)."""
        entries = book.entries[tx.entries_written:]
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
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 AND status = 'pending' "
            "AND $2 = ANY(destinations) AND NOT ($2 = ANY(delivered)) AND NOT ($2 = ANY(skipped)) "
            "ORDER BY created_at, n FOR UPDATE", tenant_id, conversation_id)
        changed = []
        for alert in map(as_alert, rows):
            changed.append(_settled(replace(alert, skipped=alert.skipped + (conversation_id,))))
        await self._save_alerts(con, changed)

    async def _keyed_change(self, tenant_id: str, actor: str, key: str, operation: str, args: Mapping[str, Any],
                            change: Callable[[_Tx, Book], Awaitable[_Change]],
                            replay: Callable[[_Tx, dict[str, Any]], Awaitable[Any]] | None = None,
                            *, before_lookup: Callable[[], None] | None = None) -> Any:
        """Account (locked), caller's key, idempotency lookup (a replay returns the stored result), then `change`
        (validates, may raise and change nothing, may write through the book and its own tables), then the
        audit record, the operation record and the new state, all in one transaction."""
        async with self._account(tenant_id, [key]) as tx:
            policy.check_caller_key(key)
            if before_lookup is not None:
                before_lookup()
            fp, done = self._check_key(tx, key, operation, args)
            if done is not None:
                return await replay(tx, done) if replay is not None else SettingsChange.from_dict(done, replayed=True)
            book = self._book(tx)
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
        async with self._read() as con:
            existing = await self._find_account(con, tenant_id)   # the bot opens the account on every turn
            if existing is not None:
                return existing
            async with con.transaction():
                inserted = await con.fetchval(
                    "INSERT INTO accounts (tenant_id, currency, created_at, balance, entry_count, audit_count, state) "
                    "VALUES ($1, $2, $3, 0, 0, 0, $4) ON CONFLICT (tenant_id) DO NOTHING RETURNING 1",
                    tenant_id, code, now, state.to_dict())
                if inserted:
                    await self._persist(_Tx(con, state), book)
            return await self._get_account(con, tenant_id)

    @staticmethod
    async def _find_account(con: asyncpg.Connection, tenant_id: str) -> Account | None:
        row = await con.fetchrow("SELECT tenant_id, currency, created_at, balance, entry_count FROM accounts "
                                 "WHERE tenant_id = $1", tenant_id)
        if row is None:
            return None
        return Account(row["tenant_id"], row["currency"], as_utc(row["created_at"]), row["balance"], row["entry_count"])

    async def _get_account(self, con: asyncpg.Connection, tenant_id: str) -> Account:
        account = await self._find_account(con, tenant_id)
        if account is None:
            raise AccountNotFound(tenant_id)
        return account

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
        return await self._batched(tenant_id, FundsOp(operation, amount, actor, key, memo, reference))

    async def record_usage(self, tenant_id: str, usage: UsageRecord, *, actor: str = SYSTEM_ACTOR) -> Posting:
        return await self._batched(tenant_id, UsageOp(usage, actor))

    async def _batched(self, tenant_id: str, op: MoneyOp) -> Any:
        """Run `op` through the tenant's group commit (`group`): alone, or in one transaction with the other
        money operations on the account queued meanwhile; its own result or exception either way."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        return await self._group.submit(tenant_id, op)

    async def _money_batch(self, tenant_id: str, pending: Sequence[Pending[MoneyOp]]) -> list[Outcome]:
        """One transaction for a batch of money operations (`GroupCommit`'s runner): the lock with every key,
        the entries of the known keys' postings, each operation in order on the locked account (`Batch.run`:
        one that fails records nothing), every write in one statement, one COMMIT. An operation whose caller is
        gone by the time its turn comes is skipped. A database error raises (the group retries one by one)."""
        async with self._locked(tenant_id, [k for p in pending for k in p.op.keys]) as tx:
            batch = Batch(tx.state, tx.subscriptions, dict(tx.known), await self._known_entries(tx), self._now)
            outcomes = [Outcome(skipped=True) if p.cancelled else batch.run(p.op) for p in pending]
            if batch.written.records:
                tx.ops.extend(batch.written.records)
                await self._persist(tx, batch.written)
        return outcomes

    async def record_usage_batch(self, tenant_id: str, rows: Sequence[UsageRecord], *,
                                 actor: str = SYSTEM_ACTOR) -> BatchResult:
        return await self._usage_rows(tenant_id, list(rows), actor)

    async def _usage_rows(self, tenant_id: str, rows: list[UsageRecord], actor: str) -> BatchResult:
        """Rows one after another in one Book and one transaction; a problem is reported for its row and the
        others go on. (A single `record_usage`, which raises, goes through the group commit: `UsageOp`.)

        A batch is computed in chunks of `USAGE_CHUNK` rows, and each chunk's entries and operation records are
        written while the next chunk is computed: the server inserts (indexes, constraints, the journal trigger)
        while this process works out the next debits. The writes stay in order, one at a time, on the
        transaction's connection, which nothing else uses meanwhile (replays are read before the first chunk).
        The last chunk is written with the rest of the operation (`_persist`): a single row costs one statement.
        The idempotency lookup of every row's id is made with the lock (`_account`)."""
        ids = [getattr(u, "usage_id", None) for u in rows]
        async with self._account(tenant_id, ids) as tx:
            before = tx.state.balance
            known = tx.known
            replayed = await self._known_entries(tx)
            book = self._book(tx)
            outcomes: list[RowOutcome] = []
            seen: dict[str, tuple[str, Posting]] = {}
            writing: asyncio.Future[None] | None = None
            try:
                for start in range(0, len(rows), USAGE_CHUNK):
                    for usage in rows[start:start + USAGE_CHUNK]:
                        try:
                            outcomes.append(self._usage_row(tx, book, known, replayed, seen, usage, actor))
                        except LedgerError as err:
                            status = RowStatus.CONFLICT if isinstance(err, IdempotencyConflict) else RowStatus.REJECTED
                            outcomes.append(RowOutcome(getattr(usage, "usage_id", ""), status, _reason(err)))
                    if writing is not None:
                        await writing
                        writing = None
                    if start + USAGE_CHUNK < len(rows):   # another chunk follows: write this one meanwhile
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
                engine.audit_usage(book, actor, outcomes, single=False)
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
                book = self._book(tx)
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
            row = await tx.con.fetchrow(f"SELECT {APPROVAL_COLUMNS} FROM approvals "
                                        "WHERE tenant_id = $1 AND approval_id = $2", tenant_id, approval_id)
            if row is None:
                raise NotFound("approval", approval_id)
            approval = as_approval(row)
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
        rows = await self._account_rows(tenant_id, _APPROVALS,
                                         lambda: (None if status is None else ApprovalStatus(status).value,))
        return reads.listed(rows, tenant_id, as_approval)

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval:
        found = reads.listed(await self._account_rows(tenant_id, _APPROVAL, lambda: (approval_id,)), tenant_id,
                             as_approval)
        if not found:
            raise NotFound("approval", approval_id)
        return found[0]

    # --- reading ----------------------------------------------------------------------------------------------
    async def _page(self, sql: str, parse: Callable[[Mapping[str, Any]], Any], tenant_id: str, limit: int,
                    before: int | None) -> Page:
        """Newest first, at most `limit`, `seq < before`: `sql` is `_ENTRY_PAGE` or `_AUDIT_PAGE`."""
        rows = await self._account_rows(tenant_id, sql, lambda: (before, max(int(limit), 0)))
        items = reads.listed(rows, tenant_id, parse)
        older = items[-1].seq if items and items[-1].seq > 1 else None
        return Page(tuple(items), older)

    async def history(self, tenant_id: str, *, limit: int = 10, before: int | None = None) -> Page:
        return await self._page(_ENTRY_PAGE, as_entry, tenant_id, limit, before)

    async def entries_since(self, tenant_id: str, since: datetime) -> list[Entry]:
        return reads.listed(await self._account_rows(tenant_id, _ENTRIES_SINCE, lambda: (since,)), tenant_id,
                            as_entry)

    async def _state_part(self, tenant_id: str, sql: str) -> Any:
        """One part of the account's state jsonb (`sql` takes it out on the server: the state, with every open
        lot, is neither sent whole nor parsed)."""
        async with self._read() as con:
            row = await con.fetchrow(sql, tenant_id)
        if row is None:
            raise AccountNotFound(tenant_id)
        return row[0]

    async def lots(self, tenant_id: str) -> list[Lot]:
        return [Lot.from_dict(d) for d in await self._state_part(tenant_id, _OPEN_LOTS)]

    async def recharge_settings(self, tenant_id: str) -> RechargeSettings:
        return RechargeSettings.from_dict(await self._state_part(tenant_id, _RECHARGE_SETTINGS))

    async def alert_settings(self, tenant_id: str) -> AlertSettings:
        return AlertSettings.from_dict(await self._state_part(tenant_id, _ALERT_SETTINGS))

    async def account_view(self, tenant_id: str, *, now: datetime | None = None,
                           expiring_within: timedelta = EXPIRING_NOTICE,
                           burn_window: timedelta = DEFAULT_WINDOW) -> AccountView:
        """The contract's composition of single reads (`Ledger.account_view`), in one statement
        (`reads.ACCOUNT_VIEW`): one round trip, one snapshot."""
        moment = now if now is not None else self._now()
        rows = await self._account_rows(tenant_id, reads.ACCOUNT_VIEW,
                                        lambda: (moment + expiring_within, moment - burn_window, moment))
        return reads.account_view(rows[0] if rows else None, tenant_id, moment - burn_window, moment)

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
            row = await tx.con.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1",
                                        policy.alert_id(tenant_id, key))
            if row is not None:
                return as_alert(row)
            book = self._book(tx)
            alert = book.raise_alert(kind, key, payload)
            await self._persist(tx, book)
            return alert

    async def claim_alerts(self, worker: str, *, lease: timedelta, limit: int = 10) -> list[Alert]:
        """One statement (`_CLAIM_ALERTS`, one round trip): alerts whose lease ran out after their last attempt
        become dead, and up to `limit` due alerts are leased to `worker`; both skip rows another worker holds."""
        now = self._now()
        async with self._read() as con:
            if limit <= 0:
                _log_dead(await con.fetch(_BURY_DEAD_ALERTS, now, self._max_attempts, LEASE_EXPIRED_ERROR))
                return []
            rows = await con.fetch(_CLAIM_ALERTS, now, self._max_attempts, LEASE_EXPIRED_ERROR, limit, worker,
                                   now + lease)
        _log_dead(rows[0]["dead"])
        claimed = sorted((r for r in rows if r["alert_id"] is not None), key=lambda r: (r["created_at"], r["n"]))
        return [as_alert(r) for r in claimed]

    async def _leased(self, con: asyncpg.Connection, alert_id: str, worker: str) -> Alert:
        row = await con.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id)
        if row is None:
            raise NotFound("alert", alert_id)
        alert = as_alert(row)
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
            row = await con.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1", alert_id)
        if row is None:
            raise NotFound("alert", alert_id)
        return as_alert(row)

    async def alerts(self, tenant_id: str, *, status: AlertStatus | None = None, limit: int = 50) -> list[Alert]:
        rows = await self._account_rows(tenant_id, _ALERTS, lambda: (
            None if status is None else AlertStatus(status).value, max(int(limit), 0)))
        return reads.listed(rows, tenant_id, as_alert)

    # --- usage sync -------------------------------------------------------------------------------------------
    async def sync_watermark(self, tenant_id: str, source: str) -> datetime | None:
        found = reads.listed(await self._account_rows(tenant_id, _WATERMARK, lambda: (source,)), tenant_id,
                             lambda r: as_utc(r["until"]))
        return found[0] if found else None

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
                return as_utc(stored)

    # --- conversations and subscriptions ----------------------------------------------------------------------
    async def save_conversation(self, ref: ConversationRef) -> bool:
        """One statement (`_SAVE_CONVERSATION`): the account check, the update of a known conversation whose
        reference changed (none when it did not), the insert of a new one. Of concurrent first saves, one
        inserts; another finds no row in its snapshot yet conflicts on insert: it then updates like a save of a
        known conversation (a second statement, as the conflicting row is visible only to a new snapshot)."""
        tenant = ref.tenant_id
        rows = await self._account_rows(tenant, _SAVE_CONVERSATION, lambda: (
            ref.conversation_id, dict(ref.reference), ref.updated_at))
        outcome = rows[0]
        if not outcome["account"]:
            raise AccountNotFound(tenant)
        if outcome["inserted"]:
            return True
        if not outcome["known"]:
            async with self._read() as con:
                await con.execute(_UPDATE_CONVERSATION, tenant, ref.conversation_id, dict(ref.reference),
                                  ref.updated_at)
        return False

    async def conversation(self, tenant_id: str, conversation_id: str) -> ConversationRef | None:
        found = reads.listed(await self._account_rows(tenant_id, _CONVERSATION, lambda: (conversation_id,)),
                             tenant_id, as_conversation)
        return found[0] if found else None

    async def conversations(self, tenant_id: str) -> list[ConversationRef]:
        return reads.listed(await self._account_rows(tenant_id, _CONVERSATIONS), tenant_id, as_conversation)

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
        return reads.listed(await self._account_rows(tenant_id, _SUBSCRIPTIONS), tenant_id, as_subscription)

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
        return reads.listed(await self._account_rows(tenant_id, _ROLES), tenant_id, as_grant)

    async def audit(self, tenant_id: str, *, limit: int = 20, before: int | None = None) -> Page:
        return await self._page(_AUDIT_PAGE, as_audit, tenant_id, limit, before)

    # --- copying a store (storage/transfer.py) ----------------------------------------------------------------
    async def export_account(self, tenant_id: str) -> dict[str, Any]:
        async with self._read() as con:
            async with con.transaction(isolation="repeatable_read", readonly=True):
                row = await con.fetchrow("SELECT state FROM accounts WHERE tenant_id = $1", tenant_id)
                if row is None:
                    raise AccountNotFound(tenant_id)
                t = tenant_id
                entries = [as_entry(r) for r in await con.fetch(
                    f"SELECT {ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 ORDER BY seq", t)]
                ops = await con.fetch("SELECT key, operation, fingerprint, result FROM ops WHERE tenant_id = $1 "
                                      "ORDER BY key", t)
                alerts = await con.fetch(f"SELECT n, {ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 "
                                         "ORDER BY created_at, n", t)
                audit = await con.fetch("SELECT seq, tenant_id, at, actor, action, key, details FROM audit "
                                        "WHERE tenant_id = $1 ORDER BY seq", t)
                subscriptions = await self._subscriptions(con, t)
                roles = await con.fetch("SELECT * FROM roles WHERE tenant_id = $1 ORDER BY user_id", t)
                approvals = await con.fetch(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 "
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
            "alerts": [{**as_alert(r).to_dict(), "n": r["n"]} for r in alerts],
            "audit": [as_audit(r).to_dict() for r in audit],
            "subscriptions": [s.to_dict() for s in subscriptions],
            "roles": [as_grant(r).to_dict() for r in roles],
            "approvals": [as_approval(r).to_dict() for r in approvals],
            "conversations": [as_conversation(r).to_dict() for r in conversations],
            "watermarks": {r["source"]: iso(as_utc(r["until"])) for r in watermarks},
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
                    rows = await con.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE tenant_id = $1 ORDER BY seq", t)
                    entries = [as_entry(r) for r in rows]
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
        False at once (`pg_try_advisory_lock`), and take over after the holder's connection ends.

        The lock is released when the block's connection goes back to the pool (`session.reset_session`: the
        connection is marked before the lock is asked for, so even a cancelled attempt is cleaned up)."""
        async with self._pool.acquire() as con:
            con.expect_session_locks()
            got = await con.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", f"credits-job:{job}")
            yield bool(got)

    async def ping(self) -> None:
        async with self._read() as con:
            await con.fetchval("SELECT 1")

    async def close(self) -> None:
        """Refuse new calls; let the money operations already queued finish (`_group`); close the pool."""
        if self._closed:
            return
        self._closed = True
        await self._group.close()
        await self._pool.close()


# --- helpers --------------------------------------------------------------------------------------------------------

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


def _log_dead(dead: Iterable[Mapping[str, Any]]) -> None:
    for r in dead:
        log.error("alert %s (%s) dead: %s", r["alert_id"], r["kind"], r["last_error"])


def _settled(alert: Alert) -> Alert:
    if not alert.pending_destinations:
        return replace(alert, status=AlertStatus.DELIVERED, lease_owner=None, lease_until=None)
    return alert
