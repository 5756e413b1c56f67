"""Inbound authentication: the Bot Framework channel-to-bot JWT on every `POST /api/messages`.

We do not use botbuilder's validation (DESIGN.md section 5): it answers 500 for every authentication failure
and fetches signing keys with a blocking `requests.get` on the event loop. `InboundAuthenticator` checks what
Bot Framework's `ChannelValidation` checks, with the keys fetched over the app's shared `aiohttp` session:

1. an `Authorization: Bearer <jwt>` header;
2. a JOSE header with `alg` RS256 and a `kid` naming a key in the JWKS that the OpenID metadata document
   (`ToBotFromChannelOpenIdMetadataUrl`) points to with `jwks_uri`;
3. if that key carries `endorsements`, the activity's `channelId` (e.g. `msteams`) is one of them;
4. the RS256 signature (PyJWT), `iss` == the configured issuer (`ToBotFromChannelTokenIssuer`), `aud` == our
   app id, `exp` and `nbf` within `leeway` of the injected clock;
5. the `serviceurl` claim equals the activity's `serviceUrl` (a trailing `/` ignored on both), so a token
   for one service URL cannot direct our replies (and our outbound token) somewhere else.

Every failure raises `AuthenticationError`, which the HTTP layer turns into 401. Its `reason` is a short code
for logs (`bad_signature`, `expired`, `unknown_kid`...); neither it nor the token is ever shown to callers.

Keys are cached. `start()` pre-warms them and starts a background task that refreshes them every
`refresh_every` (sooner, with back-off, after a failed refresh). A token with a `kid` the cache does not know
triggers one immediate refresh, at most once per `min_refresh_gap` (so a rotated key is picked up at once,
but a flood of forged key ids cannot hammer the metadata endpoint); concurrent callers share that refresh.
The gap counts between such on-demand refreshes only: the scheduled ones (daily) do not delay them.
A failed refresh keeps the keys we had. `authenticate()` works without `start()` too: the first request then
fetches the keys.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
import jwt

from storage.clock import utc_now

log = logging.getLogger(__name__)

#: Bot Framework's public-cloud defaults (the values of the settings of the same names).
DEFAULT_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
DEFAULT_TOKEN_ISSUER = "https://api.botframework.com"

#: The only signing algorithm accepted (Bot Framework signs channel tokens with RS256).
ALGORITHM = "RS256"
#: Seconds one metadata or JWKS fetch may take before it counts as failed.
FETCH_TIMEOUT = 10.0
#: Validated tokens remembered (token -> claims; the channel reuses a token for about an hour): up to ~2 MB.
VERIFIED_TOKENS_KEPT = 1024
#: Largest accepted `Authorization` header; real Bot Framework tokens are about 1.5 kB.
MAX_HEADER_LENGTH = 16 * 1024
#: Claims a channel token must carry (PyJWT checks presence; `serviceurl` is checked by us).
REQUIRED_CLAIMS = ("exp", "iss", "aud")


class AuthenticationError(Exception):
    """The request is not authenticated: answer 401.

    `reason` is a short code for logs (`missing_header`, `malformed`, `unknown_kid`, `bad_signature`,
    `expired`, `not_yet_valid`, `wrong_audience`, `wrong_issuer`, `serviceurl_mismatch`,
    `endorsement_mismatch`, `keys_unavailable`...). Never show it, or `str()` of this error, to the caller.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"unauthenticated: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class BotClaims:
    """What a valid channel token says: our app id (`aud`), the service URL it is good for, its issuer."""

    app_id: str
    service_url: str
    issuer: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class _SigningKey:
    key: jwt.PyJWK
    endorsements: frozenset[str] | None  # None: the key makes no claim about channels


class _FetchError(Exception):
    """Metadata or JWKS could not be fetched or made no sense (the text is for logs; it holds no secrets)."""


