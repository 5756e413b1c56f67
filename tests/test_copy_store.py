"""`python -m bot copy-store`: a realistic TinyDB store copied into PostgreSQL and back, verified, with replays
and new operations continuing on each copy exactly as on the original."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from storage.clock import FakeClock
from storage.ledger import Ledger
from storage.model import (AlertKind, AlertSettings, AlertStatus, ApprovalStatus, ConversationRef,
                           RechargeSettings, Role, UsageRecord)
from storage.postgres_store import PostgresLedger
from storage.tinydb_store import TinyLedger
from storage.transfer import copy_store, normalised
from tests.backends import MAX_ATTEMPTS, open_backend, postgres_dsn

pytestmark = pytest.mark.postgres

A, B = "tenant-a", "tenant-b"
CALL = UsageRecord("call-1", 9500, "EUR", FakeClock().now, {"user": "Ada", "callType": "out"})


async def build_store(ledger: Ledger, clock: FakeClock) -> dict[str, Any]:
    """Two accounts through the public API; returns the originals of the operations replayed later."""
    await ledger.open_account(B, "USD")
    await ledger.add_funds(B, 700, actor="u-b", key="b-fund-1")
    clock.advance(days=400)                     # lot 1 of B is now expired
    await ledger.add_funds(B, 300, actor="u-b", key="b-fund-2")

    await ledger.open_account(A, "EUR")
    await ledger.grant_role(A, "u-admin", Role.ADMIN, actor="system", key="g-1", display_name="Ada")
    await ledger.grant_role(A, "u-reader", Role.READER, actor="u-admin", key="g-2")
    await ledger.save_conversation(ConversationRef("conv-1", A, {"serviceUrl": "https://x", "id": "conv-1"},
                                                   clock.now))
    await ledger.subscribe(A, "conv-1", list(AlertKind), actor="u-admin", key="s-1")
    await ledger.set_alert_settings(A, AlertSettings((5000, 1000)), actor="u-admin", key="al-1")
    await ledger.set_recharge_settings(A, RechargeSettings(True, 3000, 1000, 10000, 3), actor="u-admin", key="r-1")
    clock.advance(minutes=1)
    funds = await ledger.add_funds(A, 10000, actor="u-admin", key="fund-1", memo="PO 1")
    clock.advance(minutes=1)
    usage = await ledger.record_usage(A, UsageRecord(CALL.usage_id, CALL.amount, CALL.currency, clock.now,
                                                     CALL.details))
    assert usage.recharges and len(usage.alert_ids) == 2    # recharged + low_balance 5000
    clock.advance(minutes=1)
    req = await ledger.request_approval(A, 20000, actor="u-admin", key="req-1", memo="big one")
    await ledger.request_approval(A, 5000, actor="u-admin", key="req-2")
    clock.advance(minutes=1)
    decision = await ledger.decide_approval(A, req.approval_id, approve=True, actor="u-admin2", key="dec-1")
    # the outbox: the first alert delivered, the second dead after MAX_ATTEMPTS failed attempts
    [first] = await ledger.claim_alerts("w1", lease=timedelta(minutes=5), limit=1)
    await ledger.mark_delivered(first.alert_id, "conv-1", worker="w1")
    for _ in range(MAX_ATTEMPTS):
        clock.advance(minutes=1)
        [second] = await ledger.claim_alerts("w1", lease=timedelta(minutes=5), limit=1)
        await ledger.release_alert(second.alert_id, worker="w1", retry_at=clock.now, error="HTTP 502")
    assert (await ledger.get_alert(second.alert_id)).status is AlertStatus.DEAD
    await ledger.set_sync_watermark(A, "graph", clock.now - timedelta(hours=1))
    expired = await ledger.expire_lots()
    assert [p.entry.amount for p in expired] == [-700]
    return {"funds": funds, "usage": usage, "usage_row": UsageRecord(CALL.usage_id, CALL.amount, CALL.currency,
                                                                      usage.entry.at, CALL.details),
            "decision": decision, "approval_id": req.approval_id}


async def facts(ledger: Ledger) -> dict[str, Any]:
    """Everything a user can read, per tenant."""
    out: dict[str, Any] = {"tenants": await ledger.tenants()}
    for t in out["tenants"]:
        out[t] = {
            "account": await ledger.get_account(t), "history": (await ledger.history(t, limit=500)).items,
            "lots": await ledger.lots(t), "alerts": await ledger.alerts(t, limit=500),
            "roles": await ledger.roles(t), "approvals": await ledger.approvals(t),
            "subscriptions": await ledger.subscriptions(t), "conversations": await ledger.conversations(t),
            "watermark": await ledger.sync_watermark(t, "graph"), "audit": (await ledger.audit(t, limit=500)).items,
            "recharge": await ledger.recharge_settings(t), "alert_settings": await ledger.alert_settings(t),
        }
    return out


async def check_replays(ledger: Ledger, originals: dict[str, Any]) -> None:
    funds = await ledger.add_funds(A, 10000, actor="someone-else", key="fund-1", memo="PO 1")
    assert funds.replayed and funds.entries == originals["funds"].entries
    assert funds.balance == originals["funds"].balance
    usage = await ledger.record_usage(A, originals["usage_row"])
    assert usage.replayed and usage.entries == originals["usage"].entries
    assert usage.alert_ids == originals["usage"].alert_ids
    decision = await ledger.decide_approval(A, originals["approval_id"], approve=True, actor="u-admin2", key="dec-1")
    assert decision.replayed and decision.posting is not None
    assert decision.posting.entries == originals["decision"].posting.entries
    assert decision.approval == originals["decision"].approval


async def new_operations(ledger: Ledger, clock: FakeClock) -> list[Any]:
    """The same new operations, at the same fake times, on the original and on each copy."""
    before = await ledger.get_account(A)
    clock.advance(minutes=5)
    first = await ledger.record_usage(A, UsageRecord("call-2", 19000, "EUR", clock.now))
    second = await ledger.record_usage(A, UsageRecord("call-3", 100, "EUR", clock.now))
    assert first.entry.seq == before.entry_count + 1 and second.entry.seq == before.entry_count + 2
    assert first.balance == before.balance - 19000
    kinds = [(await ledger.get_alert(a)).kind for a in first.alert_ids]
    assert kinds == [AlertKind.LOW_BALANCE]          # 5000 re-armed by the approval's credit, fires again
    assert second.alert_ids == ()                     # and stays disarmed
    claimed = await ledger.claim_alerts("w2", lease=timedelta(minutes=5), limit=10)
    assert [a.alert_id for a in claimed] == list(first.alert_ids)
    assert (await ledger.verify()).ok
    return [first, second, claimed]


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, ["copy-store", *argv], environ={})


async def test_copy_tinydb_to_postgres_and_back(tmp_path: Path, clock: FakeClock, capsys) -> None:
    src_dir = tmp_path / "src"
    src = await open_backend("tinydb", src_dir, clock)
    originals = await build_store(src, clock)
    original = await facts(src)
    exports = {t: normalised(await src.export_account(t)) for t in original["tenants"]}
    assert len(exports[A]["alerts"]) == 2 and len(exports[B]["entries"]) == 3
    assert {a.status for a in original[A]["approvals"]} == {ApprovalStatus.PENDING, ApprovalStatus.APPROVED}
    assert {a.status for a in original[A]["alerts"]} == {AlertStatus.DELIVERED, AlertStatus.DEAD}
    assert original[B]["account"].balance == 300 and original[A]["watermark"] is not None

    # a store in use by a running bot is refused (exit 2, the StoreLocked message)
    assert await cli(str(src_dir / "store"), str(tmp_path / "never")) == 2
    assert "in use by another process" in capsys.readouterr().err
    await src.close()

    pg = await open_backend("postgres", tmp_path / "pg", clock)   # a fresh, migrated database
    await pg.close()
    dsn = postgres_dsn(tmp_path / "pg")

    # TinyDB -> PostgreSQL through the command
    assert await cli(str(src_dir / "store"), dsn) == 0
    out = capsys.readouterr().out
    assert "accounts: 2" in out and "verified: ok" in out
    pg = await PostgresLedger.open(dsn, clock=clock, max_attempts=MAX_ATTEMPTS, max_size=4)
    try:
        assert (await pg.verify()).ok
        assert await facts(pg) == original
        assert {t: normalised(await pg.export_account(t)) for t in original["tenants"]} == exports
        await check_replays(pg, originals)
        assert await facts(pg) == original          # replays changed nothing
    finally:
        await pg.close()

    # PostgreSQL -> a new TinyDB directory through the command
    back_dir = tmp_path / "back"
    assert await cli(dsn, str(back_dir)) == 0
    assert "verified: ok" in capsys.readouterr().out
    back = await TinyLedger.open(back_dir, clock=clock, max_attempts=MAX_ATTEMPTS)
    try:
        assert (await back.verify()).ok
        assert await facts(back) == original
        assert {t: normalised(await back.export_account(t)) for t in original["tenants"]} == exports
        await check_replays(back, originals)
    finally:
        await back.close()

    # copying into a store that has an account is refused, and changes nothing there
    assert await cli(str(src_dir / "store"), str(back_dir)) == 2
    assert "not empty" in capsys.readouterr().err
    assert await cli(str(back_dir), dsn) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err

    # new operations continue identically on the original and on both copies
    start = clock.now
    results = []
    for opener in (lambda: TinyLedger.open(src_dir / "store", clock=clock, max_attempts=MAX_ATTEMPTS),
                   lambda: PostgresLedger.open(dsn, clock=clock, max_attempts=MAX_ATTEMPTS, max_size=4),
                   lambda: TinyLedger.open(back_dir, clock=clock, max_attempts=MAX_ATTEMPTS)):
        clock.set(start)
        store = await opener()
        try:
            results.append(await new_operations(store, clock))
        finally:
            await store.close()
    assert results[0] == results[1] == results[2]


async def test_copy_store_function_and_reference(tmp_path: Path, clock: FakeClock) -> None:
    """`copy_store` between the reference model and TinyDB both ways (the reference converts its full
    postings to and from the neutral compact results), and a second copy into the same store is refused."""
    from storage.reference import ReferenceLedger
    ref = ReferenceLedger(clock=clock, max_attempts=MAX_ATTEMPTS)
    originals = await build_store(ref, clock)
    original = await facts(ref)
    tiny = await open_backend("tinydb", tmp_path / "t", clock)
    try:
        report = await copy_store(ref, tiny)
        assert report.problems == [] and report.accounts == 2
        assert await facts(tiny) == original
        await check_replays(tiny, originals)
        again = ReferenceLedger(clock=clock, max_attempts=MAX_ATTEMPTS)
        report = await copy_store(tiny, again)
        assert report.problems == []
        assert await facts(again) == original
        await check_replays(again, originals)
        with pytest.raises(ValueError):
            await copy_store(ref, tiny)
        assert (await tiny.verify()).ok
    finally:
        await tiny.close()
