"""Load generator: N concurrent Teams conversations posting to a bot, each waiting for its answer (closed loop).

    python -m bench.turns.loadgen --url http://127.0.0.1:3978/api/messages --connector-control http://127.0.0.1:C \\
        --service-url http://127.0.0.1:P/amer/ --identity http://127.0.0.1:I [--conversations 32] \\
        [--turns 5000] [--duration 10] [--bot-pid PID] [--label ours-tinydb]

Each conversation is one user in a personal chat (`tests.teams` shapes: `a:1...` conversation, `29:...` user with
an Entra object id `user_id(i)`, tenant in `channelData.tenant.id`, the bot `28:<app id>`) and cycles through the
mix (default `balance`, `add 10`, and an Action.Submit of the add-funds confirmation card with a fresh nonce and
`replyToId` of the card message), starting at a different point of the mix per conversation so every kind is in
flight at once. Activity ids and nonces are unique per run (`--run-id`), so nothing is an idempotent replay.
Requests carry `Authorization: Bearer <channel token>` minted once by the bench identity (the real channel also
reuses its token for about an hour).

Bounded by `--turns` (all conversations together) and by `--duration` seconds, whichever comes first; a
conversation finishes the turn it is in. Latency is measured from just before the POST is written to the moment
the reply arrived at the fake connector (correlated by conversation id + replyToId = the activity id; both clocks
are the machine-wide `time.monotonic_ns()`). A turn without a reply, a non-2xx answer, an exception or a reply
that is a crash answer (`Incident id`) is an error.

With `--bot-pid`, the bot's CPU time (utime + stime, all threads, /proc/<pid>/stat; the main thread, i.e. the
event loop, also alone from /proc/<pid>/task/<pid>/stat) and RSS are read at the start
and end of the window, and RSS every `--rss-every` seconds (with the number of turns done) for the memory series.
Token requests and tenant discoveries (bench identity) and TCP connections accepted (fake connector) are the
deltas over the window. The last line printed is the JSON summary; `--samples-out` also writes every latency.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.turns import identity as bench_identity
from bench.turns.common import (
    cpu_seconds,
    main_thread_cpu_seconds,
    percentile,
    rounded,
    rss_mb,
    threads,
)
from tests import teams

KINDS = {"balance": "balance", "add": "add 10", "submit": None}
DEFAULT_MIX = ("balance", "add", "submit")


def user_id(i: int) -> str:
    """Entra object id of the bench user of conversation `i` (run.py makes them all admins)."""
    return f"00000000-0000-4000-8000-{i:012d}"


def conversation_id(i: int) -> str:
    return f"a:1personal-bench-{i}"   # tests.teams.conversation("personal", suffix=f"bench-{i}")


class Conversation:
    """Prebuilt activity templates for one conversation; `activity(kind, n)` fills in the ids."""

    def __init__(self, i: int, service_url: str, app_id: str, tenant: str) -> None:
        self.i = i
        self.id = conversation_id(i)
        sender = teams.user(user_id(i), f"Bench User {i}")
        base = teams.message("x", service_url=service_url, sender=sender, tenant=tenant, activity_id="0",
                             conversation_suffix=f"bench-{i}")
        base["recipient"] = {"id": f"28:{app_id}", "name": "Credits"}
        assert base["conversation"]["id"] == self.id
        self.base = base

    def activity(self, kind: str, activity_id: str, nonce: str) -> dict[str, Any]:
        activity = dict(self.base)
        activity["id"] = activity_id
        if kind == "submit":
            activity.pop("text", None)
            activity["value"] = {"verb": "add_funds.confirm", "nonce": nonce, "amount": "1", "memo": ""}
            activity["replyToId"] = f"card-{self.i}"
        else:
            activity["text"] = KINDS[kind]
        return activity


async def run(args: argparse.Namespace) -> dict[str, Any]:
    token = bench_identity.mint(args.identity, args.service_url, app_id=args.app_id)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conversations = [Conversation(args.first_conversation + i, args.service_url, args.app_id, args.tenant)
                     for i in range(args.conversations)]
    mix = tuple(args.mix.split(","))
    for kind in mix:
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r} in --mix (known: {', '.join(KINDS)})")
    run_id = args.run_id or secrets.token_hex(4)
    budget = itertools.count(1)
    sent: dict[tuple[str, str], tuple[int, int, str, int]] = {}   # (conv, activity id) -> (t0, t1, kind, status)
    failures: dict[str, int] = {"http": 0, "exception": 0}
    first_exception: list[str] = []
    done = 0
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    control = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await control.post(args.connector_control + "/drain")   # forget replies of earlier runs
        connector_before = await (await control.get(args.connector_control + "/stats")).json()
        identity_before = bench_identity.stats(args.identity)
        bot = args.bot_pid
        cpu_before = cpu_seconds(bot) if bot else None
        main_before = main_thread_cpu_seconds(bot) if bot else None
        rss_before = rss_mb(bot) if bot else None
        series: list[tuple[float, int, float]] = []
        stop_at = time.monotonic() + args.duration if args.duration else None
        started = time.monotonic_ns()

        async def sampler() -> None:
            while True:
                series.append(((time.monotonic_ns() - started) / 1e9, done, rss_mb(bot)))
                await asyncio.sleep(args.rss_every)

        async def talk(session: aiohttp.ClientSession, conv: Conversation) -> None:
            nonlocal done
            for step in itertools.count(conv.i):
                n = next(budget)
                if (args.turns and n > args.turns) or (stop_at is not None and time.monotonic() >= stop_at):
                    return
                kind = mix[step % len(mix)]
                activity_id = f"{run_id}-{conv.i}-{step}"
                body = orjson.dumps(conv.activity(kind, activity_id, f"n{run_id}-{conv.i}-{step}"))
                t0 = time.monotonic_ns()
                status = 0
                try:
                    async with session.post(args.url, data=body, headers=headers) as response:
                        status = response.status
                        await response.read()
                    if not 200 <= status < 300:
                        failures["http"] += 1
                except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                    failures["exception"] += 1
                    if not first_exception:
                        first_exception.append(f"{type(exc).__name__}: {exc}")
                t1 = time.monotonic_ns()
                sent[(conv.id, activity_id)] = (t0, t1, kind, status)
                done += 1

        sampling = asyncio.create_task(sampler()) if bot else None
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(talk(session, c) for c in conversations))
        ended = time.monotonic_ns()
        if sampling is not None:
            sampling.cancel()
        cpu_after = cpu_seconds(bot) if bot else None
        main_after = main_thread_cpu_seconds(bot) if bot else None
        rss_after = rss_mb(bot) if bot else None
        if bot:
            series.append(((ended - started) / 1e9, done, rss_after))
        # the replies were posted before the bot answered each POST; let the connector's process catch up
        expected = sum(1 for v in sent.values() if 200 <= v[3] < 300)
        arrivals: dict[tuple[str, str], int] = {}
        deadline = time.monotonic() + 3.0
        while True:
            for conv_id, reply_to, t in await (await control.post(args.connector_control + "/drain")).json():
                arrivals.setdefault((conv_id, reply_to), t)
            if sum(1 for key in sent if key in arrivals) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        connector_after = await (await control.get(args.connector_control + "/stats")).json()
        identity_after = bench_identity.stats(args.identity)
    finally:
        await control.close()

    latencies: list[float] = []
    post_ms: list[float] = []
    by_kind: dict[str, list[float]] = {}
    no_reply = 0
    for key, (t0, t1, kind, status) in sent.items():
        post_ms.append((t1 - t0) / 1e6)
        arrived = arrivals.get(key)
        if arrived is None:
            if 200 <= status < 300:
                no_reply += 1
            continue
        ms = (arrived - t0) / 1e6
        latencies.append(ms)
        by_kind.setdefault(kind, []).append(ms)
    seconds = (ended - started) / 1e9
    turns = len(sent)
    replies = connector_after["replies"] - connector_before["replies"]
    new_connections = connector_after["connections"] - connector_before["connections"]
    incidents = connector_after["incidents"] - connector_before["incidents"]
    cpu = (cpu_after - cpu_before) if bot else None
    summary: dict[str, Any] = {
        "label": args.label,
        "conversations": args.conversations,
        "turns": turns,
        "seconds": seconds,
        "throughput": turns / seconds if seconds else 0.0,
        "latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                       "p99": percentile(latencies, 99), "max": max(latencies) if latencies else float("nan")},
        "post_ms": {"p50": percentile(post_ms, 50), "p99": percentile(post_ms, 99)},
        "by_kind": {k: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)}
                    for k, v in sorted(by_kind.items())},
        "errors": {"http": failures["http"], "exception": failures["exception"], "no_reply": no_reply,
                   "incidents": incidents,
                   "total": failures["http"] + failures["exception"] + no_reply + incidents},
        "first_exception": first_exception[0] if first_exception else None,
        "token_requests": identity_after["token_requests"] - identity_before["token_requests"],
        "tenant_discovery": identity_after["tenant_discovery"] - identity_before["tenant_discovery"],
        "jwks_fetches": identity_after["jwks"] - identity_before["jwks"],
        "replies": replies,
        "connector_requests": connector_after["requests"] - connector_before["requests"],
        "connections_new": new_connections,
        "connections_per_reply": new_connections / replies if replies else float("nan"),
        "bot_cpu_s": cpu,
        "bot_cpu_ms_per_turn": cpu * 1000 / turns if bot and turns else None,
        "bot_cpu_main_s": (main_after - main_before) if bot else None,
        "bot_cpu_main_ms_per_turn": (main_after - main_before) * 1000 / turns if bot and turns else None,
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "bot_threads": threads(bot) if bot else None,
        "rss_series": [[round(t, 2), n, round(r, 1)] for t, n, r in series] if bot else [],
    }
    if args.samples_out:
        Path(args.samples_out).write_text(json.dumps({"latency_ms": [round(x, 3) for x in latencies],
                                                      "by_kind": {k: [round(x, 3) for x in v]
                                                                  for k, v in by_kind.items()}}))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the bot's /api/messages URL")
    parser.add_argument("--service-url", required=True, help="the fake connector's service URL (.../amer/)")
    parser.add_argument("--connector-control", required=True, help="the fake connector's control base URL")
    parser.add_argument("--identity", required=True, help="the bench identity's http base URL")
    parser.add_argument("--app-id", default=bench_identity.APP_ID)
    parser.add_argument("--tenant", default=teams.TENANT)
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--first-conversation", type=int, default=0, help="index of the first conversation")
    parser.add_argument("--turns", type=int, default=0, help="stop after this many turns in all (0: no bound)")
    parser.add_argument("--duration", type=float, default=10.0, help="stop after this many seconds (0: no bound)")
    parser.add_argument("--mix", default=",".join(DEFAULT_MIX), help="kinds to cycle: balance, add, submit")
    parser.add_argument("--run-id", default="", help="prefix of activity ids and nonces (default: random)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one POST may take")
    parser.add_argument("--bot-pid", type=int, default=0, help="the bot's pid, for CPU and RSS")
    parser.add_argument("--rss-every", type=float, default=0.5)
    parser.add_argument("--label", default="")
    parser.add_argument("--samples-out", default="", help="write every latency (ms) to this JSON file")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not args.turns and not args.duration:
        raise SystemExit("give --turns or --duration (or both): a run must be bounded")
    summary = run_sync(args)
    print(json.dumps(rounded(summary)))


def run_sync(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(run(args))


if __name__ == "__main__":
    main()
