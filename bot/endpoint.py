"""`POST /api/messages`: from an HTTP request to a turn, with every refusal mapped to the right status.

    415  the body is not declared as JSON
    413  the body is larger than `MAX_BODY`
    400  the body is not JSON, or not an activity we can act on (type, ids, conversation, service URL)
    401  authentication failed (any reason: missing, forged, expired, wrong audience or service URL, unknown key)
    200  the turn ran; for an invoke, the invoke response's status and body instead

A request refused here never reaches the ledger, so it writes nothing. We own this handler instead of calling
botbuilder's `CloudAdapter.process`, which answers 500 for auth failures and for every invoke body in 4.17.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity

from .adapter import CreditsAdapter
from .auth import AuthenticationError, InboundAuthenticator

log = logging.getLogger(__name__)

#: Largest activity accepted. Teams messages and card submits are a few kB; attachments arrive as links.
MAX_BODY = 256 * 1024

_NEEDS_ID = {"message", "invoke"}


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
            raw = await request.content.read(MAX_BODY + 1)
        except Exception:  # the client went away mid-body
            return _problem(400, "could not read the body")
        if len(raw) > MAX_BODY:
            return _problem(413, "activity too large")
        try:
            # card inputs may be JSON numbers: Decimal, never float; NaN and Infinity are not JSON at all
            body = json.loads(raw, parse_float=Decimal, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _problem(400, "body is not JSON")
        activity = _activity(body)
        if activity is None:
            return _problem(400, "not a valid activity")
        if self.authenticator is not None:
            try:
                await self.authenticator.authenticate(request.headers.get("Authorization"),
                                                      service_url=activity.service_url,
                                                      channel_id=activity.channel_id)
            except AuthenticationError as error:
                log.warning("rejected activity %s: authentication failed (%s)", activity.id, error.reason)
                return _problem(401, "unauthorized")
        elif not _is_loopback(activity.service_url):
            # with authentication off, only a local client (the Playground) may tell us where to reply
            return _problem(400, "service URL not allowed in local mode")
        response = await self.adapter.process(activity, self.logic)
        if response is None:
            return web.Response(status=200)
        return web.json_response(response.body, status=int(response.status or 200))


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
    parts = urlsplit(service_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    try:
        return Activity().deserialize(body)
    except Exception:  # msrest raises a zoo of types for shapes it dislikes
        return None


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
