"""The real bot (`python -m bot serve`, local mode) SIGKILLed at random moments under a load of chat commands,
card submits and usage imports, and restarted, on TinyDB and on PostgreSQL (issue 10, "Crash").

* The bot replies to a fake Bot Connector run by the test; a channel and the admin's personal chat are subscribed
  to every alert, thresholds and auto-recharge are set, and the load steers the balance up and down across them,
  so alerts keep flowing through the outbox while the bot is killed.
* Three workers send `add N` (distinct activity ids), `balance`, Action.Submit presses of the add-funds card
  (a nonce each) and usage imports (rows POSTed to the loopback admin endpoint, as `python -m bot import-usage`
  does). What got no acknowledgement is sent again, the same way, to the next incarnation (tests/crash_load.py).
* Every fourth kill waits for the bot to post an alert card and kills it right then: after Teams accepted the
  card, before the bot could mark the delivery (ADR 0006's only duplicate window). The others come at a random
  moment of the load.
* After each kill, with the bot down: `verify()` passes, every acknowledged operation's entries are there with
  their amounts, no entry key twice, no entry nobody asked for. After each restart, before the load resumes,
  a random sample of acknowledged operations is sent again and must answer "already done".
* At the end: the leases the killed notifiers held are expired (what five minutes would do, done at once), the
  load finishes, the bot runs undisturbed until the fake connector has every alert, and then every alert is
  delivered to every destination once, and twice only where a kill fell between its send and its mark (counted
  by the reference the card prints, and predicted exactly from the store and the connector before the last
  start). `python -m bot verify` passes.

Figures go to artifacts/reliability/crash.json. The seed is printed; `CREDITS_CRASH_SEED=<seed>` replays the same
choices (operations, amounts, kill delays; the timing of a real process is never quite the same).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage import AlertStatus, EntryKind, open_ledger
from tests.crash_load import (EPOCH, TENANT, BotProcess, CrashConnector, Load, check_ledger, expire_dead_leases,
                              write_figures)
from tests.http_chat import store_for

pytestmark = pytest.mark.slow

KILLS = 24
#: Every this many kills, the kill waits for an alert card to be posted (between send and mark).
TARGETED_EVERY = 4
#: Seconds a targeted kill waits for an alert before it kills anyway.
TARGET_WAIT = 4.0
SETUP = (
    ("subscribe", "will get these alerts", "channel"),
    ("subscribe", "will get these alerts", "personal"),
    ("alerts 100, 50", "Saved.", "personal"),
    ("recharge 50 below 40", "Saved:", "personal"),
    ("add 150", "Added $150.00", "personal"),
)


async def wait_for_copies(connector: CrashConnector, pairs: set[tuple[str, str]], since: int,
                          bot: BotProcess, timeout: float = 60.0) -> None:
    """Poll the fake connector until each (reference, destination) in `pairs` got a copy from index `since` on."""
    deadline = time.monotonic() + timeout
    while True:
        missing = pairs - set(connector.alert_copies(since))
        if not missing:
            return
        assert bot.proc is not None and bot.proc.poll() is None, "the bot died while draining the outbox"
        assert time.monotonic() < deadline, f"undelivered after {timeout} s: {sorted(missing)[:10]}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["tinydb", "postgres"])
async def test_sigkill_under_load_loses_nothing_and_doubles_nothing(backend: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("CREDITS_CRASH_SEED") or secrets.randbelow(2**31))
    print(f"\ncrash suite ({backend}): seed {seed}; CREDITS_CRASH_SEED={seed} repeats its choices")
    rng = random.Random(seed)
    began = time.monotonic()
    store = await store_for(backend, tmp_path)
    kills = targeted = ledger_checks = 0
    async with CrashConnector() as connector, aiohttp.ClientSession() as session:
        bot = BotProcess(store, tmp_path)
        load = Load(bot, connector, session, rng)

        async def start_bot() -> None:
            connector.generation = bot.incarnations + 1     # whatever the new process posts is tagged with it
            await bot.start(session)

        async def down_check() -> None:
            nonlocal ledger_checks
            ledger = await open_ledger(store)
            try:
                check = await check_ledger(ledger, load.ops)
            finally:
                await ledger.close()
            ledger_checks += 1
            where = f"seed {seed}, after kill {kills}"
            assert not check.problems, (where, check.problems)
            assert check.lost == [], (where, check.lost)
            assert check.duplicated_keys == 0, where
            assert check.phantom == [], (where, check.phantom)

        try:
            await start_bot()
            bot.up.set()
            for text, expect, scope in SETUP:
                await asyncio.wait_for(load.until_acked(load.setup(text, expect, scope)), 30)
            load.balance_hint = 15_000
            load.start()

            for k in range(1, KILLS + 1):
                if k == KILLS:
                    load.stopping = True                    # the operations in flight finish after the restart
                if k % TARGETED_EVERY == 0:
                    fired = asyncio.Event()

                    def between_send_and_mark(fired: asyncio.Event = fired) -> None:
                        bot.kill()
                        fired.set()

                    connector.on_alert = between_send_and_mark
                    try:
                        await asyncio.wait_for(fired.wait(), TARGET_WAIT)
                        targeted += 1
                    except TimeoutError:
                        connector.on_alert = None           # no alert came: an ordinary kill
                        bot.kill()
                else:
                    await asyncio.sleep(rng.uniform(0.15, 0.9))
                    bot.kill()
                bot.reap()
                kills += 1
                assert not load.problems, (seed, load.problems)
                await down_check()
                if k < KILLS:
                    await start_bot()
                    await load.replay_some(3)
                    bot.up.set()

            # the end: leases of killed notifiers run out, the load finishes, the outbox drains undisturbed
            released, pending = await expire_dead_leases(store)
            sent_not_marked = set(connector.alert_copies()) & pending
            final_from = len(connector.accepted)
            await start_bot()
            bot.up.set()
            await load.finish()
            await load.replay_some(6)
            assert not load.problems, (seed, load.problems)
            since = final_from
            for _ in range(4):
                await wait_for_copies(connector, pending, since, bot)
                assert bot.terminate() == 0
                ledger = await open_ledger(store)
                try:
                    alerts = await ledger.alerts(TENANT, limit=100_000)
                    final = await check_ledger(ledger, load.ops)
                    entries = await ledger.entries_since(TENANT, EPOCH)
                finally:
                    await ledger.close()
                ledger_checks += 1
                pending = {(a.alert_id[:8], d) for a in alerts for d in a.pending_destinations}
                if not pending:
                    break
                since = len(connector.accepted)
                await start_bot()        # alerts raised by the last operations or the start-up jobs: once more
            else:
                raise AssertionError(f"alerts still pending after 4 undisturbed runs: {sorted(pending)[:10]}")
        finally:
            await load.cancel()
            bot.kill()
            if bot.proc is not None:
                bot.reap()

    # --- nothing lost, nothing doubled ---------------------------------------------------------------------------
    where = f"seed {seed}"
    assert all(op.acked for op in load.ops), where
    assert not final.problems and final.lost == [] and final.duplicated_keys == 0 and final.phantom == [], \
        (where, final)
    assert set(load.figures.statuses) == {"200"}, load.figures.statuses
    verify = subprocess.run([sys.executable, "-m", "bot", "verify", "--store", store], cwd=tmp_path,
                            env={**bot.env(), "PORT": "3978"}, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "problems: 0" in verify.stdout, (verify.stdout, verify.stderr)

    # --- every alert delivered to every destination; a second copy only after a kill between send and mark ------
    assert alerts and all(a.status is AlertStatus.DELIVERED for a in alerts), [(a.kind, a.status) for a in alerts]
    assert len({a.alert_id[:8] for a in alerts}) == len(alerts), "references are unique"
    copies = connector.alert_copies()
    assert set(copies) == {(a.alert_id[:8], d) for a in alerts for d in a.delivered}, where
    duplicates = {pair: gens for pair, gens in copies.items() if len(gens) > 1}
    assert set(duplicates) == sent_not_marked, (where, duplicates, sent_not_marked)
    for pair, generations in copies.items():
        assert len(generations) == len(set(generations)), f"{pair}: twice from one process {generations}"
        assert len(generations) <= 2, (pair, generations)
    assert connector.kill_pairs <= set(duplicates), "a kill between send and mark shows as a second copy"

    logs = "".join(path.read_text(errors="replace") for path in bot.logs)
    assert "Traceback" not in logs, logs[-4000:]

    figures: dict[str, Any] = {
        "test": "sigkill under load",
        "backend": backend,
        "seed": seed,
        "kills": kills,
        "kills_between_send_and_mark": targeted,
        "restarts": bot.incarnations - 1,
        "operations_acknowledged": sum(load.figures.kinds.values()),
        "operations_by_kind": dict(sorted(load.figures.kinds.items())),
        "import_rows_acknowledged": load.figures.import_rows,
        "attempts_cut_by_a_kill": load.figures.attempts_failed,
        "attempts_cut_by_kind": dict(sorted(load.figures.attempts_failed_by_kind.items())),
        "committed_before_kill_then_replayed": load.figures.replayed_at_ack,
        "replays_after_restart_checked": load.figures.replay_checks,
        "ledger_checks": ledger_checks,
        "verify_problems": 0,
        "lost": len(final.lost),
        "duplicated_entries": final.duplicated_keys,
        "entries": len(entries),
        "auto_recharges": sum(1 for e in entries if e.kind is EntryKind.AUTO_RECHARGE),
        "alerts": len(alerts),
        "alerts_by_kind": _by_kind(alerts),
        "alert_deliveries": sum(len(a.delivered) for a in alerts),
        "alert_copies_posted": sum(len(g) for g in copies.values()),
        "alert_duplicates_after_kill_between_send_and_mark": len(duplicates),
        "of_which_targeted_kills": len(set(duplicates) & connector.kill_pairs),
        "leases_expired_early": released,
        "http_statuses": load.figures.statuses,
        "duration_s": round(time.monotonic() - began, 1),
    }
    print(figures)
    write_figures("crash", figures)


def _by_kind(alerts: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.kind.value] = counts.get(alert.kind.value, 0) + 1
    return dict(sorted(counts.items()))
