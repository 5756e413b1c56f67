"""Compact in-memory indexes of an account, kept by the writer thread and read by any thread.

`KeyIndex` maps a string (an idempotency key, an alert id) to the sequence number of the log document that holds
it, in about 16 bytes an entry: it stores a 64-bit hash of the string, not the string, so a hit is only a
*candidate* that the caller confirms against the document (which holds the full key and fingerprint).

`UsageWindow` keeps, for the usage entries recorded since a moment, what the forecast needs (when recorded, when
the call happened, how much), so the balance card never reads the journal.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from datetime import datetime

#: Entries stay in the mutable dict part of a `KeyIndex` until there are this many, then become a sorted run.
_RECENT = 2048
#: Runs are merged pairwise while the newer one is at least this fraction of the older one (LSM-like levels), up
#: to this size: so there are O(log n) runs, and a merge never copies more than that many entries.
_MAX_MERGE = 1 << 18


_MASK64 = (1 << 64) - 1


def key_hash(key: str) -> int:
    """An unsigned 64-bit hash of a key, stable for the life of the process (the index is never stored)."""
    return hash(key) & _MASK64


class KeyIndex:
    """string -> sequence numbers of the documents that may hold it (usually one; two strings may share a hash).

    One writer adds; readers look up concurrently without locks: `_recent` is only changed by single dict
    operations, and sorted runs are immutable arrays swapped in with one assignment of a new list.
    """

    def __init__(self) -> None:
        self._recent: dict[int, int | tuple[int, ...]] = {}
        self._runs: list[tuple[array, array]] = []  # (sorted hashes "Q", their seqs "I"), oldest first

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._runs) + len(self._recent)

    def add(self, key: str, seq: int) -> None:
        h = key_hash(key)
        have = self._recent.get(h)
        self._recent[h] = seq if have is None else (*(have if isinstance(have, tuple) else (have,)), seq)
        if len(self._recent) >= _RECENT:
            self._freeze()

    def candidates(self, key: str) -> list[int]:
        """Sequence numbers of documents that may hold `key`, oldest first."""
        h = key_hash(key)
        found: list[int] = []
        runs, recent = self._runs, self._recent.get(h)
        for hashes, seqs in runs:
            i = bisect.bisect_left(hashes, h)
            while i < len(hashes) and hashes[i] == h:
                found.append(seqs[i])
                i += 1
        if recent is not None:
            found.extend(recent if isinstance(recent, tuple) else (recent,))
        return found

    def _freeze(self) -> None:
        # (hash, seq) packed into one int sorts in C, a tuple would not; seqs are below 2**32
        packed = sorted((h << 32) | s for h, v in self._recent.items()
                        for s in (v if isinstance(v, tuple) else (v,)))
        runs = [*self._runs, _run(packed)]
        while len(runs) >= 2 and len(runs[-2][0]) + len(runs[-1][0]) <= _MAX_MERGE \
                and len(runs[-1][0]) * 2 >= len(runs[-2][0]):
            (h1, s1), (h2, s2) = runs[-2], runs[-1]
            merged = sorted([(h << 32) | s for h, s in zip(h1, s1)] + [(h << 32) | s for h, s in zip(h2, s2)])
            runs[-2:] = [_run(merged)]
        self._runs = runs          # first the runs that now hold the recent entries,
        self._recent = {}          # then forget them: a reader in between sees them twice, never zero times


def _run(packed: list[int]) -> tuple[array, array]:
    return array("Q", [p >> 32 for p in packed]), array("I", [p & 0xFFFFFFFF for p in packed])


@dataclass
class UsageWindow:
    """Usage entries recorded at or after `since`: (recorded at, call time, money used) each, in journal order.

    The writer appends; a published view says how many items it saw (`AccountView` reads only those). To forget
    old items the writer makes a new window, so a published one only ever grows at its end.
    """

    since: datetime
    items: list[tuple[datetime, datetime, int]] = field(default_factory=list)

    def used(self, count: int, start: datetime, now: datetime) -> int:
        """Money used by calls in [start, now] among the first `count` items, of entries recorded since `start`
        (`start` must not be before `since`)."""
        return sum(amount for at, call, amount in self.items[:count] if at >= start and start <= call <= now)

    def pruned(self, since: datetime) -> "UsageWindow":
        return UsageWindow(since, [item for item in self.items if item[0] >= since])
