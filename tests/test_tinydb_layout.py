"""The TinyDB store's file layer: the write-ahead log, the chunked logs, and stores written by older code.

What is pinned here is the on-disk protocol of ADR 0003: a commit is one record in `wal` (the commit point), files
are written after it and made durable by checkpoints, logs are JSON Lines chunks, and stores written before (a
per-commit `journal`, TinyDB `.json` chunks) still open.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from storage.errors import StoreCorrupt
from storage.tinydb_store import files
from storage.tinydb_store.files import Change, Store
from storage.tinydb_store.layout import ChunkCache, ChunkedLog, memory_only, NeedsDisk


def _log(root: Path, chunk: int, cache: ChunkCache | None = None) -> ChunkedLog:
    return ChunkedLog(root, cache or ChunkCache(capacity=2), "entries", chunk).load()


def _commit(root: Path, changes: list[Change]) -> None:
    store = Store(root)
    store.open()
    store.commit(changes)
    store.close()


def test_a_commit_across_many_chunks_keeps_every_write(tmp_path: Path) -> None:
    log = _log(tmp_path, chunk=3)
    changes = log.append([files.line({"seq": seq}) for seq in range(1, 17)])   # 6 chunk files at once
    assert [c.rel for c in changes] == [f"entries/{n:06d}.jsonl" for n in range(6)]
    _commit(tmp_path, changes)
    reopened = _log(tmp_path, chunk=3)
    assert [d["seq"] for d in reopened.oldest_first(16)] == list(range(1, 17))
    assert reopened.count == 16
    assert (tmp_path / "entries" / "000005.jsonl").read_bytes() == b'{"seq":16}\n'


def test_appends_go_at_the_end_of_the_newest_chunk(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    log = _log(tmp_path, chunk=4)
    for seq in range(1, 11):                                      # one commit per document, like single operations
        [change] = log.append([files.line({"seq": seq})])
        assert change.offset == sum(len(b'{"seq":%d}\n' % s) for s in range((seq - 1) // 4 * 4 + 1, seq))
        store.commit([change])
    store.close()
    assert [d["seq"] for d in log.newest_first(11)] == list(range(10, 0, -1))
    assert [d["seq"] for d in _log(tmp_path, chunk=4).newest_first(11)] == list(range(10, 0, -1))


def test_only_the_newest_chunk_stays_in_memory(tmp_path: Path) -> None:
    log = _log(tmp_path, chunk=2)
    _commit(tmp_path, log.append([files.line({"seq": seq}) for seq in range(1, 8)]))
    reopened = _log(tmp_path, chunk=2)
    with memory_only():
        assert reopened.get(7) == {"seq": 7}                      # the newest chunk: in memory
        with pytest.raises(NeedsDisk):
            reopened.get(1)                                       # a closed one: not on this thread
    assert reopened.get(1) == {"seq": 1}                          # read on demand elsewhere


def test_a_committed_record_is_replayed_at_open(tmp_path: Path) -> None:
    """A crash after the commit point (the record is in `wal`) and before the files were written."""
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    (tmp_path / "log.jsonl").write_bytes(b"line 1\nhalf a li")   # an append interrupted half way
    changes = [Change("a.json", None, b'{"new": 1}'), Change("log.jsonl", 7, b"line 2\n"),
               Change("b/c.json", None, b'{"new": 2}')]
    (tmp_path / files.WAL).write_bytes(files._record(changes))
    store = Store(tmp_path)
    assert store.open() == 3
    store.close()
    assert (tmp_path / "a.json").read_bytes() == b'{"new": 1}'
    assert (tmp_path / "log.jsonl").read_bytes() == b"line 1\nline 2\n"
    assert (tmp_path / "b" / "c.json").read_bytes() == b'{"new": 2}'
    assert (tmp_path / files.WAL).read_bytes() == b""          # checkpointed


def test_a_torn_last_record_was_never_committed(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    first = files._record([Change("a.json", None, b'{"new": 1}')])
    torn = files._record([Change("a.json", None, b'{"newer": 2}')])[:-3]
    (tmp_path / files.WAL).write_bytes(first + torn)
    store = Store(tmp_path)
    assert store.open() == 1
    store.close()
    assert (tmp_path / "a.json").read_bytes() == b'{"new": 1}'


def test_a_damaged_record_followed_by_others_is_refused(tmp_path: Path) -> None:
    one = bytearray(files._record([Change("a.json", None, b'{"new": 1}')]))
    one[-2] ^= 0xFF
    two = files._record([Change("a.json", None, b'{"new": 2}')])
    (tmp_path / files.WAL).write_bytes(bytes(one) + two)
    with pytest.raises(StoreCorrupt):
        Store(tmp_path).open()


def test_an_interrupted_legacy_journal_is_finished_at_open(tmp_path: Path) -> None:
    """A store last written by the code before the write-ahead log, killed after its journal's commit point."""
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    items = [("a.json", b'{"new": 1}'), ("b/c.json", b'{"new": 2}')]
    header = files.encode([[rel, len(data), hashlib.sha256(data).hexdigest()] for rel, data in items])
    (tmp_path / files.JOURNAL).write_bytes(header + b"\n" + b"".join(data for _, data in items))
    store = Store(tmp_path)
    assert store.open() == 2
    store.close()
    assert (tmp_path / "a.json").read_bytes() == b'{"new": 1}'
    assert (tmp_path / "b" / "c.json").read_bytes() == b'{"new": 2}'
    assert not (tmp_path / files.JOURNAL).exists()


