"""A writer process for the crash test: applies numbered operations to a TinyDB store forever and writes one
line to the acknowledgement file after each returns. The test SIGKILLs it at random moments.

    python tests/crash_writer.py STORE ACKS START

Operation i is deterministic from i (so the test can replay it): every 7th a usage batch of 40 rows, every
5th an add_funds, otherwise one usage row. Auto-recharge and thresholds are on, so crashes land in the middle of
multi-entry, multi-file commits. `WORKERS` coroutines take the next operation number as soon as their previous
one returned, like concurrent conversations: the writer commits what waits together (group commit), so crashes
also land in batches of several operations. Acknowledgements may therefore come out of order.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import AlertKind, AlertSettings, RechargeSettings, StoreLocked, UsageRecord  # noqa: E402
from storage.policy import MAX_RECHARGES_PER_DAY  # noqa: E402
from storage.tinydb_store import TinyLedger  # noqa: E402

TENANT = "crash-tenant"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
#: Operations in flight at once.
WORKERS = 6
current = 0  # the newest operation started (the clock follows it)


def clock_at(i: int) -> datetime:
    """The writer's time while it applies operation i: an hour per operation, so the 24-hour breaker keeps
    letting recharges through and crashes land in recharging operations, not only in blocked ones."""
    return T0 + timedelta(hours=i)


def operation(i: int) -> tuple[str, object]:
    if i % 7 == 0:
        return "batch", [UsageRecord(f"u{i}-{j}", 37 + j, "USD", T0) for j in range(40)]
    if i % 5 == 0:
        return "add", 2500
    return "usage", UsageRecord(f"u{i}", 90 + i % 50, "USD", T0)


async def apply(ledger: TinyLedger, i: int) -> None:
    kind, arg = operation(i)
    if kind == "batch":
        await ledger.record_usage_batch(TENANT, arg)  # type: ignore[arg-type]
    elif kind == "add":
        await ledger.add_funds(TENANT, arg, actor="crash-admin", key=f"add-{i}")  # type: ignore[arg-type]
    else:
        await ledger.record_usage(TENANT, arg)  # type: ignore[arg-type]


async def main(store: Path, acks: Path, start: int) -> None:
    global current
    current = start
    for _ in range(200):  # the previous writer may still be dying: its lock goes with it
        try:
            ledger = await TinyLedger.open(store, clock=lambda: clock_at(current))
            break
        except StoreLocked:
            await asyncio.sleep(0.01)
    else:
        raise SystemExit("store stayed locked")
    await ledger.open_account(TENANT, "USD")
    await ledger.set_recharge_settings(TENANT, RechargeSettings(True, 1000, 3000, None, MAX_RECHARGES_PER_DAY),
                                       actor="crash-admin", key="recharge")
    await ledger.set_alert_settings(TENANT, AlertSettings((5000, 2000)), actor="crash-admin", key="alerts")
    await ledger.subscribe(TENANT, "finance", [AlertKind.RECHARGED, AlertKind.LOW_BALANCE],
                           actor="crash-admin", key="sub")
    with open(acks, "a", buffering=1) as out:
        async def worker() -> None:
            global current
            while True:
                i, current = current, current + 1
                await apply(ledger, i)
                out.write(f"{i}\n")  # acknowledged: the operation returned
        await asyncio.gather(*(worker() for _ in range(WORKERS)))

if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
