"""Ledger scenarios written as plain text (tests/scenarios/*.txt), run against every backend.

A scenario reads like what an admin would tell you happened. Amounts are in major units of the account's
currency (parsed as Decimal, then converted with `money.to_minor`, like the bot does). One command per line;
`#` starts a comment (the first comment is the scenario's title). After a command, `->` lists what its result
must show, separated by commas.

Commands
    currency USD                         open the account (if omitted, the first command opens it in USD)
    at 2026-03-01 09:00                  set the clock (UTC)
    advance 25h | 30m | 3d | 2 months    move the clock
    recharge 50 below 100 [cap 500] [max 3/day]    turn auto-recharge on (max defaults to 3/day)
    recharge off
    thresholds 100 50 | thresholds none  low-balance thresholds
    subscribe finance to low_balance exhausted
    fund 120 [as KEY]                    add funds        (KEY defaults to "line-N")
    adjust -30 [as KEY]                  manual correction
    use 90 [in EUR] [as KEY]             one usage row    (KEY is the usage id)
    batch 90 as a, 10 EUR as b, 0 as c   usage rows in one call
    expire                               the daily expiry job

Checks after `->`
    balance 130 | recharges 2 | blocked monthly_cap | blocked none | replayed | error InsufficientFunds
    error ValueError                                    (a programming error: a key the ledger reserves)
    alerts recharged low_balance@100 | alerts none      (the alerts this operation raised, in order)
    recorded 2 | replayed 1 | rejected 1 | conflict 1   (batch rows)
    expired 1                                           (postings written by `expire`)

Expectations on the account
    expect balance 130
    expect alerts recharged recharge_blocked     (every alert so far, oldest first; or `none`)
    expect lots 30 50 50                         (money left per open lot, oldest first; or `none`)
    expect entries funds_added usage auto_recharge   (every entry kind, oldest first)
    expect verify ok
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from storage import errors, policy
from storage.errors import LedgerError
from storage.model import (Alert, AlertKind, AlertSettings, BatchResult, Posting, RechargeSettings, RowStatus,
                           UsageRecord)
from storage.money import to_major, to_minor

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))
TENANT = "tenant-scenario"
ADMIN = "aad-scenario-admin"


@dataclass
class Line:
    number: int
    text: str
    words: list[str]        # the command, tokenised
    checks: list[str]       # what follows "->", split on commas


class ScenarioFailed(AssertionError):
    pass


def parse(path: Path) -> list[Line]:
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        command, _, checks = text.partition("->")
        lines.append(Line(number, raw.strip(), shlex.split(command),
                          [c.strip() for c in checks.split(",") if c.strip()]))
    return lines


def parse_duration(words: list[str]) -> timedelta | int:
    """A timedelta, or a number of calendar months (int)."""
    match = re.fullmatch(r"(\d+)\s*(m|min|h|d|days?|months?)", " ".join(words))
    if not match:
        raise ValueError(f"not a duration: {' '.join(words)!r}")
    n, unit = int(match[1]), match[2]
    if unit.startswith("month"):
        return n
    return {"m": timedelta(minutes=n), "min": timedelta(minutes=n), "h": timedelta(hours=n)}.get(
        unit, timedelta(days=n))


class Runner:
    """Runs one scenario's lines against one ledger."""

    def __init__(self, ledger, clock, path: Path) -> None:
        self.ledger = ledger
        self.clock = clock
        self.path = path
        self.currency: str | None = None

    # --- helpers ------------------------------------------------------------------------------------------
    def fail(self, line: Line, message: str) -> None:
        raise ScenarioFailed(f"{self.path.name}:{line.number}: {line.text}\n    {message}")

    def minor(self, text: str) -> int:
        return to_minor(Decimal(text), self.currency or "USD", allow_zero=True, allow_negative=True)

    def major(self, minor: int) -> str:
        """Minor units shown in major units of the account's currency (what the checks compare)."""
        return str(to_major(minor, self.currency or "USD"))

    def show_alert(self, alert: Alert) -> str:
        if alert.kind is AlertKind.LOW_BALANCE:
            return f"low_balance@{self.major(alert.payload['threshold'])}"
        return alert.kind.value

    def expected_alert(self, word: str) -> str:
        if "@" in word:
            kind, amount = word.split("@")
            return f"{kind}@{self.major(self.minor(amount))}"
        return word

    async def ensure_account(self) -> None:
        if self.currency is None:
            self.currency = "USD"
            await self.ledger.open_account(TENANT, "USD", actor=ADMIN)

    @staticmethod
    def option(words: list[str], name: str) -> str | None:
        if name in words:
            return words[words.index(name) + 1]
        return None

    # --- commands -----------------------------------------------------------------------------------------
    async def run(self, lines: list[Line]) -> None:
        for line in lines:
            verb = line.words[0]
            if verb == "expect":
                await self.ensure_account()
                await self.expect(line)
                continue
            try:
                result: Any = await self.command(line)
            except (LedgerError, ValueError) as exc:
                result = exc
            await self.check(line, result)

    async def command(self, line: Line) -> Any:
        verb, words = line.words[0], line.words[1:]
        key = self.option(words, "as") or f"line-{line.number}"
        if verb == "currency":
            self.currency = words[0].upper()
            return await self.ledger.open_account(TENANT, words[0], actor=ADMIN)
        if verb == "at":
            self.clock.set(datetime.fromisoformat(" ".join(words)).replace(tzinfo=timezone.utc))
            return None
        if verb == "advance":
            step = parse_duration(words)
            if isinstance(step, int):
                self.clock.set(policy.add_months(self.clock.now, step))
            else:
                self.clock.advance(step)
            return None
        await self.ensure_account()
        if verb == "recharge":
            if words == ["off"]:
                settings = RechargeSettings()
            else:
                cap = self.option(words, "cap")
                per_day = self.option(words, "max")
                settings = RechargeSettings(True, self.minor(words[0]), self.minor(words[2]),
                                            self.minor(cap) if cap else None,
                                            int(per_day.split("/")[0]) if per_day else 3)
            return await self.ledger.set_recharge_settings(TENANT, settings, actor=ADMIN, key=key)
        if verb == "thresholds":
            values = () if words == ["none"] else tuple(self.minor(w) for w in words)
            return await self.ledger.set_alert_settings(TENANT, AlertSettings(values), actor=ADMIN, key=key)
        if verb == "subscribe":
            kinds = [AlertKind(w) for w in words[2:]]
            return await self.ledger.subscribe(TENANT, words[0], kinds, actor=ADMIN, key=key)
        if verb == "fund":
            return await self.ledger.add_funds(TENANT, to_minor(words[0], self.currency), actor=ADMIN, key=key)
        if verb == "adjust":
            amount = to_minor(words[0], self.currency, allow_negative=True)
            return await self.ledger.adjust(TENANT, amount, actor=ADMIN, key=key)
        if verb == "use":
            return await self.ledger.record_usage(TENANT, self.usage(words, key))
        if verb == "batch":
            rows = []
            for part in " ".join(words).split(","):
                row_words = part.split()
                rows.append(self.usage(row_words, self.option(row_words, "as") or f"line-{line.number}-{len(rows)}"))
            return await self.ledger.record_usage_batch(TENANT, rows)
        if verb == "expire":
            return await self.ledger.expire_lots()
        self.fail(line, f"unknown command {verb!r}")

    def usage(self, words: list[str], usage_id: str) -> UsageRecord:
        currency = self.option(words, "in") or (words[1] if len(words) > 1 and words[1] not in ("as", "in")
                                                else self.currency)
        amount = to_minor(words[0], currency, allow_zero=True, allow_negative=True)
        return UsageRecord(usage_id, amount, currency, self.clock.now - timedelta(hours=1))

    # --- checks -------------------------------------------------------------------------------------------
    async def check(self, line: Line, result: Any) -> None:
        if isinstance(result, (LedgerError, ValueError)) and not any(c.startswith("error") for c in line.checks):
            self.fail(line, f"unexpected {type(result).__name__}: {result}")
        postings: list[Posting] = []
        if isinstance(result, Posting):
            postings = [result]
        elif isinstance(result, BatchResult):
            postings = list(result.postings)
        elif isinstance(result, list):
            postings = result
        for check in line.checks:
            word, _, rest = check.partition(" ")
            rest = rest.strip()
            if word == "error":
                if type(result).__name__ != rest:
                    self.fail(line, f"expected {rest}, got {result!r}")
                assert rest == "ValueError" or issubclass(getattr(errors, rest), LedgerError), rest
            elif word == "balance":
                actual = result.balance if isinstance(result, (Posting, BatchResult)) else \
                    (await self.ledger.get_account(TENANT)).balance
                self.equal(line, "balance", self.major(actual), self.major(self.minor(rest)))
            elif word == "recharges":
                self.equal(line, "recharges", sum(len(p.recharges) for p in postings), int(rest))
            elif word == "blocked":
                actual = [p.recharge_blocked for p in postings if p.recharge_blocked] or ["none"]
                self.equal(line, "blocked", actual[-1], rest)
            elif word == "alerts":
                ids = [i for p in postings for i in p.alert_ids]
                shown = [self.show_alert(await self.ledger.get_alert(i)) for i in ids] or ["none"]
                self.equal(line, "alerts", shown, [self.expected_alert(w) for w in rest.split()])
            elif word in ("recorded", "rejected", "conflict") or (word == "replayed" and rest):
                assert isinstance(result, BatchResult), line.text
                self.equal(line, word, result.count(RowStatus(word)), int(rest))
            elif word == "replayed":
                self.equal(line, "replayed", getattr(result, "replayed", None), True)
            elif word == "expired":
                self.equal(line, "expired", len(postings), int(rest))
            else:
                self.fail(line, f"unknown check {check!r}")

    async def expect(self, line: Line) -> None:
        what, values = line.words[1], line.words[2:]
        if what == "balance":
            actual = (await self.ledger.get_account(TENANT)).balance
            self.equal(line, "balance", self.major(actual), self.major(self.minor(values[0])))
        elif what == "alerts":
            alerts = list(reversed(await self.ledger.alerts(TENANT, limit=10_000)))
            self.equal(line, "alerts", [self.show_alert(a) for a in alerts] or ["none"],
                       [self.expected_alert(w) for w in values])
        elif what == "lots":
            lots = await self.ledger.lots(TENANT)
            self.equal(line, "lots", [self.major(lot.remaining) for lot in lots] or ["none"],
                       ["none"] if values == ["none"] else [self.major(self.minor(v)) for v in values])
        elif what == "entries":
            page = await self.ledger.history(TENANT, limit=10_000)
            self.equal(line, "entries", [e.kind.value for e in reversed(page.items)], values)
        elif what == "verify":
            report = await self.ledger.verify()
            self.equal(line, "verify", list(report.problems), [])
        else:
            self.fail(line, f"unknown expectation {what!r}")

    def equal(self, line: Line, what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            self.fail(line, f"{what}: expected {expected}, got {actual}")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(ledger, clock, path: Path) -> None:
    await Runner(ledger, clock, path).run(parse(path))


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 8
