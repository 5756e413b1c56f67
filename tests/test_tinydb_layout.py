"""The TinyDB store's file layer: chunked logs and the open-file cache never lose a write."""

from __future__ import annotations

from pathlib import Path

from storage.tinydb_store import files
from storage.tinydb_store.layout import ChunkedLog, FileSet


def test_a_commit_touching_more_files_than_the_cache_holds_keeps_every_write(tmp_path: Path) -> None:
    fileset = FileSet(tmp_path, max_open=2)
    log = ChunkedLog(fileset, "entries", chunk=3)
    log.append([(seq, {"seq": seq}) for seq in range(1, 17)])   # 6 chunk files, all dirty at once
    fileset.commit()
    reopened = ChunkedLog(FileSet(tmp_path, max_open=2), "entries", chunk=3)
    assert [d["seq"] for d in reopened.oldest_first(16)] == list(range(1, 17))
    assert reopened.last_seq() == 16


def test_reading_many_chunks_through_a_small_cache_sees_everything(tmp_path: Path) -> None:
    fileset = FileSet(tmp_path, max_open=2)
    log = ChunkedLog(fileset, "entries", chunk=2)
    for seq in range(1, 11):                                      # one commit per entry, like single operations
        log.append([(seq, {"seq": seq})])
        fileset.commit()
    assert [d["seq"] for d in log.newest_first(11)] == list(range(10, 0, -1))


def test_an_interrupted_commit_is_finished_from_the_journal_at_open(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    items = [("a.json", b'{"new": 1}'), ("b/c.json", b'{"new": 2}')]
    # what commit() writes before it touches any file: the journal, renamed into place (the commit point)
    header = files.encode([[rel, len(data), __import__("hashlib").sha256(data).hexdigest()] for rel, data in items])
    (tmp_path / files.JOURNAL).write_bytes(header + b"\n" + b"".join(data for _, data in items))
    assert files.recover(tmp_path) == 2
    assert (tmp_path / "a.json").read_bytes() == b'{"new": 1}'
    assert (tmp_path / "b" / "c.json").read_bytes() == b'{"new": 2}'
    assert not (tmp_path / files.JOURNAL).exists()


def test_a_journal_that_was_never_renamed_into_place_is_discarded(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b'{"old": 1}')
    (tmp_path / "journal.tmp").write_bytes(b"half a jour")
    assert files.recover(tmp_path) == 0
    assert (tmp_path / "a.json").read_bytes() == b'{"old": 1}'
    assert not (tmp_path / "journal.tmp").exists()
