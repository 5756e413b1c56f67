"""Command line: `python -m bot <command>` (also installed as `teams-credits-bot`).

Exit codes: 0 success; 1 `verify` found problems; 2 the command could not run (bad arguments, invalid
configuration, a store that cannot be opened or a port that cannot be bound). Errors are printed as one clear
message on stderr, never as a traceback, and never with a secret in them.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from pathlib import Path
from typing import Mapping, Sequence

from aiohttp import web

from storage import VerifyReport, open_ledger
from storage.errors import LedgerError, StoreCorrupt, StoreLocked

from . import package as app_package
from .app import create_app
from .heap import freeze_startup_heap
from .logging_setup import configure_logging
from .settings import Settings, SettingsError, check_store, load_settings, redact_url

PROG = "python -m bot"
log = logging.getLogger("bot")

_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Microsoft Teams bot for Communications Credits. Configuration comes from the environment "
                    "and ./.env (see .env.example).",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    commands.add_parser("serve", help="run the bot's HTTP server on HOST:PORT (default 127.0.0.1:3978)",
                        description="Run the bot's HTTP server on HOST:PORT with the store CREDITS_STORE.")
    verify = commands.add_parser("verify", help="check the ledger's invariants and report problems (exit 1 if any)",
                                 description="Open the store and check every ledger invariant.")
    verify.add_argument("--store", help="store to check instead of CREDITS_STORE (a directory, memory:// or URL)")
    verify.add_argument("--tenant", help="check only this tenant's account")
    migrate = commands.add_parser(
        "migrate", help="apply the PostgreSQL schema migrations (also done at start-up); idempotent",
        description="Apply the numbered SQL migrations to the PostgreSQL store (CREDITS_STORE or --store). "
                    "Safe to run any number of times, also while bots run.")
    migrate.add_argument("--store", help="postgresql:// URL instead of CREDITS_STORE")
    imp = commands.add_parser(
        "import-usage", help="import the Teams admin center's PSTN usage export (CSV or zip) as debits",
        description="Import PSTN calls from the admin center's export (PSTN.calls.<date>.csv, or the zip holding "
                    "them). Rows are matched by UsageId: importing a file twice changes nothing. Works while the "
                    "bot is running on the same store (the rows are handed to it). Exit 1 if rows were rejected.")
    imp.add_argument("file", type=Path, help="the .csv or .zip file")
    imp.add_argument("--tenant", help="the account's tenant id (needed only when the store has several accounts)")
    imp.add_argument("--store", help="store to import into instead of CREDITS_STORE")
    sync = commands.add_parser(
        "sync", help="read usage from Microsoft Graph now (GRAPH_* settings)",
        description="Read PSTN calls from Microsoft Graph since the last sync (with a 48-hour overlap) and record "
                    "them. Works while the bot is running on the same store.")
    sync.add_argument("--tenant", help="only this tenant's account (default: every account)")
    sync.add_argument("--store", help="store to use instead of CREDITS_STORE")
    copy = commands.add_parser(
        "copy-store", help="copy a whole store into an empty one (TinyDB <-> PostgreSQL), then verify the copy",
        description="Copy every account of SRC (entries, idempotency records, alerts, audit, settings, roles, "
                    "approvals, subscriptions, conversations, sync watermarks) into DST, which must hold no "
                    "account, then check that DST verifies and holds exactly the same facts. Stop the bot on SRC "
                    "first. Exit 1 if the check found problems.")
    copy.add_argument("src", metavar="SRC", help="store to copy: a directory (TinyDB) or a postgresql:// URL")
    copy.add_argument("dst", metavar="DST", help="empty store to copy into: a directory or a postgresql:// URL")
    demo = commands.add_parser(
        "demo-usage", help="write a realistic PSTN usage CSV with invented people and numbers",
        description="Write an admin-center-shaped PSTN.calls CSV of invented calls over the last days, to try "
                    "import-usage with.")
    demo.add_argument("--out", type=Path, default=Path("PSTN.calls.demo.csv"), help="file to write")
    demo.add_argument("--days", type=int, default=30, help="days of calls, ending now (default 30)")
    demo.add_argument("--calls-per-day", type=int, default=40, help="calls a day (default 40)")
    demo.add_argument("--currency", default=None, help="currency of the charges (default CREDITS_CURRENCY)")
    app_package.add_arguments(commands.add_parser(
        "package", help="write the Teams app package (manifest.json and icons in a zip) to upload to Teams",
        description="Fill in manifest/manifest.template.json (bot id, version, developer) with the command lists, "
                    "check it and the icons, and write the zip to upload in the Teams admin center or in Teams. "
                    "Needs no other configuration."))
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the command in `argv` (default `sys.argv[1:]`) and return the exit code.

    `environ` replaces the process environment and `.env` (for tests); by default both are read.
    """
    args = build_parser().parse_args(argv)
    if args.command == "package":  # a build step: the bot's own configuration need not be complete
        return app_package.run(args, environ)
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        return _fail(str(exc))
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings, store=args.store)
    if args.command == "copy-store":
        return copy_store(args.src, args.dst)
    if args.command in ("import-usage", "sync", "demo-usage"):
        from . import usage_cli
        if args.command == "import-usage":
            return usage_cli.import_usage(settings, args.file, tenant=args.tenant, store=args.store)
        if args.command == "sync":
            return usage_cli.sync(settings, tenant=args.tenant, store=args.store)
        return usage_cli.demo_usage(settings, args.out, days=args.days, calls_per_day=args.calls_per_day,
                                    currency=args.currency)
    return verify(settings, store=args.store, tenant=args.tenant)


