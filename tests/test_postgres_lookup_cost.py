"""The reads of a chat turn must not cost more as an account's journal grows (migration 0004, issue #9).

Found by the turn benchmark, which got slower round after round on a fresh database: `account_view` walked every
entry of the burn window (funds included) to sum the usage, and the idempotency lookup under the account lock kept
a plan, made while the table was small, that read all of the account's operation records. Both are pinned here by
what the server says it read (`pg_stat_xact_user_tables` and its index counters: the current transaction's own),
not by time: a plan that reads the whole account fails these tests at any speed.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from storage import UsageRecord
from storage.postgres_store import reads
from storage.postgres_store.session import init_connection
from tests.backends import open_backend, postgres_dsn

pytestmark = pytest.mark.postgres

T = "tenant-cost"
RECORDS = 2_000


async def _rows_read(con: asyncpg.Connection, table: str) -> int:
    """Rows of `table` this transaction has read so far, by sequential scans and through its indexes."""
    row = await con.fetchrow("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n "
                             "FROM pg_stat_xact_user_tables WHERE relname = $1", table)
    index = await con.fetchval("SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) "
                               "FROM pg_index WHERE indrelid = $1::regclass", table)
    return max(row["n"], index)


async def _lock(con: asyncpg.Connection, keys: list[str]) -> tuple[int, Any]:
    """`credits_lock_account` in a transaction of its own: (rows of `ops` it read, its row)."""
    async with con.transaction():
        before = await _rows_read(con, "ops")
        row = await con.fetchrow("SELECT * FROM credits_lock_account($1, $2::text[])", T, keys)
        return await _rows_read(con, "ops") - before, row


async def test_the_idempotency_lookup_probes_its_keys_however_many_records_the_account_has(tmp_path, clock):
    ledger = await open_backend("postgres", tmp_path, clock)
    con = await asyncpg.connect(postgres_dsn(tmp_path))
    try:
        await ledger.open_account(T, "USD")
        await ledger.add_funds(T, 1_00, actor="admin", key="first")
        # The session plans the function's statements now, while the table holds one record, and keeps the plans.
        for _ in range(8):
            await _lock(con, ["first", "absent"])
        await con.execute("INSERT INTO ops (tenant_id, key, operation, fingerprint, result) "
                          "SELECT $1, 'bulk-' || g, 'add_funds', 'fp', '{}' FROM generate_series(1, $2) g",
                          T, RECORDS)

        read, row = await _lock(con, ["bulk-7", "first", "absent"])

        assert read <= 3, f"the lookup of 3 keys read {read} operation records"
        assert sorted(row["known_keys"]) == ["bulk-7", "first"]
        found = dict(zip(row["known_keys"], row["known_fingerprints"]))
        assert found["bulk-7"] == "fp"
        read, row = await _lock(con, [])
        assert (read, row["known_keys"]) == (0, None)
        # and through the ledger: a replay of the first key is still recognised among the 2,000 others
        assert (await ledger.add_funds(T, 1_00, actor="admin", key="first")).replayed
    finally:
        await con.close()
        await ledger.close()


async def test_account_view_reads_the_usage_of_its_window_and_no_other_entry(tmp_path, clock):
    ledger = await open_backend("postgres", tmp_path, clock)
    con = await asyncpg.connect(postgres_dsn(tmp_path))
    await init_connection(con)   # jsonb as the store reads it
    try:
        await ledger.open_account(T, "USD")
        await asyncio.gather(*(ledger.add_funds(T, 10, actor="admin", key=f"k{i}") for i in range(RECORDS)))
        for i in range(3):
            clock.advance(timedelta(minutes=1))
            await ledger.record_usage(T, UsageRecord(f"call-{i}", 2, "USD", clock.now - timedelta(seconds=30)))
        now = clock.now
        expected = await ledger.account_view(T, now=now)

        async with con.transaction():
            before = await _rows_read(con, "entries")
            row = await con.fetchrow(reads.ACCOUNT_VIEW, T, now + timedelta(days=30), now - timedelta(days=30), now)
            read = await _rows_read(con, "entries") - before

        assert read <= 3, f"account_view read {read} entries to sum 3 usage entries among {RECORDS + 3}"
        assert reads.account_view(row, T, now - timedelta(days=30), now).window_usage == expected.window_usage == 6
    finally:
        await con.close()
        await ledger.close()


async def test_a_database_at_0003_upgrades_with_the_index_built_beforehand_without_blocking(clock):
    """The upgrade path of a deployment with a large journal: the index built CONCURRENTLY by an operator first
    (as the migration's comment says), then the bot starts and applies 0004 over it."""
    from storage.postgres_store import PostgresLedger, migrate
    from storage.postgres_store.backend import migration_files
    from tests.backends import _pg_admin, _pg_dsn

    name = f"credits_upgrade_{os.getpid()}"
    admin = await _pg_admin()
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        con = await asyncpg.connect(_pg_dsn(name))
        try:
            await con.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                              "applied_at timestamptz NOT NULL DEFAULT now())")
            for file, sql in migration_files():
                if file >= "0004":
                    break
                await con.execute(sql)
                await con.execute("INSERT INTO schema_migrations (name) VALUES ($1)", file)
            await con.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS entries_usage_at ON entries (tenant_id, at) "
                              "WHERE kind = 'usage'")
        finally:
            await con.close()

        assert await migrate(_pg_dsn(name)) == ["0004_lookups_that_stay_cheap.sql"]

        ledger = await PostgresLedger.open(_pg_dsn(name), clock=clock)
        try:
            await ledger.open_account(T, "USD")
            assert not (await ledger.add_funds(T, 5_00, actor="admin", key="k")).replayed
            assert (await ledger.add_funds(T, 5_00, actor="admin", key="k")).replayed
            assert (await ledger.account_view(T)).account.balance == 5_00
        finally:
            await ledger.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