class InboundAuthenticator:
    """Validates Bot Framework channel-to-bot tokens; see the module docstring for the rules.

    `session` is the app's shared `aiohttp.ClientSession` (not closed here). `clock` returns an aware UTC
    `datetime` and drives both the token's time checks and the refresh rate limit. `sleep` paces the
    background refresh task (tests pass one they control).
    """

    def __init__(
        self,
        *,
        app_id: str,
        session: aiohttp.ClientSession,
        metadata_url: str = DEFAULT_OPENID_METADATA_URL,
        issuer: str = DEFAULT_TOKEN_ISSUER,
        leeway: timedelta = timedelta(minutes=5),
        refresh_every: timedelta = timedelta(hours=24),
        min_refresh_gap: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        if not app_id:
            raise ValueError("InboundAuthenticator needs an app id (local mode has no authenticator)")
        self.app_id = app_id
        self.metadata_url = metadata_url
        self.issuer = issuer
        self.leeway = leeway
        self.refresh_every = refresh_every
        self.min_refresh_gap = min_refresh_gap
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self._keys: dict[str, _SigningKey] = {}
        self._verified: dict[str, tuple[str, dict[str, Any]]] = {}   # token -> (kid, claims), insertion order
        self._last_on_demand: datetime | None = None  # last refresh an unknown kid caused, by `clock`
        self._last_success: datetime | None = None
        self._refresh_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Refreshes attempted and failed so far (for tests and metrics).
        self.refreshes = 0
        self.refresh_failures = 0

    # -- lifetime ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the metadata and keys now (a failure is logged, not raised) and start the refresh task."""
        async with self._refresh_lock:
            await self._refresh_locked()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_loop(), name="bot-framework-signing-keys")

    async def close(self) -> None:
        """Stop the background refresh task. The session belongs to the caller and stays open."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    @property
    def key_ids(self) -> frozenset[str]:
        """The key ids currently trusted."""
        return frozenset(self._keys)

    async def refresh(self) -> bool:
        """Fetch the metadata and keys now, whatever the rate limit says. True if the key set was replaced."""
        async with self._refresh_lock:
            return await self._refresh_locked()

    # -- validation --------------------------------------------------------------------------------------------

    async def authenticate(self, auth_header: str | None, *, service_url: str, channel_id: str) -> BotClaims:
        """The claims of the channel token in `auth_header`, or `AuthenticationError`.

        `service_url` and `channel_id` are the activity's `serviceUrl` and `channelId`.
        """
        token = _bearer_token(auth_header)
        verified = self._verified.get(token)
        if verified is None:
            verified = await self._verify(token)
        kid, claims = verified
        # per activity, also for a token seen before: the key still trusted and endorsed for this channel,
        # the token still in time, and issued for this activity's service URL
        signing_key = await self._key_for(kid)
        if signing_key.endorsements is not None and channel_id not in signing_key.endorsements:
            raise AuthenticationError("endorsement_mismatch")
        try:
            self._check_times(claims)
        except AuthenticationError:
            self._verified.pop(token, None)
            raise
        claimed_url = claims.get("serviceurl")
        if not isinstance(claimed_url, str) or not isinstance(service_url, str) or not claimed_url.rstrip("/") \
                or claimed_url.rstrip("/") != service_url.rstrip("/"):
            raise AuthenticationError("serviceurl_mismatch")
        return BotClaims(app_id=self.app_id, service_url=claimed_url, issuer=claims["iss"],
                         raw=MappingProxyType(dict(claims)))

    async def _verify(self, token: str) -> tuple[str, dict[str, Any]]:
        """(key id, claims) of a token whose signature, audience, issuer and required claims hold, remembered
        for the next activities that carry the same token (the channel reuses one for about an hour). Only the
        signature and the claims are remembered: whatever depends on the activity or the time is checked each
        time by `authenticate`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("malformed") from None
        if header.get("alg") != ALGORITHM:
            raise AuthenticationError("bad_algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationError("missing_kid")
        signing_key = await self._key_for(kid)
        claims = self._decode(token, signing_key.key)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]   # the oldest first
        self._verified[token] = (kid, claims)
        return kid, claims

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.app_id, issuer=self.issuer,
                # exp and nbf are checked by `_check_times` against the injected clock.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError("bad_signature") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("wrong_issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"missing_claim_{exc.claim}") from None
        except jwt.DecodeError:
            raise AuthenticationError("malformed") from None
        except jwt.PyJWTError:
            raise AuthenticationError("invalid_token") from None

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock().timestamp()
        leeway = self.leeway.total_seconds()
        exp = claims.get("exp")
        if not _is_number(exp):
            raise AuthenticationError("malformed_exp")
        if exp <= now - leeway:  # PyJWT's rule
            raise AuthenticationError("expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise AuthenticationError("malformed_nbf")
            if nbf > now + leeway:
                raise AuthenticationError("not_yet_valid")

    # -- keys --------------------------------------------------------------------------------------------------

    async def _key_for(self, kid: str) -> _SigningKey:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._refresh_lock:
            key = self._keys.get(kid)  # a refresh we waited for may have brought it
            if key is None and self._may_refresh_now():
                self._last_on_demand = self._clock()
                await self._refresh_locked()
                key = self._keys.get(kid)
        if key is None:
            raise AuthenticationError("unknown_kid" if self._keys else "keys_unavailable")
        return key

    def _may_refresh_now(self) -> bool:
        return self._last_on_demand is None or self._clock() - self._last_on_demand >= self.min_refresh_gap

    async def _refresh_locked(self) -> bool:
        """One fetch of metadata + JWKS; replaces the key set on success, keeps it on failure. Hold the lock."""
        self.refreshes += 1
        try:
            keys = await self._fetch_keys()
        except _FetchError as exc:
            self.refresh_failures += 1
            log.warning("signing keys not refreshed", extra={"problem": str(exc), "kept": len(self._keys),
                                                               "metadata_url": self.metadata_url})
            return False
        added = sorted(set(keys) - set(self._keys))
        removed = sorted(set(self._keys) - set(keys))
        self._keys = keys
        self._last_success = self._clock()
        if added or removed:
            log.info("signing keys refreshed", extra={"keys": len(keys), "added": ",".join(added) or "-",
                                                      "removed": ",".join(removed) or "-"})
        return True

    async def _fetch_keys(self) -> dict[str, _SigningKey]:
        metadata = await self._get_json(self.metadata_url, "metadata")
        jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise _FetchError("metadata has no usable jwks_uri")
        jwks = await self._get_json(jwks_uri, "jwks")
        raw_keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(raw_keys, list):
            raise _FetchError("JWKS has no keys list")
        keys: dict[str, _SigningKey] = {}
        for raw in raw_keys:
            parsed = _parse_jwk(raw)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        if not keys:
            raise _FetchError("JWKS has no usable RS256 signing key")
        return keys

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            async with self._session.get(url, timeout=self._timeout,
                                         headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise _FetchError(f"{what} answered HTTP {response.status}")
                return await response.json(content_type=None)
        except _FetchError:
            raise
        except asyncio.TimeoutError:
            raise _FetchError(f"{what} timed out after {self._timeout.total} s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise _FetchError(f"{what} fetch failed: {type(exc).__name__}") from None

    async def _refresh_loop(self) -> None:
        failures = 0
        while True:
            if self._last_success is not None and failures == 0:
                delay = self.refresh_every.total_seconds()
            else:  # never fetched, or the last try failed: retry sooner, backing off, never beyond refresh_every
                delay = min(self.refresh_every.total_seconds(),
                            max(self.min_refresh_gap.total_seconds(), 1.0) * 2 ** min(failures, 10))
            await self._sleep(delay)
            try:
                ok = await self.refresh()
            except Exception:  # never let the task die; the next round tries again
                log.exception("signing key refresh crashed")
                ok = False
            failures = 0 if ok else failures + 1


def _bearer_token(auth_header: str | None) -> str:
    if not auth_header:
        raise AuthenticationError("missing_header")
    if not isinstance(auth_header, str) or len(auth_header) > MAX_HEADER_LENGTH:
        raise AuthenticationError("malformed_header")
    scheme, _, token = auth_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationError("malformed_header")
    return token


def _parse_jwk(raw: Any) -> tuple[str, _SigningKey] | None:
    """(kid, key) for a usable RSA signing key of a JWKS, else None (other keys are skipped, not fatal)."""
    if not isinstance(raw, dict):
        return None
    kid = raw.get("kid")
    if not isinstance(kid, str) or not kid or raw.get("kty") != "RSA" or raw.get("use", "sig") != "sig":
        return None
    endorsements = raw.get("endorsements")
    if endorsements is not None:
        if not isinstance(endorsements, list) or not all(isinstance(e, str) for e in endorsements):
            return None
        endorsements = frozenset(endorsements) or None  # an empty list restricts nothing (as in the SDK)
    try:
        key = jwt.PyJWK(raw, algorithm=ALGORITHM)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    return kid, _SigningKey(key=key, endorsements=endorsements)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
