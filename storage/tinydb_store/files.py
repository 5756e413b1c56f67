"""Crash-safe files for the embedded store: a write-ahead log of file changes, checkpoints, legacy recovery.

A commit (one batch of operations, see backend.py) is a list of file changes: a whole file's new bytes, or bytes
appended at a known offset of a log chunk. The commit is made durable by appending **one record** holding all
its changes to `wal` and fsyncing that one file: that fsync is the commit point. The files themselves are written
later, without fsync, since `wal` holds everything needed to write them again:

    1. append the record to `wal` (header, lengths, CRC-32 of the body), fsync `wal`        <- commit point
    2. keep the changes pending in memory; write a file's pending changes into it when a reader may need it
       from disk (a log chunk that just became full) or at the next checkpoint
    3. a checkpoint (when `wal` is large enough, and at a clean close): write every pending change, fsync every
       file written since the last checkpoint (and the directories of files created since), then empty `wal`
       and fsync it

So an ordinary commit is two system calls (the record and its fsync), which matters beyond the disk: each blocking
call releases the GIL, and the writer thread may then wait a whole switch interval for the event loop to give it
back.

At open, `Store.open` applies every complete record of `wal` again, in order, then checkpoints. Replaying is
idempotent (a whole file is written whole; an append is written at its offset and the file cut after it), so it
does not matter which changes had reached their files before a crash, and a record that is only partly in `wal`
(a crash during step 1) was never acknowledged and is dropped. SIGKILL or power loss at any moment therefore leaves
the store at the last fsynced record.

Stores written before the write-ahead log used a per-commit `journal` of whole files (`recover_journal`): a
complete one is still finished at open.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..errors import StoreCorrupt

WAL = "wal"
#: The journal of stores written before the write-ahead log (one per commit, deleted after it).
JOURNAL = "journal"
_JOURNAL_TMP = "journal.tmp"

_MAGIC = b"TWR1"
_HEAD = struct.Struct("<4sII")  # magic, body length, CRC-32 of the body
#: A checkpoint is due when `wal` holds this much (bounds the replay at open and the log's size on disk).
CHECKPOINT_BYTES = 8 << 20
#: ... or this many records (bounds how long written-back files wait for their fsync).
CHECKPOINT_RECORDS = 2048
#: Open file descriptors kept for appending (the newest chunk of each busy log).
_MAX_FDS = 64


@dataclass(frozen=True, slots=True)
class Change:
    """One file's part of a commit. `offset` None: `data` is the whole file; else `data` goes at `offset` and the
    file ends after it. `replaces`: a file this one supersedes (a legacy chunk), removed after a checkpoint.
    `flush`: write the file's pending changes right after the commit (readers may read it from disk from now on);
    otherwise they may wait for the next checkpoint (nobody reads the file before the next open)."""

    rel: str
    offset: int | None
    data: bytes
    replaces: str | None = None
    flush: bool = False


def encode(data: Any) -> bytes:
    """Compact UTF-8 JSON (orjson: several times faster than the standard library on our files), in a bytes
    object of its own size: orjson's result keeps its whole output buffer (4 kB at least), which would multiply
    the memory of every encoded document we keep (log lines, outbox and conversation documents) by ten or more."""
    return bytes(memoryview(orjson.dumps(data)))


def line(data: Any) -> bytes:
    """One document of a JSON Lines log, with its newline (a new object of its own size, see `encode`)."""
    return orjson.dumps(data) + b"\n"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees either the old or the new bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class Store:
    """The store's files as the writer thread changes them: `commit` (durable when it returns), `checkpoint`.

    Only the writer thread calls it. Readers read log chunks directly, and only closed ones, which the commit that
    filled them wrote (`Change.flush`) before anything in them was published.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._wal_fd: int | None = None
        self._wal_size = 0
        self._records = 0
        self._fds: dict[str, int] = {}  # rel -> fd open for writing, oldest first (a small LRU)
        self._pending: dict[str, list[Change]] = {}  # rel -> committed changes not written into the file yet
        self._dirs: set[Path] = set()  # directories known to exist
        self._unsynced: set[str] = set()  # files written since the last checkpoint
        self._created: set[Path] = set()  # files and directories created since then (their parents need an fsync)
        self._superseded: set[str] = set()  # legacy files to remove after the next checkpoint
        self.commits = 0
        self.fsyncs = 0

    # --- opening --------------------------------------------------------------------------------------------------
    def open(self) -> int:
        """Finish what a crash interrupted (a legacy journal, then the write-ahead log), checkpoint, and get ready
        to commit. Returns the number of file changes replayed."""
        replayed = recover_journal(self.root)
        path = self.root / WAL
        raw = read_bytes(path)
        for changes in _records(raw or b""):
            for change in changes:
                self._apply(change, replaying=True)
                replayed += 1
        self._wal_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        if raw is None:
            self._created.add(path)
        self.checkpoint()   # the replayed files are durable on their own; a torn last record is cut off
        return replayed

    # --- committing -----------------------------------------------------------------------------------------------
    def commit(self, changes: list[Change]) -> None:
        """Make `changes` durable as one unit (one record, one fsync); their files are written later (`flush`,
        `checkpoint`).

        An exception leaves the store unusable until it is opened again (the caller stops writing): before the
        fsync returned, the record may or may not be durable; after it, the files may lag behind the log. Either
        way the next open replays exactly the durable records, so nothing acknowledged is lost and a torn record
        is dropped. (Retrying after a failed fsync is unsafe: the kernel may have dropped the dirty pages.)"""
        if not changes:
            return
        assert self._wal_fd is not None, "the store is not open"
        record = _record(changes)
        _pwrite(self._wal_fd, record, self._wal_size)
        self._fsync(self._wal_fd)
        self._wal_size += len(record)
        self._records += 1
        self.commits += 1
        for change in changes:
            if change.offset is None:   # a whole file: what was pending for it is superseded
                self._pending[change.rel] = [change]
            else:
                self._pending.setdefault(change.rel, []).append(change)
            if change.flush:
                self._write_pending(change.rel)
        if self._wal_size >= CHECKPOINT_BYTES or self._records >= CHECKPOINT_RECORDS:
            self.checkpoint()

    def _write_pending(self, rel: str) -> None:
        for change in self._pending.pop(rel, ()):
            self._apply(change, replaying=False)

    def checkpoint(self) -> None:
        """Write every pending change, make every file written since the last checkpoint durable on its own, then
        empty the log."""
        for rel in list(self._pending):
            self._write_pending(rel)
        for rel in sorted(self._unsynced):
            fd = self._fds.get(rel)
            if fd is not None:
                self._fsync(fd)
                continue
            try:
                fd = os.open(self.root / rel, os.O_RDONLY)
            except FileNotFoundError:   # pragma: no cover - written files are never removed
                continue
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
        for directory in sorted({p.parent for p in self._created}, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)
            self.fsyncs += 1
        self._unsynced.clear()
        self._created.clear()
        if self._wal_fd is not None:
            os.ftruncate(self._wal_fd, 0)
            self._fsync(self._wal_fd)
        self._wal_size = 0
        self._records = 0
        for rel in sorted(self._superseded):   # their successors are durable now
            (self.root / rel).unlink(missing_ok=True)
        self._superseded.clear()

    def close(self, *, clean: bool = True) -> None:
        """Close every file; a clean close checkpoints first (the log is empty afterwards). After a failed
        commit (`clean=False`) the log is left as it is, for the next open to replay."""
        if self._wal_fd is None:
            return
        try:
            if clean:
                self.checkpoint()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            os.close(self._wal_fd)
            self._wal_fd = None

    # --- writing files --------------------------------------------------------------------------------------------
    def _apply(self, change: Change, *, replaying: bool) -> None:
        path = self.root / change.rel
        if path.parent not in self._dirs:
            self._make_dirs(path.parent)
            self._dirs.add(path.parent)
        if change.offset is None:
            self._drop_fd(change.rel)
            created = not path.exists()
            with open(path, "wb") as f:   # in place: a crash in between is repaired by replaying the log
                f.write(change.data)
            if created:
                self._created.add(path)
        else:
            fd = self._fd(change.rel, path)
            _pwrite(fd, change.data, change.offset)
            if replaying:
                os.ftruncate(fd, change.offset + len(change.data))
        self._unsynced.add(change.rel)
        if change.replaces is not None:
            self._superseded.add(change.replaces)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            self._created.add(d)

    def _fd(self, rel: str, path: Path) -> int:
        fd = self._fds.pop(rel, None)
        if fd is None:
            if len(self._fds) >= _MAX_FDS:
                oldest = next(iter(self._fds))
                os.close(self._fds.pop(oldest))
            existed = path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            if not existed:
                self._created.add(path)
        self._fds[rel] = fd  # newest last
        return fd

    def _drop_fd(self, rel: str) -> None:
        fd = self._fds.pop(rel, None)
        if fd is not None:
            os.close(fd)

    def _fsync(self, fd: int) -> None:
        os.fsync(fd)
        self.fsyncs += 1


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset`, or an error (a short write is not a success)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"wrote nothing at offset {offset}")
        view, offset = view[written:], offset + written


# --- the record format ------------------------------------------------------------------------------------------------

def _record(changes: list[Change]) -> bytes:
    """magic, body length, CRC-32 of the body; body = JSON header line [[rel, offset, size, replaces], ...] and
    then every change's bytes."""
    header = encode([[c.rel, c.offset, len(c.data), c.replaces] for c in changes])
    body = b"".join([header, b"\n", *(c.data for c in changes)])
    return _HEAD.pack(_MAGIC, len(body), zlib.crc32(body)) + body


def _records(raw: bytes) -> Iterable[list[Change]]:
    """The complete records of a log, in order. A torn last record (its write was interrupted: it was never
    acknowledged) ends the log; a damaged record followed by more data is corruption, never guessed around."""
    pos = 0
    while pos < len(raw):
        end = pos + _HEAD.size
        if end > len(raw):
            return  # torn: not even the header made it
        magic, size, crc = _HEAD.unpack_from(raw, pos)
        body = raw[end:end + size]
        if magic != _MAGIC or len(body) != size or zlib.crc32(body) != crc:
            if magic == _MAGIC and end + size >= len(raw):
                return  # torn last record
            raise StoreCorrupt(f"the write-ahead log is damaged at byte {pos}; refusing to guess")
        newline = body.index(b"\n")
        offset = newline + 1
        changes = []
        for rel, at, length, replaces in orjson.loads(body[:newline]):
            changes.append(Change(rel, at, body[offset:offset + length], replaces))
            offset += length
        yield changes
        pos = end + size


# --- stores written before the write-ahead log ---------------------------------------------------------------------

def recover_journal(root: Path) -> int:
    """Finish or discard a legacy journal commit (a store last written by the code before the write-ahead log):
    a complete `journal` is replayed (whole files, idempotent), a `journal.tmp` never became one and is dropped.
    Returns the number of files rewritten."""
    (root / _JOURNAL_TMP).unlink(missing_ok=True)
    journal = root / JOURNAL
    if not journal.exists():
        return 0
    raw = journal.read_bytes()
    newline = raw.index(b"\n")
    header = orjson.loads(raw[:newline])
    offset = newline + 1
    items: list[tuple[str, bytes]] = []
    for rel, size, digest in header:
        data = raw[offset:offset + size]
        offset += size
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise StoreCorrupt(f"journal entry for {rel} is damaged; refusing to guess")  # renamed only when complete
        items.append((rel, data))
    dirs: set[Path] = set()
    for rel, data in items:
        atomic_write(root / rel, data, sync_dir=False)
        dirs.add((root / rel).parent)
    for d in dirs:
        fsync_dir(d)
    journal.unlink()
    fsync_dir(root)
    return len(items)
