"""The TinyDB writer (ADR 0003): group commit, reads that never wait for it, a stop after a failed commit, and
stores written by the code before the write-ahead log.

A `Gate` holds the writer inside one commit, so that the next operations pile up in its queue and form one batch
whatever the machine's speed: no sleeps, no timing.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage import (AlertKind, AlertSettings, CurrencyMismatch, EntryKind, FakeClock, IdempotencyConflict,
                     InsufficientFunds, RechargeSettings, Role, UsageRecord)
from storage.model import ConversationRef
from storage.tinydb_store import TinyLedger, files
from storage.tinydb_store.backend import StoreBroken

T = "tenant-1"
ADMIN = "admin-1"


class Gate:
    """Holds the writer thread in its next commit until `release()`."""

    def __init__(self, ledger: TinyLedger) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._commit = ledger._store.commit
        ledger._store.commit = self   # type: ignore[method-assign]

    def __call__(self, changes: list[files.Change]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self._open.wait(10)
        self._commit(changes)

    async def held(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, 10)

    def release(self) -> None:
        self._open.set()


async def _ledger(path: Path, clock: FakeClock) -> TinyLedger:
    ledger = await TinyLedger.open(path, clock=clock)
    await ledger.open_account(T, "USD")
    return ledger


async def _behind_a_commit(ledger: TinyLedger, *calls: Any) -> tuple[Gate, asyncio.Task, list[asyncio.Task]]:
    """Start an add that the writer holds in its commit, then queue `calls` behind it (one batch)."""
    gate = Gate(ledger)
    first = asyncio.create_task(ledger.add_funds(T, 1_00, actor=ADMIN, key="first"))
    await gate.held()
    queued = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)   # each call runs up to its queue.put
    return gate, first, queued


async def test_operations_waiting_for_the_writer_are_committed_together(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    try:
        batches, fsyncs = ledger.batches, ledger._store.fsyncs
        gate, first, queued = await _behind_a_commit(
            ledger, *(ledger.add_funds(T, 10_00 + i, actor=ADMIN, key=f"add-{i}") for i in range(20)))
        gate.release()
        postings = [await first, *await asyncio.gather(*queued)]
        assert ledger.batches - batches == 2                     # the held one, then all twenty at once
        assert ledger._store.fsyncs - fsyncs == 2                # one fsync a batch
        assert [p.entry.seq for p in postings] == list(range(1, 22))   # in the order they were asked
        assert (await ledger.get_account(T)).balance == 1_00 + sum(10_00 + i for i in range(20))
    finally:
        await ledger.close()
    reopened = await TinyLedger.open(tmp_path / "store", clock=clock)
    try:
        assert (await reopened.verify()).ok
        assert (await reopened.add_funds(T, 10_05, actor=ADMIN, key="add-5")).replayed
    finally:
        await reopened.close()


async def test_a_failing_operation_changes_nothing_and_leaves_its_batch_alone(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    try:
        await ledger.add_funds(T, 50_00, actor=ADMIN, key="funds")
        await ledger.subscribe(T, "finance", [AlertKind.FORECAST], actor=ADMIN, key="sub")
        gate, first, queued = await _behind_a_commit(
            ledger,
            ledger.add_funds(T, 2_00, actor=ADMIN, key="ok-1"),
            ledger.adjust(T, -1_000_00, actor=ADMIN, key="too-much"),                    # InsufficientFunds
            ledger.add_funds(T, 9_99, actor=ADMIN, key="funds"),                         # IdempotencyConflict
            ledger.raise_alert(T, AlertKind.FORECAST, "forecast:x", {"bad": object()}),  # not JSON: TypeError
            ledger.record_usage(T, UsageRecord("call-1", 1_00, "EUR", clock.now)),       # CurrencyMismatch
            ledger.add_funds(T, 3_00, actor=ADMIN, key="ok-2"),
            ledger.add_funds(T, 2_00, actor=ADMIN, key="ok-1"),                          # a replay of ok-1
        )
        gate.release()
        await first
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert [type(r) for r in results[1:5]] == [InsufficientFunds, IdempotencyConflict, TypeError,
                                                   CurrencyMismatch]
        ok1, ok2, again = results[0], results[5], results[6]
        assert (ok1.entry.seq, ok2.entry.seq, again.entry.seq, again.replayed) == (3, 4, 3, True)
        assert (await ledger.get_account(T)).balance == 50_00 + 1_00 + 2_00 + 3_00
        assert await ledger.alerts(T) == []
        # the failed operations' keys stay free
        assert not (await ledger.adjust(T, -1_00, actor=ADMIN, key="too-much")).replayed
        await ledger.record_usage(T, UsageRecord("call-1", 1_00, "USD", clock.now))
        assert (await ledger.verify()).ok
    finally:
        await ledger.close()


async def test_reads_answer_at_once_from_what_is_committed(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    try:
        await ledger.grant_role(T, ADMIN, Role.ADMIN, actor=ADMIN, key="grant")
        gate, first, queued = await _behind_a_commit(
            ledger, ledger.grant_role(T, "reader-1", Role.READER, actor=ADMIN, key="grant-2"))
        # the writer is stuck in a commit: reads neither wait for it nor see what it has not committed
        assert (await ledger.get_account(T)).balance == 0
        assert len(await ledger.history(T)) == 0
        assert [g.user_id for g in await ledger.roles(T)] == [ADMIN]
        assert (await ledger.account_view(T)).account.balance == 0
        assert not first.done()
        gate.release()
        await first
        await asyncio.gather(*queued)
        assert (await ledger.get_account(T)).balance == 1_00
        assert [g.user_id for g in (await ledger.account_view(T)).roles] == [ADMIN, "reader-1"]
    finally:
        await ledger.close()


async def test_an_unchanged_conversation_is_not_sent_to_the_writer(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    try:
        ref = ConversationRef("conv-1", T, {"conversation": {"id": "conv-1"}}, clock.now)
        first, second = await asyncio.gather(ledger.save_conversation(ref), ledger.save_conversation(ref))
        assert (first, second) == (True, False)                 # one batch, yet exactly one first save
        Gate(ledger)                                             # a write now would hang this test
        assert await asyncio.wait_for(ledger.save_conversation(ref), 5) is False
    finally:
        await ledger.close()                                     # closing commits nothing: the gate stays shut


async def test_history_reads_closed_chunks_off_the_loop(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    try:
        await asyncio.gather(*(ledger.add_funds(T, 1_00, actor=ADMIN, key=f"a-{i}") for i in range(700)))
    finally:
        await ledger.close()
    ledger = await TinyLedger.open(tmp_path / "store", clock=clock)   # only the newest chunk in memory
    try:
        seqs, before = [], None
        while True:
            page = await ledger.history(T, limit=97, before=before)
            seqs += [e.seq for e in page.items]
            if page.older is None:
                break
            before = page.older
        assert seqs == list(range(700, 0, -1))
        assert len(await ledger.entries_since(T, clock.now)) == 700
        assert len(ledger._cache._chunks) <= 16                  # closed chunks are not all kept
    finally:
        await ledger.close()


async def test_a_failed_commit_stops_the_store_and_loses_nothing_acknowledged(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    ledger = await _ledger(tmp_path / "store", clock)
    acknowledged = [await ledger.add_funds(T, 1_00, actor=ADMIN, key=f"a-{i}") for i in range(5)]
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(5, "I/O error")
    monkeypatch.setattr(files.os, "fsync", failing)
    with pytest.raises(StoreBroken):
        await ledger.add_funds(T, 1_00, actor=ADMIN, key="lost")
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    with pytest.raises(StoreBroken):                              # no more writes: the kernel may have dropped pages
        await ledger.add_funds(T, 1_00, actor=ADMIN, key="after")
    with pytest.raises(StoreBroken):
        await ledger.ping()                                       # readiness says so
    assert (await ledger.get_account(T)).balance == 5_00         # reads still answer what was committed
    await ledger.close()
    reopened = await TinyLedger.open(tmp_path / "store", clock=clock)
    try:
        assert (await reopened.verify()).ok
        for posting in acknowledged:
            assert (await reopened.add_funds(T, 1_00, actor=ADMIN, key=posting.entry.key)).replayed
        # the failed one was never acknowledged: it may or may not have reached the log; never twice
        assert (await reopened.get_account(T)).balance in (5_00, 6_00)
    finally:
        await reopened.close()


# --- stores written by the code before the write-ahead log ---------------------------------------------------------

def _as_written_before(root: Path) -> None:
    """Rewrite a closed store the way the code before the write-ahead log kept it: TinyDB chunk files, no `derived`
    table in state.json, no `wal`."""
    for chunk in root.glob("accounts/*/*/*.jsonl"):
        lines = chunk.read_bytes().splitlines()
        first = int(chunk.stem) * {"entries": 256, "ops": 512, "audit": 256, "alerts": 128}[chunk.parent.name] + 1
        docs = {str(first + i): orjson.loads(line) for i, line in enumerate(lines)}
        chunk.with_suffix(".json").write_bytes(orjson.dumps({"_default": docs}))
        chunk.unlink()
    for state in root.glob("accounts/*/state.json"):
        tables = orjson.loads(state.read_bytes())
        tables.pop("derived", None)
        state.write_bytes(orjson.dumps(tables))
    (root / files.WAL).unlink()


async def test_a_store_written_before_opens_the_same_and_moves_on(tmp_path: Path) -> None:
    clock = FakeClock()
    store = tmp_path / "store"
    ledger = await _ledger(store, clock)
    try:
        await ledger.set_recharge_settings(T, RechargeSettings(True, 20_00, 10_00), actor=ADMIN, key="rs")
        await ledger.set_alert_settings(T, AlertSettings((15_00,)), actor=ADMIN, key="al")
        await ledger.subscribe(T, "finance", [AlertKind.RECHARGED], actor=ADMIN, key="sub")
        await ledger.add_funds(T, 30_00, actor=ADMIN, key="funds")
        calls = []
        for i in range(300):   # past a chunk boundary in every log, with recharges and alerts
            clock.advance(timedelta(minutes=5))
            calls.append(UsageRecord(f"call-{i}", 2_00 + i, "USD", clock.now - timedelta(hours=1)))
            await ledger.record_usage(T, calls[-1])
        for alert in await ledger.claim_alerts("w", lease=timedelta(minutes=1), limit=200):
            await ledger.mark_delivered(alert.alert_id, "finance", worker="w")
        before = await ledger.export_account(T)
        view = await ledger.account_view(T)
    finally:
        await ledger.close()
    _as_written_before(store)
    ledger = await TinyLedger.open(store, clock=clock)
    try:
        assert await ledger.export_account(T) == before
        assert await ledger.account_view(T) == view              # the last recharge found by searching
        assert (await ledger.record_usage(T, calls[7])).replayed
        for i in range(300, 320):
            await ledger.record_usage(T, UsageRecord(f"call-{i}", 2_00, "USD", clock.now))
    finally:
        await ledger.close()
    names = {p.name for p in store.glob("accounts/*/entries/*")}
    assert "000001.jsonl" in names and "000001.json" not in names   # the newest chunk moved on, whole
    ledger = await TinyLedger.open(store, clock=clock)
    try:
        report = await ledger.verify()
        assert report.ok and report.entries == before["state"]["entry_count"] + 20
        entries = await ledger.entries_since(T, clock.now - timedelta(days=400))
        assert [e.seq for e in entries] == list(range(1, report.entries + 1))
        assert any(e.kind is EntryKind.AUTO_RECHARGE for e in entries)
    finally:
        await ledger.close()
