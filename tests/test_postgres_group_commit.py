"""Group commit of money operations on PostgreSQL (issue #9, `storage/postgres_store/group.py`): concurrent
`add_funds`, `adjust` and `record_usage` on one tenant in one process share one transaction, with exactly the
results, rows and failures they would have had one after another.

To form a batch on purpose, a test holds the account's row lock from another connection, starts one operation
(it becomes the in-flight transaction, waiting for the lock), queues the others behind it, then lets go: the
queued ones run as the next batch, in one transaction. Transactions are counted on the server: the entries a
transaction inserts share its `xmin`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import asyncpg
import pytest

from storage import AlertKind, AlertSettings, RechargeSettings, UsageRecord
from storage.errors import IdempotencyConflict, InsufficientFunds
from storage.ledger import Ledger
from storage.reference import ReferenceLedger
from tests.backends import lock_waiters, open_backend, postgres_dsn

pytestmark = pytest.mark.postgres

T = "tenant-group"
Call = Callable[[Ledger], Awaitable[Any]]


@pytest.fixture
async def pg(tmp_path, clock):
    store = await open_backend("postgres", tmp_path, clock)
    await store.open_account(T, "USD")
    try:
        yield store
    finally:
        await store.close()



async def _transactions(dsn: str) -> int:
    """How many transactions wrote the tenant's entries (distinct `xmin`)."""
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetchval("SELECT count(DISTINCT xmin::text) FROM entries WHERE tenant_id = $1", T)
    finally:
        await con.close()


async def _batched(ledger: Any, dsn: str, calls: list[Call]) -> list[Any]:
    """Run `calls` on `ledger` as ONE batch: the lock is held elsewhere while a first add (key `lead`) waits for
    it and `calls` queue behind it. Returns each call's result or exception (the lead's is checked here)."""
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM accounts WHERE tenant_id = $1 FOR UPDATE", T)
        lead = asyncio.create_task(ledger.add_funds(T, 1, actor="admin", key="lead"))
        await lock_waiters(holder, 1)
        tasks = [asyncio.create_task(call(ledger)) for call in calls]
        await asyncio.sleep(0)   # every call is queued behind the lead
        await holder.execute("COMMIT")
        assert (await lead).entry.amount == 1
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await holder.close()


def _add(key: str, amount: int = 10, memo: str = "") -> Call:
    return lambda ledger: ledger.add_funds(T, amount, actor="admin", key=key, memo=memo)


def _adjust(key: str, amount: int) -> Call:
    return lambda ledger: ledger.adjust(T, amount, actor="admin", key=key)


def _usage(usage_id: str, amount: int, clock: Any) -> Call:
    return lambda ledger: ledger.record_usage(T, UsageRecord(usage_id, amount, "USD", clock(), {"call": usage_id}))


async def _journal(ledger: Ledger) -> tuple[list[Any], list[Any], list[Any]]:
    history = await ledger.history(T, limit=10_000)
    audit = await ledger.audit(T, limit=10_000)
    alerts = sorted(await ledger.alerts(T, limit=10_000), key=lambda a: a.alert_id)
    return list(history.items), list(audit.items), alerts


async def test_concurrent_adds_are_recorded_once_in_fewer_transactions(pg, tmp_path):
    dsn = postgres_dsn(tmp_path)
    n = 48
    postings = await asyncio.gather(*(pg.add_funds(T, 10 + i, actor="admin", key=f"add-{i}") for i in range(n)))
    assert all(not p.replayed for p in postings)
    assert (await pg.get_account(T)).balance == sum(10 + i for i in range(n))
    history = await pg.history(T, limit=1000)
    assert sorted(e.key for e in history.items) == sorted(f"add-{i}" for i in range(n))
    assert (await pg.verify()).ok
    transactions = await _transactions(dsn)
    assert transactions < n, f"{transactions} transactions for {n} adds: no group commit"
    assert pg._group.batches == transactions and pg._group.operations == n


