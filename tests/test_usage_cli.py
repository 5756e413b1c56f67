"""`python -m bot import-usage | demo-usage | sync`: the admin center's export moves the balance, once, with or
without the bot running on the store (then the rows go through its loopback admin endpoint)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot import __main__ as cli
from bot.app import LEDGER, create_app
from bot.settings import Settings
from storage import AlertKind, RechargeSettings, open_ledger
from tests.teams import TENANT

HEADER = ("UsageId,Call ID,Conference ID,User Location,AAD ObjectId,UPN,User Display Name,Caller ID,Call Type,"
          "Number Type,Domestic/International,Destination Dialed,Destination Number,Start Time,End Time,"
          "Duration Seconds,Connection Fee,Charge,Currency,Capability")


def row(usage_id: str, charge: str, *, fee: str = "0", currency: str = "USD", capability: str = "MCOPSTNPP") -> str:
    return (f"{usage_id},call-{usage_id},,US,8d2f0c1e-0000-4000-8000-000000000001,adele@contoso.example,"
            f"Adele Vance,+15550100,user_out_international,toll,International,United Kingdom,+447700900123,"
            f"2026-11-20T10:00:00Z,2026-11-20T10:05:00Z,300,{fee},{charge},{currency},{capability}")


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def make_store(path: Path, *tenants: str, funds: int = 10_000) -> str:
    ledger = await open_ledger(str(path))
    try:
        for tenant in tenants:
            await ledger.open_account(tenant, "USD")
            await ledger.add_funds(tenant, funds, actor="admin", key="seed")
    finally:
        await ledger.close()
    return str(path)


async def balance(store: str, tenant: str = TENANT) -> int:
    ledger = await open_ledger(store)
    try:
        return (await ledger.get_account(tenant)).balance
    finally:
        await ledger.close()


def env(store: str, **extra: str) -> dict[str, str]:
    return {"CREDITS_STORE": store, **extra}


async def test_importing_a_file_debits_it_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = await make_store(tmp_path / "store", TENANT)
    csv = write_csv(tmp_path / "PSTN.calls.2026-11-20.csv",
                    row("u1", "1.2500"), row("u2", "0.5000", fee="0.0100"), row("u3", "2.00", capability="MCOPSTN1"),
                    row("u4", "0"), row("u5", "1.00", currency="EUR"))
    code = await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store))
    out = capsys.readouterr().out
    assert code == 1                                     # one row rejected (another currency)
    assert "rows read:       5" in out and "debited:         2   $1.76" in out
    assert "charged in EUR, the account is in USD" in out
    assert await balance(store) == 10_000 - 125 - 51

    again = await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store))
    out = capsys.readouterr().out
    assert again == 1 and "debited:         0" in out and "already recorded: 2" in out
    assert await balance(store) == 10_000 - 176


async def test_a_store_with_several_accounts_needs_the_tenant(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = await make_store(tmp_path / "store", TENANT, "other-tenant")
    csv = write_csv(tmp_path / "PSTN.calls.csv", row("u1", "1.00"))
    assert await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store)) == 2
    err = capsys.readouterr().err
    assert "2 accounts" in err and "--tenant" in err and "Traceback" not in err
    code = await asyncio.to_thread(cli.main, ["import-usage", str(csv), "--tenant", "other-tenant"],
                                   environ=env(store))
    assert code == 0
    assert await balance(store, "other-tenant") == 9_900 and await balance(store) == 10_000


async def test_a_missing_file_or_column_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = await make_store(tmp_path / "store", TENANT)
    assert await asyncio.to_thread(cli.main, ["import-usage", str(tmp_path / "nope.csv")], environ=env(store)) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("UsageId,Start Time,Currency,Capability\nu1,2026-11-20T10:00:00Z,USD,MCOPSTNPP\n")
    assert await asyncio.to_thread(cli.main, ["import-usage", str(bad)], environ=env(store)) == 2
    err = capsys.readouterr().err
    assert "Charge" in err and "Traceback" not in err
    assert await balance(store) == 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_importing_while_the_bot_runs_hands_the_rows_to_it_and_fires_a_recharge(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    store = await make_store(tmp_path / "store", TENANT, funds=3_000)
    port = free_port()
    settings = Settings.from_env({"CREDITS_STORE": store, "PORT": str(port)})
    monkeypatch.setattr("bot.usage_cli.CHUNK", 3)        # several chunks for a small file
    server = TestServer(create_app(settings, background=False), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        ledger = server.app[LEDGER]
        await ledger.set_recharge_settings(TENANT, RechargeSettings(True, 5_000, 1_000, None, 10), actor="a",
                                           key="rs")
        await ledger.subscribe(TENANT, "19:finance@thread.tacv2", [AlertKind.RECHARGED], actor="a", key="sub")
        assert (store_dir := Path(store)).joinpath("admin.json").is_file()
        csv = write_csv(tmp_path / "PSTN.calls.csv", *[row(f"u{n}", "3.00") for n in range(8)], "x,broken")
        code = await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store, PORT=str(port)))
        out = capsys.readouterr().out
        assert code == 1 and "rows read:       9" in out and "debited:         8" in out
        assert "auto-recharges:  1" in out
        assert (await ledger.get_account(TENANT)).balance == 3_000 - 2_400 + 5_000
        recharged = [a for a in await ledger.alerts(TENANT) if a.kind is AlertKind.RECHARGED]
        assert len(recharged) == 1
        again = await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store, PORT=str(port)))
        assert again == 1 and "already recorded: 8" in capsys.readouterr().out
        assert (await ledger.get_account(TENANT)).balance == 5_600
    finally:
        await server.close()
    assert not store_dir.joinpath("admin.json").exists()  # the token goes with the bot


async def test_the_admin_endpoint_refuses_without_the_token(tmp_path: Path, aiohttp_client: Any) -> None:
    store = await make_store(tmp_path / "store", TENANT)
    client = await aiohttp_client(create_app(Settings.from_env({"CREDITS_STORE": store}), background=False))
    wire = {"usage_id": "u1", "charge": "1.00", "currency": "USD", "occurred_at": "2026-11-20T10:00:00+00:00",
            "capability": "MCOPSTNPP", "details": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = await client.post("/api/admin/usage", json={"rows": [wire]}, headers=headers)
        assert response.status == 401
    token = (Path(store) / "admin.json").read_text()
    assert '"token"' in token and oct((Path(store) / "admin.json").stat().st_mode & 0o777) == "0o600"
    assert (await client.app[LEDGER].get_account(TENANT)).balance == 10_000


async def test_demo_usage_writes_a_file_that_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = await make_store(tmp_path / "store", TENANT, funds=100_000)
    out_file = tmp_path / "demo.csv"
    assert await asyncio.to_thread(cli.main, ["demo-usage", "--out", str(out_file), "--days", "7"],
                                   environ=env(store)) == 0
    assert "import-usage" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["import-usage", str(out_file)], environ=env(store)) == 0
    out = capsys.readouterr().out
    assert "rejected:        0" in out
    assert await balance(store) < 100_000


def test_sync_without_graph_settings_says_what_to_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = asyncio.run(make_store(tmp_path / "store", TENANT))
    assert cli.main(["sync"], environ=env(store)) == 2
    err = capsys.readouterr().err
    assert "GRAPH_CLIENT_ID" in err and "import-usage" in err



@pytest.mark.postgres
async def test_import_into_postgres_while_a_bot_has_it_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL is shared: the CLI opens it directly, next to a running bot's ledger, and the import is
    idempotent there too."""
    from storage.clock import utc_now
    from tests.backends import open_backend, postgres_dsn

    running = await open_backend("postgres", tmp_path, utc_now)  # type: ignore[arg-type]
    try:
        await running.open_account(TENANT, "USD")
        await running.add_funds(TENANT, 10_000, actor="admin", key="seed")
        csv = write_csv(tmp_path / "PSTN.calls.csv", row("u1", "1.2500"), row("u2", "0.5000", fee="0.0100"))
        dsn = postgres_dsn(tmp_path)
        for expected in ("debited:         2   $1.76", "debited:         0"):
            code = await asyncio.to_thread(cli.main, ["import-usage", str(csv), "--store", dsn], environ={})
            assert code == 0 and expected in capsys.readouterr().out
        assert (await running.get_account(TENANT)).balance == 10_000 - 176
        assert (await running.verify(TENANT)).ok
    finally:
        await running.close()


