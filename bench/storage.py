"""Cost of ledger operations on the TinyDB store as history grows.

    python bench/storage.py [--quick]

Prints the median (p50) wall time of `add_funds` on accounts with 1k, 10k and 100k entries of history, measured
side by side in one run, their ratio, and the time to record 100k usage rows in one batch. Targets (from the
foundation issue; a benchmark, never a test): p50 at 100k history <= 2x p50 at 1k; 100k rows <= 10 s.
The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import FakeClock, RechargeSettings, UsageRecord  # noqa: E402
from storage.policy import MAX_RECHARGES_PER_DAY  # noqa: E402
from storage.tinydb_store import TinyLedger  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def usage_rows(prefix: str, n: int, at: datetime) -> list[UsageRecord]:
    return [UsageRecord(f"{prefix}-{i}", 25 + i % 400, "USD", at,
                        {"user_id": f"user-{i % 40}", "call_type": "ucap_out" if i % 3 else "tollfree_in"})
            for i in range(n)]


async def account_with_history(ledger: TinyLedger, tenant: str, entries: int, clock: FakeClock) -> None:
    """Realistic history: mostly usage rows, auto-recharge keeping the balance up (so lots get consumed)."""
    await ledger.open_account(tenant, "USD")
    await ledger.set_recharge_settings(tenant, RechargeSettings(True, 50_000, 20_000, None, MAX_RECHARGES_PER_DAY),
                                       actor="bench", key="recharge")
    await ledger.add_funds(tenant, 100_000, actor="bench", key="seed")
    made = 0
    while (await ledger.get_account(tenant)).entry_count < entries:
        await ledger.record_usage_batch(tenant, usage_rows(f"h{made}", 5_000, clock()))
        made += 1
        clock.advance(hours=24)  # about 22 recharges a batch: well inside the breaker's ceiling




async def main(quick: bool) -> dict[str, float]:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rows_n = 10_000 if quick else 100_000
    samples = 100 if quick else 200
    clock = FakeClock(T0)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = await TinyLedger.open(Path(tmp) / "store", clock=clock)
        try:
            for size in sizes:
                await account_with_history(ledger, f"tenant-{size}", size, clock)
            # interleave the measurements so machine noise hits every size alike
            medians: dict[int, list[float]] = {size: [] for size in sizes}
            for round_ in range(4):
                for size in sizes:
                    ts = await time_add_funds_round(ledger, f"tenant-{size}", samples // 4, round_)
                    medians[size].extend(ts)
            result = {f"add_funds_p50_ms_at_{size}": statistics.median(medians[size]) * 1000 for size in sizes}
            await ledger.open_account("tenant-batch", "USD")
            await ledger.add_funds("tenant-batch", 10**9, actor="bench", key="seed")
            rows = usage_rows("batch", rows_n, clock())
            start = time.perf_counter()
            outcome = await ledger.record_usage_batch("tenant-batch", rows)
            result[f"usage_batch_{rows_n}_rows_s"] = time.perf_counter() - start
            assert len(outcome.postings) == rows_n
            report = await ledger.verify()
            assert report.ok, report.problems
        finally:
            await ledger.close()
    first, last = sizes[0], sizes[-1]
    result[f"ratio_p50_{last}_vs_{first}"] = result[f"add_funds_p50_ms_at_{last}"] / result[f"add_funds_p50_ms_at_{first}"]
    return result


async def time_add_funds_round(ledger: TinyLedger, tenant: str, samples: int, round_: int) -> list[float]:
    times = []
    for i in range(samples):
        start = time.perf_counter()
        await ledger.add_funds(tenant, 1_000 + i, actor="bench", key=f"bench-add-{round_}-{i}")
        times.append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    figures = asyncio.run(main(args.quick))
    for name, value in figures.items():
        print(f"{name:40s} {value:10.3f}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
