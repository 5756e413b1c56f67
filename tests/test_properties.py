"""Property-based sequences: random operations, the invariants checked after every step.

A hypothesis `RuleBasedStateMachine` drives the same random sequence of operations (funds, adjustments in both
directions, usage one by one and in batches (with rows the ledger must reject: reserved or missing ids, naive
times), recharge and alert settings, time jumps from an hour to a year, lot expiry, subscriptions, alerts raised
from outside, conversation references, outbox delivery (delivered, released, or the worker crashing so that the
lease runs out), replays of earlier keys with the same and with other arguments, and keys in the namespaces the
ledger reserves, approvals requested and then approved, rejected or refused (decided by their requester, or
already decided)) into one or more backends that share one `FakeClock`.

After every step it checks, for every backend: the balance is the sum of the entries, `verify()` is clean, the
open lots minus the deficit equal the balance, no alert key appears twice, the open lots expire by UTC day with no
two sharing an expiry (ADR 0008: a credit of the newest lot's expiry joins it); and the backends agree with each
other exactly (balance, entries, alerts, audit). After every money operation it checks that no recharge broke
the monthly cap or the burst breaker in force when it was made; after every replay, that nothing changed.

`test_state_machine[reference]` runs the reference model alone (its own invariants); `[tinydb]` runs TinyDB in
lock-step with the reference model, so any divergence is a failing, shrunk example.

Each example runs on a fresh event loop inside a synchronous test (hypothesis and async test functions do not
mix). Profiles: "ci" (default, well under a minute) and "long" (select it with
`LEDGER_HYPOTHESIS_PROFILE=long`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from storage import policy
from storage.clock import FakeClock
from storage.errors import IdempotencyConflict, LedgerError
from storage.ledger import Ledger
from storage.errors import ApprovalClosed, SelfApproval
from storage.model import (AlertKind, AlertSettings, Approval, ApprovalDecision, ApprovalStatus, BatchResult,
                           ConversationRef, EntryKind, Posting, RechargeSettings, RowStatus, SettingsChange,
                           UsageRecord)
from tests.backends import BACKENDS, open_backend

settings.register_profile("ci", max_examples=40, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("long", max_examples=400, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = os.environ.get("LEDGER_HYPOTHESIS_PROFILE", "ci")

T = "tenant-p"
ADMIN = "aad-admin"
ADMIN2 = "aad-admin-2"
CONVERSATION = "19:finance@thread.v2"

amounts = st.integers(min_value=1, max_value=30_000)
time_jumps = st.sampled_from([timedelta(minutes=30), timedelta(hours=1), timedelta(hours=6), timedelta(hours=23),
                              timedelta(hours=24), timedelta(hours=25), timedelta(days=3), timedelta(days=15),
                              timedelta(days=31), timedelta(days=100), timedelta(days=200),
                              timedelta(days=366)])

Call = Callable[[Ledger], Awaitable[Any]]


class LedgerMachine(RuleBasedStateMachine):
    """Backends under test, in lock-step. The first is always the reference model."""

    BACKENDS: tuple[str, ...] = ("reference",)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-props-"))
        self.ledgers: list[Ledger] = []
        for name in self.BACKENDS:
            (self.tmp / name).mkdir()
            self.ledgers.append(self.run(open_backend(name, self.tmp / name, self.clock)))
        self.same(lambda l: l.open_account(T, "USD", actor=ADMIN))
        self.counter = 0
        self.done: list[tuple[str, Call, Any]] = []      # (key, call, original result) of successful keyed ops
        self.usage_rows: list[UsageRecord] = []          # rows recorded, for replays inside batches
        self.recharge = RechargeSettings()               # the settings in force (as the ledger holds them)
        self.approvals: list[Approval] = []              # every approval requested, as requested

    # --- plumbing ---------------------------------------------------------------------------------------------
    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def key(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def same(self, call: Call) -> Any:
        """Run `call` on every backend; they must agree on the outcome. Returns the reference's result, or the
        `LedgerError` it raised."""
        outcomes = []
        for ledger in self.ledgers:
            try:
                outcomes.append(self.run(call(ledger)))
            except LedgerError as exc:
                outcomes.append(exc)
        first = outcomes[0]
        for name, other in zip(self.BACKENDS[1:], outcomes[1:]):
            if isinstance(first, LedgerError) or isinstance(other, LedgerError):
                assert type(other) is type(first), f"{name}: {other!r} where the reference gave {first!r}"
            else:
                assert other == first, f"{name} disagrees with the reference:\n{other!r}\n!=\n{first!r}"
        return first

    def snapshot(self) -> tuple[Any, ...]:
        ref = self.ledgers[0]
        return (self.run(ref.get_account(T)), self.run(ref.history(T, limit=100_000)).items,
                self.run(ref.alerts(T, limit=100_000)), self.run(ref.audit(T, limit=100_000)).items,
                self.run(ref.lots(T)))

    def entries(self) -> list[Any]:
        return list(reversed(self.run(self.ledgers[0].history(T, limit=100_000)).items))

    def refused_everywhere(self, call: Call) -> None:
        """`call` is a programming error (`ValueError`) in every backend and changes nothing."""
        before = self.snapshot()
        for name, ledger in zip(self.BACKENDS, self.ledgers):
            with pytest.raises(ValueError):
                self.run(call(ledger))
            assert self.snapshot() == before, name

    def keyed(self, key: str, call: Call) -> Any:
        result = self.same(call)
        if not isinstance(result, LedgerError):
            self.done.append((key, call, result))
        return result

    def check_recharges(self, postings: list[Posting]) -> None:
        """No recharge broke the cap or the breaker that were in force when it was made."""
        history = self.entries()
        for posting in postings:
            for recharge in posting.recharges:
                earlier = [e for e in history if e.kind is EntryKind.AUTO_RECHARGE and e.seq <= recharge.seq]
                month = policy.month_key(recharge.at)
                in_month = sum(e.amount for e in earlier if policy.month_key(e.at) == month)
                if self.recharge.monthly_cap is not None:
                    assert in_month <= self.recharge.monthly_cap, (in_month, self.recharge)
                in_window = [e for e in earlier if recharge.at - e.at < policy.BREAKER_WINDOW]
                assert len(in_window) <= self.recharge.max_per_day, (len(in_window), self.recharge)
                assert recharge.amount == self.recharge.amount and recharge.actor == "system"

    # --- a realistic start (then anything goes) ----------------------------------------------------------------
    @initialize(opening=st.sampled_from([0, 5_000, 20_000, 50_000]),
                levels=st.sampled_from([(), (10_000,), (20_000, 5_000), (15_000, 10_000, 1_000)]),
                recharge=st.sampled_from([None, (5_000, 10_000, None, 3), (2_000, 8_000, 3, 2)]),
                subscribed=st.sampled_from([True, True, False]))
    def start(self, opening: int, levels: tuple[int, ...], recharge: tuple[int, int, int | None, int] | None,
              subscribed: bool) -> None:
        if subscribed:   # alerts with a destination go to the outbox (without one they are delivered at once)
            self.toggle_subscription(True)
        if recharge:   # (amount, trigger, cap as a multiple of the amount, breaker)
            self.set_recharge(True, *recharge)
        if opening:
            self.add_funds(opening)
        if levels:
            self.set_thresholds(list(levels))

    # --- money ------------------------------------------------------------------------------------------------
    @rule(amount=amounts)
    def add_funds(self, amount: int) -> None:
        key = self.key("fund")
        self.keyed(key, lambda l: l.add_funds(T, amount, actor=ADMIN, key=key, memo="top-up"))

    @rule(amount=st.integers(min_value=-30_000, max_value=30_000).filter(bool))
    def adjust(self, amount: int) -> None:
        key = self.key("adj")
        result = self.keyed(key, lambda l: l.adjust(T, amount, actor=ADMIN, key=key))
        if isinstance(result, Posting):
            self.check_recharges([result])

    @rule(amount=amounts)
    def record_usage(self, amount: int) -> None:
        row = UsageRecord(self.key("call"), amount, "USD", self.clock.now - timedelta(hours=30), {"user": "u1"})
        result = self.keyed(row.usage_id, lambda l: l.record_usage(T, row))
        assert isinstance(result, Posting) and result.entry.amount == -amount
        self.usage_rows.append(row)
        self.check_recharges([result])

    @rule(rows=st.lists(st.tuples(st.integers(min_value=0, max_value=8_000),
                                  st.sampled_from(["USD", "USD", "USD", "EUR"]),
                                  st.sampled_from(["new", "new", "new", "replay", "conflict", "reserved_id",
                                                   "no_id", "naive_time", "naive_replay"]),
                                  st.integers(min_value=0, max_value=10**6)),
                        max_size=6))
    def usage_batch(self, rows: list[tuple[int, str, str, int]]) -> None:
        batch: list[UsageRecord] = []
        for amount, currency, mode, pick in rows:
            if mode in ("replay", "conflict", "naive_replay") and self.usage_rows:
                earlier = self.usage_rows[pick % len(self.usage_rows)]
                batch.append({"replay": earlier, "conflict": replace(earlier, amount=earlier.amount + 1),
                              "naive_replay": replace(earlier, occurred_at=earlier.occurred_at.replace(tzinfo=None)),
                              }[mode])
            elif mode == "reserved_id":
                usage_id = f"expiry:{pick % 50}" if pick % 2 else f"{self.key('row')}:recharge:1"
                batch.append(UsageRecord(usage_id, amount, currency, self.clock.now, {}))
            elif mode == "no_id":
                batch.append(UsageRecord("", amount, currency, self.clock.now, {}))
            elif mode == "naive_time":
                batch.append(UsageRecord(self.key("row"), amount, currency, datetime(2026, 1, 1), {}))
            else:
                batch.append(UsageRecord(self.key("row"), amount, currency, self.clock.now, {}))
        result = self.same(lambda l: l.record_usage_batch(T, batch))
        assert isinstance(result, BatchResult) and len(result.rows) == len(batch)
        for row, outcome in zip(batch, result.rows):
            if not row.usage_id or policy.is_reserved_key(row.usage_id):
                assert (outcome.status, outcome.reason) == (RowStatus.REJECTED, "bad_usage_id"), outcome
            elif row.occurred_at.tzinfo is None:
                assert (outcome.status, outcome.reason) == (RowStatus.REJECTED, "bad_time"), outcome
            if outcome.status.value == "recorded":
                self.usage_rows.append(row)
                self.done.append((row.usage_id, lambda l, row=row: l.record_usage(T, row), outcome.posting))
        self.check_recharges(list(result.postings))

    @rule()
    def expire_lots(self) -> None:
        postings = self.same(lambda l: l.expire_lots())
        assert isinstance(postings, list)
        self.check_recharges(postings)
        for posting in postings:
            lot_id = posting.entry.details["lot_id"]
            assert posting.entry.kind is EntryKind.EXPIRY and posting.entry.key == f"expiry:{lot_id}"

    # --- approvals --------------------------------------------------------------------------------------------
    @rule(amount=amounts, requester=st.sampled_from([ADMIN, ADMIN2]))
    def request_approval(self, amount: int, requester: str) -> None:
        key = self.key("req")
        result = self.keyed(key, lambda l: l.request_approval(T, amount, actor=requester, key=key, memo="ask"))
        assert isinstance(result, Approval) and result.status is ApprovalStatus.PENDING
        self.approvals.append(result)

    @precondition(lambda self: self.approvals)
    @rule(pick=st.integers(min_value=0, max_value=10**6), approve=st.booleans(),
          decider=st.sampled_from([ADMIN, ADMIN2, "aad-admin-3"]))
    def decide_approval(self, pick: int, approve: bool, decider: str) -> None:
        asked = self.approvals[pick % len(self.approvals)]
        before_status = self.run(self.ledgers[0].get_approval(T, asked.approval_id)).status
        before = self.snapshot()
        key = self.key("dec")
        result = self.keyed(key, lambda l: l.decide_approval(T, asked.approval_id, approve=approve, actor=decider,
                                                             key=key))
        if decider == asked.requested_by:
            assert isinstance(result, SelfApproval), result
        elif before_status is not ApprovalStatus.PENDING:
            assert isinstance(result, ApprovalClosed), result
        else:
            assert isinstance(result, ApprovalDecision), result
            assert (result.posting is not None) == approve
            if result.posting is not None:
                assert result.posting.entry.amount == asked.amount and result.posting.entry.actor == decider
            return
        assert self.snapshot() == before

    # --- settings ---------------------------------------------------------------------------------------------
    @rule(enabled=st.booleans(), amount=st.integers(min_value=1_000, max_value=20_000),
          trigger=st.integers(min_value=0, max_value=30_000), cap_factor=st.one_of(st.none(), st.integers(1, 6)),
          per_day=st.integers(min_value=1, max_value=4))
    def set_recharge(self, enabled: bool, amount: int, trigger: int, cap_factor: int | None, per_day: int) -> None:
        new = RechargeSettings(enabled, amount, trigger, None if cap_factor is None else amount * cap_factor,
                               per_day)
        key = self.key("recharge")
        result = self.keyed(key, lambda l: l.set_recharge_settings(T, new, actor=ADMIN, key=key))
        assert isinstance(result, SettingsChange)
        self.recharge = new

    @rule(values=st.lists(st.one_of(st.sampled_from([1_000, 5_000, 10_000, 20_000]),
                                    st.integers(min_value=1, max_value=40_000)), max_size=3))
    def set_thresholds(self, values: list[int]) -> None:
        key = self.key("alerts")
        wanted = AlertSettings(tuple(values))
        result = self.keyed(key, lambda l: l.set_alert_settings(T, wanted, actor=ADMIN, key=key))
        assert isinstance(result, SettingsChange)

    @rule(jump=time_jumps)
    def advance_time(self, jump: timedelta) -> None:
        self.clock.advance(jump)

    @rule(months=st.integers(min_value=1, max_value=13))
    def advance_months(self, months: int) -> None:
        self.clock.set(policy.add_months(self.clock.now, months))

    # --- keys the ledger reserves -------------------------------------------------------------------------------
    @rule(op=st.sampled_from(["add_funds", "adjust", "set_currency", "recharge", "alerts", "grant", "revoke",
                              "subscribe", "unsubscribe", "request", "decide"]),
          key=st.one_of(st.just(""), st.integers(0, 200).map(lambda n: f"expiry:{n}"),
                        st.integers(0, 200).map(lambda n: f"fund-{n}:recharge:1"),
                        st.integers(0, 200).map(lambda n: f"call-{n}:recharge:{n % 3 + 1}")))
    def reserved_key(self, op: str, key: str) -> None:
        calls: dict[str, Call] = {
            "add_funds": lambda l: l.add_funds(T, 100, actor=ADMIN, key=key),
            "adjust": lambda l: l.adjust(T, -1, actor=ADMIN, key=key),
            "set_currency": lambda l: l.set_currency(T, "EUR", actor=ADMIN, key=key),
            "recharge": lambda l: l.set_recharge_settings(T, RechargeSettings(), actor=ADMIN, key=key),
            "alerts": lambda l: l.set_alert_settings(T, AlertSettings((1_000,)), actor=ADMIN, key=key),
            "grant": lambda l: l.grant_role(T, "user", "reader", actor=ADMIN, key=key),
            "revoke": lambda l: l.revoke_role(T, "user", actor=ADMIN, key=key),
            "subscribe": lambda l: l.subscribe(T, CONVERSATION, [AlertKind.FORECAST], actor=ADMIN, key=key),
            "unsubscribe": lambda l: l.unsubscribe(T, CONVERSATION, actor=ADMIN, key=key),
            "request": lambda l: l.request_approval(T, 100, actor=ADMIN, key=key),
            "decide": lambda l: l.decide_approval(T, self.approvals[-1].approval_id if self.approvals else "none",
                                                  approve=True, actor="aad-admin-3", key=key),
        }
        self.refused_everywhere(calls[op])

    # --- outbox -----------------------------------------------------------------------------------------------
    @rule(kind=st.sampled_from([AlertKind.FORECAST, AlertKind.EXPIRING] * 3 + list(AlertKind)),
          name=st.integers(min_value=0, max_value=20), prefixed=st.sampled_from([True, True, True, False]))
    def raise_alert(self, kind: AlertKind, name: int, prefixed: bool) -> None:
        key = f"{kind.value}:{name}" if prefixed else f"alert-{name}"
        call: Call = lambda l: l.raise_alert(T, kind, key, {"n": name})
        if kind.value in policy.RAISABLE_KINDS and prefixed:
            self.same(call)                          # idempotent by key: a second raise returns the first
        else:
            self.refused_everywhere(call)

    @rule(name=st.sampled_from([CONVERSATION, "a:personal", "19:other@thread.v2"]), n=st.integers(0, 3))
    def save_conversation(self, name: str, n: int) -> None:
        ref = ConversationRef(name, T, {"serviceUrl": f"https://smba.example/{n}/"}, self.clock.now)
        self.same(lambda l: l.save_conversation(ref))

    @rule(subscribed=st.booleans())
    def toggle_subscription(self, subscribed: bool) -> None:
        key = self.key("sub")
        if subscribed:
            self.same(lambda l: l.subscribe(T, CONVERSATION, list(AlertKind), actor=ADMIN, key=key))
        else:
            self.same(lambda l: l.unsubscribe(T, CONVERSATION, actor=ADMIN, key=key))   # may be NotFound

    @rule(outcomes=st.lists(st.sampled_from(["deliver", "release", "crash"]), min_size=1, max_size=4))
    def drain_outbox(self, outcomes: list[str]) -> None:
        """A few rounds of the delivery worker, a lease (one minute) apart."""
        for outcome in outcomes:
            self.drain_once(outcome)
            self.clock.advance(timedelta(minutes=1))

    def drain_once(self, outcome: str) -> None:
        claimed = self.same(lambda l: l.claim_alerts("worker", lease=timedelta(minutes=1), limit=3))
        assert all(alert.attempts <= 3 and alert.status.value == "pending" for alert in claimed), claimed
        if outcome == "crash":       # the worker dies while sending: nobody releases, the lease runs out
            return
        for alert in claimed:
            for destination in alert.pending_destinations:
                if outcome == "deliver":
                    self.same(lambda l: l.mark_delivered(alert.alert_id, destination, worker="worker"))
                else:
                    self.same(lambda l: l.release_alert(alert.alert_id, worker="worker",
                                                        retry_at=self.clock.now + timedelta(minutes=5),
                                                        error="HTTP 503"))
                    break

    # --- replays ----------------------------------------------------------------------------------------------
    @precondition(lambda self: self.done)
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def replay_same(self, pick: int) -> None:
        key, call, original = self.done[pick % len(self.done)]
        before = self.snapshot()
        again = self.same(call)
        assert self.snapshot() == before, f"replaying {key} changed the ledger"
        if isinstance(original, Approval):     # no replay flag: the approval as it was requested
            assert again == original, key
            return
        assert again.replayed, key
        if isinstance(original, ApprovalDecision) and original.posting is not None:
            original = replace(original, posting=original.posting.as_replay())
        assert again == replace(original, replayed=True), key

    @precondition(lambda self: self.done)
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def replay_other(self, pick: int) -> None:
        key, _, _ = self.done[pick % len(self.done)]
        before = self.snapshot()
        outcome = self.same(lambda l: l.add_funds(T, 1, actor=ADMIN, key=key, memo="conflict-probe"))
        assert isinstance(outcome, IdempotencyConflict), (key, outcome)
        assert self.snapshot() == before

    # --- invariants -------------------------------------------------------------------------------------------
    @invariant()
    def books_balance(self) -> None:
        for name, ledger in zip(self.BACKENDS, self.ledgers):
            account = self.run(ledger.get_account(T))
            entries = list(reversed(self.run(ledger.history(T, limit=100_000)).items))
            assert account.balance == sum(e.amount for e in entries), name
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1)), name
            assert account.entry_count == len(entries), name
            report = self.run(ledger.verify())
            assert report.ok, (name, report.problems)
            lots = self.run(ledger.lots(T))
            assert all(lot.remaining > 0 for lot in lots), name
            deficit = max(0, -account.balance)
            assert sum(lot.remaining for lot in lots) - deficit == account.balance, name
            assert not (deficit and lots), name
            keys = [a.key for a in self.run(ledger.alerts(T, limit=100_000))]
            assert len(keys) == len(set(keys)), (name, keys)

    @invariant()
    def lots_by_utc_day(self) -> None:
        """ADR 0008: every lot expires at the end of its first credit's UTC day 12 months on; the clock only goes
        forward, so a later credit of that expiry always found the lot newest and joined it: oldest first, the
        open lots expire strictly later one after another, never more than the days with a credit."""
        credit_days = {policy.utc_day(e.at) for e in self.entries() if e.amount > 0}
        for name, ledger in zip(self.BACKENDS, self.ledgers):
            lots = sorted(self.run(ledger.lots(T)), key=lambda lot: (lot.opened_at, lot.lot_id))
            assert all(lot.expires_at == policy.lot_expiry(lot.opened_at) for lot in lots), (name, lots)
            assert all(a.expires_at < b.expires_at for a, b in zip(lots, lots[1:])), (name, lots)
            assert len(lots) <= len(credit_days), (name, lots)

    @invariant()
    def backends_agree(self) -> None:
        self.same(lambda l: l.get_account(T))
        self.same(lambda l: l.history(T, limit=100_000))
        self.same(lambda l: l.lots(T))
        self.same(lambda l: l.alerts(T, limit=100_000))
        self.same(lambda l: l.audit(T, limit=100_000))
        self.same(lambda l: l.recharge_settings(T))
        self.same(lambda l: l.alert_settings(T))
        self.same(lambda l: l.conversations(T))
        self.same(lambda l: l.subscriptions(T))
        self.same(lambda l: l.approvals(T))

    @invariant()
    def outbox_attempts_are_bounded(self) -> None:
        for name, ledger in zip(self.BACKENDS, self.ledgers):
            for alert in self.run(ledger.alerts(T, limit=100_000)):
                assert 0 <= alert.attempts <= 3, (name, alert)      # tests/backends.py: MAX_ATTEMPTS = 3
                if alert.status.value == "dead":
                    assert alert.attempts == 3 and alert.lease_owner is None and alert.last_error, (name, alert)

    def teardown(self) -> None:
        try:
            for ledger in self.ledgers:
                self.run(ledger.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_machine(backend: str) -> None:
    backends = ("reference",) if backend == "reference" else ("reference", backend)
    machine = type(f"LedgerMachine_{backend}", (LedgerMachine,), {"BACKENDS": backends})
    run_state_machine_as_test(machine, settings=settings.get_profile(PROFILE))
