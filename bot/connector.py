"""Outbound Bot Connector REST client: replies, new activities, card updates, member look-ups.

Everything goes over ONE shared `aiohttp.ClientSession` (pooled keep-alive connections), with the token from
`OutboundTokens` (or none in local mode), and retries that botbuilder does not do (DESIGN.md section 5: the SDK
sends each reply once, so a 429 or 500 from the connector silently loses it):

* retried: 429, 5xx, timeouts, connection errors; up to `max_attempts` attempts in all;
* delay before retry n (n = 1, 2, ...): full jitter, `uniform(0, min(max_delay, base_delay * 2**(n-1)))`,
  but at least what `Retry-After` asks for (seconds or an HTTP date), and never more than `max_delay`;
* not retried: every other 4xx (`ConnectorError(status=403, retryable=False)`...).

REST paths as in botframework-connector (`_conversations_operations.py`): each path segment is quoted with
msrest's `quote(value, safe="")`, so a Teams conversation id `19:abc@thread.skype;messageid=1` travels as
`19%3Aabc%40thread.skype%3Bmessageid%3D1`; the URL is handed to aiohttp as already encoded so that yarl does
not decode it again.

Tokens are never logged, and never sent over plain http except to a loopback host (local test fakes).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from yarl import URL

from .settings import is_loopback
from .tokens import TokenError

if TYPE_CHECKING:
    from .tokens import OutboundTokens


def dumps(value: Any) -> str:
    """JSON for request bodies (the bot's HTTP session's `json_serialize`): orjson, about ten times faster than
    `json.dumps` for a reply with a card; the standard library for what orjson refuses (an integer beyond 64
    bits), so nothing that `json.dumps` could send fails."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:   # orjson.JSONEncodeError
        return json.dumps(value)

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429}) | frozenset(range(500, 600))


class ConnectorError(Exception):
    """A connector call failed for good. `status` is the HTTP status of the last answer (None: no answer, e.g.
    timeouts or connection errors); `retryable` says whether trying again later may succeed (an outbox may
    keep the message), as opposed to a 4xx that will fail the same way again. The message holds no token."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        #: Seconds the last answer's `Retry-After` asked for (None: it asked nothing), for an outbox's backoff.
        self.retry_after = retry_after

    @property
    def gone(self) -> bool:
        """403 or 404: the bot is no longer in the conversation (removed, or the conversation deleted). Sending
        there again will fail the same way."""
        return self.status in (403, 404)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: str | None


class Connector:
    """Bot Connector v3 client. One per process; share it (and its session) between turns."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tokens: OutboundTokens | None,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._session = session
        self._tokens = tokens
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- operations --------------------------------------------------------------------------------------------

    async def send(self, service_url: str, conversation_id: str, activity: Mapping[str, Any], *,
                   reply_to_id: str | None = None) -> str:
        """Post `activity`: as a reply to `reply_to_id` (`POST .../activities/{replyToId}`), or as a new
        activity in the conversation (`POST .../activities`). Returns the new activity's id ("" if none)."""
        segments = ["v3", "conversations", conversation_id, "activities"]
        if reply_to_id:
            segments.append(reply_to_id)
        answer = await self._call("reply" if reply_to_id else "send", "POST", service_url, segments,
                                  dict(activity))
        body = _json_or_none(answer.body)
        return str(body.get("id") or "") if isinstance(body, dict) else ""

    async def update(self, service_url: str, conversation_id: str, activity_id: str,
                     activity: Mapping[str, Any]) -> None:
        """Replace a sent activity (e.g. a card) in place: `PUT .../activities/{activityId}`."""
        await self._call("update", "PUT", service_url,
                         ["v3", "conversations", conversation_id, "activities", activity_id], dict(activity))

    async def get_member(self, service_url: str, conversation_id: str, member_id: str) -> dict[str, Any]:
        """One member of a conversation: `GET /v3/conversations/{id}/members/{memberId}` (404: ConnectorError)."""
        answer = await self._call("get_member", "GET", service_url,
                                  ["v3", "conversations", conversation_id, "members", member_id], None)
        body = _json_or_none(answer.body)
        if not isinstance(body, dict):
            raise ConnectorError("get_member: the connector answered something that is not a JSON object",
                                 status=answer.status, retryable=False)
        return body

    # -- the retry loop ----------------------------------------------------------------------------------------

    async def _call(self, what: str, method: str, service_url: str, segments: list[str],
                    payload: dict[str, Any] | None) -> _Answer:
        """One REST call with retries; `what` names the operation in errors and logs (no ids, no token)."""
        url, host = _build_url(service_url, segments)
        if self._tokens is not None and url.scheme != "https" and not is_loopback(url.host or ""):
            raise ConnectorError(f"{what}: refusing to send a token over plain http to {host}", retryable=False)
        for attempt in range(1, self.max_attempts + 1):
            headers = {"Accept": "application/json"}
            if self._tokens is not None:  # asked on every attempt: a retry may outlive the token
                try:
                    headers["Authorization"] = f"Bearer {await self._tokens.token()}"
                except TokenError as exc:
                    raise ConnectorError(f"{what}: no outbound token ({exc})", retryable=exc.transient) from None

            retry_after: str | None = None
            try:
                async with self._session.request(method, url, json=payload, headers=headers,
                                                 timeout=self._timeout) as response:
                    answer = _Answer(response.status, await response.read(), response.headers.get("Retry-After"))
            except asyncio.TimeoutError:
                failure = ConnectorError(f"{what} to {host}: timed out after {self._timeout.total} s",
                                         retryable=True)
            except aiohttp.ClientError as exc:
                failure = ConnectorError(f"{what} to {host}: {type(exc).__name__}", retryable=True)
            else:
                if 200 <= answer.status < 300:
                    if attempt > 1:
                        log.info("connector call succeeded after retry",
                                 extra={"call": what, "host": host, "attempt": attempt})
                    return answer
                retryable = answer.status in RETRYABLE_STATUSES
                failure = ConnectorError(f"{what} to {host}: HTTP {answer.status}{_error_code(answer.body)}",
                                         status=answer.status, retryable=retryable,
                                         retry_after=parse_retry_after(answer.retry_after))
                if not retryable:
                    raise failure
                retry_after = answer.retry_after

            if attempt == self.max_attempts:
                raise failure
            delay = self._delay(attempt, retry_after)
            log.warning("connector call failed; retrying",
                        extra={"call": what, "host": host, "status": failure.status or "-", "problem": str(failure),
                               "attempt": attempt, "delay": round(delay, 3)})
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, ceiling)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        return min(delay, self.max_delay)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None  # NaN/inf: ignore
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())


def _build_url(service_url: str, segments: list[str]) -> tuple[URL, str]:
    if not isinstance(service_url, str):
        raise ConnectorError("service URL is not a string", retryable=False)
    parts = urlsplit(service_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorError("service URL is not an http(s) URL", retryable=False)
    for segment in segments:
        if not isinstance(segment, str) or not segment:
            raise ConnectorError("empty conversation, activity or member id", retryable=False)
    path = "/".join(quote(segment, safe="") for segment in segments)
    return URL(service_url.strip().rstrip("/") + "/" + path, encoded=True), parts.netloc


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_code(body: bytes) -> str:
    """`: <code>` from a Bot Connector error body `{"error": {"code": ...}}`, for the error message (no body
    text beyond the code: it could echo what we sent)."""
    parsed = _json_or_none(body[:4096])
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f" ({str(code)[:80]})" if code else ""
