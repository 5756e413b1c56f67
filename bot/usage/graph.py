"""Microsoft Graph's PSTN call log (`getPstnCalls`) as `UsageRow`s, page by page (DESIGN.md section 4).

`GraphUsageClient.pstn_calls(tenant_id, start, end)` yields one `GraphPage` per Graph page:

* **Windows.** Graph refuses a range longer than 90 days (the docs say so; an answer of 400 or 406), so
  [start, end] is split into consecutive windows of at most `MAX_WINDOW`. Bounds go out as
  `YYYY-MM-DDTHH:MM:SSZ` (start rounded down, end rounded up to the second, so the range is covered), and Graph
  treats both as inclusive. Rows carry up to 7 fractional digits, so windows that stop one second short of each
  other would lose a call made in the last fraction of a second; instead window k+1 starts exactly where window
  k ends, and a row of window k+1 whose `startDateTime` is not after that shared instant (Graph already gave it
  to window k, its bound being inclusive) is dropped. No row is yielded twice, none is lost.
* **Paging.** `@odata.nextLink` is followed verbatim (handed to aiohttp as an already encoded URL: Graph's
  `$skiptoken` is opaque, and decoding `%2B` or re-encoding `=` would break it). A link to another origin than
  `graph_url` is refused: the bearer token goes nowhere else.
* **Amounts.** The body is parsed with `json.loads(text, parse_float=Decimal)`: no float ever exists, so
  `0.1 + 0.02` is `Decimal("0.12")`. `charge` of a row is Graph's `charge + connectionCharge`.
* **Bad rows.** A row that cannot be read (no id, no currency, a charge that is not a number, a start time that
  is not ISO 8601 with a zone) becomes a `BadRow("Graph page {n} row {i}", why)`; the rest of the page still
  comes through. `n` counts pages from 1 over the whole call (all windows), `i` counts rows from 1 in the page.
* **Tokens.** App-only: one `msal.ConfidentialClientApplication` per authority (`{login_url}/{tenant_id}`),
  built on first use in a worker thread and kept; `acquire_token_for_client` decides itself whether its cache
  serves (msal >= 1.23). Calls to msal run in `asyncio.to_thread`, one at a time per authority (an
  `asyncio.Lock`), so concurrent pages wait for one token request instead of each making one. A 401 from Graph
  removes exactly the rejected token from msal's cache (msal 1.39 refuses `force_refresh` for this flow, and a
  `claims_challenge` would send a `claims` parameter Entra has not asked for) and asks again, which goes to the
  token endpoint; the request is retried once with the new token. A second 401 is a `GraphError`.
* **Retries.** 429, 5xx, timeouts, connection errors and transient token-endpoint failures are retried, up to
  `max_attempts` attempts in all, with full-jitter exponential backoff
  (`uniform(0, min(max_delay, base_delay * 2**(n-1)))`), never shorter than `Retry-After` (seconds or an HTTP
  date). The delay is capped at `max_delay`, except that a longer `Retry-After` is honoured, up to
  `MAX_RETRY_AFTER` (300 s). Other 4xx are not retried.
* **Errors.** `GraphError` (`.status`, `.code`): the message holds no token, no secret and nothing of a
  response body beyond Graph's error code. `GraphPermissionError` (403 from Graph; or the token endpoint saying
  the app is not consented in, or not known to, the tenant; or that the tenant does not exist) has an
  `.admin_message` an administrator can act on.

Bearer tokens go only over https, or plain http to a loopback host (the tests' fake Graph).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import aiohttp
import msal
from yarl import URL

from ..connector import parse_retry_after
from ..settings import is_loopback
from .rows import BadRow, UsageRow

log = logging.getLogger(__name__)

#: App-only scope of Microsoft Graph (public cloud).
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
#: Longest range one `getPstnCalls` request may ask for (Graph: "cannot exceed a 90-day date range").
MAX_WINDOW = timedelta(days=90)
#: Longest `Retry-After` honoured (a longer one is waited for this long, then the request is tried again).
MAX_RETRY_AFTER = 300.0
#: Seconds msal's own `requests` session waits for the identity provider (msal's default is forever).
TOKEN_HTTP_TIMEOUT = 10.0
RETRYABLE_STATUSES = frozenset({429}) | frozenset(range(500, 600))
#: The application permissions that allow `getPstnCalls` (either one): the one its reference page lists first, then
#: the narrower one Graph's permissions reference also maps to it.
REQUIRED_PERMISSIONS = ("CallRecords.Read.All", "CallRecord-PstnCalls.Read.All")

#: AADSTS codes of the token endpoint that an administrator of the tenant fixes (consent, tenant, app state).
_CONSENT_CODES = frozenset({65001, 700016, 500011, 50194, 7000112, 53003})
_UNKNOWN_TENANT_CODES = frozenset({90002, 90072})
#: AADSTS codes that mean the configured client secret is wrong, expired or missing.
_SECRET_CODES = frozenset({7000215, 7000222, 7000218})
#: Token-endpoint `error` values worth another attempt later.
_TRANSIENT_TOKEN_ERRORS = frozenset({"temporarily_unavailable", "server_error"})

_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,253}", re.ASCII)
_NOT_A_TENANT = frozenset({"common", "organizations", "consumers"})
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:?\d{2})", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Za-z]{3}", re.ASCII)
_AADSTS_RE = re.compile(r"AADSTS(\d+)")

#: UsageRow.details key <- Graph field (strings; `duration_s` is handled apart).
_DETAIL_FIELDS = (
    ("user_id", "userId"), ("user_name", "userDisplayName"), ("upn", "userPrincipalName"),
    ("call_type", "callType"), ("destination", "destinationName"), ("call_id", "callId"),
    ("caller", "callerNumber"), ("callee", "calleeNumber"),
)


# -- errors ----------------------------------------------------------------------------------------------------


class GraphError(Exception):
    """Reading the call log failed for good (retries included). `status` is the HTTP status of Graph's last
    answer (None: no answer from Graph, e.g. a timeout, a connection error, or a token-endpoint failure);
    `code` is Graph's (or the token endpoint's) error code when it gave one. The message holds no token, no
    secret, and no response body beyond that code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class GraphPermissionError(GraphError):
    """The app may not read the tenant's PSTN call log: Graph answered 403, or the token endpoint said the app
    is not consented in (not known to) the tenant, or that the tenant does not exist. `admin_message` tells an
    administrator what to do, in words they can act on."""

    def __init__(self, message: str, *, admin_message: str, tenant_id: str, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.admin_message = admin_message
        self.tenant_id = tenant_id


class _Retryable(Exception):
    """Internal: one attempt failed in a way another attempt may fix; `error` is what to raise when none is
    left, `retry_after` the answer's Retry-After header."""

    def __init__(self, error: GraphError, retry_after: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def consent_instructions(tenant_id: str, client_id: str) -> str:
    """What an administrator does so the app may read the PSTN call log of `tenant_id`."""
    return (f"The bot cannot read the PSTN call log of tenant {tenant_id}. In the Microsoft Entra admin center, "
            f"open App registrations > the app with Application (client) ID {client_id} > API permissions, add the "
            f"Microsoft Graph APPLICATION permission {REQUIRED_PERMISSIONS[0]} (or {REQUIRED_PERMISSIONS[1]}), "
            f"then have a Global Administrator of the tenant click 'Grant admin consent' on that page. "
            f"Then run `sync` again.")


# -- pages -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphPage:
    """One page of Graph's answer. `rows` in Graph's order (minus rows the previous window already gave);
    `window_start` / `window_end` are the (inclusive) bounds of the request the page belongs to, in UTC;
    `page_number` counts pages from 1 over the whole `pstn_calls` call."""

    rows: list[UsageRow | BadRow]
    window_start: datetime
    window_end: datetime
    page_number: int


def split_windows(start: datetime, end: datetime, max_window: timedelta = MAX_WINDOW
                  ) -> list[tuple[datetime, datetime]]:
    """The request windows for [start, end] (aware datetimes): UTC, whole seconds (start rounded down, end
    up), each at most `max_window` long; window k+1 starts at the instant window k ends (see the module
    docstring for why the shared instant is safe). One window when `start == end`."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    if max_window < timedelta(seconds=1):
        raise ValueError("max_window must be at least one second")
    lo = start.astimezone(timezone.utc).replace(microsecond=0)
    hi = end.astimezone(timezone.utc)
    if hi.microsecond:
        hi = hi.replace(microsecond=0) + timedelta(seconds=1)
    if hi < lo:
        raise ValueError("end is before start")
    windows: list[tuple[datetime, datetime]] = []
    cursor = lo
    while True:
        stop = min(cursor + max_window, hi)
        windows.append((cursor, stop))
        if stop >= hi:
            return windows
        cursor = stop


def format_bound(moment: datetime) -> str:
    """A window bound as Graph's function parameter wants it: `YYYY-MM-DDTHH:MM:SSZ` (UTC)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rows ------------------------------------------------------------------------------------------------------


def parse_graph_time(value: Any) -> tuple[datetime, bool]:
    """An ISO 8601 time with `Z` or an offset (up to 9 fractional digits) as aware UTC, truncated to the
    microsecond; the flag is True when digits below the microsecond were dropped (not zero). ValueError if
    `value` is not such a time."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError("not an ISO 8601 time with a time zone")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    fraction = fraction or ""
    micro = int((fraction + "000000")[:6])
    truncated = any(c != "0" for c in fraction[6:])
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    return moment.astimezone(timezone.utc), truncated


def _amount(value: Any, name: str) -> Decimal:
    """A JSON number (already a Decimal, or an int) or a numeric string as a finite Decimal."""
    if isinstance(value, bool):
        raise ValueError(f"{name} is not a number: {json.dumps(value)}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name} is not a number: {value[:40]!r}") from None
    else:
        raise ValueError(f"{name} is not a number: {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError(f"{name} is not a finite number: {value!s:.40}")
    return amount


def _duration(value: Any) -> int | None:
    """`duration` in whole seconds, or None if it is missing or not a whole number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else value
        if isinstance(number, Decimal) and number.is_finite() and number == number.to_integral_value():
            return int(number)
    except (InvalidOperation, AttributeError):
        pass
    return None


def map_row(raw: Any, where: str) -> UsageRow | BadRow:
    """One Graph `pstnCallLogRow` (parsed with Decimal floats) as a `UsageRow`, or a `BadRow` at `where`
    saying why not. Never raises for a malformed row.

    `usage_id` <- `id` (unique; `callId` is not), `charge` <- `charge + connectionCharge` (a missing or null
    connection charge is 0), `currency` <- `currency` upper-cased (3 letters), `occurred_at` <-
    `startDateTime` (aware UTC, truncated to microseconds), `capability` <- `licenseCapability` ("" when
    absent: such a row is never billed). `details` as `UsageRow` documents; missing or null fields are left out.
    """
    if not isinstance(raw, Mapping):
        return BadRow(where, "Row is not a JSON object")
    usage_id = raw.get("id")
    if not isinstance(usage_id, str) or not usage_id.strip():
        return BadRow(where, "Row has no id")
    label = f"Row {usage_id[:80]!r}"
    charge_value = raw.get("charge")
    if charge_value is None:
        return BadRow(where, f"{label} has no charge")
    try:
        charge = _amount(charge_value, "Charge")
        connection_value = raw.get("connectionCharge")
        connection = Decimal(0) if connection_value is None else _amount(connection_value, "Connection charge")
    except ValueError as exc:
        return BadRow(where, f"{label}: {exc}")
    currency = raw.get("currency")
    if currency is None or (isinstance(currency, str) and not currency.strip()):
        return BadRow(where, f"{label} has no currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency.strip()):
        return BadRow(where, f"{label}: currency is not a 3-letter ISO 4217 code: {str(currency)[:20]!r}")
    start_value = raw.get("startDateTime")
    try:
        occurred_at, _ = parse_graph_time(start_value)
    except (ValueError, OverflowError) as exc:
        shown = start_value[:40] if isinstance(start_value, str) else start_value
        return BadRow(where, f"{label}: start time {shown!r} is not a time ({exc})")
    capability = raw.get("licenseCapability")
    details: dict[str, Any] = {}
    for key, field_name in _DETAIL_FIELDS:
        value = raw.get(field_name)
        if value is not None and value != "":
            details[key] = value if isinstance(value, str) else str(value)
    duration = _duration(raw.get("duration"))
    if duration is not None:
        details["duration_s"] = duration
    return UsageRow(
        usage_id=usage_id,
        charge=charge + connection,
        currency=currency.strip().upper(),
        occurred_at=occurred_at,
        capability=capability.strip() if isinstance(capability, str) else "",
        details=details,
    )


def _already_given(raw: Any, boundary: datetime | None) -> bool:
    """True when `raw` started at or before `boundary` (the previous window's inclusive end), so Graph gave it
    to the previous window too. A row without a readable start time is never dropped (it becomes a BadRow)."""
    if boundary is None or not isinstance(raw, Mapping):
        return False
    try:
        moment, finer = parse_graph_time(raw.get("startDateTime"))
    except (ValueError, OverflowError):
        return False
    return moment < boundary or (moment == boundary and not finer)


def _loads(text: str) -> Any:
    """JSON with every non-integer number as a Decimal (NaN and Infinity too: rejected later as not finite)."""
    return json.loads(text, parse_float=Decimal, parse_constant=Decimal)


# -- the client ------------------------------------------------------------------------------------------------


class GraphUsageClient:
    """Reads `getPstnCalls` for any tenant that granted the app consent. One per process; share it.

    `session` is the caller's (not closed here). `msal_http_client` (a `requests.Session`-like object) is handed
    to every msal application; None lets msal make its own (with a 10 s timeout). `sleep` and `rng` are for
    tests. `scope` and `timeout` (seconds per Graph request) are extensions with defaults.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        client_id: str,
        client_secret: str,
        login_url: str = "https://login.microsoftonline.com",
        graph_url: str = "https://graph.microsoft.com",
        msal_http_client: Any = None,
        max_attempts: int = 6,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        scope: str = GRAPH_SCOPE,
        timeout: float = 60.0,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("GraphUsageClient needs a client id and a client secret")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        graph = urlsplit(graph_url.strip())
        if graph.scheme not in ("http", "https") or not graph.hostname:
            raise ValueError("graph_url is not an http(s) URL")
        if graph.scheme != "https" and not is_loopback(graph.hostname):
            raise ValueError("graph_url must be https (plain http only to a loopback host): a bearer token goes there")
        if urlsplit(login_url.strip()).scheme != "https":
            raise ValueError("login_url must be https")
        self.client_id = client_id
        self._secret = client_secret
        self.login_url = login_url.strip().rstrip("/")
        self.graph_url = graph_url.strip().rstrip("/")
        self._origin = _origin(self.graph_url)
        self.scope = scope
        self._session = session
        self._msal_http_client = msal_http_client
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._build_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GraphUsageClient(client_id={self.client_id!r}, graph_url={self.graph_url!r})"

    def authority(self, tenant_id: str) -> str:
        """The msal authority of `tenant_id` (ValueError for something that is not a tenant id or domain)."""
        tenant = (tenant_id or "").strip()
        if not _TENANT_RE.fullmatch(tenant) or tenant.lower() in _NOT_A_TENANT:
            raise ValueError(f"not a tenant id: {tenant_id!r} (app-only access needs the tenant's id or domain)")
        return f"{self.login_url}/{tenant}"

    def msal_app(self, tenant_id: str) -> msal.ConfidentialClientApplication | None:
        """The msal application kept for `tenant_id`'s authority, if one was built (for diagnostics and tests)."""
        return self._apps.get(self.authority(tenant_id))

    async def close(self) -> None:
        """Drop the msal applications (closing msal's own HTTP sessions; a caller's `msal_http_client` and the
        aiohttp session are the caller's to close)."""
        apps, self._apps = list(self._apps.values()), {}
        self._locks.clear()
        if self._msal_http_client is None:
            for app in apps:
                await asyncio.to_thread(app.http_client.close)

    # -- the call log ------------------------------------------------------------------------------------------

    async def pstn_calls(self, tenant_id: str, start: datetime, end: datetime) -> AsyncIterator[GraphPage]:
        """Every PSTN call of `tenant_id` that started in [start, end] (aware datetimes), one `GraphPage` per
        Graph page, windows of at most 90 days in order. Raises `GraphError` / `GraphPermissionError`;
        ValueError for a bad tenant id or range."""
        self.authority(tenant_id)  # validate before any request
        windows = split_windows(start, end)
        page_number = 0
        previous_end: datetime | None = None
        for window_start, window_end in windows:
            url: str | None = (f"{self.graph_url}/v1.0/communications/callRecords/getPstnCalls("
                               f"fromDateTime={format_bound(window_start)},toDateTime={format_bound(window_end)})")
            seen_links: set[str] = set()
            while url is not None:
                page_number += 1
                body = await self._get_json(tenant_id, url, page_number)
                values = body.get("value")
                if not isinstance(values, list):
                    raise GraphError(f"Graph page {page_number} for tenant {tenant_id} has no 'value' list")
                rows: list[UsageRow | BadRow] = []
                dropped = 0
                for index, raw in enumerate(values, start=1):
                    if _already_given(raw, previous_end):
                        dropped += 1
                        continue
                    rows.append(map_row(raw, f"Graph page {page_number} row {index}"))
                if dropped:
                    log.debug("rows of the previous window dropped", extra={"page": page_number, "rows": dropped})
                yield GraphPage(rows=rows, window_start=window_start, window_end=window_end,
                                page_number=page_number)
                url = self._next_link(body, tenant_id, seen_links)
            previous_end = window_end

    def _next_link(self, body: Mapping[str, Any], tenant_id: str, seen: set[str]) -> str | None:
        link = body.get("@odata.nextLink")
        if link is None or link == "":
            return None
        if not isinstance(link, str):
            raise GraphError(f"Graph gave tenant {tenant_id} an @odata.nextLink that is not a string")
        if _origin(link) != self._origin:
            raise GraphError(f"Graph gave tenant {tenant_id} an @odata.nextLink to another host "
                             f"({urlsplit(link).netloc or 'none'}); not following it with the token")
        if link in seen:
            raise GraphError(f"Graph gave tenant {tenant_id} the same @odata.nextLink twice; stopping")
        seen.add(link)
        return link

    # -- one GET, with retries ---------------------------------------------------------------------------------

    async def _get_json(self, tenant_id: str, url: str, page_number: int) -> dict[str, Any]:
        """GET `url` (already encoded: sent as is) with a bearer token; the JSON object of a 2xx answer."""
        target = URL(url, encoded=True)
        what = f"Graph getPstnCalls page {page_number} for tenant {tenant_id}"
        failures = 0
        rejected: str | None = None  # the token Graph answered 401 to (removed from msal's cache once)
        reauthenticated = False
        while True:
            try:
                token = await self._token(tenant_id, rejected=rejected)
                rejected = None
                status, data, retry_after = await self._send(target, token, what)
                if status == 401:
                    if reauthenticated:
                        raise GraphError(f"{what}: HTTP 401{_code_suffix(data)} again with a new token",
                                         status=401, code=_graph_code(data))
                    reauthenticated, rejected = True, token
                    log.info("Graph rejected the token; asking for a new one",
                             extra={"tenant": tenant_id, "page": page_number})
                    continue
                return self._parse_answer(status, data, retry_after, what, tenant_id)
            except _Retryable as retry:
                failures += 1
                if failures >= self.max_attempts:
                    raise retry.error from None
                delay = self._delay(failures, retry.retry_after)
                log.warning("Graph request failed; retrying",
                            extra={"tenant": tenant_id, "page": page_number, "problem": str(retry.error),
                                   "attempt": failures, "delay": round(delay, 3)})
                await self._sleep(delay)

    async def _send(self, target: URL, token: str, what: str) -> tuple[int, bytes, str | None]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with self._session.get(target, headers=headers, timeout=self._timeout,
                                         allow_redirects=False) as response:
                return response.status, await response.read(), response.headers.get("Retry-After")
        except asyncio.TimeoutError:
            raise _Retryable(GraphError(f"{what}: timed out after {self._timeout.total} s")) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(GraphError(f"{what}: {type(exc).__name__}")) from None

    def _parse_answer(self, status: int, data: bytes, retry_after: str | None, what: str,
                      tenant_id: str) -> dict[str, Any]:
        code = _graph_code(data)
        if 200 <= status < 300:
            try:
                body = _loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise _Retryable(GraphError(f"{what}: HTTP {status} with a body that is not JSON",
                                            status=status)) from None
            if not isinstance(body, dict):
                raise GraphError(f"{what}: HTTP {status} with a body that is not a JSON object", status=status)
            return body
        if status == 403:
            raise GraphPermissionError(f"{what}: HTTP 403{_code_suffix(data)}: the app lacks permission",
                                       status=403, code=code, tenant_id=tenant_id,
                                       admin_message=consent_instructions(tenant_id, self.client_id))
        error = GraphError(f"{what}: HTTP {status}{_code_suffix(data)}", status=status, code=code)
        if status in RETRYABLE_STATUSES:
            raise _Retryable(error, retry_after)
        raise error

    def _delay(self, failures: int, retry_after: str | None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        delay = min(self._rng.uniform(0, ceiling), self.max_delay)
        asked = parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, min(asked, MAX_RETRY_AFTER))
        return delay

    # -- tokens ------------------------------------------------------------------------------------------------

    async def _token(self, tenant_id: str, *, rejected: str | None = None) -> str:
        """An app-only Graph token for `tenant_id` (msal's cache first). `rejected`: a token Graph refused,
        removed from msal's cache first so that the identity provider is asked."""
        authority = self.authority(tenant_id)
        lock = self._locks.setdefault(authority, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._acquire, authority, tenant_id, rejected)

    def _acquire(self, authority: str, tenant_id: str, rejected: str | None) -> str:
        """Worker thread: build (once) the authority's msal application, forget `rejected`, acquire."""
        try:
            app = self._app(authority)
            if rejected is not None:
                cache = app.token_cache
                stale = list(cache.search(cache.CredentialType.ACCESS_TOKEN, target=[self.scope],
                                          query={"client_id": self.client_id, "secret": rejected}))
                for entry in stale:
                    cache.remove_at(entry)
            result = app.acquire_token_for_client([self.scope])
        except ValueError as exc:
            if "Unable to get authority configuration" in str(exc):  # msal: tenant discovery answered 4xx
                raise self._unknown_tenant(tenant_id, "tenant discovery failed") from None
            raise _Retryable(GraphError(f"token request for tenant {tenant_id} failed: "
                                        f"{type(exc).__name__}")) from None
        except Exception as exc:  # requests' network errors, a 5xx during discovery, ...
            raise _Retryable(GraphError(f"token request for tenant {tenant_id} failed: "
                                        f"{type(exc).__name__}")) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            return token
        raise self._token_failure(result, tenant_id)

    def _app(self, authority: str) -> msal.ConfidentialClientApplication:
        with self._build_lock:  # two tenants may build at once; one authority builds once
            app = self._apps.get(authority)
            if app is None:
                extra: dict[str, Any] = ({"http_client": self._msal_http_client}
                                         if self._msal_http_client is not None else {"timeout": TOKEN_HTTP_TIMEOUT})
                app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._secret, authority=authority,
                    instance_discovery=False, **extra)
                self._apps[authority] = app
            return app

    def _token_failure(self, result: Any, tenant_id: str) -> Exception:
        """The exception for an msal error answer (`{"error", "error_description", "error_codes"}`)."""
        if not isinstance(result, dict):
            return _Retryable(GraphError(f"token request for tenant {tenant_id} failed: no answer"))
        error = str(result.get("error") or "unknown_error")[:80]
        codes = _aadsts_codes(result)
        shown = f"{error}" + (f" (AADSTS{codes[0]})" if codes else "")
        code = f"AADSTS{codes[0]}" if codes else error
        if any(c in _UNKNOWN_TENANT_CODES for c in codes) or error == "invalid_tenant":
            return self._unknown_tenant(tenant_id, shown)
        if any(c in _SECRET_CODES for c in codes) or (error == "invalid_client" and not codes):
            return GraphError(f"token request for tenant {tenant_id} failed: {shown}: the client secret of app "
                              f"{self.client_id} is wrong, expired or missing; create a new client secret "
                              f"(Entra admin center > App registrations > the app > Certificates & secrets) "
                              f"and configure its value", code=code)
        if any(c in _CONSENT_CODES for c in codes):
            return GraphPermissionError(
                f"token request for tenant {tenant_id} failed: {shown}: the app is not consented in the tenant",
                code=code, tenant_id=tenant_id,
                admin_message=(f"App {self.client_id} is not set up in tenant {tenant_id} ({code}): check the "
                               f"tenant ID, and that the app registration is multi-tenant if it lives in another "
                               f"tenant. " + consent_instructions(tenant_id, self.client_id)))
        failure = GraphError(f"token request for tenant {tenant_id} failed: {shown}", code=code)
        if error in _TRANSIENT_TOKEN_ERRORS:
            return _Retryable(failure)
        return failure

    def _unknown_tenant(self, tenant_id: str, shown: str) -> GraphPermissionError:
        return GraphPermissionError(
            f"token request for tenant {tenant_id} failed: {shown}: no such tenant", code="AADSTS90002",
            tenant_id=tenant_id,
            admin_message=(f"Microsoft Entra ID does not know the tenant {tenant_id}. Check the tenant ID (Entra "
                           f"admin center > Overview > Tenant ID, or the tenant's primary domain) and configure it "
                           f"again, then run `sync` again."))


# -- helpers ---------------------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _aadsts_codes(result: Mapping[str, Any]) -> list[int]:
    codes = [c for c in result.get("error_codes") or () if isinstance(c, int) and not isinstance(c, bool)]
    if not codes:
        codes = [int(m) for m in _AADSTS_RE.findall(str(result.get("error_description") or ""))[:1]]
    return codes


def _graph_code(data: bytes) -> str | None:
    """Graph's error code from `{"error": {"code": ...}}` (nothing else of the body is ever shown)."""
    try:
        parsed = json.loads(data[:8192].decode("utf-8", "replace")) if data else None
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code)[:80] if isinstance(code, str) and code else None


def _code_suffix(data: bytes) -> str:
    code = _graph_code(data)
    return f" ({code})" if code else ""
