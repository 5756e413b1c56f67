"""Which ledger backends the storage tests run against, and how to open one.

Every backend name in `BACKENDS` is a parameter of the `ledger` fixture (tests/conftest.py), so the contract
suite, the scenarios and the property tests hold each backend to the same behaviour as the reference model.

A backend that cannot be imported must *fail* its tests, never skip them: a missing backend is a bug, not an
environment problem.
"""

from __future__ import annotations

from pathlib import Path

from storage.clock import FakeClock
from storage.ledger import Ledger

#: Backends every storage test runs against ("postgres" joins when it exists).
BACKENDS = ["reference", "tinydb"]

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
    raise ValueError(f"unknown backend {name!r}")
