"""The usage service of a running app: Graph syncs on a schedule and on demand, imports of rows handed over by
the CLI or dropped in chat. One per app; the chat `sync` command, the admin endpoint and the schedule share it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import AsyncIterable, Iterable

from storage import AccountNotFound, Ledger
from storage.clock import Clock, utc_now

from .rows import DEFAULT_BILLED_CAPABILITIES, BadRow, UsageRow
from .sync import PstnSource, UsageImporter, UsageReport, sync_graph

log = logging.getLogger(__name__)


class UsageTargetError(Exception):
    """The account to import into cannot be chosen: the message says why, in words for an admin."""


async def resolve_tenant(ledger: Ledger, tenant: str | None) -> str:
    """The account rows go to: `tenant` if it has an account, else the only account of the store."""
    tenants = await ledger.tenants()
    if tenant:
        if tenant not in tenants:
            raise UsageTargetError(f"the store has no account for tenant {tenant}; the bot opens one when someone "
                                   f"in that tenant first talks to it (accounts: {', '.join(tenants) or 'none'})")
        return tenant
    if len(tenants) == 1:
        return tenants[0]
    if not tenants:
        raise UsageTargetError("the store has no account yet: talk to the bot in Teams once (or start it with "
                               "GRAPH_TENANT_ID set), then import")
    raise UsageTargetError(f"the store has {len(tenants)} accounts; say which with --tenant "
                           f"({', '.join(tenants)})")


class UsageService:
    """See the module docstring. `graph` is None when Graph sync is not configured."""

    def __init__(self, ledger: Ledger, graph: PstnSource | None, *, interval_minutes: int,
                 billed: Iterable[str] = DEFAULT_BILLED_CAPABILITIES, clock: Clock = utc_now) -> None:
        self.ledger = ledger
        self.graph = graph
        self._interval = interval_minutes * 60
        self._billed = frozenset(billed)
        self._clock = clock
        self._lock = asyncio.Lock()          # one sync at a time: the schedule and a chat `sync` never overlap
        self._task: asyncio.Task[None] | None = None

    async def sync(self, tenant: str | None = None, *, actor: str | None = None) -> list[UsageReport]:
        """Sync Graph now for `tenant` (or every account). Raises what the Graph client raises (for example
        `GraphPermissionError` with an admin message); `RuntimeError` when Graph is not configured."""
        if self.graph is None:
            raise RuntimeError("usage sync from Microsoft Graph is not configured")
        async with self._lock:
            tenants = [tenant] if tenant else await self.ledger.tenants()
            reports = []
            for t in tenants:
                kwargs = {"actor": actor} if actor else {}
                reports.append(await sync_graph(self.ledger, self.graph, t, now=self._clock(),
                                                billed=self._billed, **kwargs))
            return reports

    async def import_rows(self, tenant: str, rows: Iterable[UsageRow | BadRow] | AsyncIterable[UsageRow | BadRow],
                          *, source: str, actor: str | None = None) -> UsageReport:
        account = await self.ledger.get_account(tenant)
        kwargs = {"actor": actor} if actor else {}
        importer = UsageImporter(self.ledger, tenant, account.currency, source=source, billed=self._billed,
                                 **kwargs)
        await importer.add_all(rows)
        await importer.flush()
        return importer.report

    # --- the schedule -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.graph is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            started: datetime = self._clock()
            try:
                async with self.ledger.leading("usage-sync") as leader:
                    reports = await self.sync() if leader else []   # one bot of several syncs at a time
                for report in reports:
                    log.info("usage sync done", extra={"tenant": report.tenant_id, "read": report.read,
                                                       "debited": report.debited, "skipped": report.skipped,
                                                       "rejected": report.rejected, "total": report.total})
            except AccountNotFound:
                pass  # an account vanished between listing and syncing: the next run sees the new list
            except Exception as exc:
                incident = uuid.uuid4().hex[:12]
                log.warning("incident %s: usage sync failed (%s); next try in %d minutes", incident,
                            type(exc).__name__, self._interval // 60, exc_info=True)
            elapsed = (self._clock() - started).total_seconds()
            await asyncio.sleep(max(1.0, self._interval - elapsed))