async def test_a_full_chunk_of_rows_reaches_the_running_bot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A chunk of 5,000 rows is megabytes, far above the limit for Teams activities: the admin endpoint takes
    it (found by the Playground run, where the demo's 1,200 rows were refused with 413)."""
    store = await make_store(tmp_path / "store", TENANT, funds=10_000_000)
    port = free_port()
    settings = Settings.from_env({"CREDITS_STORE": store, "PORT": str(port)})
    server = TestServer(create_app(settings, background=False), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        csv = write_csv(tmp_path / "PSTN.calls.csv", *[row(f"u{n}", "0.10") for n in range(5_200)])
        assert csv.stat().st_size > 256 * 1024
        code = await asyncio.to_thread(cli.main, ["import-usage", str(csv)], environ=env(store, PORT=str(port)))
        assert code == 0 and "debited:         5,200" in capsys.readouterr().out
        assert (await server.app[LEDGER].get_account(TENANT)).balance == 10_000_000 - 52_000
    finally:
        await server.close()


async def test_a_body_beyond_the_admin_limit_is_refused_in_words(tmp_path: Path, aiohttp_client: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.admin_api.MAX_CHUNK_BYTES", 1024)
    store = await make_store(tmp_path / "store", TENANT)
    client = await aiohttp_client(create_app(Settings.from_env({"CREDITS_STORE": store}), background=False))
    token = json.loads((Path(store) / "admin.json").read_text())["token"]
    response = await client.post("/api/admin/usage", json={"rows": ["x" * 2048]},
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status == 413 and "fewer rows" in (await response.json())["error"]
    assert (await client.app[LEDGER].get_account(TENANT)).balance == 10_000
