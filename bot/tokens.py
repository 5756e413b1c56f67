"""Outbound tokens: the bearer token the bot sends to the Bot Connector (bot-to-channel).

One long-lived `msal.ConfidentialClientApplication` per authority (DESIGN.md sections 4 and 5), never one per
turn. `OutboundTokens.token()`:

* runs msal in a worker thread (`asyncio.to_thread`): msal speaks blocking `requests`, and its constructor
  already does a network round trip (OpenID discovery of the authority), so the application is built lazily,
  in that thread, on the first call (a failed build is retried on the next call);
* lets msal's own token cache decide when to go to the network: since msal 1.23
  `acquire_token_for_client` looks in the cache first, and (msal 1.39, `application.py`,
  `_acquire_token_silent_from_cache_and_possibly_refresh_it`) treats a cached token as expired when less
  than 5 minutes are left, or as aging after its `refresh_on` (set from the server's `refresh_in`);
* remembers the token it got until that same moment (`expires_in - 5 min`, or `refresh_on` if sooner), so a
  turn does not pay a thread hop just to read msal's cache;
* is single-flight: while a request to msal is in flight, every other caller awaits that same request (and gets
  its token, or its `TokenError`), so 32 concurrent turns with a cold cache make ONE token request, and during
  an outage they wait for one attempt instead of queueing for one attempt each (as callers serialised by an
  `asyncio.Lock` would: 32 times msal's 10 s timeout). The request is shielded: a cancelled caller does not
  cancel it for the others;
* raises `TokenError` on failure, with a message that never holds the client secret.

msal requires an https authority with a tenant path segment (`msal.authority.canonicalize`). We pass
`instance_discovery=False`: for client credentials against a known Microsoft host msal skips instance discovery
anyway, and for any other host (a sovereign cloud given by `ToChannelFromBotLoginUrl`, or the test's fake
authority on https://127.0.0.1) it would otherwise ask login.microsoftonline.com whether the host is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msal

log = logging.getLogger(__name__)

#: `ToChannelFromBotLoginUrl` for a MultiTenant bot (Bot Framework's public-cloud default); a tenant-bound app
#: uses `https://login.microsoftonline.com/{tenant}` (`Settings.outbound_authority` derives it).
MULTI_TENANT_AUTHORITY = "https://login.microsoftonline.com/botframework.com"
#: `ToChannelFromBotOAuthScope` default.
DEFAULT_SCOPE = "https://api.botframework.com/.default"
#: msal's rule (application.py): a cached access token with less than this many seconds left is expired.
MSAL_EXPIRY_MARGIN = 5 * 60
#: Seconds msal's default `requests` session waits for the identity provider (msal's own default is forever).
HTTP_TIMEOUT = 10.0


class TokenError(Exception):
    """No outbound token. The message never contains the client secret.

    `transient` is True when the identity provider could not be reached (network, timeout, 5xx during
    discovery): trying again later may work. An error answer (wrong secret, unknown app) is not transient.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class OutboundTokens:
    """Tokens for one app id and authority; build one per process (per authority) and share it."""

    def __init__(self, *, app_id: str, password: str, authority: str = MULTI_TENANT_AUTHORITY,
                 scope: str = DEFAULT_SCOPE, http_client: Any = None) -> None:
        if not app_id or not password:
            raise ValueError("OutboundTokens needs an app id and a client secret")
        self.app_id = app_id
        self.authority = authority.rstrip("/")
        self.scope = scope
        self._password = password
        self._http_client = http_client  # a requests.Session-like object; None: msal's own (with a timeout)
        self._app: msal.ConfidentialClientApplication | None = None
        self._inflight: asyncio.Future[tuple[str, float]] | None = None
        self._token: str | None = None
        self._fresh_until = 0.0  # time.time() after which msal must be asked again
        #: Token requests that went to msal (cache hits in msal included) and their failures, for tests/metrics.
        self.msal_calls = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"OutboundTokens(app_id={self.app_id!r}, authority={self.authority!r}, scope={self.scope!r})"

    async def token(self) -> str:
        """A valid access token for `scope` (from memory, msal's cache, or the identity provider)."""
        if self._token is not None and time.time() < self._fresh_until:
            return self._token
        # No await between this check and the assignment: exactly one caller starts the request.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._acquire))
            self._inflight.add_done_callback(self._remember)
        token, _ = await asyncio.shield(self._inflight)
        return token

    async def close(self) -> None:
        """Close msal's HTTP session if msal created it (a caller's `http_client` is the caller's to close)."""
        app, self._app = self._app, None
        if app is not None and self._http_client is None:
            await asyncio.to_thread(app.http_client.close)

    # -- worker thread -----------------------------------------------------------------------------------------

    def _acquire(self) -> tuple[str, float]:
        """Runs in a worker thread: (token, time.time() until which it may be reused), or raises TokenError."""
        self.msal_calls += 1
        try:
            if self._app is None:
                self._app = self._build()
            result = self._app.acquire_token_for_client([self.scope])
        except Exception as exc:  # requests' network errors, msal's ValueError for failed discovery, ...
            self.failures += 1
            raise TokenError(f"token request to {self.authority} failed: {type(exc).__name__}: "
                             f"{self._scrub(str(exc))}", transient=True) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            self.failures += 1
            raise TokenError(self._describe_error(result))
        # msal's own rule for this token: expired with less than 5 minutes left, aging after `refresh_on`.
        fresh_until = time.time() + _number(result.get("expires_in"), 0) - MSAL_EXPIRY_MARGIN
        refresh_on = _number(result.get("refresh_on"), None)
        if refresh_on is not None:
            fresh_until = min(fresh_until, refresh_on)
        return token, fresh_until

    def _build(self) -> msal.ConfidentialClientApplication:
        extra: dict[str, Any] = {"http_client": self._http_client} if self._http_client is not None \
            else {"timeout": HTTP_TIMEOUT}
        return msal.ConfidentialClientApplication(
            self.app_id, client_credential=self._password, authority=self.authority,
            instance_discovery=False, **extra)

    # -- back on the loop --------------------------------------------------------------------------------------

    def _remember(self, future: asyncio.Future[tuple[str, float]]) -> None:
        """Done-callback of the in-flight request (on the loop): keep a token; mark a failure as retrieved."""
        if future.cancelled():
            return
        if future.exception() is None:
            self._token, self._fresh_until = future.result()

    def _describe_error(self, result: Any) -> str:
        if not isinstance(result, dict):
            return f"token request to {self.authority} failed: no answer"
        error = str(result.get("error") or "unknown_error")
        description = str(result.get("error_description") or "").strip().splitlines()
        first = description[0][:300] if description else ""
        return self._scrub(f"token request to {self.authority} failed: {error}" + (f": {first}" if first else ""))

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


def _number(value: Any, default: Any) -> Any:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
