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
import secrets
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from storage import Ledger, open_ledger
from storage.clock import Clock, utc_now

from .actions import Actions
from .auth import InboundAuthenticator
from .connector import Connector, ConnectorError, dumps
from .endpoint import MAX_BODY, MessagesEndpoint
from .jobs import DailyJobs
from .notifier import Notifier, Sender
from .rate_limit import RateLimiter
from .admin_api import AdminApi, token_path, write_token
from .usage.service import UsageService
from .settings import Settings
from .tokens import OutboundTokens

log = logging.getLogger(__name__)

LedgerOpener = Callable[[str], Awaitable[Ledger]]

SETTINGS = web.AppKey("settings", Settings)
LEDGER = web.AppKey("ledger", Ledger)
CONNECTOR = web.AppKey("connector", Connector)
ENDPOINT = web.AppKey("endpoint", MessagesEndpoint)
SENDER = web.AppKey("sender", Sender)
NOTIFIER = web.AppKey("notifier", Notifier)
JOBS = web.AppKey("jobs", DailyJobs)
SESSION = web.AppKey("session", aiohttp.ClientSession)
USAGE = web.AppKey("usage", UsageService)
ADMIN = web.AppKey("admin", AdminApi)

#: Replies are sent inside the turn: a few quick retries, not the notifier's patience.
REPLY_ATTEMPTS = 3
REPLY_MAX_DELAY = 5.0

#: Alerts are sent once per attempt (the outbox retries, with backoff, across rounds); a send may take this long.
ALERT_SEND_TIMEOUT = 15.0

#: Seconds a readiness probe waits for the store before answering 503.
READY_TIMEOUT = 5.0

_NO_STORE = {"Cache-Control": "no-store"}


def create_app(settings: Settings, *, ledger_opener: LedgerOpener | None = None,
               msal_http_client: Any = None, clock: Clock = utc_now, background: bool = True) -> web.Application:
    """Build the application for `settings`.

    The ledger is opened on start-up with `ledger_opener(settings.store)` (default `storage.open_ledger` with
    `settings.alert_attempts`) and closed on clean-up, so a store that cannot be opened (for example
    `StoreLocked`) stops start-up with that exception. `msal_http_client` is handed to msal (a requests-like
    session; tests point it at a fake authority). `clock` is the notifier's, the daily jobs' and the rate
    limit's (`CREDITS_RATE_LIMIT`). With `background=False` neither the notifier's loop nor the daily jobs run
    by themselves (tests drive `app[NOTIFIER].deliver_once()` and `app[JOBS].run_once()`).
    """
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    opener = ledger_opener or (lambda store: open_ledger(store, max_attempts=settings.alert_attempts))
    app.cleanup_ctx.append(_ledger_context(opener))
    app.cleanup_ctx.append(_bot_context(msal_http_client, clock))
    app.cleanup_ctx.append(_background_context(clock, background))
    app.router.add_post("/api/messages", messages)
    app.router.add_post("/api/admin/usage", admin_usage)
    app.router.add_post("/api/admin/sync", admin_sync)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def messages(request: web.Request) -> web.StreamResponse:
    return await request.app[ENDPOINT](request)


async def admin_usage(request: web.Request) -> web.StreamResponse:
    return await request.app[ADMIN].usage(request)


async def admin_sync(request: web.Request) -> web.StreamResponse:
    return await request.app[ADMIN].sync(request)


def _bot_context(msal_http_client: Any, clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bot_context(app: web.Application) -> AsyncIterator[None]:
        from .adapter import CreditsAdapter, ProactiveSender  # botbuilder is imported where needed, not here
        from .handler import CreditsBot

        settings = app[SETTINGS]
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60),
                                        json_serialize=dumps)
        authenticator: InboundAuthenticator | None = None
        tokens: OutboundTokens | None = None
        graph: Any = None
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
            graph = None
            if settings.graph_enabled:
                from .usage.graph import GraphUsageClient
                graph = GraphUsageClient(session=session, client_id=settings.graph_client_id or "",
                                         client_secret=settings.graph_client_secret or "",
                                         login_url=settings.graph_login_url, graph_url=settings.graph_url,
                                         msal_http_client=msal_http_client)
                # the app registration's tenant gets its account at once: its usage flows before anyone chats
                await app[LEDGER].open_account(settings.graph_tenant_id or "", settings.currency)
            usage = UsageService(app[LEDGER], graph, interval_minutes=settings.graph_sync_interval,
                                 billed=settings.billed_capabilities, clock=clock)
            app[USAGE] = usage
            actions = Actions(app[LEDGER], bootstrap_admins=settings.admins, default_currency=settings.currency,
                              fallback_locale=settings.locale, members=_Members(connector),
                              approval_threshold=settings.approval_threshold, messenger=_Messenger(connector),
                              usage=usage, download_session=session)
            bot = CreditsBot(actions, limiter=RateLimiter(settings.rate_limit, clock=clock))
            adapter = CreditsAdapter(connector, app_id=settings.app_id, on_turn_error=bot.on_turn_error)
            alert_connector = Connector(session=session, tokens=tokens, max_attempts=1, timeout=ALERT_SEND_TIMEOUT)
            app[SENDER] = ProactiveSender(CreditsAdapter(alert_connector, app_id=settings.app_id),
                                          app_id=settings.app_id)
            app[CONNECTOR] = connector
            app[SESSION] = session
            app[ENDPOINT] = MessagesEndpoint(adapter, bot.on_turn, authenticator)
            yield
        finally:
            if graph is not None:
                await graph.close()
            if authenticator is not None:
                await authenticator.close()
            if tokens is not None:
                await tokens.close()
            await session.close()

    return bot_context


def _background_context(clock: Clock, background: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def background_context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        ledger = app[LEDGER]
        notifier = Notifier(ledger, app[SENDER], fallback_locale=settings.locale, clock=clock)
        jobs = DailyJobs(ledger, at=settings.daily_at, clock=clock)
        usage = app[USAGE]
        app[NOTIFIER], app[JOBS] = notifier, jobs
        token_file = token_path(settings.store)
        if settings.admin_token:
            token = settings.admin_token
            token_file = None
        elif token_file is not None:
            token = write_token(token_file, settings.port)
        else:
            token = secrets.token_urlsafe(32)   # nobody can read it: the endpoint is closed
        app[ADMIN] = AdminApi(usage, token)
        if background:
            notifier.start()
            jobs.start()
            usage.start()
        try:
            yield
        finally:
            await usage.stop()
            await jobs.stop()
            await notifier.stop()
            if token_file is not None:
                token_file.unlink(missing_ok=True)

    return background_context


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
