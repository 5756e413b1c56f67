"""`FakeGraph`: Microsoft Graph's `getPstnCalls` on loopback (plain http, random port), recording every request.

An aiohttp server on 127.0.0.1 running on the test's event loop. Point `GraphUsageClient(graph_url=...)` at `url`.

| Request | Answer |
|---|---|
| `GET /v1.0/communications/callRecords/getPstnCalls(fromDateTime=F,toDateTime=T)` | 200, the first page |
| the same path `?$skiptoken=...`, exactly as an earlier `@odata.nextLink` had it | 200, the next page |
| anything else | 404 `{"error": {"code": "BadRequest"}}` (Graph's shape) |

* **Rows** are Graph JSON dicts (`pstnCallLogRow`, see `graph_row()`); `rows` belong to `tenant`, other tenants'
  rows to `add_tenant(name, rows)`. A request gets the rows of its token's tenant whose `startDateTime` lies in
  the inclusive [F, T] (compared to the microsecond: a row at T + 100 ns is out, as at Graph), in list order. A
  row whose `startDateTime` cannot be read is served in every window (so tests can send malformed rows).
* **Windows** longer than 90 days (T - F > 90 days), T before F, or unreadable bounds: 400 `BadRequest`, like
  Graph (which, per its docs' history, may also say 406 for the range).
* **Pages** of `page_size` rows; a page that is not the last has an absolute `@odata.nextLink` whose opaque
  `$skiptoken` holds `%2B` and `==`: only the raw query string exactly as given is accepted (a client that
  decodes `%2B` to `+` or re-encodes `=` gets 400 `InvalidSkipToken`). A page is a snapshot taken at the first
  request of the window. `next_link_base` (default `url`) lets a test point the link elsewhere.
* **Auth** (`identity` given): only `Authorization: Bearer <t>` where `t` was issued by that `FakeIdentity` for a
  tenant this fake serves, and not expired by `expire_tokens()`; otherwise 401 `InvalidAuthenticationToken`.
  Without `identity`, any bearer token is accepted (as `tenant`'s).
* **Faults**, consumed in order before auth: `fail_next(n, status, retry_after=None, body=None)`;
  `drop_next(n)` closes the connection without answering (a connection error). `forbid(True)`: every request
  (after auth) is answered 403 `Authorization_RequestDenied` until `forbid(False)`.

`requests` lists every request as a `GraphRequest` (path decoded, raw path and raw query as sent, the
Authorization header, the tenant of its token, the status answered, the ids of the rows served); `next_links`
every `@odata.nextLink` handed out. `windows()` gives the (F, T) of the first request of each window.
`token_requests(tenant=None)` is `FakeIdentity.token_requests`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable, Mapping
from urllib.parse import quote, unquote

from aiohttp import web

from tests.fakes.identity import FakeIdentity

DEFAULT_TENANT = "contoso.onmicrosoft.com"
PATH_PREFIX = "/v1.0/communications/callRecords/"
MAX_RANGE = timedelta(days=90)
_FUNCTION_RE = re.compile(r"getPstnCalls\(fromDateTime=([^,()]+),toDateTime=([^,()]+)\)", re.IGNORECASE)
_FRACTION_RE = re.compile(r"(\.\d{6})\d+")


def graph_row(n: int, start: datetime | str, *, charge: Any = Decimal("0.1"),
              connection_charge: Any = Decimal("0.02"), currency: str = "USD", capability: str = "MCOPSTNPP",
              **fields: Any) -> dict[str, Any]:
    """A full `pstnCallLogRow` (every field DESIGN.md section 4 lists), id `row-{n}`; `fields` override
    (a value of None removes the field). `start` as a datetime is written with 7 fractional digits, as Graph.
    Amounts are `Decimal` (written as JSON numbers, digit for digit) or `RawJson`."""
    begin = start if isinstance(start, str) else (
        start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z")
    row: dict[str, Any] = {
        "id": f"row-{n}",
        "callId": f"call-{n // 2}",  # NOT unique, like Graph's
        "userId": f"user-{n % 3}",
        "userPrincipalName": f"user{n % 3}@contoso.com",
        "userDisplayName": f"User {n % 3}",
        "startDateTime": begin,
        "endDateTime": begin,
        "duration": 60 + n,
        "charge": charge,
        "connectionCharge": connection_charge,
        "currency": currency,
        "callType": "user_out_domestic",
        "licenseCapability": capability,
        "destinationContext": "Domestic",
        "destinationName": "United States",
        "calleeNumber": f"+1425555{n:04d}",
        "callerNumber": "+14255550000",
        "conferenceId": None,
        "inventoryType": "Subscriber",
        "operator": "Microsoft",
        "tenantCountryCode": "US",
        "usageCountryCode": "US",
    }
    for name, value in fields.items():
        if value is None:
            row.pop(name, None)
        else:
            row[name] = value
    return row


@dataclass(frozen=True)
class RawJson:
    """A value the fake writes into the page verbatim (e.g. `RawJson("NaN")`, `RawJson("1e-2")`)."""

    text: str


@dataclass
class GraphRequest:
    """One request as the fake received it."""

    method: str
    path: str  # decoded
    raw_path: str  # as sent, without the query
    raw_query: str  # as sent, without the "?" ("" when none)
    authorization: str | None = field(repr=False)
    tenant: str | None = None  # of the token, when the fake accepted it
    status: int = 0  # answered
    row_ids: tuple[Any, ...] = ()  # the `id` of every row served in the answer, in order

    @property
    def token(self) -> str | None:
        scheme, _, token = (self.authorization or "").partition(" ")
        return token if scheme == "Bearer" and token else None


@dataclass
class _Fault:
    kind: str  # "fail" | "drop"
    remaining: int
    status: int = 500
    retry_after: str | None = None
    body: Any = None


@dataclass
class _Cursor:
    tenant: str
    path: str  # raw path of the window's first request
    rows: list[dict[str, Any]]
    offset: int


class FakeGraph:
    """See the module docstring. `async with FakeGraph(identity) as graph:`, or `await start()` / `stop()`."""

    def __init__(self, identity: FakeIdentity | None = None, *, tenant: str = DEFAULT_TENANT,
                 rows: Iterable[Mapping[str, Any]] = (), page_size: int = 1000) -> None:
        self.identity = identity
        self.tenant = tenant
        self.page_size = page_size
        self._rows: dict[str, list[dict[str, Any]]] = {tenant: [dict(r) for r in rows]}
        self.requests: list[GraphRequest] = []
        self.next_link_base: str | None = None
        #: Every `@odata.nextLink` handed out, in order.
        self.next_links: list[str] = []
        self._faults: list[_Fault] = []
        self._forbidden = False
        self._expired: set[str] = set()
        self._cursors: dict[str, _Cursor] = {}  # raw query -> where the next page starts
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifetime ----------------------------------------------------------------------------------------------

    async def start(self) -> "FakeGraph":
        if self._runner is not None:
            return self
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeGraph":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The `graph_url` (no trailing slash)."""
        if not self._port:
            raise RuntimeError("FakeGraph is not started")
        return f"http://127.0.0.1:{self._port}"

    # -- programming it ----------------------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows of `tenant` (a live list: append to it)."""
        return self._rows[self.tenant]

    def add_tenant(self, tenant: str, rows: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """Serve `tenant` too (its tokens are accepted), with `rows`; returns its live row list."""
        self._rows[tenant] = [dict(r) for r in rows]
        return self._rows[tenant]

    def fail_next(self, n: int = 1, status: int = 503, retry_after: str | float | None = None, *,
                  body: Any = None) -> None:
        """Answer the next `n` requests with `status` (and `Retry-After`, if given) before looking at auth."""
        self._faults.append(_Fault("fail", n, status=status,
                                   retry_after=None if retry_after is None else str(retry_after), body=body))

    def drop_next(self, n: int = 1) -> None:
        """Close the connection of the next `n` requests without an answer."""
        self._faults.append(_Fault("drop", n))

    def forbid(self, on: bool = True) -> None:
        """While on, answer every authenticated request 403 `Authorization_RequestDenied` (no consent)."""
        self._forbidden = on

    def expire_tokens(self) -> None:
        """Every token issued so far (and every token seen so far) answers 401 from now on."""
        issued = self.identity.issued_access_tokens if self.identity is not None else []
        self._expired.update(issued)
        self._expired.update(t for t in (r.token for r in self.requests) if t)

    # -- reading what happened ---------------------------------------------------------------------------------

    def token_requests(self, tenant: str | None = None) -> int:
        """Token endpoint requests `identity` answered (all tenants, or one)."""
        return self.identity.token_requests(tenant) if self.identity is not None else 0

    def windows(self) -> list[tuple[datetime, datetime]]:
        """(fromDateTime, toDateTime) of each window's first request that got a 200, in order."""
        out: list[tuple[datetime, datetime]] = []
        for request in self.requests:
            if request.status == 200 and not request.raw_query:
                bounds = _bounds(request.path)
                if bounds is not None:
                    out.append(bounds)
        return out

    def served(self) -> list[GraphRequest]:
        """The requests answered 200."""
        return [r for r in self.requests if r.status == 200]

    # -- serving -----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        record = GraphRequest(method=request.method, path=unquote(raw_path), raw_path=raw_path,
                              raw_query=raw_query, authorization=request.headers.get("Authorization"))
        self.requests.append(record)
        response = self._answer(request, record)
        if response is None:  # drop
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        record.status = response.status
        return response

    def _answer(self, request: web.Request, record: GraphRequest) -> web.Response | None:
        fault = next((f for f in self._faults if f.remaining > 0), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.kind == "drop":
                return None
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            body = fault.body if fault.body is not None else _error(
                "TooManyRequests" if fault.status == 429 else
                "InvalidAuthenticationToken" if fault.status == 401 else
                "ServiceUnavailable" if fault.status >= 500 else "BadRequest", f"injected HTTP {fault.status}")
            return web.json_response(body, status=fault.status, headers=headers)

        tenant = self._authenticate(record.token)
        if tenant is None:
            return web.json_response(_error("InvalidAuthenticationToken", "Access token is empty, invalid or "
                                            "expired."), status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'})
        record.tenant = tenant
        if self._forbidden:
            return web.json_response(_error("Authorization_RequestDenied",
                                            "Insufficient privileges to complete the operation."), status=403)
        if request.method != "GET" or not record.path.startswith(PATH_PREFIX):
            return web.json_response(_error("BadRequest", f"no route {request.method} {record.path}"), status=404)

        if record.raw_query:
            cursor = self._cursors.get(record.raw_query)
            if cursor is None or cursor.path != record.raw_path or cursor.tenant != tenant:
                return web.json_response(_error("InvalidSkipToken", "The skip token is not valid."), status=400)
            return self._page(cursor, record)

        bounds = _bounds(record.path)
        if bounds is None:
            return web.json_response(_error("BadRequest", "Invalid getPstnCalls parameters."), status=400)
        since, until = bounds
        if until < since:
            return web.json_response(_error("BadRequest", "toDateTime is before fromDateTime."), status=400)
        if until - since > MAX_RANGE:
            return web.json_response(_error("BadRequest", "The date range cannot exceed 90 days."), status=400)
        matched = [row for row in self._rows[tenant] if _within(row.get("startDateTime"), since, until)]
        return self._page(_Cursor(tenant=tenant, path=record.raw_path, rows=matched, offset=0), record)

    def _page(self, cursor: _Cursor, record: GraphRequest) -> web.Response:
        chunk = cursor.rows[cursor.offset:cursor.offset + self.page_size]
        record.row_ids = tuple(row.get("id") for row in chunk)
        body: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.callRecords."
                              "pstnCallLogRow)",
            "@odata.count": len(chunk),
            "value": chunk,
        }
        following = cursor.offset + self.page_size
        if following < len(cursor.rows):
            raw = f"{following}+{secrets.token_urlsafe(9)}/=="
            query = "$skiptoken=" + quote(raw, safe="=")  # "+" -> %2B, "/" -> %2F, "==" kept
            self._cursors[query] = _Cursor(cursor.tenant, cursor.path, cursor.rows, following)
            body["@odata.nextLink"] = f"{self.next_link_base or self.url}{cursor.path}?{query}"
            self.next_links.append(body["@odata.nextLink"])
        return web.Response(text=_dump(body), status=200, content_type="application/json")

    def _authenticate(self, token: str | None) -> str | None:
        """The tenant whose data `token` may read, or None (401)."""
        if not token or token in self._expired:
            return None
        if self.identity is None:
            return self.tenant
        tenant = self.identity.token_tenant(token)
        return tenant if tenant in self._rows else None


def _dump(value: Any) -> str:
    """JSON text; a `Decimal` is written as the JSON number it spells (`Decimal("0.10")` -> `0.10`), never
    through a float, and `RawJson` as its text verbatim."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "innerError": {"request-id": secrets.token_hex(8), "date": "2026-01-15T09:00:00"}}}


def _parse_time(text: str) -> datetime | None:
    """Graph's DateTimeOffset (or a date alone, as midnight UTC), truncated to microseconds; None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION_RE.sub(r"\1", text.strip()))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _bounds(path: str) -> tuple[datetime, datetime] | None:
    tail = path[len(PATH_PREFIX):] if path.startswith(PATH_PREFIX) else ""
    match = _FUNCTION_RE.fullmatch(tail)
    if match is None:
        return None
    since, until = _parse_time(match.group(1)), _parse_time(match.group(2))
    return (since, until) if since is not None and until is not None else None


def _within(start: Any, since: datetime, until: datetime) -> bool:
    moment = _parse_time(start) if isinstance(start, str) else None
    if moment is None:
        return True  # unreadable: served everywhere, so the client's BadRow path can be tested
    if moment == until and isinstance(start, str):
        fraction = re.search(r"\.(\d+)", start)
        if fraction is not None and any(c != "0" for c in fraction.group(1)[6:]):
            return False  # after `until` by less than a microsecond
    return since <= moment <= until
