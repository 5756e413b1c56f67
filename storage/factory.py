"""Open the ledger a `CREDITS_STORE` value names: a directory (TinyDB, the embedded default), `memory://` (the
reference model: nothing persists, for tests and demos), or a `postgresql://` URL (PostgreSQL, asyncpg)."""

from __future__ import annotations

from pathlib import Path

from .clock import Clock, utc_now
from .ledger import DEFAULT_MAX_ATTEMPTS, Ledger


async def open_ledger(location: str, *, clock: Clock = utc_now,
                      max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Ledger:
    if location.startswith("memory:"):
        from .reference import ReferenceLedger
        return ReferenceLedger(clock=clock, max_attempts=max_attempts)
    if location.startswith(("postgresql:", "postgres:")):
        from .postgres_store import PostgresLedger
        return await PostgresLedger.open(location, clock=clock, max_attempts=max_attempts)
    from .tinydb_store import TinyLedger
    return await TinyLedger.open(Path(location), clock=clock, max_attempts=max_attempts)
