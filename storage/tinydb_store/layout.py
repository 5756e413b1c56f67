"""Where things live in an embedded store, and the append-only logs that keep writes small.

    <store>/LOCK                       flock of the process that owns the store
    <store>/wal                        the write-ahead log of commits since the last checkpoint (see files.py)
    <store>/accounts.json              tenant id -> account folder
    <store>/accounts/<id>/state.json   hot state: balance, open lots, settings, edge triggers; roles; subscriptions;
                                       approvals (pending and decided); sync watermarks; derived (last recharge)
    <store>/accounts/<id>/conversations.json
    <store>/accounts/<id>/outbox.json  alerts not yet delivered (pending and dead)
    <store>/accounts/<id>/entries/000000.jsonl, 000001.jsonl, ...   the journal, CHUNK entries a file
    <store>/accounts/<id>/ops/...      idempotency records (key, fingerprint, what the result was)
    <store>/accounts/<id>/audit/...    who did what
    <store>/accounts/<id>/alerts/...   delivered alerts, archived

The hot files are TinyDB documents (`{"table": {"doc id": {...}}}`), rewritten whole when they change; they hold
what is current, not what happened. What grows with history (entries, operations, audit, delivered alerts) is an
append-only log split into fixed-size chunk files of JSON Lines (one document a line, the n-th line of chunk c is
document c * CHUNK + n + 1): a commit appends its new lines to the newest chunk, so an operation costs the same
at 1k or 1M entries. Chunks written before JSON Lines are TinyDB documents (`000000.json`, `{"_default": {"1":
...}}`); they are read as they are, and the newest one moves to `.jsonl` (whole) at its first append.

Threads: the writer thread appends; any thread may read a document up to a count it got from a published view
(backend.py), which the writer only publishes after the commit that wrote it. Only the newest chunk of each log
(and the one it followed) is kept in memory; closed chunks are read from disk on demand through a small shared
cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping

import orjson

from .files import Change, line

ACCOUNTS = "accounts.json"
DEFAULT_TABLE = "_default"
_CHUNK_NAME = re.compile(r"^(\d{6})\.(json|jsonl)$")


def account_dir(tenant_id: str) -> str:
    """Folder of a tenant's account: a digest, because tenant ids are opaque strings from the outside."""
    return "accounts/" + hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


# --- hot files: TinyDB's document format --------------------------------------------------------------------------

def read_tables(root: Path, rel: str) -> dict[str, list[dict[str, Any]]]:
    """A TinyDB file's tables, each a list of its documents in id order ({} when the file does not exist)."""
    try:
        raw = (root / rel).read_bytes()
    except FileNotFoundError:
        return {}
    data = orjson.loads(raw) if raw else {}
    return {name: [doc for _, doc in sorted(table.items(), key=lambda item: int(item[0]))]
            for name, table in data.items()}


def table_bytes(docs: list[bytes]) -> bytes:
    """One TinyDB table from already encoded documents, numbered 1, 2, ... in the given order."""
    return b"{" + b",".join(b'"%d":%s' % (i, doc) for i, doc in enumerate(docs, start=1)) + b"}"


def file_bytes(tables: Mapping[str, bytes]) -> bytes:
    """A TinyDB file from encoded tables (`table_bytes`)."""
    return b"{" + b",".join(orjson.dumps(name) + b":" + table for name, table in tables.items()) + b"}"


# --- closed chunks: read on demand ----------------------------------------------------------------------------------

class NeedsDisk(Exception):
    """Raised instead of reading a file on a thread that must not wait on disk (the event loop)."""


_local = threading.local()


class memory_only:
    """Within this block, on this thread, a log read that would go to disk raises `NeedsDisk`."""

    def __enter__(self) -> None:
        _local.memory_only = True

    def __exit__(self, *exc: object) -> None:
        _local.memory_only = False


class ChunkCache:
    """The closed chunks read lately, shared by every log of the store (least recently used out). Closed chunks are
    never written again, so a cached one stays true; any thread may use it."""

    def __init__(self, capacity: int = 16) -> None:
        self._capacity = capacity
        self._chunks: OrderedDict[str, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, rel: str) -> list[bytes] | None:
        with self._lock:
            lines = self._chunks.get(rel)
            if lines is not None:
                self._chunks.move_to_end(rel)
            return lines

    def put(self, rel: str, lines: list[bytes]) -> None:
        with self._lock:
            self._chunks[rel] = lines
            self._chunks.move_to_end(rel)
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()