async def test_a_batch_writes_what_one_operation_after_another_writes(pg, tmp_path, clock):
    """Adds, usage (recharges, alerts to a subscription) and adjustments in one batch: the same postings,
    entries, audit records and alerts as the reference model running them one after another."""
    dsn = postgres_dsn(tmp_path)
    reference = ReferenceLedger(clock=clock)
    await reference.open_account(T, "USD")
    setup: list[Call] = [
        lambda l: l.set_recharge_settings(T, RechargeSettings(True, 300, 500, None, 10), actor="admin", key="rs"),
        lambda l: l.set_alert_settings(T, AlertSettings((400, 200), 7), actor="admin", key="as"),
        lambda l: l.subscribe(T, "chan", [AlertKind.RECHARGED, AlertKind.LOW_BALANCE, AlertKind.EXHAUSTED],
                              actor="admin", key="sub"),
    ]
    for call in setup:
        await call(pg)
        await call(reference)
    calls = [_add("a", 1_000), _usage("u1", 600, clock), _usage("u2", 700, clock), _adjust("j1", -50),
             _add("a", 1_000), _usage("u1", 600, clock), _adjust("j2", 25), _usage("u3", 2_000, clock)]
    got = await _batched(pg, dsn, calls)
    assert await _transactions(dsn) == 2   # the lead's, then the whole batch's
    await reference.add_funds(T, 1, actor="admin", key="lead")
    expected = [await call(reference) for call in calls]
    assert got == expected
    assert [p.replayed for p in got] == [False, False, False, False, True, True, False, False]
    assert await _journal(pg) == await _journal(reference)
    assert (await pg.verify()).ok


async def test_a_failing_operation_in_a_batch_fails_alone_and_records_nothing(pg, tmp_path):
    dsn = postgres_dsn(tmp_path)
    got = await _batched(pg, dsn, [_add("a", 100), _adjust("too-much", -1_000_000), _add("a", 999),
                                   _add("b", 20)])
    assert got[0].entry.amount == 100 and got[3].entry.amount == 20
    assert isinstance(got[1], InsufficientFunds)
    assert isinstance(got[2], IdempotencyConflict)
    assert [p.entry.balance_after for p in (got[0], got[3])] == [101, 121]
    assert (await pg.get_account(T)).balance == 121
    assert await _transactions(dsn) == 2
    # the failed key is still free
    assert (await pg.adjust(T, -21, actor="admin", key="too-much")).balance == 100
    audit = await pg.audit(T, limit=100)
    assert [r.key for r in reversed(audit.items)] == ["", "lead", "a", "b", "too-much"]
    assert (await pg.verify()).ok


async def test_the_same_key_twice_in_a_batch_is_written_once_and_replayed(pg, tmp_path):
    dsn = postgres_dsn(tmp_path)
    first, second = await _batched(pg, dsn, [_add("twice", 30), _add("twice", 30)])
    assert not first.replayed and second.replayed
    assert second == first.as_replay()
    history = await pg.history(T, limit=100)
    assert [e.key for e in history.items].count("twice") == 1
    third = await pg.add_funds(T, 30, actor="admin", key="twice")   # and later, from the database
    assert third == second
    assert (await pg.get_account(T)).balance == 31


async def test_a_database_error_in_a_batch_leaves_the_others_recorded(pg, tmp_path):
    """A NUL in a memo passes the book and fails on the server (text cannot hold it): the batch's transaction
    fails, each operation is retried alone, and only that one fails, as it does alone."""
    dsn = postgres_dsn(tmp_path)
    with pytest.raises(asyncpg.PostgresError) as alone:
        await pg.add_funds(T, 5, actor="admin", key="nul-alone", memo="a\x00b")
    before = pg._group.batches
    got = await _batched(pg, dsn, [_add("x", 10), _add("nul", 5, memo="a\x00b"), _add("y", 20)])
    assert type(got[1]) is type(alone.value)
    assert got[0].entry.amount == 10 and got[2].entry.amount == 20
    assert pg._group.batches - before == 1 + 1 + 3   # the lead, the failed batch, three alone
    assert (await pg.get_account(T)).balance == 31
    keys = [e.key for e in (await pg.history(T, limit=100)).items]
    assert "nul" not in keys and "nul-alone" not in keys
    assert (await pg.verify()).ok


