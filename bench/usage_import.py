"""Importing the admin center's PSTN export: wall time and peak memory, per backend.

    python bench/usage_import.py [--rows 100000] [--backend tinydb] [--quick]

Writes an export of `--rows` invented calls (`bot.usage.demo`), then imports it the way `python -m bot
import-usage` does (streaming CSV reader, in a child process for PostgreSQL, batches of 2,000 rows, one atomic ledger unit each) into a fresh store,
in a child process so that its peak RSS is the import's own. Prints rows/s, the wall time, the child's peak
RSS, and a JSON summary last. Targets (issue 6; a benchmark, never a test): 100k rows <= 10 s on TinyDB; 1M rows
<= 60 s with peak RSS <= 250 MB on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TENANT = "bench-tenant"


async def _import(store: str, csv: Path) -> dict[str, object]:
    from bot.usage.files import export_rows_for
    from bot.usage.service import UsageService
    from storage import open_ledger

    ledger = await open_ledger(store)
    try:
        await ledger.open_account(TENANT, "USD")
        await ledger.add_funds(TENANT, 10_000_000, actor="bench", key="seed")
        started = time.perf_counter()
        report = await UsageService(ledger, None, interval_minutes=60).import_rows(
            TENANT, export_rows_for(ledger, csv), source="csv")
        seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # the import's peak, before verify reads all
        ok = (await ledger.verify(TENANT)).ok
    finally:
        await ledger.close()
    return {"rows": report.read, "debited": report.debited, "seconds": round(seconds, 2),
            "rows_per_s": round(report.read / seconds), "peak_rss_mb": round(peak_kb / 1024, 1), "verify_ok": ok}


async def _admin(server: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{server.rstrip('/')}/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def child(store: str, csv: str) -> None:
    print(json.dumps(asyncio.run(_import(store, Path(csv)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", default="tinydb", choices=["tinydb", "postgres"])
    parser.add_argument("--pg", default=os.environ.get("CREDITS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server for --backend postgres (a database is created and dropped)")
    parser.add_argument("--quick", action="store_true", help="10k rows (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="imports into fresh stores; the median is kept")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = 10_000 if args.quick else args.rows
    from bot.usage.demo import write_demo_csv

    with tempfile.TemporaryDirectory(prefix="credits-bench-") as tmp:
        csv = Path(tmp) / "PSTN.calls.bench.csv"
        days = 30
        summary = write_demo_csv(csv, start=datetime.now(timezone.utc) - timedelta(days=days), days=days,
                                 calls_per_day=-(-rows // days))
        runs = []
        for n in range(max(1, args.repeat)):
            if args.backend == "postgres":
                database = f"credits_bench_{os.getpid()}_{n}"
                asyncio.run(_admin(args.pg, f'CREATE DATABASE "{database}"'))
                store = f"{args.pg.rstrip('/')}/{database}"
            else:
                database, store = "", str(Path(tmp) / f"store-{n}")
            try:
                result = subprocess.run([sys.executable, __file__, "--child", store, str(csv)], capture_output=True,
                                        text=True, check=True)
            finally:
                if database:
                    asyncio.run(_admin(args.pg, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["seconds"])
    figures = runs[len(runs) // 2]
    figures.update({"backend": args.backend, "file_rows": summary.rows, "runs_seconds": [r["seconds"] for r in runs]})
    print(f"usage import ({args.backend}), median of {len(runs)}: {figures['rows']:,} rows in {figures['seconds']} s "
          f"({figures['rows_per_s']:,} rows/s), peak RSS {figures['peak_rss_mb']} MB, verify ok: "
          f"{figures['verify_ok']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
