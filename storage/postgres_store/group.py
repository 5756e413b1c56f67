"""Group commit per account: concurrent money operations on one tenant share one transaction (issue #9).

Every operation on an account takes the account's row lock (`FOR UPDATE`) and holds it across its round trips
and its COMMIT's WAL flush, so one account commits at most one operation per flush. `GroupCommit` queues the
money operations of a process per tenant; one runner task per tenant with work takes everything queued (up to
`limit`) and hands it to `run`, which executes the whole batch in ONE transaction and returns one `Outcome` per
operation, in order. Then each caller's future gets its own result or exception.

Semantics kept from running the operations one after another:

* Order: a batch is applied in arrival order; a later batch starts after the previous one committed.
* No added latency: nothing waits for company (no timer). A lone operation runs at once; the operations
  that arrive while a transaction is in flight form the next batch.
* A failure that belongs to one operation (`Outcome.error`: a `LedgerError`, a bad key) fails that operation
  alone: `run` applies each on its own copy of the state, so it records nothing and the next one sees the
  state as it was.
* A failure of the transaction itself (`run` raises: a database error, a lost connection) is retried one
  operation at a time, so only an operation that fails alone fails. A retry after a COMMIT whose answer was
  lost finds its key recorded and returns the replay, as any caller's retry would.
* Cancellation: a caller that is cancelled leaves its request behind. `run` skips a request whose caller is
  gone when it comes to apply it (`Pending.cancelled`: nothing recorded); one cancelled after it was applied
  may still be committed (as a single operation cancelled while its COMMIT is on the wire). The batch goes on
  for the others either way.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Generic, Sequence, TypeVar

Op = TypeVar("Op")

#: The most operations one transaction takes.
DEFAULT_LIMIT = 64


@dataclass(frozen=True)
class Outcome:
    """What one operation of a batch came to: its `value`, or the `error` it raised (nothing recorded), or
    `skipped` (its caller was gone before it was applied: nothing recorded)."""

    value: Any = None
    error: BaseException | None = None
    skipped: bool = False


@dataclass(eq=False)
class Pending(Generic[Op]):
    """One queued operation and the future its caller awaits."""

    op: Op
    future: asyncio.Future[Any] = field(repr=False)

    @property
    def cancelled(self) -> bool:
        """Whether the caller stopped waiting (its future is cancelled): the operation need not run."""
        return self.future.done()

    def settle(self, outcome: Outcome) -> None:
        """Hand the caller its outcome (nothing when it is gone)."""
        if self.future.done():
            return
        if outcome.error is not None:
            self.future.set_exception(outcome.error)
        elif outcome.skipped:
            self.future.cancel()
        else:
            self.future.set_result(outcome.value)


Runner = Callable[[str, Sequence[Pending[Op]]], Awaitable[list[Outcome]]]


class GroupCommit(Generic[Op]):
    """Per-tenant queues of operations, each drained by one runner task in batches of at most `limit`.

    `run(tenant, batch)` executes a batch in one transaction and returns one `Outcome` per operation; it raises
    when the transaction as a whole failed (then each operation is run again alone)."""

    def __init__(self, run: Runner[Op], *, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._run = run
        self._limit = limit
        self._queues: dict[str, Deque[Pending[Op]]] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        #: Counters for tests and benchmarks: transactions run, operations they carried.
        self.batches = 0
        self.operations = 0

    async def submit(self, tenant: str, op: Op) -> Any:
        """Queue `op` on `tenant`'s account and wait for its own result (or exception)."""
        loop = asyncio.get_running_loop()
        pending: Pending[Op] = Pending(op, loop.create_future())
        self._queues.setdefault(tenant, collections.deque()).append(pending)
        if tenant not in self._runners:
            self._runners[tenant] = loop.create_task(self._drain(tenant))
        return await pending.future

    async def close(self) -> None:
        """Wait until every queued operation has been run (the callers get their outcomes)."""
        while self._runners:
            await asyncio.gather(*self._runners.values(), return_exceptions=True)

    def _next_batch(self, tenant: str) -> list[Pending[Op]]:
        """Up to `limit` queued operations whose callers still wait, oldest first."""
        queue = self._queues.get(tenant)
        batch: list[Pending[Op]] = []
        while queue and len(batch) < self._limit:
            pending = queue.popleft()
            if not pending.cancelled:
                batch.append(pending)
        return batch

    async def _drain(self, tenant: str) -> None:
        """The tenant's runner: batch after batch until its queue is empty."""
        batch: list[Pending[Op]] = []
        try:
            while batch := self._next_batch(tenant):
                await self._run_batch(tenant, batch)
        except BaseException as exc:   # the runner itself was cancelled (loop shutdown): fail its callers
            for pending in [*batch, *self._queues.get(tenant, ())]:
                pending.settle(Outcome(error=RuntimeError(f"the ledger's runner stopped: {exc!r}")))
            self._queues.pop(tenant, None)
            raise
        finally:   # no await since the queue was found empty: nothing can have been queued meanwhile
            del self._runners[tenant]
            self._queues.pop(tenant, None)

    async def _run_batch(self, tenant: str, batch: list[Pending[Op]]) -> None:
        """One transaction for `batch`; if it fails as a whole, one transaction per operation."""
        try:
            outcomes = await self._transaction(tenant, batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].settle(Outcome(error=exc))
                return
            await self._one_by_one(tenant, batch)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.settle(outcome)

    async def _one_by_one(self, tenant: str, batch: list[Pending[Op]]) -> None:
        """After a failed batch: each operation in its own transaction, in order."""
        for pending in batch:
            if pending.cancelled:
                continue
            try:
                outcomes = await self._transaction(tenant, [pending])
            except Exception as exc:
                outcomes = [Outcome(error=exc)]
            pending.settle(outcomes[0])

    async def _transaction(self, tenant: str, batch: list[Pending[Op]]) -> list[Outcome]:
        self.batches += 1
        self.operations += len(batch)
        return await self._run(tenant, batch)


