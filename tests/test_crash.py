"""SIGKILL a TinyDB writer under load, reopen, and check that nothing acknowledged was lost or doubled.

The writer runs several operations at once (tests/crash_writer.py), so the store commits them in batches and
the kills land in the middle of batches as well as of single operations."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import EntryKind, RowStatus
from storage.tinydb_store import TinyLedger
from tests import crash_writer

KILLS = 12
HERE = Path(__file__).resolve().parent


def _acked(acks: Path) -> list[int]:
    """The acknowledged operations, in order of their numbers (concurrent ones are acknowledged in any order)."""
    if not acks.exists():
        return []
    return sorted(int(line) for line in acks.read_text().splitlines() if line.strip().isdigit())


def _wait_for_acks(acks: Path, at_least: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_acked(acks)) < at_least:
        if proc.poll() is not None:
            raise AssertionError(f"writer exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("writer made no progress")
        time.sleep(0.005)


@pytest.mark.slow
async def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    store, acks = tmp_path / "store", tmp_path / "acks"
    next_op = 1
    recharges = 0
    for kill in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(store), str(acks), str(next_op)])
        try:
            _wait_for_acks(acks, len(_acked(acks)) + 1, proc)
            time.sleep(rng.uniform(0.0, 0.25))  # kill at a random moment of the load
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        acked = _acked(acks)
        ledger = await TinyLedger.open(store, clock=lambda: crash_writer.T0)
        try:
            report = await ledger.verify()
            assert report.ok, report.problems
            # Every acknowledged operation is present: replaying it changes nothing and says so.
            before = (await ledger.get_account(crash_writer.TENANT)).balance
            for i in acked[-30:]:
                kind, arg = crash_writer.operation(i)
                if kind == "batch":
                    result = await ledger.record_usage_batch(crash_writer.TENANT, arg)  # type: ignore[arg-type]
                    assert {r.status for r in result.rows} == {RowStatus.REPLAYED}, (kill, i)
                elif kind == "add":
                    posting = await ledger.add_funds(crash_writer.TENANT, arg, actor="crash-admin", key=f"add-{i}")  # type: ignore[arg-type]
                    assert posting.replayed, (kill, i)
                else:
                    posting = await ledger.record_usage(crash_writer.TENANT, arg)  # type: ignore[arg-type]
                    assert posting.replayed, (kill, i)
            assert (await ledger.get_account(crash_writer.TENANT)).balance == before
            # No duplicates: every entry key appears once (recharge keys are derived and unique too).
            entries = await ledger.entries_since(crash_writer.TENANT, crash_writer.T0)
            keys = [e.key for e in entries]
            assert len(keys) == len(set(keys))
            recharges += sum(1 for e in entries if e.kind is EntryKind.AUTO_RECHARGE)
            used = {e.key for e in entries if e.kind is EntryKind.USAGE}
            for i in acked:
                kind, arg = crash_writer.operation(i)
                if kind == "usage":
                    assert arg.usage_id in used  # type: ignore[union-attr]
        finally:
            await ledger.close()
        # The writer resumes after the last acknowledged operation; an unacknowledged one that did commit
        # is replayed by the next writer (that is idempotency doing its job).
        next_op = (acked[-1] + 1) if acked else 1
    assert len(_acked(acks)) > KILLS
    assert recharges > 0  # the load did cross the trigger: crashes landed in multi-entry commits