def test_a_legacy_journal_that_was_never_renamed_into_place_is_discarded(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    (tmp_path / "journal.tmp").write_bytes(b"half a jour")
    assert files.recover_journal(tmp_path) == 0
    assert (tmp_path / "a.json").read_bytes() == b'{"old": 1}'
    assert not (tmp_path / "journal.tmp").exists()


def test_legacy_tinydb_chunks_are_read_and_the_newest_becomes_json_lines(tmp_path: Path) -> None:
    folder = tmp_path / "entries"
    folder.mkdir()
    (folder / "000000.json").write_bytes(orjson.dumps({"_default": {str(s): {"seq": s} for s in (1, 2, 3)}}))
    (folder / "000001.json").write_bytes(orjson.dumps({"_default": {"4": {"seq": 4}}}))
    log = _log(tmp_path, chunk=3)
    assert log.count == 4 and [d["seq"] for d in log.oldest_first(4)] == [1, 2, 3, 4]
    [change] = log.append([files.line({"seq": 5})])
    assert (change.rel, change.offset, change.replaces) == ("entries/000001.jsonl", None, "entries/000001.json")
    _commit(tmp_path, [change])   # the checkpoint at close makes the new chunk durable, then drops the old one
    assert sorted(p.name for p in folder.iterdir()) == ["000000.json", "000001.jsonl"]
    assert [d["seq"] for d in _log(tmp_path, chunk=3).oldest_first(5)] == [1, 2, 3, 4, 5]


def test_one_fsync_per_commit_and_the_files_written_at_the_checkpoint(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    before = store.fsyncs
    log = _log(tmp_path, chunk=4)
    for seq in range(1, 7):
        store.commit([*log.append([files.line({"seq": seq})]), Change("state.json", None, b'{"n": %d}' % seq)])
    assert store.fsyncs - before == 6                              # the record of each commit, nothing else
    assert not (tmp_path / "state.json").exists()                  # nobody reads it before the next open
    assert not (tmp_path / "entries" / "000001.jsonl").exists()    # the newest chunk: in memory and in `wal`
    assert (tmp_path / "entries" / "000000.jsonl").read_bytes().count(b"\n") == 4   # full: readers may need it
    store.close()   # checkpoint: pending changes written, the files fsynced, the log emptied
    assert (tmp_path / "state.json").read_bytes() == b'{"n": 6}'
    assert [d["seq"] for d in _log(tmp_path, chunk=4).oldest_first(6)] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / files.WAL).read_bytes() == b""


async def test_the_layout_of_a_store(tmp_path: Path) -> None:
    """The files ADR 0003 names, and hot files that TinyDB itself still reads."""
    from tinydb import TinyDB

    from storage import AlertKind, FakeClock, Role
    from storage.model import ConversationRef
    from storage.tinydb_store import TinyLedger
    from storage.tinydb_store.layout import account_dir

    clock = FakeClock()
    ledger = await TinyLedger.open(tmp_path, clock=clock)
    try:
        await ledger.open_account("t-1", "USD")
        await ledger.grant_role("t-1", "u-1", Role.ADMIN, actor="u-1", key="k-1")
        await ledger.subscribe("t-1", "c-1", [AlertKind.LOW_BALANCE], actor="u-1", key="k-2")
        await ledger.save_conversation(ConversationRef("c-1", "t-1", {"id": "c-1"}, clock.now))
        await ledger.add_funds("t-1", 5_00, actor="u-1", key="k-3")
    finally:
        await ledger.close()
    folder = account_dir("t-1")
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert found == sorted(["LOCK", "wal", "accounts.json", f"{folder}/state.json", f"{folder}/conversations.json",
                            f"{folder}/entries/000000.jsonl", f"{folder}/ops/000000.jsonl",
                            f"{folder}/audit/000000.jsonl"])   # outbox.json and alerts/ come with the first alert
    assert (tmp_path / "wal").read_bytes() == b""                  # a clean close checkpoints
    state = TinyDB(tmp_path / folder / "state.json")
    try:
        assert state.table("state").get(doc_id=1)["balance"] == 5_00
        assert [d["user_id"] for d in state.table("roles").all()] == ["u-1"]
        assert state.table("derived").get(doc_id=1) == {"last_recharge": 0}
    finally:
        state.close()
    accounts = TinyDB(tmp_path / "accounts.json")
    try:
        assert accounts.all() == [{"tenant_id": "t-1", "folder": folder}]
    finally:
        accounts.close()
    lines = (tmp_path / folder / "entries" / "000000.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == [1]
