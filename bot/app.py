"""The aiohttp application: one factory, typed state, the ledger's lifetime tied to the app's.

Routes:

* `POST /api/messages`: Teams activities (`bot.endpoint`), authenticated unless in local mode.
* `GET /healthz`: 200 `{"status": "ok"}` while the process serves HTTP. Touches nothing else (liveness).
* `GET /readyz`: 200 `{"status": "ready"}` when `ledger.ping()` succeeds within `READY_TIMEOUT` seconds,
  else 503 `{"status": "unavailable"}`. The cause is logged with an incident id (also sent as the
  `X-Incident-Id` header); its text never reaches the response.

Resources live in `cleanup_ctx`: the ledger first, then the Bot Framework side (one aiohttp session with pooled
connections for everything outbound, the inbound authenticator with its key refresher, outbound tokens, the
adapter and the bot), closed in reverse order. No `botbuilder` import in this module: `bot.endpoint`,
`bot.adapter` and `bot.handler` hold them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from storage import Ledger, open_ledger

from .actions import Actions
from .auth import InboundAuthenticator
from .connector import Connector, ConnectorError
from .endpoint import MAX_BODY, MessagesEndpoint
from .settings import Settings
from .tokens import OutboundTokens

log = logging.getLogger(__name__)

LedgerOpener = Callable[[str], Awaitable[Ledger]]

SETTINGS = web.AppKey("settings", Settings)
LEDGER = web.AppKey("ledger", Ledger)
CONNECTOR = web.AppKey("connector", Connector)
ENDPOINT = web.AppKey("endpoint", MessagesEndpoint)

#: Replies are sent inside the turn: a few quick retries, not the notifier's patience.
REPLY_ATTEMPTS = 3
REPLY_MAX_DELAY = 5.0

#: Seconds a readiness probe waits for the store before answering 503.
READY_TIMEOUT = 5.0

_NO_STORE = {"Cache-Control": "no-store"}


def create_app(settings: Settings, *, ledger_opener: LedgerOpener | None = None,
               msal_http_client: Any = None) -> web.Application:
    """Build the application for `settings`.

    The ledger is opened on start-up with `ledger_opener(settings.store)` (default `storage.open_ledger`) and
    closed on clean-up, so a store that cannot be opened (for example `StoreLocked`) stops start-up with that
    exception. `msal_http_client` is handed to msal (a requests-like session; tests point it at a fake
    authority).
    """
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_ledger_context(ledger_opener or open_ledger))
    app.cleanup_ctx.append(_bot_context(msal_http_client))
    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def messages(request: web.Request) -> web.StreamResponse:
    return await request.app[ENDPOINT](request)


def _bot_context(msal_http_client: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bot_context(app: web.Application) -> AsyncIterator[None]:
        from .adapter import CreditsAdapter  # botbuilder is imported by the modules that need it, not here
        from .handler import CreditsBot

        settings = app[SETTINGS]
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60))
        authenticator: InboundAuthenticator | None = None
        tokens: OutboundTokens | None = None
        try:
            if not settings.local_mode:
                if not settings.app_password:
                    raise RuntimeError("MicrosoftAppType=UserAssignedMSI is not supported yet: set "
                                       "MicrosoftAppPassword (client secret) for the app registration")
                tokens = OutboundTokens(app_id=settings.app_id or "", password=settings.app_password,
                                        authority=settings.outbound_authority,
                                        scope=settings.to_channel_from_bot_oauth_scope,
                                        http_client=msal_http_client)
                authenticator = InboundAuthenticator(app_id=settings.app_id or "", session=session,
                                                     metadata_url=settings.to_bot_from_channel_openid_metadata_url,
                                                     issuer=settings.to_bot_from_channel_token_issuer)
                await authenticator.start()
            connector = Connector(session=session, tokens=tokens, max_attempts=REPLY_ATTEMPTS,
                                  max_delay=REPLY_MAX_DELAY)
            actions = Actions(app[LEDGER], bootstrap_admins=settings.admins, default_currency=settings.currency,
                              fallback_locale=settings.locale, members=_Members(connector),
                              approval_threshold=settings.approval_threshold, messenger=_Messenger(connector))
            adapter = CreditsAdapter(connector, app_id=settings.app_id, on_turn_error=_on_turn_error)
            app[CONNECTOR] = connector
            app[ENDPOINT] = MessagesEndpoint(adapter, CreditsBot(actions).on_turn, authenticator)
            yield
        finally:
            if authenticator is not None:
                await authenticator.close()
            if tokens is not None:
                await tokens.close()
            await session.close()

    return bot_context


class _Messenger:
    """Proactive cards (approval requests) straight to a saved conversation over the shared connector."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector

    async def send_card(self, reference: Any, card: dict[str, Any], text: str) -> None:
        activity = {"type": "message", "text": text, "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}
        await self._connector.send(reference["serviceUrl"], reference["conversation"]["id"], activity)


class _Members:
    """`grant @user`: the Entra object id of a mentioned member, from the Bot Connector."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector

    async def aad_object_id(self, service_url: str, conversation_id: str, member_id: str) -> str | None:
        try:
            member = await self._connector.get_member(service_url, conversation_id, member_id)
        except ConnectorError:
            return None
        value = member.get("aadObjectId")
        return value if isinstance(value, str) and value else None


async def _on_turn_error(context: Any, error: Exception) -> None:
    """Last resort for a turn that failed outside the actions (which answer their own crashes): most often a
    reply that could not be delivered after retries. Logged with an incident id; Teams gets 200, because the
    operation itself is done and a retry of the same activity would only replay it."""
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: turn failed for activity %s: %s", incident,
              getattr(getattr(context, "activity", None), "id", "?"), type(error).__name__, exc_info=error)


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
