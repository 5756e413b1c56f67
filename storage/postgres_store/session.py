"""The connection pool of `PostgresLedger`: how a connection is set up, and a release that costs no query.

asyncpg's pool runs `Connection.reset()` whenever a connection goes back to it: one more round trip
(`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) after every ledger call. The store leaves
no session state behind a call (no SET, no cursor, no LISTEN; every transaction ends with the block that opened
it, and asyncpg rolls back one left open before `reset=` runs) except the session advisory locks of
`PostgresLedger.leading`. So the pool's `reset=` is `reset_session`: nothing, unless the connection may hold
such a lock (`LedgerConnection.expect_session_locks`): then it unlocks them all. If that query fails, asyncpg
terminates the connection, and the server releases the session's locks with it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


class LedgerConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that knows whether it may hold session-level advisory locks."""

    __slots__ = ("_session_locks",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session_locks = False

    def expect_session_locks(self) -> None:
        """Call it *before* sending a query that may take a session-level advisory lock (even one cancelled
        half-way may have taken it): the connection's release then unlocks every lock of the session."""
        self._session_locks = True

    async def release_session_locks(self) -> None:
        """Unlock every session-level advisory lock, if `expect_session_locks` was called since the last release."""
        if self._session_locks:
            await self.execute("SELECT pg_advisory_unlock_all()")
            self._session_locks = False


async def reset_session(con: LedgerConnection) -> None:
    """The pool's `reset=`: what a connection needs before its next user, which is nothing but the advisory
    locks of `leading` (see the module docstring)."""
    await con.release_session_locks()


async def init_connection(con: asyncpg.Connection) -> None:
    """The pool's `init=`: jsonb in binary form (a version byte, then the JSON text), so that COPY can carry it
    too, encoded and decoded with orjson."""
    await con.set_type_codec("jsonb", encoder=jsonb_encode, decoder=jsonb_decode, schema="pg_catalog",
                             format="binary")


def jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """The store's pool over `dsn`: `LedgerConnection`s, set up by `init_connection`, reset by `reset_session`."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection,
                                     reset=reset_session, connection_class=LedgerConnection)
