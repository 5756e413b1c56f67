"""Helpers of the bot crash suite (tests/test_crash_bot.py): the real bot as a subprocess, a recording fake Bot
Connector that knows which incarnation of the bot sent what, a load of commands, card submits and usage imports
that retries every operation until it is acknowledged, the ledger checks run while the bot is down, and the
figures file.

An operation is **acknowledged** when the bot answered it with HTTP 200 and, for a chat message (command or card
submit), its reply reached the fake connector; an import when the admin endpoint answered 200 with a report that
accounts for every row. An operation that got no acknowledgement (the bot was killed under it) is sent again to
the next incarnation exactly as Teams or `import-usage` would: the same activity id for a command, the same
nonce for a card (with a new activity id, as a second press), the same rows for an import.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import aiohttp

from storage import AlertStatus, EntryKind, Ledger
from tests import teams
from tests.fakes.connector import FakeConnector, Recorded
from tests.http_chat import ADMIN, ALEX

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "reliability"
TENANT = teams.TENANT
CHANNEL = teams.channel_id()
PERSONAL = teams.conversation("personal")["id"]
ADMIN_TOKEN = "crash-suite-admin-token-0123456789abcdef"
#: Delivery attempts per alert in the bot under test: every kill during a claim spends one, none may die.
ALERT_ATTEMPTS = 100
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: How long the outbox lease of a killed notifier lasts (bot.notifier.Notifier's default).
LEASE = timedelta(minutes=5)

_REFERENCE = re.compile(r"reference ([0-9A-Za-z-]{8})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the fake connector -----------------------------------------------------------------------------------------

def alert_refs(record: Recorded) -> list[str]:
    """The alert references printed on the cards of one posted activity (none for a reply to a command)."""
    if record.method != "POST" or len(record.segments) != 4:       # replies go to .../activities/{replyToId}
        return []
    return sorted(set(_REFERENCE.findall(json.dumps(record.json))))


class CrashConnector(FakeConnector):
    """The fake Bot Connector, remembering for each accepted activity which incarnation of the bot was running
    (`generation`, set by the test), and able to SIGKILL the bot the moment it posts an alert card: after Teams
    accepted it, before the bot hears the 201, so before it can mark the delivery (ADR 0006's duplicate window)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self.generations: list[int] = []      # parallel to `accepted`
        self.on_alert: Callable[[], None] | None = None
        self.kill_pairs: set[tuple[str, str]] = set()   # the (reference, destination) posts `on_alert` fired on

    def _answer(self, method: str, record: Recorded):  # type: ignore[no-untyped-def]
        before = len(self.accepted)
        response = super()._answer(method, record)
        if len(self.accepted) > before:
            self.generations.append(self.generation)
            if self.on_alert is not None and alert_refs(record):
                hook, self.on_alert = self.on_alert, None
                self.kill_pairs.update((ref, record.conversation_id or "") for ref in alert_refs(record))
                hook()
        return response

    def reply_to(self, activity_id: str, since: int = 0) -> Recorded | None:
        """The first reply accepted (from index `since` on) to the activity `activity_id`."""
        for record in self.accepted[since:]:
            if isinstance(record.json, dict) and record.json.get("replyToId") == activity_id \
                    and len(record.segments) == 5:
                return record
        return None

    def alert_copies(self, since: int = 0) -> dict[tuple[str, str], list[int]]:
        """(alert reference, conversation) -> the generation of each copy accepted from index `since` on."""
        copies: dict[tuple[str, str], list[int]] = {}
        for record, generation in zip(self.accepted[since:], self.generations[since:], strict=True):
            for ref in alert_refs(record):
                copies.setdefault((ref, record.conversation_id or ""), []).append(generation)
        return copies


# --- the bot as a process ---------------------------------------------------------------------------------------

class BotProcess:
    """`python -m bot serve` in local mode over `store`, one incarnation at a time, each on a fresh port."""

    def __init__(self, store: str, workdir: Path) -> None:
        self.store = store
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = ""
        self.incarnations = 0
        self.up = asyncio.Event()          # set while an incarnation is ready for the load
        self.logs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def postgres(self) -> bool:
        return "://" in self.store

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update({"CREDITS_STORE": self.store, "PORT": str(self.port), "HOST": "127.0.0.1",
                    "CREDITS_ADMINS": ADMIN, "LOG_LEVEL": "WARNING", "CREDITS_RATE_LIMIT": "0",
                    "CREDITS_ALERT_ATTEMPTS": str(ALERT_ATTEMPTS), "PYTHONPATH": str(ROOT)})
        if self.postgres:   # the admin endpoint is closed on PostgreSQL unless a token is configured
            env["CREDITS_ADMIN_TOKEN"] = ADMIN_TOKEN
        return env

    async def start(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "an incarnation is still running"
        self.incarnations += 1
        self.port = free_port()
        log = self.workdir / f"bot-{self.incarnations:03d}.log"
        self.logs.append(log)
        with open(log, "wb") as stderr:    # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=self.workdir, env=self.env(),
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the bot exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                async with session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as answer:
                    if answer.status == 200:
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the bot did not become ready in {timeout} s")
            await asyncio.sleep(0.03)
        if self.postgres:
            self.token = ADMIN_TOKEN
        else:   # what `python -m bot import-usage` reads: the running bot's token beside the store
            from bot.admin_api import read_token, token_path
            path = token_path(self.store)
            assert path is not None
            self.token, port = read_token(path)
            assert port == self.port

    def kill(self) -> None:
        """SIGKILL the running incarnation (safe to call twice) and mark the bot down for the load."""
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def reap(self) -> int:
        assert self.proc is not None
        return self.proc.wait(10)

    def terminate(self) -> int:
        """A clean stop (SIGTERM): the notifier finishes its round and the store is closed."""
        self.up.clear()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the bot did not stop on SIGTERM within 20 s") from None


# --- operations -----------------------------------------------------------------------------------------------

@dataclass
class Op:
    """One operation of the load. `entries` are the ledger entries it must leave: (key, kind, amount)."""

    kind: str                                  # "add" | "balance" | "submit" | "import" | "setup"
    n: int
    text: str = ""
    scope: str = "personal"
    activity_id: str = ""
    nonce: str = ""
    amount: int = 0                            # minor units (add, submit)
    rows: list[dict[str, Any]] = field(default_factory=list)
    expect: str = ""                           # a piece of the reply (setup commands)
    attempts: int = 0
    acked: bool = False
    replayed_at_ack: bool = False              # acknowledged as "already done": an earlier attempt had committed
    acked_in: int = 0                          # the incarnation that acknowledged it

    @property
    def entries(self) -> list[tuple[str, EntryKind, int]]:
        if self.kind == "add":
            return [(self.activity_id, EntryKind.FUNDS_ADDED, self.amount)]
        if self.kind == "submit":
            return [(f"card:{self.nonce}", EntryKind.FUNDS_ADDED, self.amount)]
        if self.kind == "import":
            return [(r["usage_id"], EntryKind.USAGE, -_cents(r["charge"])) for r in self.rows]
        return []


def _cents(charge: str) -> int:
    whole, _, frac = charge.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class Refused(Exception):
    """The bot answered, but not as it must (a 5xx, a wrong reply): a failure of the test, not a kill."""


@dataclass
class Figures:
    kinds: dict[str, int] = field(default_factory=dict)         # acknowledged operations per kind
    import_rows: int = 0                                          # rows of acknowledged imports
    attempts_failed: int = 0                                      # attempts that got no acknowledgement
    attempts_failed_by_kind: dict[str, int] = field(default_factory=dict)
    replayed_at_ack: int = 0                                      # committed before a kill, acknowledged as a replay
    replay_checks: int = 0                                        # acknowledged operations re-sent after a restart
    statuses: dict[str, int] = field(default_factory=dict)        # HTTP statuses answered to the load


class Load:
    """Workers that keep the bot busy; every operation is retried (same id, nonce or rows) until acknowledged."""

    def __init__(self, bot: BotProcess, connector: CrashConnector, session: aiohttp.ClientSession,
                 rng: random.Random, *, workers: int = 3) -> None:
        self.bot = bot
        self.connector = connector
        self.session = session
        self.rng = rng
        self.workers = workers
        self.ops: list[Op] = []
        self.figures = Figures()
        self.balance_hint = 0
        self.stopping = False
        self.problems: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._n = 0
        self._stamp = (datetime.now(timezone.utc) - timedelta(hours=3)).replace(microsecond=0)

    # -- making operations ---------------------------------------------------------------------------------------
    def _next(self) -> int:
        self._n += 1
        return self._n

    def setup(self, text: str, expect: str, scope: str = "personal") -> Op:
        n = self._next()
        op = Op("setup", n, text=text, scope=scope, activity_id=f"crash-setup-{n}", expect=expect)
        self.ops.append(op)
        return op

    def new_op(self) -> Op:
        """Steer the balance around the alert thresholds: debit when it is high, add funds when it is low."""
        n = self._next()
        hint = self.balance_hint
        if hint > 10_000:
            weights = {"add": 1, "submit": 1, "import": 6, "balance": 2}
        elif hint < 1_500:
            weights = {"add": 4, "submit": 3, "import": 1, "balance": 2}
        else:
            weights = {"add": 2, "submit": 2, "import": 4, "balance": 2}
        kind = self.rng.choices(list(weights), list(weights.values()))[0]
        if kind == "add":
            cents = self.rng.randint(5, 40) * 100 + self.rng.choice((0, 25, 50, 99))
            op = Op("add", n, text=f"add {money(cents)} crash load {n}", activity_id=f"crash-add-{n}", amount=cents)
        elif kind == "submit":
            cents = self.rng.randint(5, 40) * 100
            op = Op("submit", n, nonce=f"crashnonce{n:07d}", amount=cents)
        elif kind == "import":
            when = (self._stamp + timedelta(seconds=n)).isoformat()
            rows = [{"usage_id": f"crash-call-{n}-{j}", "charge": money(self.rng.randint(40, 260)),
                     "currency": "USD", "occurred_at": when, "capability": "MCOPSTNPP",
                     "details": {"call_type": "user_out_domestic", "user_id": ADMIN}}
                    for j in range(self.rng.randint(4, 12))]
            op = Op("import", n, rows=rows)
        else:
            op = Op("balance", n, text="balance", activity_id=f"crash-balance-{n}")
        self.ops.append(op)
        return op

    # -- running -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"load {i}") for i in range(self.workers)]

    async def finish(self, timeout: float = 60.0) -> None:
        """Stop making new operations; wait until every operation made so far is acknowledged."""
        self.stopping = True
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    async def cancel(self) -> None:
        """Stop the workers wherever they are (a failed test must not leave them running)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while not self.stopping and not self.problems:
            await self.until_acked(self.new_op())

    async def until_acked(self, op: Op) -> None:
        while not op.acked:
            await self.bot.up.wait()
            generation = self.bot.incarnations
            try:
                await self.attempt(op)
            except Refused as problem:
                self.problems.append(f"operation {op.kind} {op.n}: {problem}")
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                pass
            if not op.acked:
                self.figures.attempts_failed += 1
                cut = self.figures.attempts_failed_by_kind
                cut[op.kind] = cut.get(op.kind, 0) + 1
                if self.bot.incarnations == generation and self.bot.up.is_set():
                    await asyncio.sleep(0.02)    # killed, and the test has not noticed yet

    async def attempt(self, op: Op, *, check_replay: bool = False) -> None:
        """One try. Sets `op.acked` when acknowledged; raises `Refused` for a wrong answer, aiohttp's errors when
        the bot died under it. With `check_replay`, the answer must say that nothing was done again."""
        op.attempts += 1
        if op.kind == "import":
            await self._import(op, check_replay)
        else:
            await self._message(op, check_replay)

    async def _message(self, op: Op, check_replay: bool) -> None:
        if op.kind == "submit":
            activity_id = f"crash-submit-{op.n}-{op.attempts}"       # a new activity each press: the nonce is the key
            activity = teams.message("", service_url=self.connector.service_url, sender=ALEX,
                                     activity_id=activity_id)
            activity.pop("text")
            activity.update({"replyToId": f"card-message-{op.n}",
                             "value": {"verb": "add_funds.confirm", "nonce": op.nonce, "amount": money(op.amount),
                                       "memo": f"card {op.n}"}})
        else:
            activity_id = op.activity_id
            activity = teams.message(op.text, service_url=self.connector.service_url, sender=ALEX, scope=op.scope,
                                     activity_id=activity_id)
        since = len(self.connector.accepted)
        async with self.session.post(f"{self.bot.url}/api/messages", json=activity,
                                     timeout=aiohttp.ClientTimeout(total=20)) as answer:
            await answer.read()
            status = answer.status
        self._status(status)
        if status != 200:
            raise Refused(f"/api/messages answered {status}")
        reply = self.connector.reply_to(activity_id, since)
        if reply is None:
            raise Refused("HTTP 200 but no reply reached the connector")
        text = str(reply.json.get("text") or "")
        self._check_reply(op, text, check_replay)
        op.acked = True
        op.acked_in = self.bot.incarnations
        self.figures.kinds[op.kind] = self.figures.kinds.get(op.kind, 0) + (0 if check_replay else 1)

    def _check_reply(self, op: Op, text: str, check_replay: bool) -> None:
        if op.kind == "setup":
            if op.expect not in text:
                raise Refused(f"setup reply {text[:200]!r} lacks {op.expect!r}")
            return
        if op.kind == "balance":
            if "Communications Credits balance" not in text:
                raise Refused(f"balance reply {text[:200]!r}")
            return
        shown = f"${op.amount // 100:,}.{op.amount % 100:02d}"
        done = text.startswith(f"Added {shown}.")
        again = text.startswith("That was already done") and shown in text
        if not (done or again) or (check_replay and not again):
            raise Refused(f"{op.kind} of {shown}: reply {text[:200]!r}")
        if again and not check_replay and not op.acked:
            op.replayed_at_ack = True
            self.figures.replayed_at_ack += 1
        found = re.search(r"balance is (?:now )?(-?)\$(-?[\d,]+)\.(\d\d)", text)
        if found and not check_replay:
            self.balance_hint = int(found.group(2).replace(",", "").replace("-", "")) * 100 + int(found.group(3))
            if found.group(1) or "-" in found.group(2):
                self.balance_hint = -self.balance_hint

    async def _import(self, op: Op, check_replay: bool) -> None:
        body = {"tenant": TENANT, "source": "csv", "rows": op.rows}
        async with self.session.post(f"{self.bot.url}/api/admin/usage", json=body,
                                     headers={"Authorization": f"Bearer {self.bot.token}"},
                                     timeout=aiohttp.ClientTimeout(total=30)) as answer:
            status = answer.status
            report = await answer.json(content_type=None)
        self._status(status)
        if status != 200:
            raise Refused(f"/api/admin/usage answered {status}: {report}")
        rows = len(op.rows)
        already = report.get("skipped_by_reason", {}).get("already recorded", 0)
        if report["read"] != rows or report["rejected"] or report["debited"] + already != rows:
            raise Refused(f"import report {report} for {rows} rows")
        if check_replay and report["debited"]:
            raise Refused(f"re-sent import debited {report['debited']} rows again")
        if already and not check_replay and not op.acked:
            op.replayed_at_ack = True
            self.figures.replayed_at_ack += 1
        op.acked = True
        op.acked_in = self.bot.incarnations
        if not check_replay:
            self.figures.kinds["import"] = self.figures.kinds.get("import", 0) + 1
            self.figures.import_rows += rows
            if isinstance(report.get("balance"), int):
                self.balance_hint = report["balance"]

    def _status(self, status: int) -> None:
        self.figures.statuses[str(status)] = self.figures.statuses.get(str(status), 0) + 1

    async def replay_some(self, count: int) -> int:
        """Re-send up to `count` acknowledged operations that change the ledger: each must answer "already
        done" (an import: every row already recorded). Returns how many were re-sent."""
        done = [op for op in self.ops if op.acked and op.kind in ("add", "submit", "import")]
        sample = self.rng.sample(done, min(count, len(done)))
        for op in sample:
            await self.attempt(op, check_replay=True)
        self.figures.replay_checks += len(sample)
        return len(sample)


# --- checks while the bot is down -------------------------------------------------------------------------------

@dataclass
class LedgerCheck:
    entries: int
    duplicated_keys: int
    lost: list[str]
    phantom: list[str]
    problems: tuple[str, ...]
    balance: int


async def check_ledger(ledger: Ledger, ops: Iterable[Op]) -> LedgerCheck:
    """Every acknowledged operation's entries are there with their amounts; no key twice; no entry that no
    operation of the load asked for (an unacknowledged operation may or may not have committed); `verify()`."""
    report = await ledger.verify(TENANT)
    entries = await ledger.entries_since(TENANT, EPOCH)
    keys = [e.key for e in entries]
    by_key = {e.key: e for e in entries}
    lost: list[str] = []
    wanted: set[str] = set()
    for op in ops:
        for key, kind, amount in op.entries:
            wanted.add(key)
            if not op.acked:
                continue
            entry = by_key.get(key)
            if entry is None or entry.kind is not kind or entry.amount != amount:
                lost.append(f"{op.kind} {op.n}: {key} -> {entry}")
    phantom = [e.key for e in entries if e.kind in (EntryKind.FUNDS_ADDED, EntryKind.USAGE)
               and e.key not in wanted and not e.key.startswith("crash-setup-")]
    account = await ledger.get_account(TENANT)
    return LedgerCheck(len(entries), len(keys) - len(set(keys)), lost, phantom, report.problems, account.balance)


async def expire_dead_leases(store: str) -> tuple[int, set[tuple[str, str]]]:
    """What time would do to the leases of killed notifiers (5 minutes), done at once so the run stays short:
    open the store with a clock past every lease, claim every claimable alert and give it straight back, due
    now. Returns how many were released and the (reference, destination) pairs still undelivered. The bot must
    be down (a TinyDB store has one owner)."""
    from storage import open_ledger
    from storage.clock import utc_now

    ledger = await open_ledger(store, clock=lambda: utc_now() + LEASE + timedelta(seconds=5),
                               max_attempts=ALERT_ATTEMPTS)
    try:
        claimed = await ledger.claim_alerts("crash-test-lease-expiry", lease=timedelta(seconds=1), limit=100_000)
        for alert in claimed:
            await ledger.release_alert(alert.alert_id, worker="crash-test-lease-expiry",
                                       retry_at=utc_now() - timedelta(seconds=1),
                                       error="lease of a killed notifier ran out")
        pending: set[tuple[str, str]] = set()
        for alert in await ledger.alerts(TENANT, limit=100_000):
            assert alert.status is not AlertStatus.DEAD, alert
            pending.update((alert.alert_id[:8], d) for d in alert.pending_destinations)
        return len(claimed), pending
    finally:
        await ledger.close()


# --- figures ----------------------------------------------------------------------------------------------------

def write_figures(suite: str, result: dict[str, Any]) -> Path:
    """Merge `result` (one backend's figures) into artifacts/reliability/<suite>.json: {"suite", "results": [...]},
    one result per backend, the newest replacing the one it repeats."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{suite}.json"
    results: list[dict[str, Any]] = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
            results = [r for r in old.get("results", []) if isinstance(r, dict)]
        except (ValueError, AttributeError):
            results = []
    key = (result.get("backend"), result.get("test"))
    results = [r for r in results if (r.get("backend"), r.get("test")) != key]
    results.append({**result, "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    results.sort(key=lambda r: (str(r.get("test", "")), str(r.get("backend", ""))))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"suite": suite, "results": results}, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
