"""Which ledger backends the storage tests run against, and how to open one.

Every backend name in `BACKENDS` is a parameter of the `ledger` fixture (tests/conftest.py), so the contract
suite, the scenarios and the property tests hold each backend to the same behaviour as the reference model.

A backend that cannot be imported must *fail* its tests, never skip them: a missing backend is a bug, not an
environment problem.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
from pathlib import Path

from storage.clock import FakeClock
from storage.ledger import Ledger

#: Backends every storage test runs against.
BACKENDS = ["reference", "tinydb", "postgres"]

#: Small, so that dead-lettering takes three failed attempts in tests.
MAX_ATTEMPTS = 3


async def open_backend(name: str, path: Path, clock: FakeClock, *, max_attempts: int = MAX_ATTEMPTS) -> Ledger:
    """Open an empty ledger of backend `name`; `path` is a fresh directory the backend may use."""
    if name == "reference":
        from storage.reference import ReferenceLedger
        return ReferenceLedger(clock=clock, max_attempts=max_attempts)
    if name == "tinydb":
        from storage.tinydb_store import TinyLedger   # an ImportError here fails the test, on purpose
        return await TinyLedger.open(path / "store", clock=clock, max_attempts=max_attempts)
    if name == "postgres":
        return await _open_postgres(path, clock, max_attempts)
    raise ValueError(f"unknown backend {name!r}")


# --- PostgreSQL: a fresh database per test directory, cloned from a migrated template ----------------------------

#: The server the postgres tests need (trust auth). Unreachable: the tests fail, they are never skipped.
PG_SERVER = os.environ.get("CREDITS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
_PG_TEMPLATE = f"credits_tpl_{os.getpid()}"
_pg_numbers = itertools.count(1)
_pg_template_ready = False
_pg_databases: dict[str, str] = {}   # test directory -> its database (a store reopened there gets the same one)
_pg_closed: set[str] = set()        # databases whose ledger closed: dropped at the next open or at exit


def _pg_dsn(database: str) -> str:
    return f"{PG_SERVER.rstrip('/')}/{database}"


def postgres_dsn(path: Path) -> str:
    """The DSN of the database `open_backend("postgres", path, ...)` opened for the test directory `path` (for
    tests that start other processes over the same database)."""
    database = _pg_databases.get(str(Path(path).resolve()))
    if database is None:
        raise LookupError(f"no postgres database was opened for {path}: call open_backend('postgres', ...) first")
    return _pg_dsn(database)


async def lock_waiters(admin, count: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until `count` sessions of the current database wait for a lock (calls under test queued behind a
    holder); `admin` is an asyncpg connection to that database."""
    for _ in range(500):
        waiting = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND wait_event_type = 'Lock'")
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited for the lock")


async def _pg_admin():  # type: ignore[no-untyped-def]
    import asyncpg   # an ImportError here fails the test, on purpose
    try:
        return await asyncpg.connect(_pg_dsn("postgres"), timeout=10)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        raise RuntimeError(f"the postgres tests need a PostgreSQL server at {PG_SERVER} (set CREDITS_TEST_PG to "
                           f"another one; start it with `pg_ctlcluster <version> main start`): {exc!r}") from exc


async def _drop(admin, names) -> None:  # type: ignore[no-untyped-def]
    for db in names:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def _open_postgres(path: Path, clock: FakeClock, max_attempts: int) -> Ledger:
    global _pg_template_ready
    from storage.postgres_store import PostgresLedger, migrate
    where = str(Path(path).resolve())
    admin = await _pg_admin()
    try:
        if not _pg_template_ready:
            await _drop(admin, [_PG_TEMPLATE])
            await admin.execute(f'CREATE DATABASE "{_PG_TEMPLATE}"')
            await migrate(_pg_dsn(_PG_TEMPLATE))   # closes its connection: the template can be cloned
            _pg_template_ready = True
        stale = sorted(db for db in _pg_closed if _pg_databases.get(where) != db)
        await _drop(admin, stale)
        _pg_closed.difference_update(stale)
        database = _pg_databases.get(where)
        if database is None:
            database = f"credits_t_{os.getpid()}_{next(_pg_numbers)}"
            await admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{_PG_TEMPLATE}"')
            _pg_databases[where] = database
        _pg_closed.discard(database)
    finally:
        await admin.close()
    store = await PostgresLedger.open(_pg_dsn(database), clock=clock, max_attempts=max_attempts, max_size=4)
    close = store.close

    async def close_and_forget() -> None:
        await close()
        _pg_closed.add(database)
    store.close = close_and_forget  # type: ignore[method-assign]
    return store


@atexit.register
def _drop_postgres_databases() -> None:
    if not _pg_template_ready:
        return

    async def drop() -> None:
        admin = await _pg_admin()
        try:
            await _drop(admin, sorted(set(_pg_databases.values())) + [_PG_TEMPLATE])
        finally:
            await admin.close()
    try:
        asyncio.run(drop())
    except Exception as exc:  # pragma: no cover - leftovers are named by pid, harmless
        print(f"could not drop the test databases: {exc!r}")
