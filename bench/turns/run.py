"""Fast turns (issue 9): our bot, the canonical botbuilder echo bot and a bare aiohttp handler, side by side.

    .venv/bin/python bench/turns/run.py            # about 4 minutes: startup trials, interleaved load, soak
    .venv/bin/python bench/turns/run.py --quick    # about 20 seconds: a smoke run, same output
    .venv/bin/python bench/turns/run.py --soak-turns 100000 --soak-seconds 0   # memory over 100k turns (long)

Starts, each in its own process on 127.0.0.1: the bench identity (OpenID metadata, JWKS, https token endpoint),
the fake Bot Connector, the echo bot (`bench/turns/echo_bot.py`), the bare handler (`bench/turns/bare.py`) and our
bot (`python -m bot serve`, authentication on) on each backend: TinyDB (a directory in a temporary folder) and
PostgreSQL (a fresh database on `--pg-server`, dropped at the end). Then:

1. start-up: our bot is started `--startup-trials` times per backend (alternating backends), each time timed from
   `Popen` to the first `GET /readyz` 200; the last start keeps running;
2. warm-up: `--warmup` seconds of load on every target (counted for tokens and connections, not for speed);
3. load: `--rounds` rounds; in each, every target gets `--slice` seconds of `--conversations` concurrent
   conversations (the order rotates between rounds), so that the machine's noise hits all of them alike;
   throughput, latency (POST in to reply at the connector), the bot's CPU per turn (/proc), TCP connections
   and token requests are summed over the rounds; the median of the per-round ratios is printed beside;
4. soak: `--soak-turns` turns per backend (at most `--soak-seconds`) with RSS sampled twice a second, for
   "memory flat" (growth per 100k turns projected from the trend after the first quarter of the soak);
5. start-up again on the store the run left behind (not with --quick); `python -m bot verify` on each store.

Our bot gets the mix of `bench/turns/loadgen.py` (`balance`, `add 10`, an add-funds card submit) from users who
are all bootstrap admins (`CREDITS_ADMINS`), with `CREDITS_RATE_LIMIT=0` (the default 30/min per user would refuse
a synthetic user typing ten messages a second). The echo bot and the bare handler get the same activities. Prints
a table, the targets with their ratios, and a JSON summary as the last line (`--out` also writes it to a file).
Figures on a shared 2-core machine are noisy: compare ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.turns.common import PYTHON, ROOT, Child, free_port, percentile, rounded
from bench.turns.loadgen import user_id

#: Fewer soak turns than this give no memory verdict (warm-up growth would dominate the trend).
MIN_SOAK_TURNS = 2000
TARGETS = {"throughput_x_echo": 10.0, "p99_ms": 50.0, "cpu_x_bare": 5.0, "startup_s": 1.0,
           "connections_per_reply": 0.01, "memory_growth_per_100k": 0.05}
#: Settings of our bot (and botbuilder's) that must not leak in from the caller's environment.
_SETTING_PREFIXES = ("CREDITS_", "GRAPH_", "Microsoft", "ToBot", "ToChannel", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_SETTING_NAMES = {"HOST", "PORT", "LOG_LEVEL", "TOKEN_URL", "CA_PATH"}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(_SETTING_PREFIXES) and k not in _SETTING_NAMES and "proxy" not in k.lower()}


def http_status(port: int, path: str, method: str = "GET") -> int | None:
    """Status of one request to 127.0.0.1:port, or None if nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request(method, path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def wait_http(child: Child, port: int, path: str, *, ok: set[int] | None = None, timeout: float = 30.0,
              interval: float = 0.005) -> float:
    """Seconds from the child's start to the first answer of `path` (with a status in `ok`, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http_status(port, path)
        if status is not None and (ok is None or status in ok):
            return time.monotonic() - child.started
        if not child.alive():
            break
        time.sleep(interval)
    raise RuntimeError(f"{child.name} never answered {path}: {child.tail()}")


@dataclass
class Target:
    label: str
    kind: str                     # "echo" | "bare" | "ours"
    backend: str | None = None    # ours: "tinydb" | "postgres"
    store: str | None = None
    root: str = ""                # ours: run from this checkout (PYTHONPATH) instead of this one
    env: dict[str, str] = field(default_factory=dict)   # ours: extra environment of this variant
    child: Child | None = None
    port: int = 0
    startups: list[float] = field(default_factory=list)
    startup_after_load: float | None = None
    slices: list[dict[str, Any]] = field(default_factory=list)
    warmups: list[dict[str, Any]] = field(default_factory=list)
    soak: dict[str, Any] | None = None
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    first_load: float | None = None
    last_load: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/messages"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.children: list[Child] = []
        self.identity: dict[str, Any] = {}
        self.connector: dict[str, Any] = {}
        self.pg_databases: list[str] = []
        self.slice_no = 0

    # -- processes -------------------------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Child:
        child = Child(name, argv, env=env, log=self.tmp / f"{name}.log", cwd=cwd)
        self.children.append(child)
        return child

    def stop(self, child: Child | None) -> None:
        if child is not None:
            child.stop()
            if child in self.children:
                self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            try:
                child.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"could not stop {child.name}: {exc}", file=sys.stderr)
        self.children.clear()

    def start_fakes(self) -> None:
        env = clean_env()
        identity = self.spawn("identity", [PYTHON, "-m", "bench.turns.identity",
                                           "--token-expires-in", str(self.args.token_lifetime)], env)
        connector = self.spawn("connector", [PYTHON, "-m", "bench.turns.connector"], env)
        self.identity = identity.ready()
        self.connector = connector.ready()
        self.service_url = f"http://127.0.0.1:{self.connector['port']}/amer/"
        self.control = f"http://127.0.0.1:{self.connector['control_port']}"

    def auth_env(self) -> dict[str, str]:
        return {**clean_env(), "MicrosoftAppId": self.identity["app_id"],
                "MicrosoftAppPassword": self.identity["app_password"],
                "ToBotFromChannelOpenIdMetadataUrl": self.identity["http_url"] + "/v1/.well-known/openidconfiguration",
                "ToBotFromChannelTokenIssuer": self.identity["issuer"],
                "ToChannelFromBotOAuthScope": "https://api.botframework.com/.default",
                "REQUESTS_CA_BUNDLE": self.identity["ca_path"]}

    def start_echo(self, target: Target) -> None:
        target.port = free_port()
        env = {**self.auth_env(), "PORT": str(target.port),
               "ToChannelFromBotLoginUrl": self.identity["https_url"] + "/adfs"}
        target.child = self.spawn("echo", [PYTHON, "-m", "bench.turns.echo_bot"], env)
        target.child.ready()
        target.startups.append(wait_http(target.child, target.port, "/api/messages"))

    def start_bare(self, target: Target) -> None:
        target.port = free_port()
        env = {**self.auth_env(), "PORT": str(target.port), "CA_PATH": self.identity["ca_path"],
               "TOKEN_URL": self.identity["https_url"] + "/botframework.com/oauth2/v2.0/token"}
        target.child = self.spawn("bare", [PYTHON, "-m", "bench.turns.bare"], env)
        target.child.ready()
        target.startups.append(wait_http(target.child, target.port, "/api/messages"))

    def ours_env(self, target: Target) -> dict[str, str]:
        admins = ",".join(user_id(i) for i in range(self.args.conversations))
        root = target.root or getattr(self.args, "bot_root", "")
        extra = {"PYTHONPATH": str(Path(root).resolve())} if root else {}
        return {**self.auth_env(), **extra, **target.env, "PORT": str(target.port), "HOST": "127.0.0.1", "CREDITS_STORE": target.store or "",
                "CREDITS_ADMINS": admins, "CREDITS_RATE_LIMIT": "0",
                "ToChannelFromBotLoginUrl": self.identity["https_url"] + "/botframework.com",
                "LOG_LEVEL": self.args.log_level}

    def start_ours(self, target: Target) -> float:
        """Start our bot on its store; seconds from Popen to the first /readyz 200."""
        target.port = free_port()
        workdir = self.tmp / f"cwd-{target.label}"   # no stray .env
        workdir.mkdir(exist_ok=True)
        target.child = self.spawn(target.label, [PYTHON, "-m", "bot", "serve"], self.ours_env(target), cwd=workdir)
        return wait_http(target.child, target.port, "/readyz", ok={200})

    # -- PostgreSQL --------------------------------------------------------------------------------------------------

    async def _pg_admin(self, statement: str) -> None:
        import asyncpg
        connection = await asyncpg.connect(self.args.pg_server.rstrip("/") + "/postgres", timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def create_pg(self) -> str:
        name = f"bench_turns_{os.getpid()}_{int(time.time())}_{len(self.pg_databases)}"
        asyncio.run(self._pg_admin(f'CREATE DATABASE "{name}"'))
        self.pg_databases.append(name)
        return self.args.pg_server.rstrip("/") + "/" + name

    def drop_pg(self) -> None:
        while self.pg_databases:
            asyncio.run(self._pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_databases[-1]}" WITH (FORCE)'))
            self.pg_databases.pop()

    # -- load ----------------------------------------------------------------------------------------------------------

    def load(self, target: Target, *, duration: float, turns: int = 0, samples: bool = True,
             rss_every: float = 0.5, mix: str = "") -> dict[str, Any]:
        assert target.child is not None and target.child.alive(), f"{target.label} is not running"
        self.slice_no += 1
        samples_file = self.tmp / f"samples-{self.slice_no}.json"
        argv = [PYTHON, "-m", "bench.turns.loadgen", "--url", target.url, "--service-url", self.service_url,
                "--connector-control", self.control, "--identity", self.identity["http_url"],
                "--app-id", self.identity["app_id"], "--conversations", str(self.args.conversations),
                "--duration", str(duration), "--turns", str(turns), "--bot-pid", str(target.child.pid),
                "--rss-every", str(rss_every), "--label", target.label, "--run-id", f"r{os.getpid()}s{self.slice_no}",
                "--mix", mix or getattr(self.args, "mix", "") or "balance,add,submit"]
        if samples:
            argv += ["--samples-out", str(samples_file)]
        now = time.monotonic()
        target.first_load = target.first_load if target.first_load is not None else now
        done = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT, env=clean_env(),
                              timeout=max(duration, 60) + 120 + (turns / 50 if turns else 0))
        target.last_load = time.monotonic()
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed on {target.label}: {done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        if samples:
            data = json.loads(samples_file.read_text())
            summary["_latencies"] = data["latency_ms"]
            summary["_by_kind"] = data["by_kind"]
            samples_file.unlink()
        return summary

    def verify(self, target: Target) -> dict[str, Any]:
        env = {**self.ours_env(target)}
        done = subprocess.run([PYTHON, "-m", "bot", "verify", "--store", target.store or ""], check=False,
                              capture_output=True,
                              text=True, env=env, cwd=self.tmp / f"cwd-{target.label}", timeout=300)
        fields = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line and not line.startswith(" "))
        return {"exit": done.returncode, "entries": int(fields.get("entries", "0") or 0),
                "problems": int(fields.get("problems", "0") or 0)}


# -- aggregation ---------------------------------------------------------------------------------------------------

def aggregate(target: Target) -> dict[str, Any]:
    slices = target.slices
    turns = sum(s["turns"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)
    cpu = sum(s["bot_cpu_s"] for s in slices)
    replies = sum(s["replies"] for s in slices)
    connections = sum(s["connections_new"] for s in slices)
    errors = {k: sum(s["errors"][k] for s in slices) for k in ("http", "exception", "no_reply", "incidents", "total")}
    everything = slices + target.warmups + ([target.soak] if target.soak else [])
    return {
        "turns": turns,
        "seconds": seconds,
        "throughput": turns / seconds if seconds else 0.0,
        "throughput_per_round": [s["throughput"] for s in slices],
        "latency_ms": {"p50": percentile(target.latencies, 50), "p90": percentile(target.latencies, 90),
                       "p99": percentile(target.latencies, 99),
                       "max": max(target.latencies) if target.latencies else float("nan")},
        "p99_per_round": [s["latency_ms"]["p99"] for s in slices],
        "by_kind_p99_ms": {k: percentile(v, 99) for k, v in sorted(target.by_kind.items())},
        "by_kind_p50_ms": {k: percentile(v, 50) for k, v in sorted(target.by_kind.items())},
        "bot_cpu_ms_per_turn": cpu * 1000 / turns if turns else float("nan"),
        "cpu_ms_per_round": [s["bot_cpu_ms_per_turn"] for s in slices],
        "loop_cpu_ms_per_turn": sum(s["bot_cpu_main_s"] for s in slices) * 1000 / turns if turns else float("nan"),
        "cpu_bound_turns_per_s_one_core": turns / cpu if cpu else float("nan"),
        "errors": errors,
        "first_exception": next((s["first_exception"] for s in slices if s.get("first_exception")), None),
        "token_requests_measured": sum(s["token_requests"] for s in slices),
        "token_requests_run": sum(s["token_requests"] for s in everything),
        "tenant_discovery_run": sum(s["tenant_discovery"] for s in everything),
        "connections_new_measured": connections,
        "replies_measured": replies,
        "connections_per_reply": connections / replies if replies else float("nan"),
        "connections_new_run": sum(s["connections_new"] for s in everything),
        "rss_mb": slices[-1]["rss_mb_after"] if slices else None,
        "threads": slices[-1]["bot_threads"] if slices else None,
    }


def memory(soak: dict[str, Any] | None) -> dict[str, Any] | None:
    """RSS over the soak: readings at 0/25/50/75/100% of the turns, and the growth per 100k turns projected from a
    least-squares line through the readings after the first quarter (the warm-up of caches and pools)."""
    if not soak or not soak["rss_series"]:
        return None
    series = [(n, r) for _, n, r in soak["rss_series"]]
    total = series[-1][0] or 1

    def at(fraction: float) -> float:
        return min(series, key=lambda p: abs(p[0] - fraction * total))[1]

    tail = [(n, r) for n, r in series if n >= 0.25 * total]
    slope = float("nan")
    if len(tail) >= 3 and tail[-1][0] > tail[0][0]:
        mean_n = statistics.fmean(n for n, _ in tail)
        mean_r = statistics.fmean(r for _, r in tail)
        var = sum((n - mean_n) ** 2 for n, _ in tail)
        slope = sum((n - mean_n) * (r - mean_r) for n, r in tail) / var if var else float("nan")
    base = at(0.25)
    growth_100k = slope * 100_000 if not math.isnan(slope) else float("nan")
    return {"turns": soak["turns"], "seconds": soak["seconds"], "throughput": soak["throughput"],
            "p99_ms": soak["latency_ms"]["p99"], "errors": soak["errors"]["total"],
            "rss_mb_at": {"0%": at(0), "25%": base, "50%": at(0.5), "75%": at(0.75), "100%": at(1.0)},
            "growth_mb_per_100k_turns": growth_100k,
            "growth_fraction_per_100k_turns": growth_100k / base if base else float("nan")}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paired_median(a: Target, b: Target, key: str) -> float:
    values = [ratio(x[key] if not isinstance(x[key], dict) else x[key]["p99"],
                    y[key] if not isinstance(y[key], dict) else y[key]["p99"]) for x, y in zip(a.slices, b.slices)]
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def verdicts(ours: Target, echo: Target, bare: Target, agg: dict[str, dict[str, Any]], mem: dict[str, Any] | None,
             args: argparse.Namespace) -> dict[str, Any]:
    a, e, b = agg[ours.label], agg[echo.label], agg[bare.label]
    span = (ours.last_load or 0) - (ours.first_load or 0)
    allowed = max(1, math.ceil(span / max(args.token_lifetime - 300, 1)))
    out: dict[str, Any] = {
        "throughput_x_echo": {"value": ratio(a["throughput"], e["throughput"]),
                              "median_of_rounds": paired_median(ours, echo, "throughput"),
                              "target": f">= {TARGETS['throughput_x_echo']:g}"},
        "p99_ms": {"value": a["latency_ms"]["p99"], "target": f"<= {TARGETS['p99_ms']:g}",
                   "median_of_rounds": statistics.median(a["p99_per_round"]) if a["p99_per_round"] else None},
        "cpu_x_bare": {"value": ratio(a["bot_cpu_ms_per_turn"], b["bot_cpu_ms_per_turn"]),
                       "median_of_rounds": paired_median(ours, bare, "bot_cpu_ms_per_turn"),
                       "target": f"<= {TARGETS['cpu_x_bare']:g}"},
        "token_requests": {"value": a["token_requests_run"], "target": f"<= {allowed} (token lifetime "
                           f"{args.token_lifetime} s, run {span:.0f} s)", "allowed": allowed},
        "connections_per_reply": {"value": a["connections_per_reply"],
                                  "target": f"<= {TARGETS['connections_per_reply']:g} (after warm-up)"},
        "startup_s": {"value": statistics.median(ours.startups) if ours.startups else float("nan"),
                      "max": max(ours.startups) if ours.startups else None, "after_load": ours.startup_after_load,
                      "target": f"< {TARGETS['startup_s']:g}"},
        "memory_growth_per_100k": {"value": mem["growth_fraction_per_100k_turns"] if mem else float("nan"),
                                   "mb": mem["growth_mb_per_100k_turns"] if mem else None,
                                   "soak_turns": mem["turns"] if mem else 0,
                                   "target": f"<= {TARGETS['memory_growth_per_100k']:.0%} of RSS"},
        "errors": {"value": a["errors"]["total"], "target": "0"},
    }
    out["throughput_x_echo"]["ok"] = out["throughput_x_echo"]["value"] >= TARGETS["throughput_x_echo"]
    out["p99_ms"]["ok"] = out["p99_ms"]["value"] <= TARGETS["p99_ms"]
    out["cpu_x_bare"]["ok"] = out["cpu_x_bare"]["value"] <= TARGETS["cpu_x_bare"]
    out["token_requests"]["ok"] = out["token_requests"]["value"] <= allowed
    out["connections_per_reply"]["ok"] = out["connections_per_reply"]["value"] <= TARGETS["connections_per_reply"]
    out["startup_s"]["ok"] = max(ours.startups or [math.inf]) < TARGETS["startup_s"] and \
        (ours.startup_after_load is None or ours.startup_after_load < TARGETS["startup_s"])
    growth = out["memory_growth_per_100k"]["value"]
    if not mem or mem["turns"] < MIN_SOAK_TURNS:
        out["memory_growth_per_100k"]["ok"] = None   # too few turns to tell a trend from warm-up
    else:
        out["memory_growth_per_100k"]["ok"] = (not math.isnan(growth)) and growth <= TARGETS["memory_growth_per_100k"]
    out["errors"]["ok"] = out["errors"]["value"] == 0
    return out


# -- the run ---------------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    bench = Bench(args, tmp)
    echo, bare = Target("echo", "echo"), Target("bare", "bare")
    ours: list[Target] = []
    began = time.monotonic()
    try:
        bench.start_fakes()
        for name, root, env in args.variants:
            for backend in args.backends:
                label = f"ours-{backend}" + (f"-{name}" if name else "")
                store = str(tmp / f"store-{label}") if backend == "tinydb" else bench.create_pg()
                ours.append(Target(label, "ours", backend=backend, store=store, root=root, env=env))
        log(f"fakes up; identity {bench.identity['https_url']}, connector {bench.service_url}; logs in {tmp}")

        # 1. start-up, alternating backends; the last start keeps running
        for trial in range(args.startup_trials):
            for target in ours:
                target.startups.append(bench.start_ours(target))
                if trial < args.startup_trials - 1:
                    bench.stop(target.child)
        log("start-up (s): " + ", ".join(f"{t.label} {[round(s, 3) for s in t.startups]}" for t in ours))
        bench.start_echo(echo)
        bench.start_bare(bare)
        targets = [echo, bare, *ours]

        # 2. warm-up
        for target in targets:
            target.warmups.append(bench.load(target, duration=args.warmup, samples=False))
        log("warm-up done")

        # 3. interleaved rounds
        for round_no in range(args.rounds):
            order = targets[round_no % len(targets):] + targets[:round_no % len(targets)]
            for target in order:
                summary = bench.load(target, duration=args.slice)
                target.latencies.extend(summary.pop("_latencies"))
                for kind, values in summary.pop("_by_kind").items():
                    target.by_kind.setdefault(kind, []).extend(values)
                target.slices.append(summary)
            log(f"round {round_no + 1}/{args.rounds}: " + ", ".join(
                f"{t.label} {t.slices[-1]['throughput']:.0f}/s p99 {t.slices[-1]['latency_ms']['p99']:.0f} ms "
                f"cpu {t.slices[-1]['bot_cpu_ms_per_turn']:.2f} ms" for t in targets))

        # 4. soak, per backend
        for target in ours:
            if args.soak_turns:
                target.soak = bench.load(target, duration=args.soak_seconds, turns=args.soak_turns, samples=False,
                                         rss_every=args.rss_every, mix=args.soak_mix or args.mix)
                log(f"soak {target.label}: {target.soak['turns']} turns in {target.soak['seconds']:.1f} s, RSS "
                    f"{target.soak['rss_mb_before']:.1f} -> {target.soak['rss_mb_after']:.1f} MB")

        # 5. start-up on the store the run left behind (not in --quick), then verify
        for target in ours:
            bench.stop(target.child)
            if not args.quick:
                target.startup_after_load = bench.start_ours(target)
                bench.stop(target.child)
            target.verify = bench.verify(target)
        log("after load: " + ", ".join(f"{t.label} start-up {t.startup_after_load} s, verify {t.verify}"
                                        for t in ours))
    except BaseException:
        for child in bench.children:
            print(f"--- {child.name} log tail ---\n{child.tail(1500)}", file=sys.stderr)
        raise
    finally:
        bench.stop_all()
        try:
            bench.drop_pg()
        except Exception as exc:  # noqa: BLE001
            print(f"could not drop {bench.pg_databases}: {exc}", file=sys.stderr)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    agg = {t.label: aggregate(t) for t in [echo, bare, *ours]}
    result: dict[str, Any] = {
        "config": {"quick": args.quick, "conversations": args.conversations, "rounds": args.rounds,
                   "slice_s": args.slice, "warmup_s": args.warmup, "soak_turns": args.soak_turns,
                   "startup_trials": args.startup_trials, "token_lifetime_s": args.token_lifetime,
                   "log_level": args.log_level, "cpus": os.cpu_count(), "load_avg_end": os.getloadavg(),
                   "bot_root": args.bot_root or str(ROOT), "soak_seconds": args.soak_seconds, "mix": args.mix,
                   "soak_mix": args.soak_mix or args.mix, "bench_exp": os.environ.get("BENCH_EXP", ""),
                   "wall_s": time.monotonic() - began},
        "targets": {},
    }
    for t in [echo, bare, *ours]:
        entry: dict[str, Any] = {**agg[t.label], "startup_s": t.startups}
        if t.kind == "ours":
            entry["startup_after_load_s"] = t.startup_after_load
            entry["memory"] = memory(t.soak)
            entry["verify"] = t.verify
            entry["checks"] = verdicts(t, echo, bare, agg, entry["memory"], args)
        result["targets"][t.label] = entry
    return result


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(result: dict[str, Any]) -> str:
    lines = []
    t = result["targets"]
    c = result["config"]
    lines.append(f"{c['conversations']} concurrent conversations, {c['rounds']} interleaved rounds of {c['slice_s']} s "
                 f"per target (after {c['warmup_s']} s warm-up), soak up to {c['soak_turns']} turns / "
                 f"{c['soak_seconds']:g} s per backend; "
                 f"{c['cpus']} CPUs, load average at the end {c['load_avg_end'][0]:.2f}")
    lines.append("")
    header = f"{'target':<15}{'turns/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms/turn':>13}{'loop ms':>9}{'1-core max/s':>14}" \
             f"{'tokens':>8}{'conn/reply':>12}{'RSS MB':>8}{'errors':>8}"
    lines.append(header)
    for label, e in t.items():
        lines.append(f"{label:<15}{e['throughput']:>9.1f}{e['latency_ms']['p50']:>9.1f}{e['latency_ms']['p99']:>9.1f}"
                     f"{e['bot_cpu_ms_per_turn']:>13.2f}{e['loop_cpu_ms_per_turn']:>9.2f}"
                     f"{e['cpu_bound_turns_per_s_one_core']:>14.0f}"
                     f"{e['token_requests_run']:>8}{e['connections_per_reply']:>12.3f}{(e['rss_mb'] or 0):>8.1f}"
                     f"{e['errors']['total']:>8}")
    for label, e in t.items():
        if "checks" not in e:
            continue
        lines.append("")
        lines.append(f"{label}: p50/p99 by kind (ms): " + ", ".join(
            f"{k} {e['by_kind_p50_ms'][k]:.0f}/{e['by_kind_p99_ms'][k]:.0f}" for k in e["by_kind_p99_ms"]))
        for name, check in e["checks"].items():
            value = check["value"]
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            extra = ""
            if check.get("median_of_rounds") is not None:
                extra = f" (median of rounds {check['median_of_rounds']:.3f})"
            if name == "startup_s":
                extra = f" (max {check['max']:.3f}" + (f", on the loaded store {check['after_load']:.3f})"
                                                       if check["after_load"] is not None else ")")
            if name == "memory_growth_per_100k" and check.get("mb") is not None:
                extra = f" ({check['mb']:.1f} MB per 100k turns, projected from {check['soak_turns']} turns)"
            verdict = "n/a " if check["ok"] is None else ("PASS" if check["ok"] else "FAIL")
            lines.append(f"  {verdict}  {name:<24}{shown:>10}  target {check['target']}{extra}")
        if e.get("memory"):
            m = e["memory"]
            lines.append("        RSS MB at " + ", ".join(f"{k} {v:.1f}" for k, v in m["rss_mb_at"].items())
                         + f" of the soak ({m['throughput']:.0f} turns/s, p99 {m['p99_ms']:.0f} ms)")
        if e.get("verify"):
            lines.append(f"        store after the run: {e['verify']['entries']} entries, "
                         f"{e['verify']['problems']} problems (python -m bot verify exit {e['verify']['exit']})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 20 s (1 round, short slices)")
    parser.add_argument("--bot-root", default="",
                        help="run our bot from this checkout instead (PYTHONPATH; e.g. a branch with changes)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[:root=PATH][;KEY=VALUE...]",
                        help="run our bot once more per backend, side by side with the others: from another "
                             "checkout (root=) and/or with extra environment; labelled ours-<backend>-NAME. "
                             "Give it several times; without it, one variant (this checkout or --bot-root)")
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--slice", type=float, default=None, help="seconds per target per round (default 5; quick 1.5)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (default 3; quick 0.5)")
    parser.add_argument("--soak-turns", type=int, default=None,
                        help="turns per backend for the memory check (default 10000; quick 200; 0: skip)")
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="at most this long per backend (default 60; quick 2; 0: until --soak-turns)")
    parser.add_argument("--rss-every", type=float, default=0.5)
    parser.add_argument("--mix", default="balance,add,submit",
                        help="what the conversations send, cycled (loadgen kinds: balance, add, submit)")
    parser.add_argument("--soak-mix", default="", help="the soak's mix, if not --mix (e.g. balance: no state growth)")
    parser.add_argument("--startup-trials", type=int, default=None, help="starts per backend (default 3; quick 1)")
    parser.add_argument("--backends", default="tinydb,postgres", help="comma-separated: tinydb, postgres")
    parser.add_argument("--pg-server", default=os.environ.get("CREDITS_TEST_PG", "postgresql://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server for a fresh database (dropped at the end)")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="lifetime (s) of the fake's access tokens")
    parser.add_argument("--log-level", default="INFO", help="our bot's LOG_LEVEL (production default INFO)")
    parser.add_argument("--out", default="", help="also write the JSON summary to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, TinyDB store)")
    return parser


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """`NAME[:KEY=VALUE[;KEY=VALUE...]]` -> (name, root, env); the key `root` is the checkout to run from."""
    name, _, rest = text.partition(":")
    root, env = "", {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        if key == "root":
            root = value
        else:
            env[key] = value
    return name.strip(), root, env


def main() -> None:
    args = build_parser().parse_args()
    defaults = {"rounds": (3, 1), "slice": (5.0, 1.5), "warmup": (3.0, 0.5), "soak_turns": (10_000, 200),
                "soak_seconds": (60.0, 2.0), "startup_trials": (3, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.variants = [parse_variant(v) for v in args.variant] or [("", "", {})]
    for backend in args.backends:
        if backend not in ("tinydb", "postgres"):
            raise SystemExit(f"unknown backend {backend!r}")
    result = run(args)
    print(report(result))
    line = json.dumps(rounded(result))
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
