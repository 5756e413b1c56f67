"""`FakeConnector`: the Bot Connector REST API (v3) on loopback, recording every request in order.

An aiohttp server on 127.0.0.1 (random port) running on the test's event loop. Point a bot at it by using
`service_url` as the activity's `serviceUrl`; it has a path prefix (`/amer/`) like Teams' real service URLs
(`https://smba.trafficmanager.net/amer/`), so URL joining is exercised too.

Answers:

| Request | Answer |
|---|---|
| `POST {prefix}/v3/conversations/{id}/activities[/{replyToId}]` | 201 `{"id": "activity-<n>"}` (n counts from 1) |
| `PUT {prefix}/v3/conversations/{id}/activities/{activityId}` | 200 `{"id": activityId}` |
| `DELETE {prefix}/v3/conversations/{id}/activities/{activityId}` | 200 `{}` |
| `GET {prefix}/v3/conversations/{id}/members/{memberId}` | 200 `members[memberId]`, else 404 (not found) |
| `GET {prefix}/v3/conversations/{id}/members` | 200, the list of `members` values |
| anything else | 404 `{"error": {"code": "NotFound"}}` |

Each request is recorded as a `Recorded` (method, decoded path, raw path as sent, headers, parsed JSON body, the
client's address and port) in `requests`, before any fault applies. Faults, consumed in order by the matching
requests (`path` is matched against the route, i.e. the path after the prefix, decoded; `method` too, if given):

* `fail_next(n, status=500, retry_after=None, body=None)`: answer with that status (and `Retry-After`);
* `stall_next(n, seconds=None)`: answer only after `seconds`, or never (until `release()` / `stop()`): a timeout;
* `drop_next(n)`: close the connection without answering: a connection error.
* `stall_next(n, seconds, then_status=503)`: hold, then answer `then_status` *without* posting: a gateway
  timeout where nothing reached the conversation (plain `stall_next` posts after the stall, as a slow Teams
  that did post although the client gave up);
* `chaos(rate, rng=...)`: from now on each matching request fails with probability `rate`, with a fault drawn
  from `CHAOS_FAULTS` (429 with `Retry-After`, 500, 503, a stall past the client's timeout that posts nothing,
  a dropped connection). Planned faults (`fail_next`...) are consumed first.

`accepted` lists the activities the fake really posted (answered 201 to a POST of an activity), in order: that
is what a conversation's members would see, whatever the client made of the answer.

`require_bearer(predicate)` makes every request without an `Authorization: Bearer <t>` header for which
`predicate(t)` holds fail with 401. `wait_for(n)` waits (without sleeping) until n requests have been recorded.
`peers()` gives the distinct client `(host, port)` pairs seen: one pair for many requests means one pooled
keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from aiohttp import web

PREFIX = "/amer"


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # decoded, with the prefix, e.g. "/amer/v3/conversations/19:abc@thread.skype/activities"
    raw_path: str  # as sent on the wire, e.g. "/amer/v3/conversations/19%3Aabc%40thread.skype/activities"
    route: str  # decoded, without the prefix: "/v3/conversations/.../activities"
    headers: Mapping[str, str] = field(repr=False)
    json: Any
    peer: tuple[str, int] | None
    #: The route's segments, each decoded on its own (so an id holding "%2F" stays one segment).
    segments: tuple[str, ...] = ()

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def conversation_id(self) -> str | None:
        seg = list(self.segments)
        return seg[2] if len(seg) > 2 and seg[:2] == ["v3", "conversations"] else None


@dataclass
class _Fault:
    kind: str  # "fail" | "stall" | "drop"
    remaining: int
    path: str | None
    method: str | None
    status: int = 500
    retry_after: str | None = None
    body: Any = None
    seconds: float | None = None
    then_status: int | None = None   # stall: answer this instead of processing the request

    def matches(self, method: str, route: str) -> bool:
        return (self.remaining > 0 and (self.path is None or self.path == route)
                and (self.method is None or self.method.upper() == method))


#: What `chaos` draws from: (kind, status, Retry-After).
CHAOS_FAULTS: tuple[tuple[str, int, str | None], ...] = (
    ("fail", 429, "1"), ("fail", 429, "7"), ("fail", 500, None), ("fail", 503, None), ("fail", 502, None),
    ("stall", 504, None), ("drop", 0, None),
)


@dataclass
class _Chaos:
    rate: float
    rng: random.Random
    path_prefix: str | None
    stall_seconds: float
    injected: int = 0


class FakeConnector:
    """See the module docstring. Create, `await start()` (or `async with`), use `service_url`, `await stop()`."""

    def __init__(self, *, members: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.members: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (members or {}).items()}
        self.requests: list[Recorded] = []
        self._faults: list[_Fault] = []
        self._bearer: Callable[[str], bool] | None = None
        self._sent = 0
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._changed: asyncio.Condition | None = None
        self._release: asyncio.Event | None = None
        self._chaos: _Chaos | None = None
        self.accepted: list[Recorded] = []

    # -- lifetime ----------------------------------------------------------------------------------------------

    async def start(self) -> "FakeConnector":
        if self._runner is not None:
            return self
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._release is not None:
            self._release.set()  # let stalled handlers finish
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeConnector":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def service_url(self) -> str:
        """The `serviceUrl` to put in activities, with a trailing slash as Teams sends it."""
        if not self._port:
            raise RuntimeError("FakeConnector is not started")
        return f"http://127.0.0.1:{self._port}{PREFIX}/"

    # -- programming it ----------------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: str | float | None = None,
                  body: Any = None, path: str | None = None, method: str | None = None) -> None:
        """Answer the next `n` matching requests with `status` (and a `Retry-After` header if given)."""
        self._faults.append(_Fault("fail", n, path, method, status=status,
                                   retry_after=None if retry_after is None else str(retry_after), body=body))

    def stall_next(self, n: int = 1, *, seconds: float | None = None, path: str | None = None,
                   method: str | None = None, then_status: int | None = None) -> None:
        """Hold the next `n` matching requests for `seconds` (or until `release()`), then answer normally, or
        with `then_status` and nothing posted."""
        self._faults.append(_Fault("stall", n, path, method, seconds=seconds, then_status=then_status))

    def chaos(self, rate: float, *, rng: random.Random, path_prefix: str | None = "/v3/conversations/",
              stall_seconds: float = 1.0) -> None:
        """Fail about `rate` of the matching requests (route starting with `path_prefix`) from now on, each with
        a fault drawn by `rng` from `CHAOS_FAULTS`; `rate=0` ends it. A stall lasts `stall_seconds` (set the
        client's timeout below it) and posts nothing."""
        self._chaos = _Chaos(rate, rng, path_prefix, stall_seconds) if rate > 0 else None

    @property
    def chaos_injected(self) -> int:
        """Faults injected by `chaos` so far."""
        return self._chaos.injected if self._chaos is not None else 0

    def drop_next(self, n: int = 1, *, path: str | None = None, method: str | None = None) -> None:
        """Close the connection of the next `n` matching requests without an answer."""
        self._faults.append(_Fault("drop", n, path, method))

    def release(self) -> None:
        """Let every stalled request (and every later one) through."""
        if self._release is not None:
            self._release.set()

    def require_bearer(self, predicate: Callable[[str], bool] | None) -> None:
        """Answer 401 to requests whose bearer token fails `predicate` (None: accept anything, the default)."""
        self._bearer = predicate

    def clear(self) -> None:
        """Forget recorded requests and pending faults (members and the bearer rule stay)."""
        self.requests.clear()
        self.accepted.clear()
        self._faults.clear()

    # -- reading what happened ---------------------------------------------------------------------------------

    def activities(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Bodies of the activities posted or put (in order), optionally of one conversation."""
        return [r.json for r in self.requests
                if r.method in ("POST", "PUT") and len(r.segments) >= 4 and r.segments[3] == "activities"
                and (conversation_id is None or r.conversation_id == conversation_id)]

    def peers(self) -> set[tuple[str, int]]:
        """Distinct client (host, port) pairs: one per TCP connection the client opened."""
        return {r.peer for r in self.requests if r.peer is not None}

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least `count` requests have been recorded (no polling); returns them all."""
        assert self._changed is not None, "FakeConnector is not started"
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.requests) >= count), timeout)
        return list(self.requests)

    # -- serving -----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body_text = await request.text()
        try:
            payload = json.loads(body_text) if body_text else None
        except ValueError:
            payload = body_text
        path = request.path
        raw_path = request.raw_path.split("?", 1)[0]
        raw_route = raw_path[len(PREFIX):] if raw_path.startswith(PREFIX + "/") else raw_path
        segments = tuple(unquote(s) for s in raw_route.split("/") if s)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        record = Recorded(method=request.method, path=path, raw_path=raw_path, route="/" + "/".join(segments),
                          headers=dict(request.headers), json=payload, peer=tuple(peer[:2]) if peer else None,
                          segments=segments)
        self.requests.append(record)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

        fault = next((f for f in self._faults if f.matches(request.method, record.route)), None)
        if fault is not None:
            fault.remaining -= 1
        elif self._chaos is not None and (self._chaos.path_prefix is None
                                          or record.route.startswith(self._chaos.path_prefix)):
            if self._chaos.rng.random() < self._chaos.rate:
                kind, status, retry_after = self._chaos.rng.choice(CHAOS_FAULTS)
                self._chaos.injected += 1
                fault = _Fault(kind, 0, None, None, status=status, retry_after=retry_after,
                               seconds=self._chaos.stall_seconds, then_status=status if kind == "stall" else None)
        if fault is not None:
            if fault.kind == "fail":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                body = fault.body if fault.body is not None else {
                    "error": {"code": "ServiceError" if fault.status >= 500 else "Throttled",
                              "message": f"injected HTTP {fault.status}"}}
                return web.json_response(body, status=fault.status, headers=headers)
            if fault.kind == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError  # nothing more to say on this connection
            if fault.kind == "stall":
                assert self._release is not None
                try:
                    await asyncio.wait_for(self._release.wait(), fault.seconds)
                except asyncio.TimeoutError:
                    pass
                if fault.then_status is not None:
                    return web.json_response({"error": {"code": "GatewayTimeout", "message": "injected stall"}},
                                             status=fault.then_status)

        if self._bearer is not None:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme != "Bearer" or not token or not self._bearer(token):
                return web.json_response({"error": {"code": "Unauthorized", "message": "bad bearer token"}},
                                         status=401)
        return self._answer(request.method, record)

    def _answer(self, method: str, record: Recorded) -> web.Response:
        seg = list(record.segments)
        if len(seg) >= 4 and seg[:2] == ["v3", "conversations"]:
            if seg[3] == "activities":
                if method == "POST" and len(seg) in (4, 5):
                    self._sent += 1
                    self.accepted.append(record)
                    return web.json_response({"id": f"activity-{self._sent}"}, status=201)
                if method == "PUT" and len(seg) == 5:
                    return web.json_response({"id": seg[4]})
                if method == "DELETE" and len(seg) == 5:
                    return web.json_response({})
            if seg[3] == "members" and method == "GET":
                if len(seg) == 4:
                    return web.json_response(list(self.members.values()))
                if len(seg) == 5:
                    member = self.members.get(seg[4])
                    if member is None:
                        return web.json_response(
                            {"error": {"code": "MemberNotFoundInConversation",
                                       "message": "The member is not part of the conversation."}}, status=404)
                    return web.json_response(member)
        return web.json_response({"error": {"code": "NotFound", "message": f"no route {method} {record.route}"}},
                                 status=404)
