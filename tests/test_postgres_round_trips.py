"""Round trips per ledger call on PostgreSQL (issue #9, "fast turns"): what a chat turn costs on the wire.

A round trip is a wait for the server: the client sends, then reads the answer before it sends again. The
tests put a counting TCP relay (`RoundTripRelay`) between the pool and the server and hold the hot calls to a
budget, measured warm (the pool's connection has prepared the statements already, as in a running bot):

* a turn's context (`get_account` + `roles`): 2;  `account_view`: 1;
* `add_funds` (new key): BEGIN, lock and idempotency lookup, every write, COMMIT: 4;
* `save_conversation` of an unchanged reference: 1; `open_account` of an existing account: 1; the other single
  reads: 1 each;
* `claim_alerts` (the notifier's poll): 1;
* releasing a connection to the pool costs none (no `Connection.reset()` query).

`python -m tests.test_postgres_round_trips` prints the counts (cold and warm) for every measured call.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from storage import AlertKind, AlertSettings, ConversationRef, RechargeSettings, Role, UsageRecord
from storage.clock import FakeClock
from tests.backends import open_backend, postgres_dsn

pytestmark = pytest.mark.postgres

T = "tenant-rt"


@dataclass
class _Link:
    """One relayed connection: which side spoke last."""

    client_spoke_last: bool = False


@dataclass
class RoundTripRelay:
    """A TCP relay on 127.0.0.1 that counts round trips: every time the client sends after the server spoke
    (or first), one more. Pipelined messages (several sent before any answer) count once, as on the wire."""

    host: str
    port: int
    round_trips: int = 0
    links: list[_Link] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        link = _Link()
        self.links.append(link)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if from_client and not link.client_spoke_last:
                        self.round_trips += 1
                    link.client_spoke_last = from_client
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))


@contextlib.asynccontextmanager
async def relayed_ledger(tmp: Path, clock: FakeClock) -> AsyncIterator[tuple[Any, RoundTripRelay]]:
    """A `PostgresLedger` over a fresh test database, its one pooled connection going through a relay (one
    connection, so that warm means prepared)."""
    from storage.postgres_store import PostgresLedger
    first = await open_backend("postgres", tmp, clock)   # creates and migrates the test database
    await first.close()
    dsn = postgres_dsn(tmp)
    parts = urlsplit(dsn)
    relay = RoundTripRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    host, port = relay.address
    netloc = f"{parts.username}@{host}:{port}" if parts.username else f"{host}:{port}"
    ledger = await PostgresLedger.open(parts._replace(netloc=netloc).geturl(), clock=clock, min_size=1, max_size=1)
    try:
        yield ledger, relay
    finally:
        await ledger.close()
        await relay.stop()


async def count(relay: RoundTripRelay, call: Callable[[], Awaitable[Any]]) -> int:
    """Round trips made by `call()` (the relay sees every byte before the call returns)."""
    before = relay.round_trips
    await call()
    await asyncio.sleep(0)
    return relay.round_trips - before


async def _seed(ledger: Any, clock: FakeClock) -> None:
    await ledger.open_account(T, "USD")
    await ledger.grant_role(T, "admin-1", Role.ADMIN, actor="admin-1", key="g1", display_name="Ada")
    await ledger.set_alert_settings(T, AlertSettings((5_00,), 7), actor="admin-1", key="a1")
    await ledger.set_recharge_settings(T, RechargeSettings(True, 20_00, 10_00, None, 5), actor="admin-1", key="r1")
    await ledger.subscribe(T, "conv-1", [AlertKind.LOW_BALANCE], actor="admin-1", key="s1")
    await ledger.save_conversation(ConversationRef("conv-1", T, {"conversation": {"id": "conv-1"}}, clock.now))
    for i in range(5):
        await ledger.add_funds(T, 100_00, actor="admin-1", key=f"seed-{i}")
        clock.advance(timedelta(days=1))
        await ledger.record_usage(T, UsageRecord(f"u-{i}", 3_00, "USD", clock.now - timedelta(hours=30), {}))


def _calls(ledger: Any, clock: FakeClock) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The measured calls, each repeatable (a fresh key per money call)."""
    keys = iter(range(10_000))
    ref = ConversationRef("conv-1", T, {"conversation": {"id": "conv-1"}}, clock.now)

    async def context() -> None:
        await ledger.get_account(T)
        await ledger.roles(T)

    return {
        "get_account+roles": context,
        "open_account (existing)": lambda: ledger.open_account(T, "USD"),
        "account_view": lambda: ledger.account_view(T),
        "add_funds": lambda: ledger.add_funds(T, 1_00, actor="admin-1", key=f"add-{next(keys)}"),
        "add_funds replayed": lambda: ledger.add_funds(T, 100_00, actor="admin-1", key="seed-0"),
        "record_usage": lambda: ledger.record_usage(
            T, UsageRecord(f"use-{next(keys)}", 10, "USD", clock.now - timedelta(hours=1), {})),
        "save_conversation unchanged": lambda: ledger.save_conversation(ref),
        "get_account": lambda: ledger.get_account(T),
        "roles": lambda: ledger.roles(T),
        "recharge_settings": lambda: ledger.recharge_settings(T),
        "alert_settings": lambda: ledger.alert_settings(T),
        "lots": lambda: ledger.lots(T),
        "conversation": lambda: ledger.conversation(T, "conv-1"),
        "history": lambda: ledger.history(T, limit=5),
        "claim_alerts (none due)": lambda: ledger.claim_alerts("worker-1", lease=timedelta(minutes=1)),
        "set_alert_settings": lambda: ledger.set_alert_settings(
            T, AlertSettings((5_00,), 7), actor="admin-1", key=f"as-{next(keys)}"),
    }


async def measure(tmp: Path) -> dict[str, tuple[int, int]]:
    """(cold, warm) round trips of each measured call."""
    clock = FakeClock()
    async with relayed_ledger(tmp, clock) as (ledger, relay):
        await _seed(ledger, clock)
        return {name: (await count(relay, call), await count(relay, call))
                for name, call in _calls(ledger, clock).items()}


#: Warm round trips allowed per call.
BUDGET = {
    "get_account+roles": 2,
    "open_account (existing)": 1,
    "account_view": 1,
    "add_funds": 4,
    "add_funds replayed": 4,
    "record_usage": 4,
    "save_conversation unchanged": 1,
    "get_account": 1,
    "roles": 1,
    "recharge_settings": 1,
    "alert_settings": 1,
    "lots": 1,
    "conversation": 1,
    "history": 1,
    "claim_alerts (none due)": 1,
    "set_alert_settings": 4,
}


async def test_hot_calls_keep_to_their_round_trip_budget(tmp_path):
    counts = await measure(tmp_path)
    over = {name: warm for name, (_, warm) in counts.items() if warm > BUDGET[name]}
    assert not over, f"over budget: {over} (all: {counts})"


async def test_releasing_a_connection_costs_no_round_trip(tmp_path):
    clock = FakeClock()
    async with relayed_ledger(tmp_path, clock) as (ledger, relay):
        await ledger.ping()
        assert await count(relay, ledger.ping) == 1     # the query itself, and no reset query after it


def main() -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        counts = asyncio.run(measure(Path(tmp)))
    width = max(map(len, counts))
    print(f"{'call':<{width}}  cold  warm")
    for name, (cold, warm) in counts.items():
        print(f"{name:<{width}}  {cold:>4}  {warm:>4}")


if __name__ == "__main__":
    sys.exit(main())