async def test_a_cancelled_caller_does_not_break_the_batch(pg, tmp_path):
    dsn = postgres_dsn(tmp_path)
    holder = await asyncpg.connect(dsn)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM accounts WHERE tenant_id = $1 FOR UPDATE", T)
        lead = asyncio.create_task(pg.add_funds(T, 1, actor="admin", key="lead"))
        await lock_waiters(holder, 1)
        queued = {key: asyncio.create_task(pg.add_funds(T, amount, actor="admin", key=key))
                  for key, amount in (("p", 10), ("q", 20), ("r", 40))}
        await asyncio.sleep(0)
        lead.cancel()            # in flight, waiting for the lock: its transaction goes on, without it
        queued["q"].cancel()     # queued: never applied
        await asyncio.sleep(0)
        await holder.execute("COMMIT")
        results = await asyncio.gather(lead, *queued.values(), return_exceptions=True)
    finally:
        await holder.close()
    assert isinstance(results[0], asyncio.CancelledError) and isinstance(results[2], asyncio.CancelledError)
    assert results[1].entry.amount == 10 and results[3].entry.amount == 40
    keys = {e.key for e in (await pg.history(T, limit=100)).items}
    assert keys == {"p", "r"}    # the lead's caller was gone when its turn came under the lock
    assert await _transactions(dsn) == 1   # p and r together; the lead's wrote nothing
    assert (await pg.get_account(T)).balance == 50
    assert (await pg.add_funds(T, 20, actor="admin", key="q")).balance == 70   # its key is free
    assert (await pg.verify()).ok


async def test_two_ledgers_over_one_database_stay_correct(pg, tmp_path, clock):
    """Two pools (as two processes) adding to one account at once: each batches its own, the row lock orders
    the batches, every add is recorded once, and the shared keys once in all."""
    from storage.postgres_store import PostgresLedger
    dsn = postgres_dsn(tmp_path)
    other = await PostgresLedger.open(dsn, clock=clock, max_size=3)
    try:
        n = 30
        calls = [ledger.add_funds(T, 7, actor="admin", key=f"{name}-{i}")
                 for i in range(n) for name, ledger in (("one", pg), ("two", other))]
        calls += [ledger.add_funds(T, 5, actor="admin", key=f"shared-{i}")
                  for i in range(5) for ledger in (pg, other)]
        postings = await asyncio.gather(*calls)
        assert sum(p.replayed for p in postings) == 5
        assert (await pg.get_account(T)).balance == 2 * n * 7 + 5 * 5
        assert (await other.get_account(T)).entry_count == 2 * n + 5
        assert (await pg.verify()).ok
        assert await _transactions(dsn) < 2 * n + 5
    finally:
        await other.close()


async def test_close_lets_the_queued_operations_finish(pg, tmp_path):
    tasks = [asyncio.create_task(pg.add_funds(T, 3, actor="admin", key=f"c-{i}")) for i in range(10)]
    await asyncio.sleep(0)
    await pg.close()
    assert [t.result().entry.amount for t in tasks] == [3] * 10
    with pytest.raises(RuntimeError):
        await pg.add_funds(T, 3, actor="admin", key="late")


async def test_a_money_key_used_by_a_settings_change_conflicts(pg, clock):
    """Operation records of other kinds (settings, approvals) hold no entries: a money operation or a usage row
    reusing such a key is a conflict, in a batch or alone (it used to be a KeyError in a usage batch)."""
    await pg.set_alert_settings(T, AlertSettings((100,), 7), actor="admin", key="settings-key")
    with pytest.raises(IdempotencyConflict):
        await pg.add_funds(T, 10, actor="admin", key="settings-key")
    with pytest.raises(IdempotencyConflict):
        await pg.record_usage(T, UsageRecord("settings-key", 5, "USD", clock()))
    batch = await pg.record_usage_batch(T, [UsageRecord("settings-key", 5, "USD", clock()),
                                            UsageRecord("fresh", 5, "USD", clock())])
    assert [row.status.value for row in batch.rows] == ["conflict", "recorded"]
    assert (await pg.verify()).ok