class ChunkedLog:
    """An append-only sequence of JSON documents numbered from 1, `chunk` to a file.

    The writer `append`s documents encoded as lines (`files.line`: JSON and a newline) and gets the file changes to
    commit; readers ask for documents up to a count that was published (see the module docstring). The newest
    chunk's lines live in memory.
    """

    def __init__(self, root: Path, cache: ChunkCache, folder: str, chunk: int) -> None:
        self._root = root
        self._cache = cache
        self._folder = folder
        self._chunk = chunk
        # (number, lines, legacy): the newest chunk, swapped as one value so a reader never mixes two chunks
        self._tail: tuple[int, list[bytes], bool] = (0, [], False)
        # the chunk before it, kept until the next one closes: it reaches its file only with the commit that
        # filled it, and a reader may ask for it as soon as the writer started the next chunk
        self._previous: tuple[int, list[bytes]] = (-1, [])
        self._tail_bytes = 0  # size of the newest chunk's .jsonl file, appends included

    def _name(self, number: int, ext: str = "jsonl") -> str:
        return f"{self._folder}/{number:06d}.{ext}"

    def load(self) -> "ChunkedLog":
        """Find the newest chunk on disk and read it into memory (writer thread, at open)."""
        numbers: dict[int, set[str]] = {}
        try:
            with os.scandir(self._root / self._folder) as it:
                for item in it:
                    m = _CHUNK_NAME.match(item.name)
                    if m:
                        numbers.setdefault(int(m.group(1)), set()).add(m.group(2))
        except FileNotFoundError:
            pass
        if not numbers:
            self._tail, self._tail_bytes = (0, [], False), 0
            return self
        newest = max(numbers)
        lines = self._read_chunk(newest)
        legacy = "jsonl" not in numbers[newest]
        self._tail = (newest, lines, legacy)
        self._tail_bytes = 0 if legacy else sum(map(len, lines))
        return self

    @property
    def count(self) -> int:
        """Documents in the log, including those appended by the commit being prepared."""
        number, lines, _ = self._tail
        return number * self._chunk + len(lines)

    def append(self, lines: list[bytes]) -> list[Change]:
        """Append encoded documents (writer thread) and return the file changes that make them durable. Until
        the commit that carries those changes is published, readers must not ask for the new documents."""
        changes: list[Change] = []
        number, tail, legacy = self._tail
        i = 0
        while i < len(lines):
            if len(tail) >= self._chunk:   # full: the next document opens a new chunk
                self._previous = (number, tail)
                self._cache.put(self._name(number), tail)
                number, tail, legacy = number + 1, [], False
                self._tail, self._tail_bytes = (number, tail, legacy), 0
            part = lines[i:i + self._chunk - len(tail)]
            full = len(tail) + len(part) == self._chunk   # closed by this commit: readers will read its file
            data = b"".join(part)
            if legacy:   # a chunk written before JSON Lines: it becomes one, whole, and supersedes the old file
                data = b"".join(tail) + data
                changes.append(Change(self._name(number), None, data, replaces=self._name(number, "json"),
                                      flush=full))
                legacy = False
                self._tail, self._tail_bytes = (number, tail, legacy), len(data)
            else:
                changes.append(Change(self._name(number), self._tail_bytes, data, flush=full))
                self._tail_bytes += len(data)
            tail.extend(part)
            i += len(part)
        return changes

    # --- reading (any thread, up to a published count) ----------------------------------------------------------
    def line(self, seq: int) -> bytes:
        number, idx = divmod(seq - 1, self._chunk)
        return self._lines(number)[idx]

    def get(self, seq: int) -> dict[str, Any] | None:
        if seq < 1 or seq > self.count:
            return None
        return orjson.loads(self.line(seq))

    def newest_first(self, before: int) -> Iterator[dict[str, Any]]:
        """Documents with seq < `before`, newest first, one chunk at a time."""
        seq = before - 1
        while seq >= 1:
            number, idx = divmod(seq - 1, self._chunk)
            lines = self._lines(number)
            for i in range(idx, -1, -1):
                yield orjson.loads(lines[i])
            seq = number * self._chunk

    def oldest_first(self, upto: int) -> Iterator[dict[str, Any]]:
        """Documents with seq <= `upto`, oldest first."""
        seq = 1
        while seq <= upto:
            number, idx = divmod(seq - 1, self._chunk)
            lines = self._lines(number)
            last = min(self._chunk, upto - number * self._chunk)
            for i in range(idx, last):
                yield orjson.loads(lines[i])
            seq = (number + 1) * self._chunk + 1

    def _lines(self, number: int) -> list[bytes]:
        tail_number, tail, _ = self._tail
        if number == tail_number:
            return tail
        previous_number, previous = self._previous
        return previous if number == previous_number else self._closed(number)

    def _closed(self, number: int) -> list[bytes]:
        rel = self._name(number)
        lines = self._cache.get(rel)
        if lines is not None:
            return lines
        if getattr(_local, "memory_only", False):
            raise NeedsDisk(rel)
        lines = self._read_chunk(number)
        if len(lines) == self._chunk:  # complete: a closed chunk never changes again (see `_read_chunk`)
            self._cache.put(rel, lines)
        return lines

    def _read_chunk(self, number: int) -> list[bytes]:
        """A chunk's documents, encoded, from its file. A chunk that closed in the commit being written may be
        read while its last lines are still being written: only complete lines count, and such a read is not
        cached (every line a reader may ask for was written before it was published)."""
        for _ in range(2):   # a legacy chunk may be superseded (and removed) between the two looks
            raw = _read(self._root / self._name(number))
            if raw is not None:
                lines = raw.splitlines(keepends=True)
                if lines and not lines[-1].endswith(b"\n"):
                    lines.pop()  # a line still being written
                return lines
            raw = _read(self._root / self._name(number, "json"))
            if raw is not None:
                docs = orjson.loads(raw).get(DEFAULT_TABLE, {})
                return [line(doc) for _, doc in sorted(docs.items(), key=lambda item: int(item[0]))]
        return []


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
