"""`POST /api/messages`: from an HTTP request to a turn, with every refusal mapped to the right status.

    415  the body is not declared as JSON
    413  the body is larger than `MAX_BODY`
    400  the body is not JSON, or not an activity we can act on (type, ids, conversation, service URL);
         a string anywhere holds NUL or an unpaired surrogate (no store can keep those, no Teams client
         sends them); an id or a name is longer than `MAX_ID`; an id holds a control character
    401  authentication failed (any reason: missing, forged, expired, wrong audience or service URL, unknown key)
    200  the turn ran; for an invoke, the invoke response's status and body instead

A request refused here never reaches the ledger, so it writes nothing. A failure after these checks is a bug:
500 with an incident id (logged, and in `X-Incident-Id`), never the exception's text. We own this handler
instead of calling botbuilder's `CloudAdapter.process`, which answers 500 for auth failures and for every
invoke body in 4.17.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity

from .activity_json import activity_from_json
from .adapter import CreditsAdapter
from .auth import AuthenticationError, InboundAuthenticator

log = logging.getLogger(__name__)

#: Largest activity accepted. Teams messages and card submits are a few kB; attachments arrive as links.
MAX_BODY = 256 * 1024

#: Longest id of any kind (activity, conversation, user, tenant, service URL, locale) and name. Teams' longest,
#: personal conversation ids, are a few hundred characters; PostgreSQL cannot index much more than 2 kB; every
#: reply repeats the sender's name.
MAX_ID = 1024

_NEEDS_ID = {"message", "invoke"}
_ID_FIELDS = (("id",), ("replyToId",), ("channelId",), ("locale",), ("serviceUrl",), ("conversation", "id"),
              ("from", "id"), ("from", "aadObjectId"), ("recipient", "id"), ("channelData", "tenant", "id"))
_NAME_FIELDS = (("from", "name"), ("recipient", "name"), ("conversation", "name"))
_CONTROL = re.compile("[\x00-\x1f\x7f]")   # in an id: it ends up in a URL path or a header
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")   # NUL (PostgreSQL text), lone surrogates (not UTF-8)


@dataclass
class MessagesEndpoint:
    adapter: CreditsAdapter
    logic: Callable[[TurnContext], Awaitable[Any]]
    authenticator: InboundAuthenticator | None  # None: local mode, authentication off, loopback only

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return _problem(415, "expected application/json")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _problem(413, "activity too large")
        try:
            raw = await _read_body(request)
        except Exception:  # the client went away mid-body
            return _problem(400, "could not read the body")
        if raw is None:
            return _problem(413, "activity too large")
        try:
            # card inputs may be JSON numbers: Decimal, never float; NaN and Infinity are not JSON at all
            body = json.loads(raw, parse_float=Decimal, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _problem(400, "body is not JSON")
        try:
            activity = _activity(body)
            if activity is None:
                return _problem(400, "not a valid activity")
            return await self._turn(request, activity)
        except Exception:
            # a bug, not the caller's fault: the id in the log and in a header, never the exception's text
            incident = incident_id()
            log.exception("incident %s: activity %s could not be handled", incident,
                          _shown(body.get("id") if isinstance(body, dict) else None))
            return web.json_response({"error": "internal error", "incident": incident}, status=500,
                                     headers={"X-Incident-Id": incident})

    async def _turn(self, request: web.Request, activity: Activity) -> web.StreamResponse:
        if self.authenticator is not None:
            try:
                await self.authenticator.authenticate(request.headers.get("Authorization"),
                                                      service_url=activity.service_url,
                                                      channel_id=activity.channel_id)
            except AuthenticationError as error:
                log.warning("rejected activity %s: authentication failed (%s)", _shown(activity.id), error.reason)
                return _problem(401, "unauthorized")
        elif not _is_loopback(activity.service_url):
            # with authentication off, only a local client (the Playground) may tell us where to reply
            return _problem(400, "service URL not allowed in local mode")
        response = await self.adapter.process(activity, self.logic)
        if response is None:
            return web.Response(status=200)
        return web.json_response(response.body, status=int(response.status or 200))


async def _read_body(request: web.Request) -> bytes | None:
    """The whole body, or None when it is larger than `MAX_BODY`. `StreamReader.read(n)` returns what has
    arrived so far, not n bytes: a body that comes in several pieces (chunked, or a slow network) is read piece
    by piece until its end."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(MAX_BODY + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return None


def _shown(value: Any, limit: int = 80) -> str:
    """An untrusted value for a log line, cut short (an activity id may be anything the caller sent)."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _activity(body: Any) -> Activity | None:
    """The activity, or None when it is not one we can act on. Checked before botbuilder sees it, because its
    deserializer accepts almost anything and fails later in surprising places."""
    if not isinstance(body, dict):
        return None
    kind, service_url, conversation = body.get("type"), body.get("serviceUrl"), body.get("conversation")
    if not isinstance(kind, str) or not kind or not isinstance(service_url, str):
        return None
    if not isinstance(conversation, dict) or not isinstance(conversation.get("id"), str) or not conversation["id"]:
        return None
    if not isinstance(body.get("channelId"), str):
        return None
    if kind in _NEEDS_ID and (not isinstance(body.get("id"), str) or not body["id"]):
        return None  # the activity id is the idempotency key of what the message does
    for name in ("from", "recipient"):
        if name in body and not isinstance(body[name], (dict, type(None))):
            return None
    if "text" in body and not isinstance(body["text"], (str, type(None))):
        return None
    entities = body.get("entities")
    if entities is not None and (not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities)):
        return None
    if "channelData" in body and not isinstance(body["channelData"], (dict, type(None))):
        return None
    for path in _ID_FIELDS + _NAME_FIELDS:
        value = _dig(body, path)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_ID
                                  or (path in _ID_FIELDS and _CONTROL.search(value))):
            return None
    if not _service_url_ok(service_url):
        return None
    storable, decimals = _inspect(body)
    if not storable:
        return None
    try:
        # msrest refuses Decimal anywhere ("Cannot deserialize generic object"): it gets a copy without them,
        # and the activity keeps the original `value` (the card's data and inputs, where numbers matter)
        activity = activity_from_json(_without_decimals(body) if decimals else body)
    except Exception:  # msrest raises a zoo of types for shapes it dislikes
        return None
    if "value" in body:
        activity.value = body["value"]
    return activity


def _dig(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node


def _service_url_ok(url: str) -> bool:
    """An absolute http(s) URL with a host and a valid port, without spaces or control characters (it becomes
    the address of every reply)."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:  # "http://[::1" and the like
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname)


def _inspect(body: Any) -> tuple[bool, bool]:
    """(storable, has decimals): storable is False when a string anywhere (keys too) holds NUL or an unpaired
    surrogate. Iterative: a deeply nested body cannot exhaust the stack."""
    decimals = False
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _UNSTORABLE.search(node):
                return False, decimals
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Decimal):
            decimals = True
    return True, decimals


def _without_decimals(node: Any) -> Any:
    """`node` with every Decimal (a JSON number with a fraction or an exponent) as its text."""
    if isinstance(node, Decimal):
        return str(node)
    if isinstance(node, dict):
        return {key: _without_decimals(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_decimals(value) for value in node]
    return node


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problem(status: int, title: str) -> web.Response:
    return web.json_response({"error": title}, status=status)


def incident_id() -> str:
    return uuid.uuid4().hex[:12]
