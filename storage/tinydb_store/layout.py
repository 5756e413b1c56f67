"""Where things live in an embedded store, and the append-only logs that keep writes small.

    <store>/LOCK                       flock of the process that owns the store
    <store>/journal                    only while a commit is in flight (see files.py)
    <store>/accounts.json              tenant id -> account folder
    <store>/accounts/<id>/state.json   hot state: balance, open lots, settings, edge triggers; roles; subscriptions;
                                       approvals (pending and decided)
    <store>/accounts/<id>/conversations.json
    <store>/accounts/<id>/outbox.json  alerts not yet delivered (pending and dead)
    <store>/accounts/<id>/entries/000000.json, 000001.json, ...   the journal, CHUNK entries a file
    <store>/accounts/<id>/ops/...      idempotency records (key, fingerprint, what the result was)
    <store>/accounts/<id>/audit/...    who did what
    <store>/accounts/<id>/alerts/...   delivered alerts, archived

TinyDB rewrites a whole file on every write, so cost grows with the file. What grows with history (entries,
operations, audit, delivered alerts) is split into fixed-size chunks: a write touches only the newest chunk, so
an operation costs the same at 1k or 1M entries. The hot files hold what is current, not what happened.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from tinydb import TinyDB
from tinydb.table import Document

from . import files

ACCOUNTS = "accounts.json"
DEFAULT_TABLE = "_default"


def account_dir(tenant_id: str) -> str:
    """Folder of a tenant's account: a digest, because tenant ids are opaque strings from the outside."""
    return "accounts/" + hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


class FileSet:
    """The store's TinyDB files, opened on demand and kept in memory (the process owns the store).

    Changes made through TinyDB's API only mark a file dirty; `commit()` makes all dirty files durable as one
    unit, `rollback()` forgets them. Clean chunk files are evicted beyond `max_open`.
    """

    def __init__(self, root: Path, max_open: int = 256) -> None:
        self.root = root
        self._max_open = max_open
        self._dbs: OrderedDict[str, tuple[TinyDB, files.DurableStorage]] = OrderedDict()

    def db(self, rel: str) -> TinyDB:
        hit = self._dbs.get(rel)
        if hit is not None:
            self._dbs.move_to_end(rel)
            return hit[0]
        holder: dict[str, files.DurableStorage] = {}

        def make_storage() -> files.DurableStorage:
            holder["s"] = files.DurableStorage(self.root / rel)
            return holder["s"]

        self._evict()  # before adding: the file being opened must never be the one evicted
        db = TinyDB(storage=make_storage)  # type: ignore[arg-type]
        self._dbs[rel] = (db, holder["s"])
        return db

    def table(self, rel: str, name: str = DEFAULT_TABLE):  # type: ignore[no-untyped-def]
        return self.db(rel).table(name, cache_size=0)

    def exists(self, rel: str) -> bool:
        return rel in self._dbs or (self.root / rel).exists()

    def _evict(self) -> None:
        """Close clean files beyond `max_open`. Dirty files stay open until committed, however many there are
        (a large usage batch may touch hundreds of chunks)."""
        while len(self._dbs) >= self._max_open:
            for rel, (_, storage) in self._dbs.items():
                if not storage.dirty:
                    del self._dbs[rel]
                    break
            else:
                return

    def dirty(self) -> list[tuple[str, bytes]]:
        return [(rel, storage.dump()) for rel, (_, storage) in self._dbs.items() if storage.dirty]

    def commit(self) -> None:
        files.commit(self.root, self.dirty())
        for _, storage in self._dbs.values():
            storage.dirty = False

    def rollback(self) -> None:
        for rel in [rel for rel, (_, s) in self._dbs.items() if s.dirty]:
            del self._dbs[rel]


class ChunkedLog:
    """An append-only sequence of documents numbered from 1, stored `chunk` to a TinyDB file."""

    def __init__(self, fileset: FileSet, folder: str, chunk: int) -> None:
        self._files = fileset
        self._folder = folder
        self._chunk = chunk

    def _rel(self, seq: int) -> str:
        return f"{self._folder}/{(seq - 1) // self._chunk:06d}.json"

    def append(self, docs: list[tuple[int, dict[str, Any]]]) -> None:
        """Append documents with their sequence numbers (consecutive, after the last one)."""
        by_file: dict[str, list[Document]] = {}
        for seq, doc in docs:
            by_file.setdefault(self._rel(seq), []).append(Document(doc, doc_id=seq))
        for rel, batch in by_file.items():
            self._files.table(rel).insert_multiple(batch)

    def get(self, seq: int) -> dict[str, Any] | None:
        if seq < 1:
            return None
        doc = self._files.table(self._rel(seq)).get(doc_id=seq)
        return dict(doc) if doc is not None else None

    def last_seq(self) -> int:
        """Highest sequence number stored (0 when empty), from the newest chunk file on disk or in memory."""
        folder = self._files.root / self._folder
        names = sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []
        if not names:
            return 0
        rows = self._files.table(f"{self._folder}/{names[-1]}")
        ids = [doc.doc_id for doc in rows.all()]
        return max(ids) if ids else 0

    def newest_first(self, before: int) -> Iterator[dict[str, Any]]:
        """Documents with seq < `before`, newest first, reading one chunk at a time."""
        seq = before - 1
        while seq >= 1:
            table = self._files.table(self._rel(seq))
            low = ((seq - 1) // self._chunk) * self._chunk + 1
            for s in range(seq, low - 1, -1):
                doc = table.get(doc_id=s)
                if doc is not None:
                    yield dict(doc)
            seq = low - 1

    def oldest_first(self, upto: int) -> Iterator[dict[str, Any]]:
        seq = 1
        while seq <= upto:
            table = self._files.table(self._rel(seq))
            high = min(upto, ((seq - 1) // self._chunk + 1) * self._chunk)
            for s in range(seq, high + 1):
                doc = table.get(doc_id=s)
                if doc is not None:
                    yield dict(doc)
            seq = high + 1
