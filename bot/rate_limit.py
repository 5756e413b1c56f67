"""A per-user limit on commands (`CREDITS_RATE_LIMIT`, for example `30/min`): a token bucket per (tenant, user).

Pure: no I/O, no botbuilder. Time comes from the app's clock (`storage.clock`), so tests move a `FakeClock`
instead of sleeping.

Each user (the Entra object id within a tenant) has a bucket of `count` tokens that refills at `count` per
`period`: a burst of up to `count` commands goes through at once, then one more each `period / count`. A command
that finds the bucket empty is refused. The first refusal of a run of refusals is a `Decision` with `notify=True`
and the wait until the next token (the handler answers it politely, once); the following ones have
`notify=False` (the handler drops them silently), until a command goes through again. So a flood gets one reply,
not one per message. Each bot process keeps its own buckets (several processes over PostgreSQL: N each).

Memory is bounded. Buckets are kept in order of last use; a bucket that has refilled completely is the same as no
bucket, so idle users are forgotten as they reach the front. If there are still more than `max_users` (a flood of
distinct senders), the least recently seen are forgotten even when not full: the limiter then fails open for
them, never closed.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Hashable

from storage.clock import Clock, utc_now

#: Default `CREDITS_RATE_LIMIT`: a burst of 30, then one command every two seconds.
DEFAULT_RATE_LIMIT = "30/min"
#: Buckets kept at most (about 100 bytes each).
MAX_USERS = 10_000

_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_FORM = re.compile(r"\s*([0-9]{1,9})\s*/\s*([a-z]+)\s*", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class RateLimit:
    """`count` commands per `per_seconds`, per user."""

    count: int
    per_seconds: int

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}.get(self.per_seconds)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.per_seconds}s"


def parse_rate_limit(text: str) -> RateLimit | None:
    """`"30/min"` (also `/s`, `/sec`, `/second`, `/minute`, `/h`, `/hour`) to a `RateLimit`; `"0"` (or `0/min`)
    to None: no limit. `ValueError` for anything else."""
    stripped = text.strip()
    if stripped == "0":
        return None
    match = _FORM.fullmatch(stripped)
    if match is None or match[2].lower() not in _UNITS:
        raise ValueError(f"not a rate limit: {text!r}")
    count = int(match[1])
    return RateLimit(count, _UNITS[match[2].lower()]) if count else None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Refused, and the first refusal since the user's last allowed command: tell them (once).
    notify: bool = False
    #: Refused: how long until the next command would go through.
    retry_after: timedelta = timedelta(0)


ALLOW = Decision(True)


@dataclass
class _Bucket:
    level: int          # in token-microseconds: one token is `per_seconds` * 10**6 (exact integer arithmetic)
    at: datetime
    notified: bool = False


_MICROSECOND = timedelta(microseconds=1)


class RateLimiter:
    """See the module docstring. `check(key)` for every command; `key` is any hashable, e.g. (tenant, user)."""

    def __init__(self, limit: RateLimit | None, *, clock: Clock = utc_now, max_users: int = MAX_USERS) -> None:
        self._limit = limit
        self._clock = clock
        self._max_users = max_users
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        # a bucket refills `count` units per microsecond; a token costs `_token`; a full bucket holds `_full`
        self._token = (limit.per_seconds * 1_000_000) if limit else 0
        self._full = (limit.count * self._token) if limit else 0

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    def __len__(self) -> int:
        """Users currently remembered (for tests and metrics)."""
        return len(self._buckets)

    def check(self, key: Hashable) -> Decision:
        """Take one token from `key`'s bucket if there is one. Buckets of users idle long enough to be full
        again are forgotten first; over `max_users`, the least recently seen."""
        if self._limit is None:
            return ALLOW
        now = self._clock()
        self._forget_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._full, now)
        else:
            bucket.level = self._level(bucket, now)
            bucket.at = max(bucket.at, now)   # a clock that steps back refills nothing
            self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)   # never `key`: it is the most recent
        if bucket.level >= self._token:
            bucket.level -= self._token
            bucket.notified = False
            return ALLOW
        wait_us = -(-(self._token - bucket.level) // self._limit.count)   # ceiling division
        notify = not bucket.notified
        bucket.notified = True
        return Decision(False, notify=notify, retry_after=timedelta(seconds=max(-(-wait_us // 1_000_000), 1)))

    def _level(self, bucket: _Bucket, now: datetime) -> int:
        assert self._limit is not None
        elapsed = max((now - bucket.at) // _MICROSECOND, 0)
        return min(self._full, bucket.level + elapsed * self._limit.count)

    def _forget_idle(self, now: datetime) -> None:
        """Drop buckets from the least recently used end while they have refilled completely: a full bucket is
        the same as none. (Amortised O(1): each bucket is dropped once.)"""
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if self._level(oldest, now) < self._full:
                break
            del self._buckets[key]
