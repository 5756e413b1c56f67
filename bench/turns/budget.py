"""The CPU budget of one turn, piece by piece, in one process (no load, no other processes).

    .venv/bin/python bench/turns/budget.py [--n 300] [--bot-root PATH]

What `bench/turns/run.py` measures as "bot CPU per turn" is the sum of these pieces plus the HTTP server and
client work (the bare handler's 0.25 ms covers that part). Each line is the median CPU time (process time: all
threads) of one operation over `--n` repetitions, in microseconds, taken in one run so they compare:

* `json.loads` of a Teams message as the endpoint parses it (Decimal floats), and `orjson.loads` beside it;
* `endpoint._activity`: our checks plus `bot.activity_json.activity_from_json`; and msrest's
  `Activity().deserialize` alone beside it (what it replaced);
* `auth.authenticate`: our inbound JWT validation of a real channel token, repeated as the channel repeats it
  (the signature is checked once per token, the rest per activity);
* `reply to JSON`: `bot.adapter._payload` of the balance reply (text + Adaptive Card), as for every reply;
* `turn <kind> (memory)`: `CreditsAdapter.process` through `CreditsBot` (botbuilder's TurnContext, middleware,
  TeamsActivityHandler; our actions, cards, i18n) on the in-memory reference ledger, the connector stubbed:
  the bot's own logic without storage or network;
* `turn <kind> (tinydb)` and `(tinydb, no fsync)`: the same on a TinyDB store (CPU of the loop and the writer
  thread; the wall time is printed beside, since fsync waits are not CPU);
* `turn <kind> (postgres)`: the same on a fresh PostgreSQL database (`--pg-server`; the server's own CPU is
  not counted, only the bot's);
* `executor hop`: one `run_in_executor` round trip to a one-thread pool (TinyDB's writer), which every ledger
  call pays.

With `--bot-root`, the bot's packages are imported from that checkout (to compare a change with this one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent.parent


def _setup_path(bot_root: str) -> None:
    if bot_root:
        sys.path.insert(0, str(Path(bot_root).resolve()))
    if str(HERE) not in sys.path:
        sys.path.insert(1 if bot_root else 0, str(HERE))


class StubConnector:
    """`bot.connector.Connector`'s interface, answering at once; keeps the last payload sent."""

    def __init__(self) -> None:
        self.last: Any = None
        self.sent = 0

    async def send(self, service_url: str, conversation_id: str, activity: Any, *, reply_to_id: str | None = None) -> str:
        self.last = activity
        self.sent += 1
        return f"activity-{self.sent}"

    async def update(self, service_url: str, conversation_id: str, activity_id: str, activity: Any) -> None:
        self.sent += 1

    async def get_member(self, service_url: str, conversation_id: str, member_id: str) -> dict[str, Any]:
        return {"id": member_id, "aadObjectId": member_id}


async def measure(n: int, op: Callable[[int], Awaitable[Any]], *, warm: int = 20) -> tuple[float, float]:
    """(median CPU µs, median wall µs) of `op(i)` over n runs after `warm` runs."""
    for i in range(warm):
        await op(-1 - i)
    cpu: list[float] = []
    wall: list[float] = []
    for i in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        await op(i)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu) * 1e6, statistics.median(wall) * 1e6


