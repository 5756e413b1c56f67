"""The aiohttp application: one factory, typed state, the ledger's lifetime tied to the app's.

Routes so far:

* `GET /healthz`: 200 `{"status": "ok"}` while the process serves HTTP. Touches nothing else (liveness).
* `GET /readyz`: 200 `{"status": "ready"}` when `ledger.ping()` succeeds within `READY_TIMEOUT` seconds,
  else 503 `{"status": "unavailable"}`. The cause is logged with an incident id (also sent as the
  `X-Incident-Id` header); its text never reaches the response.

The Teams endpoint (`/api/messages`) is not here yet. No `botbuilder` import in this module until it is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from storage import Ledger, open_ledger

from .settings import Settings

log = logging.getLogger(__name__)

LedgerOpener = Callable[[str], Awaitable[Ledger]]

SETTINGS = web.AppKey("settings", Settings)
LEDGER = web.AppKey("ledger", Ledger)

#: Seconds a readiness probe waits for the store before answering 503.
READY_TIMEOUT = 5.0

_NO_STORE = {"Cache-Control": "no-store"}


def create_app(settings: Settings, *, ledger_opener: LedgerOpener | None = None) -> web.Application:
    """Build the application for `settings`.

    The ledger is opened on start-up with `ledger_opener(settings.store)` (default `storage.open_ledger`) and
    closed on clean-up, so a store that cannot be opened (for example `StoreLocked`) stops start-up with that
    exception.
    """
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_ledger_context(ledger_opener or open_ledger))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _ledger_context(opener: LedgerOpener) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ledger_context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        ledger = await opener(settings.store)
        app[LEDGER] = ledger
        log.info("ledger opened", extra={"store": settings.store_display})
        try:
            yield
        finally:
            await ledger.close()
            log.info("ledger closed", extra={"store": settings.store_display})

    return ledger_context


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers HTTP. No store access."""
    return web.json_response({"status": "ok"}, headers=_NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the ledger's store answers `ping()` in time."""
    ledger = request.app[LEDGER]
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await ledger.ping()
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("readiness check failed", extra={"incident": incident})
        return web.json_response({"status": "unavailable"}, status=503,
                                 headers={**_NO_STORE, "X-Incident-Id": incident})
    return web.json_response({"status": "ready"}, headers=_NO_STORE)