def serve(settings: Settings) -> int:
    """Serve until interrupted (SIGINT/SIGTERM); 2 if the store or the address cannot be used."""
    log.info("starting", extra={"host": settings.host, "port": settings.port, "store": settings.store_display,
                                "mode": "local (authentication off)" if settings.local_mode else "authenticated"})
    try:
        app = create_app(settings)
        app.on_startup.append(freeze_startup_heap)   # after the store and sessions have started (ADR 0009)
        web.run_app(app, host=settings.host, port=settings.port, print=None,
                    shutdown_timeout=10.0,
                    access_log=logging.getLogger("aiohttp.access") if settings.access_log else None)
    except (StoreLocked, StoreCorrupt) as exc:
        return _fail(str(exc))
    except NotImplementedError as exc:
        return _fail(f"CREDITS_STORE {settings.store_display}: {exc}")
    except OSError as exc:
        if exc.errno in _BIND_ERRNOS:
            return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
        raise
    return 0


def verify(settings: Settings, *, store: str | None = None, tenant: str | None = None) -> int:
    """Print the invariant check of the store (`store` or `settings.store`, one `tenant` or all); 1 if it found
    problems (a store too corrupt to open is one), 2 if it could not check (missing or locked store)."""
    location = store or settings.store
    problem = check_store(location)
    if problem:
        return _fail(f"{'--store' if store else 'CREDITS_STORE'}: {problem}")
    if "://" not in location and not Path(location).is_dir():
        return _fail(f"no store at {location} (nothing to verify)")
    try:
        report = asyncio.run(_verify(location, tenant))
    except StoreCorrupt as exc:  # the store does not even open: that is the one problem to report
        report = VerifyReport(accounts=0, entries=0, problems=(str(exc),))
    except LedgerError as exc:  # StoreLocked, AccountNotFound for --tenant, ...
        return _fail(str(exc))
    except NotImplementedError as exc:
        return _fail(f"store {redact_url(location)}: {exc}")
    print(f"store: {redact_url(location)}")
    print(f"accounts: {report.accounts}")
    print(f"entries: {report.entries}")
    print(f"problems: {len(report.problems)}")
    for problem in report.problems:
        print(f"  - {problem}")
    return 0 if report.ok else 1


async def _verify(location: str, tenant: str | None) -> VerifyReport:
    ledger = await open_ledger(location)
    try:
        return await ledger.verify(tenant)
    finally:
        await ledger.close()


def migrate(settings: Settings, *, store: str | None = None) -> int:
    """Apply pending migrations to a PostgreSQL store and list them; other stores have nothing to migrate."""
    location = store or settings.store
    if not location.startswith(("postgresql:", "postgres:")):
        print(f"store: {redact_url(location)}: not PostgreSQL, nothing to migrate")
        return 0
    from storage.postgres_store import migrate as apply_migrations
    try:
        applied = asyncio.run(apply_migrations(location))
    except (OSError, LedgerError) as exc:
        return _fail(f"store {redact_url(location)}: {type(exc).__name__}: cannot migrate")
    except Exception as exc:  # asyncpg's errors: say which, never the URL's password
        return _fail(f"store {redact_url(location)}: {type(exc).__name__}")
    print(f"store: {redact_url(location)}")
    print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    return 0


class _Refused(Exception):
    """A copy that must not start (a destination that is not empty)."""


def copy_store(src: str, dst: str) -> int:
    """Copy the store `src` into the empty store `dst` and verify the copy: 0 when verified, 1 when the check
    found problems, 2 when it could not run (bad location, locked or missing source, non-empty destination)."""
    for name, location in (("SRC", src), ("DST", dst)):
        problem = check_store(location)
        if problem:
            return _fail(f"{name}: {problem}")
        if location.startswith("memory:"):
            return _fail(f"{name}: memory:// holds nothing that lasts; use a directory or a postgresql:// URL")
    if "://" not in src and not Path(src).is_dir():
        return _fail(f"SRC: no store at {src} (nothing to copy)")
    if _same_store(src, dst):
        return _fail("SRC and DST are the same store")
    try:
        report = asyncio.run(_copy_store(src, dst))
    except _Refused as exc:
        return _fail(str(exc))
    except (LedgerError, ValueError) as exc:  # StoreLocked, StoreCorrupt, an account already in DST
        return _fail(str(exc))
    except NotImplementedError as exc:
        return _fail(f"copy-store: {exc}")
    except Exception as exc:  # asyncpg's and the OS's errors: say which, never a URL's password
        return _fail(f"copy-store {redact_url(src)} -> {redact_url(dst)}: {type(exc).__name__}")
    print(f"source: {redact_url(src)}")
    print(f"destination: {redact_url(dst)}")
    print(f"accounts: {report.accounts}")
    print(f"entries: {report.entries}")
    print(f"alerts: {report.alerts}")
    if report.ok:
        print("verified: ok")
        return 0
    print(f"verified: {len(report.problems)} problems")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1


def _same_store(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    return Path(a).resolve() == Path(b).resolve()


async def _copy_store(src: str, dst: str):  # type: ignore[no-untyped-def]
    from storage.transfer import copy_store as copy
    source = await open_ledger(src)
    try:
        target = await open_ledger(dst)
        try:
            present = await target.tenants()
            if present:
                raise _Refused(f"DST {redact_url(dst)} is not empty ({len(present)} accounts): "
                               "copy-store only copies into an empty store")
            return await copy(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