async def main(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    import orjson
    from botbuilder.schema import Activity

    from bench.turns.loadgen import Conversation, user_id
    from bot import endpoint as endpoint_module
    from bot.actions import Actions
    from bot.adapter import CreditsAdapter, _payload
    from bot.auth import InboundAuthenticator
    from bot.handler import CreditsBot
    from bot.rate_limit import RateLimiter
    from storage import open_ledger
    from tests.fakes.identity import FakeIdentity

    results: list[tuple[str, float, float]] = []
    service_url = "http://127.0.0.1:9/amer/"
    conv = Conversation(0, service_url, "00000000-0000-0000-0000-00000000b07a", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    bodies = {kind: orjson.dumps(conv.activity(kind, "a-1", "nonce-00000001")) for kind in ("balance", "add", "submit")}
    raw = bodies["balance"]
    n = args.n

    async def op_json(i: int) -> None:
        json.loads(raw, parse_float=Decimal)
    results.append(("json.loads (Decimal floats)", *await measure(n, op_json)))

    async def op_orjson(i: int) -> None:
        orjson.loads(raw)
    results.append(("orjson.loads", *await measure(n, op_orjson)))

    body = json.loads(raw, parse_float=Decimal)

    async def op_activity(i: int) -> None:
        endpoint_module._activity(body)
    results.append(("endpoint._activity (checks + activity_from_json)", *await measure(n, op_activity)))

    async def op_deserialize(i: int) -> None:
        Activity().deserialize(body)
    results.append(("msrest Activity().deserialize alone", *await measure(n, op_deserialize)))

    with FakeIdentity() as identity:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            auth = InboundAuthenticator(app_id="00000000-0000-0000-0000-00000000b07a", session=session,
                                        metadata_url=identity.metadata_url, issuer=identity.issuer)
            await auth.start()
            token = identity.issue_token(app_id="00000000-0000-0000-0000-00000000b07a", service_url=service_url)
            header = f"Bearer {token}"

            async def op_auth(i: int) -> None:
                await auth.authenticate(header, service_url=service_url, channel_id="msteams")
            results.append(("auth.authenticate (RS256 JWT)", *await measure(n, op_auth)))
            await auth.close()

    async def turns(label: str, store: str, extra_env: dict[str, str] | None = None) -> None:
        old = {k: os.environ.get(k) for k in (extra_env or {})}
        os.environ.update(extra_env or {})
        ledger = await open_ledger(store)
        try:
            actions = Actions(ledger, bootstrap_admins=[user_id(0)], default_currency="USD", fallback_locale="en-US")
            bot = CreditsBot(actions, limiter=RateLimiter(None))
            stub = StubConnector()
            adapter = CreditsAdapter(stub, app_id="00000000-0000-0000-0000-00000000b07a",
                                     on_turn_error=bot.on_turn_error)
            for kind in ("balance", "add", "submit"):
                def make(i: int, kind: str = kind) -> Any:
                    a = conv.activity(kind, f"{label}-{kind}-{i}", f"n{label}-{kind}-{i}".replace(" ", "_")
                                      .replace("(", "").replace(")", "").replace(",", ""))
                    return endpoint_module._activity(json.loads(orjson.dumps(a), parse_float=Decimal))

                async def op_turn(i: int, make: Any = make) -> None:
                    await adapter.process(make(i), bot.on_turn)
                results.append((f"turn {kind} ({label})", *await measure(n, op_turn)))
                if kind == "balance" and label == "memory":
                    reply = stub.last
                    model = Activity().deserialize(dict(reply))

                    async def op_payload(i: int, model: Any = model) -> None:
                        _payload(model)
                    results.append((f"reply to JSON (adapter._payload, {len(orjson.dumps(reply))} B)",
                                    *await measure(n, op_payload)))
        finally:
            await ledger.close()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    await turns("memory", "memory://")
    with tempfile.TemporaryDirectory() as tmp:
        await turns("tinydb", str(Path(tmp) / "a"))
        real_fsync = os.fsync
        os.fsync = lambda fd: None   # the upper bound of batching commits: no fsync at all
        try:
            await turns("tinydb, no fsync", str(Path(tmp) / "b"))
        finally:
            os.fsync = real_fsync

    if args.pg_server:
        import asyncpg
        name = f"bench_budget_{os.getpid()}"
        admin = await asyncpg.connect(args.pg_server.rstrip("/") + "/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            await turns("postgres", args.pg_server.rstrip("/") + "/" + name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    async def op_hop(i: int) -> None:
        await loop.run_in_executor(pool, int)
    results.append(("executor hop (one ledger call's thread round trip)", *await measure(n, op_hop)))
    pool.shutdown()
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="repetitions per operation")
    parser.add_argument("--bot-root", default="", help="import bot/storage/cards from this checkout")
    parser.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432",
                        help="also measure turns on a fresh PostgreSQL database there (dropped after); '' to skip")
    args = parser.parse_args()
    _setup_path(args.bot_root)
    import logging
    logging.disable(logging.WARNING)   # the turns log nothing at INFO here; crashes would still show as errors
    results = asyncio.run(main(args))
    width = max(len(name) for name, _, _ in results)
    print(f"{'operation':<{width}}  {'CPU µs':>9}  {'wall µs':>9}")
    for name, cpu, wall in results:
        print(f"{name:<{width}}  {cpu:>9.0f}  {wall:>9.0f}")
    print(json.dumps({name: {"cpu_us": round(cpu), "wall_us": round(wall)} for name, cpu, wall in results}))


if __name__ == "__main__":
    run()
