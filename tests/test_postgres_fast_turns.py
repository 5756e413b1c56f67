"""What the PostgreSQL backend's one-round-trip paths (issue #9) must still get right under concurrency and odd
data: the lookups made with the account lock see what the previous holder committed, the pool's cheap reset
leaves no advisory lock behind, `account_view` reads every form of call time as `forecast.call_time` does, and a
conversation saved concurrently for the first time is still decided once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from storage import AlertKind, AlertSettings, ConversationRef, UsageRecord
from storage.ledger import Ledger
from storage.reference import ReferenceLedger
from tests.backends import lock_waiters, open_backend, postgres_dsn

pytestmark = pytest.mark.postgres

T = "tenant-fast"


async def _two_ledgers(tmp_path, clock) -> tuple[Any, Any]:
    from storage.postgres_store import PostgresLedger
    one = await open_backend("postgres", tmp_path, clock)
    other = await PostgresLedger.open(postgres_dsn(tmp_path), clock=clock, max_size=2)
    return one, other



async def _holding_the_account(dsn: str) -> asyncpg.Connection:
    """A connection in a transaction that holds the account's row lock (end it with `COMMIT`)."""
    con = await asyncpg.connect(dsn)
    await con.execute("BEGIN")
    await con.execute("SELECT 1 FROM accounts WHERE tenant_id = $1 FOR UPDATE", T)
    return con


async def test_a_key_sent_twice_at_once_is_written_once_and_replayed_once(tmp_path, clock):
    one, other = await _two_ledgers(tmp_path, clock)
    dsn = postgres_dsn(tmp_path)
    try:
        await one.open_account(T, "USD")
        holder = await _holding_the_account(dsn)
        calls = [asyncio.create_task(ledger.add_funds(T, 5_00, actor="admin", key="same-click"))
                 for ledger in (one, other)]
        await lock_waiters(holder, 2)
        await holder.execute("COMMIT")
        await holder.close()
        postings = await asyncio.gather(*calls)
        assert sorted(p.replayed for p in postings) == [False, True]
        assert postings[0].entry == postings[1].entry
        assert (await one.get_account(T)).balance == 5_00
        assert (await one.verify()).ok
    finally:
        await other.close()
        await one.close()


async def test_an_operation_that_waited_for_the_lock_sees_the_subscription_committed_meanwhile(tmp_path, clock):
    ledger = await open_backend("postgres", tmp_path, clock)
    try:
        await ledger.open_account(T, "USD")
        await ledger.set_alert_settings(T, AlertSettings((5_00,), 7), actor="admin", key="thresholds")
        await ledger.add_funds(T, 10_00, actor="admin", key="funds")
        holder = await _holding_the_account(postgres_dsn(tmp_path))
        await holder.execute("INSERT INTO subscriptions (tenant_id, conversation_id, kinds, created_by, created_at) "
                             "VALUES ($1, 'conv-late', '{low_balance}', 'admin', $2)", T, clock.now)
        usage = asyncio.create_task(ledger.record_usage(T, UsageRecord("call-1", 6_00, "USD", clock.now, {})))
        await lock_waiters(holder, 1)
        await holder.execute("COMMIT")
        await holder.close()
        posting = await usage
        [alert] = [await ledger.get_alert(a) for a in posting.alert_ids]
        assert alert.kind is AlertKind.LOW_BALANCE and alert.destinations == ("conv-late",)
    finally:
        await ledger.close()


async def _advisory_locks(dsn: str) -> int:
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    finally:
        await con.close()


async def test_leading_gives_its_lock_back_with_the_connection(tmp_path, clock):
    from storage.postgres_store import PostgresLedger
    first = await open_backend("postgres", tmp_path, clock)
    await first.close()
    dsn = postgres_dsn(tmp_path)
    ledger = await PostgresLedger.open(dsn, clock=clock, min_size=1, max_size=1)   # the same connection each time
    try:
        async with ledger.leading("usage-sync") as leader:
            assert leader and await _advisory_locks(dsn) == 1
        assert await _advisory_locks(dsn) == 0

        entered = asyncio.Event()

        async def cancelled_job() -> None:
            async with ledger.leading("usage-sync"):
                entered.set()
                await asyncio.sleep(60)
        job = asyncio.create_task(cancelled_job())
        await entered.wait()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert await _advisory_locks(dsn) == 0
        async with ledger.leading("usage-sync") as again:
            assert again
        await ledger.ping()
        assert await _advisory_locks(dsn) == 0
    finally:
        await ledger.close()


#: Call times in every form a stored usage entry may hold; the server decides the first, the others come back
#: to `forecast.call_time` (a Z suffix, fewer fraction digits, a naive time, no date at all, 30 February, a
#: number, none).
ODD_CALL_TIMES: list[Any] = ["{iso}", "{z}", "{short}", "2026-01-10T08:00:00", "yesterday", "2026-02-30T08:00:00+00:00",
                             1_700_000_000, None]


async def test_account_view_reads_every_form_of_call_time_like_the_single_reads(tmp_path, clock):
    source = ReferenceLedger(clock=clock)
    await source.open_account(T, "USD")
    await source.add_funds(T, 500_00, actor="admin", key="funds")
    for i in range(len(ODD_CALL_TIMES)):
        clock.advance(timedelta(hours=20))
        await source.record_usage(T, UsageRecord(f"call-{i}", (i + 1) * 10, "USD", clock.now - timedelta(days=2), {}))
    export = await source.export_account(T)
    for entry, form in zip([e for e in export["entries"] if e["kind"] == "usage"], ODD_CALL_TIMES):
        called = entry["details"]["occurred_at"]
        if isinstance(form, str):
            form = form.format(iso=called, z=called.replace("+00:00", "Z"),
                               short=called.replace("+00:00", ".5+00:00"))
        if form is None:
            del entry["details"]["occurred_at"]
        else:
            entry["details"]["occurred_at"] = form
    ledger = await open_backend("postgres", tmp_path, clock)
    try:
        await ledger.import_account(export)
        for days in (0, 1, 2, 3, 5, 10):
            at = clock.now - timedelta(days=days)
            for window in (timedelta(days=1), timedelta(days=3), timedelta(days=30)):
                view = await ledger.account_view(T, now=at, burn_window=window)
                assert view == await Ledger.account_view(ledger, T, now=at, burn_window=window), (days, window)
        assert (await ledger.account_view(T, burn_window=timedelta(days=30))).window_usage == sum(
            (i + 1) * 10 for i in range(len(ODD_CALL_TIMES)))
    finally:
        await ledger.close()


async def test_a_first_save_that_loses_the_race_still_saves_its_reference(tmp_path, clock):
    ledger = await open_backend("postgres", tmp_path, clock)
    try:
        await ledger.open_account(T, "USD")
        rival = await asyncpg.connect(postgres_dsn(tmp_path))
        tx = rival.transaction()
        await tx.start()
        await rival.execute("INSERT INTO conversations (tenant_id, conversation_id, reference, updated_at) "
                            "VALUES ($1, 'conv-1', '{\"by\": \"rival\"}', $2)", T, clock.now)
        mine = ConversationRef("conv-1", T, {"by": "me"}, clock.now + timedelta(seconds=1))
        saving = asyncio.create_task(ledger.save_conversation(mine))
        await lock_waiters(rival, 1)        # its insert waits on the rival's uncommitted row
        await tx.commit()
        await rival.close()
        assert await saving is False         # the rival made it known
        assert await ledger.conversation(T, "conv-1") == mine
        assert await ledger.save_conversation(mine) is False
    finally:
        await ledger.close()
