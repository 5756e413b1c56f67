"""Open the ledger a `CREDITS_STORE` value names: a directory (TinyDB, the embedded default), `memory://` (the
reference model: nothing persists, for tests and demos), or later a `postgresql://` URL."""

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
        raise NotImplementedError("the PostgreSQL backend is not built yet (issue 7)")
    from .tinydb_store import TinyLedger
    return await TinyLedger.open(Path(location), clock=clock, max_attempts=max_attempts)
