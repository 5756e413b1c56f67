"""`python -m bot import-usage | sync | demo-usage`: usage from the command line.

A store that another process holds (TinyDB: the running bot) is not opened; the rows or the sync request go to
that bot through its loopback admin endpoint (`bot.admin_api`), in chunks, and the summary is the same. Exit
codes: 0 done; 1 done but some rows were rejected; 2 could not run (message on stderr, never a traceback).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from storage import open_ledger
from storage.errors import StoreLocked

from .admin_api import read_token, token_path
from .i18n import format_money
from .settings import Settings, check_store, redact_url
from .usage.rows import BadRow, UsageRow, row_to_wire
from .usage.sync import UsageReport
from .usage.service import UsageService, UsageTargetError, resolve_tenant

PROG = "python -m bot"
#: Rows per request when handing rows to the running bot.
CHUNK = 5000


class CliError(Exception):
    """Stops the command with this message (exit 2)."""


def import_usage(settings: Settings, file: Path, *, tenant: str | None, store: str | None) -> int:
    from .usage.csv_export import ExportError, export_size
    from .usage.files import ExportReaderDied

    location = store or settings.store
    try:
        _check_location(location, store is not None)
        if not file.is_file():
            raise CliError(f"no such file: {file}")
        size = export_size(file)
        with _progress(file.name, size) as advance:
            report = asyncio.run(_import(location, tenant, file, advance, settings))
    except (CliError, ExportError, ExportReaderDied, UsageTargetError) as exc:
        return _fail(str(exc))
    print(format_report(report, settings.locale, title=f"Imported {file.name}"))
    return 1 if report.rejected else 0


async def _import(location: str, tenant: str | None, file: Path, advance: Callable[[int], None],
                  settings: Settings) -> UsageReport:
    from .usage.csv_export import read_export
    from .usage.files import export_rows_for

    try:
        ledger = await open_ledger(location)
    except StoreLocked:
        return await _import_via_bot(location, tenant, read_export(file, progress=advance))
    try:
        target = await resolve_tenant(ledger, tenant)
        service = UsageService(ledger, None, interval_minutes=60, billed=settings.billed_capabilities)
        return await service.import_rows(target, export_rows_for(ledger, file, progress=advance), source="csv")
    finally:
        await ledger.close()


async def _import_via_bot(location: str, tenant: str | None, rows: Iterator[UsageRow | BadRow]) -> UsageReport:
    url, token = _running_bot(location)
    report: UsageReport | None = None
    local_bad = UsageReport(tenant or "", "csv", "")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        while True:
            chunk = list(islice(rows, CHUNK))
            if not chunk:
                break
            good = [row_to_wire(r) for r in chunk if isinstance(r, UsageRow)]
            for bad in (r for r in chunk if isinstance(r, BadRow)):
                local_bad.read += 1
                local_bad.reject(bad.where, bad.reason)
            if good:
                part = UsageReport.from_dict(await _post(session, f"{url}/api/admin/usage",
                                                         {"tenant": tenant, "source": "csv", "rows": good}))
                if report is None:
                    report = part
                else:
                    report.merge(part)
    if report is None:   # nothing readable: still say which account would have been used
        return local_bad
    report.merge(local_bad)
    return report


def sync(settings: Settings, *, tenant: str | None, store: str | None) -> int:
    location = store or settings.store
    try:
        _check_location(location, store is not None)
        reports = asyncio.run(_sync(location, tenant, settings))
    except (CliError, UsageTargetError) as exc:
        return _fail(str(exc))
    for report in reports:
        print(format_report(report, settings.locale, title=f"Synced usage of {report.tenant_id} from Graph"))
    return 1 if any(r.rejected for r in reports) else 0


async def _sync(location: str, tenant: str | None, settings: Settings) -> list[UsageReport]:
    from .usage.graph import GraphError, GraphUsageClient

    try:
        ledger = await open_ledger(location)
    except StoreLocked:
        url, token = _running_bot(location)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
            answer = await _post(session, f"{url}/api/admin/sync", {"tenant": tenant})
        return [UsageReport.from_dict(r) for r in answer["reports"]]
    try:
        if not settings.graph_enabled:
            raise CliError("usage sync from Microsoft Graph is not configured: set GRAPH_TENANT_ID, GRAPH_CLIENT_ID "
                           "and GRAPH_CLIENT_SECRET (see the README), or import the admin center's export with "
                           f"`{PROG} import-usage FILE`")
        if settings.graph_tenant_id:
            await ledger.open_account(settings.graph_tenant_id, settings.currency)
        target = await resolve_tenant(ledger, tenant) if tenant else None
        async with aiohttp.ClientSession() as session:
            graph = GraphUsageClient(session=session, client_id=settings.graph_client_id or "",
                                     client_secret=settings.graph_client_secret or "",
                                     login_url=settings.graph_login_url, graph_url=settings.graph_url)
            try:
                return await UsageService(ledger, graph, interval_minutes=settings.graph_sync_interval,
                                          billed=settings.billed_capabilities).sync(target)
            except GraphError as exc:
                raise CliError(getattr(exc, "admin_message", None) or str(exc)) from None
            finally:
                await graph.close()
    finally:
        await ledger.close()


def demo_usage(settings: Settings, out: Path, *, days: int, calls_per_day: int, currency: str | None) -> int:
    from .usage.demo import write_demo_csv

    if not 1 <= days <= 366 or not 1 <= calls_per_day <= 10_000:
        return _fail("--days must be 1 to 366 and --calls-per-day 1 to 10000")
    start = (datetime.now(timezone.utc) - timedelta(days=days)).replace(microsecond=0)
    summary = write_demo_csv(out, start=start, days=days, calls_per_day=calls_per_day,
                             currency=(currency or settings.currency).upper())
    print(f"Wrote {out}: {summary.rows:,} invented calls from {summary.first_call:%Y-%m-%d} to "
          f"{summary.last_call:%Y-%m-%d}, {summary.billed_rows:,} of them paid from Communications Credits "
          f"({summary.total_billed} {(currency or settings.currency).upper()}).")
    print(f"Next: {PROG} import-usage {out}")
    return 0


# --- helpers -----------------------------------------------------------------------------------------------------

def format_report(report: UsageReport, locale: str, *, title: str) -> str:
    """The summary both commands print (and the running bot's answer is shown the same way)."""
    def money(minor: int) -> str:
        return format_money(minor, report.currency, locale) if report.currency else str(minor)

    skipped = ", ".join(f"{reason}: {n:,}" for reason, n in sorted(report.skipped_by_reason.items()))
    lines = [f"{title} into tenant {report.tenant_id} ({report.currency or '?'})",
             f"  rows read:       {report.read:,}",
             f"  debited:         {report.debited:,}   {money(report.total)} "
             f"(exact charges {report.exact_total} {report.currency})",
             f"  skipped:         {report.skipped:,}" + (f"   ({skipped})" if skipped else ""),
             f"  rejected:        {report.rejected:,}",
             f"  auto-recharges:  {report.recharges:,}",
             f"  alerts queued:   {report.alerts:,}"]
    if report.balance is not None:
        lines.append(f"  balance now:     {money(report.balance)}")
    if report.problems:
        lines.append(f"rejected rows (first {len(report.problems)}):")
        lines.extend(f"  - {p}" for p in report.problems)
    return "\n".join(lines)


def _check_location(location: str, explicit: bool) -> None:
    problem = check_store(location)
    if problem:
        raise CliError(f"{'--store' if explicit else 'CREDITS_STORE'}: {problem}")
    if "://" not in location and not Path(location).is_dir():
        raise CliError(f"no store at {location}: start the bot once (`make run`) so that it creates it")


def _running_bot(location: str) -> tuple[str, str]:
    path = token_path(location)
    try:
        if path is None:
            raise FileNotFoundError
        token, port = read_token(path)
    except (FileNotFoundError, ValueError, KeyError):
        raise CliError(f"the store {redact_url(location)} is in use by another process, and no running bot's "
                       "admin token was found beside it") from None
    return f"http://127.0.0.1:{port}", token


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=600)) as response:
            if response.status != 200:   # the status first: a refusal need not be JSON
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                message = answer.get("error") if isinstance(answer, dict) else None
                raise CliError(f"the running bot refused: {message or f'HTTP {response.status}'}")
            return await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise CliError(f"could not reach the running bot at {url} ({type(exc).__name__})") from None


class _progress:
    """A progress bar over the file's bytes on stderr (nothing when stderr is not a terminal)."""

    def __init__(self, name: str, total: int) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty())
        self._task = self._bar.add_task(name, total=total)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._bar.start()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2

