"""`GraphUsageClient` against `FakeGraph` (getPstnCalls on loopback) with the real msal flow against
`FakeIdentity`'s token endpoint (https on loopback). No real network and no real sleeps: the client's `sleep`
only records the delays it was asked for."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import AsyncIterator
from urllib.parse import unquote, urlsplit

import aiohttp
import aiohttp.test_utils
import pytest
from yarl import URL

from bot.usage.graph import (
    MAX_RETRY_AFTER, MAX_WINDOW, GraphError, GraphPage, GraphPermissionError, GraphUsageClient, map_row,
    parse_graph_time, split_windows,
)
from bot.usage.rows import BadRow, UsageRow
from tests.fakes.graph import DEFAULT_TENANT, FakeGraph, RawJson, graph_row
from tests.fakes.identity import FakeIdentity

GRAPH_APP_ID = "6f1c2b3a-0000-4000-8000-00000000c0de"
GRAPH_SECRET = "graph-client-secret-never-shown"
OTHER_TENANT = "fabrikam.onmicrosoft.com"
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def discovery_path(tenant: str) -> str:
    return f"/{tenant}/v2.0/.well-known/openid-configuration"


class Sleeps(list):
    """A `sleep` that records the delay and returns at once."""

    async def __call__(self, delay: float) -> None:
        self.append(delay)


@pytest.fixture
async def graph(identity: FakeIdentity) -> AsyncIterator[FakeGraph]:
    identity.add_client(GRAPH_APP_ID, GRAPH_SECRET)
    async with FakeGraph(identity, page_size=3) as fake:
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(identity, graph, http_session, sleeps) -> AsyncIterator[GraphUsageClient]:
    graph_client = make_client(identity, graph, http_session, sleeps)
    yield graph_client
    await graph_client.close()


def make_client(identity: FakeIdentity, graph: FakeGraph, session: aiohttp.ClientSession, sleeps: Sleeps, *,
                secret: str = GRAPH_SECRET, **kwargs) -> GraphUsageClient:
    return GraphUsageClient(session=session, client_id=GRAPH_APP_ID, client_secret=secret,
                            login_url=identity.https_url, graph_url=graph.url,
                            msal_http_client=identity.requests_session(), sleep=sleeps, rng=random.Random(7),
                            **kwargs)


def rows_at(n: int, first: datetime = T0 + timedelta(hours=1), step: timedelta = timedelta(minutes=7)) -> list[dict]:
    return [graph_row(i, first + i * step) for i in range(1, n + 1)]


async def read_all(client: GraphUsageClient, tenant: str = DEFAULT_TENANT, start: datetime = T0,
                   end: datetime = T0 + timedelta(days=10)) -> list[GraphPage]:
    return [page async for page in client.pstn_calls(tenant, start, end)]


def ids(pages: list[GraphPage]) -> list[str]:
    return [row.usage_id for page in pages for row in page.rows if isinstance(row, UsageRow)]


# -- paging ----------------------------------------------------------------------------------------------------


async def test_three_pages_are_read_in_order_following_the_next_link_verbatim(client, graph) -> None:
    graph.rows.extend(rows_at(8))
    pages = await read_all(client)
    assert [p.page_number for p in pages] == [1, 2, 3]
    assert [len(p.rows) for p in pages] == [3, 3, 2]
    assert ids(pages) == [f"row-{i}" for i in range(1, 9)]
    assert all(p.window_start == T0 and p.window_end == T0 + timedelta(days=10) for p in pages)

    first, second, third = graph.requests
    assert first.raw_path == ("/v1.0/communications/callRecords/getPstnCalls("
                              "fromDateTime=2025-03-01T00:00:00Z,toDateTime=2025-03-11T00:00:00Z)")
    assert first.raw_query == ""
    assert len(graph.next_links) == 2
    for request, link in zip((second, third), graph.next_links):
        parts = urlsplit(link)
        assert request.raw_path == parts.path
        assert request.raw_query == parts.query  # byte for byte
        assert "%2B" in request.raw_query and "%2F" in request.raw_query and "==" in request.raw_query
    assert [r.status for r in graph.requests] == [200, 200, 200]


async def test_the_fake_refuses_a_rebuilt_next_link(client, graph, http_session, identity) -> None:
    """The fake really checks: the same link with its %2B decoded is refused (what a client that rebuilt the
    link from parsed query parameters would send)."""
    graph.rows.extend(rows_at(4))
    await read_all(client)
    token = graph.requests[0].token
    link = graph.next_links[0]
    path, query = link.split("?", 1)
    async with http_session.get(URL(f"{path}?{unquote(query)}", encoded=True),
                                headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "InvalidSkipToken"


async def test_an_empty_range_is_one_empty_page(client, graph) -> None:
    pages = await read_all(client)
    assert len(pages) == 1 and pages[0].rows == [] and pages[0].page_number == 1


# -- retries ---------------------------------------------------------------------------------------------------


async def test_a_429_waits_at_least_its_retry_after_then_succeeds(client, graph, sleeps) -> None:
    graph.rows.extend(rows_at(2))
    graph.fail_next(1, 429, retry_after=7)
    pages = await read_all(client)
    assert ids(pages) == ["row-1", "row-2"]
    assert len(sleeps) == 1 and sleeps[0] >= 7
    assert [r.status for r in graph.requests] == [429, 200]


async def test_a_retry_after_longer_than_max_delay_is_honoured_up_to_300_seconds(client, graph, sleeps) -> None:
    graph.fail_next(1, 429, retry_after=120)
    graph.fail_next(1, 503, retry_after=100_000)
    await read_all(client)
    assert sleeps == [120, MAX_RETRY_AFTER]


async def test_a_retry_after_http_date_is_understood(client, graph, sleeps) -> None:
    moment = datetime.now(timezone.utc) + timedelta(seconds=30)
    graph.fail_next(1, 429, retry_after=moment.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    await read_all(client)
    assert 20 <= sleeps[0] <= 31


async def test_a_503_is_retried(client, graph, sleeps) -> None:
    graph.rows.extend(rows_at(1))
    graph.fail_next(1, 503)
    pages = await read_all(client)
    assert ids(pages) == ["row-1"]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= client.base_delay


async def test_a_dropped_connection_is_retried(client, graph, sleeps) -> None:
    """aiohttp (3.14) itself sends an idempotent GET again, once, after a ServerDisconnectedError; so two drops
    in a row are what reaches the client's own retry."""
    graph.rows.extend(rows_at(1))
    graph.drop_next(2)
    assert ids(await read_all(client)) == ["row-1"]
    assert len(sleeps) == 1 and len(graph.requests) == 3


async def test_six_failures_in_a_row_are_a_graph_error(client, graph, sleeps) -> None:
    graph.fail_next(6, 503)
    with pytest.raises(GraphError) as caught:
        await read_all(client)
    assert caught.value.status == 503 and not isinstance(caught.value, GraphPermissionError)
    assert len(graph.requests) == 6 and len(sleeps) == 5
    assert "ServiceUnavailable" in str(caught.value) and "injected" not in str(caught.value)  # code only


async def test_backoff_is_full_jitter_exponential_capped_at_max_delay(identity, graph, http_session,
                                                                        sleeps) -> None:
    client = make_client(identity, graph, http_session, sleeps, max_attempts=10, base_delay=1.0, max_delay=20.0)
    graph.fail_next(9, 500)
    await read_all(client)
    assert len(sleeps) == 9
    for n, delay in enumerate(sleeps, start=1):
        assert 0 <= delay <= min(20.0, 2 ** (n - 1))
    await client.close()


async def test_a_400_is_not_retried(client, graph, sleeps) -> None:
    graph.fail_next(1, 400)
    with pytest.raises(GraphError) as caught:
        await read_all(client)
    assert caught.value.status == 400 and caught.value.code == "BadRequest"
    assert len(graph.requests) == 1 and sleeps == []


# -- tokens ----------------------------------------------------------------------------------------------------


async def test_an_expired_token_is_replaced_once_and_the_rest_of_the_pages_follow(client, graph, identity) -> None:
    graph.rows.extend(rows_at(8))
    pages: list[GraphPage] = []
    async for page in client.pstn_calls(DEFAULT_TENANT, T0, T0 + timedelta(days=10)):
        pages.append(page)
        if page.page_number == 1:
            assert identity.token_requests(DEFAULT_TENANT) == 1
            graph.expire_tokens()
    assert ids(pages) == [f"row-{i}" for i in range(1, 9)]
    assert identity.token_requests(DEFAULT_TENANT) == 2  # exactly one new token
    assert [r.status for r in graph.requests] == [200, 401, 200, 200]
    old, rejected, new, last = (r.token for r in graph.requests)
    assert old == rejected and new == last and new != old
    assert identity.count(discovery_path(DEFAULT_TENANT)) == 1  # same msal application


async def test_a_second_401_is_a_graph_error(client, graph, identity, sleeps) -> None:
    graph.fail_next(2, 401)
    with pytest.raises(GraphError) as caught:
        await read_all(client)
    assert caught.value.status == 401
    assert identity.token_requests(DEFAULT_TENANT) == 2 and len(graph.requests) == 2 and sleeps == []
    for token in identity.issued_access_tokens:
        assert token not in str(caught.value)


async def test_one_token_request_for_many_pages(client, graph, identity) -> None:
    graph.rows.extend(rows_at(14))
    pages = await read_all(client)
    assert len(pages) == 5
    assert identity.token_requests() == 1  # msal's cache served pages 2 to 5
    pages = await read_all(client)
    assert identity.token_requests() == 1


async def test_concurrent_reads_share_one_token_request(client, graph, identity) -> None:
    graph.rows.extend(rows_at(9))
    identity.set_delay(0.1, path=f"/{DEFAULT_TENANT}/oauth2/v2.0/token")
    results = await asyncio.gather(*(read_all(client) for _ in range(5)))
    assert all(ids(pages) == [f"row-{i}" for i in range(1, 10)] for pages in results)
    assert identity.token_requests() == 1


async def test_one_msal_application_per_authority(client, graph, identity) -> None:
    graph.rows.extend(rows_at(2))
    graph.add_tenant(OTHER_TENANT, [graph_row(100, T0 + timedelta(days=1))])
    assert ids(await read_all(client)) == ["row-1", "row-2"]
    assert ids(await read_all(client, OTHER_TENANT)) == ["row-100"]  # the other tenant's token, its rows
    first, other = client.msal_app(DEFAULT_TENANT), client.msal_app(OTHER_TENANT)
    assert first is not None and other is not None and first is not other
    assert first.authority.tenant == DEFAULT_TENANT and other.authority.tenant == OTHER_TENANT
    await read_all(client)
    await read_all(client, OTHER_TENANT)
    assert client.msal_app(DEFAULT_TENANT) is first and client.msal_app(OTHER_TENANT) is other
    for tenant in (DEFAULT_TENANT, OTHER_TENANT):
        assert identity.count(discovery_path(tenant)) == 1
        assert identity.token_requests(tenant) == 1
    request = next(r for r in identity.requests() if r.path == f"/{OTHER_TENANT}/oauth2/v2.0/token")
    assert request.form["scope"] == "https://graph.microsoft.com/.default"
    assert request.form["client_id"] == GRAPH_APP_ID and request.form["grant_type"] == "client_credentials"


async def test_a_token_of_another_tenant_is_refused_by_the_fake(client, graph, identity) -> None:
    """The fake checks the token's tenant: a tenant it does not serve gets 401, twice, then GraphError."""
    with pytest.raises(GraphError) as caught:
        await read_all(client, "northwind.onmicrosoft.com")
    assert caught.value.status == 401
    assert identity.token_requests("northwind.onmicrosoft.com") == 2


# -- permissions and configuration errors ----------------------------------------------------------------------


async def test_403_is_a_permission_error_an_admin_can_act_on(client, graph, sleeps, identity) -> None:
    graph.forbid(True)
    with pytest.raises(GraphPermissionError) as caught:
        await read_all(client)
    error = caught.value
    assert error.status == 403 and error.code == "Authorization_RequestDenied"
    assert error.tenant_id == DEFAULT_TENANT
    assert "CallRecord-PstnCalls.Read.All" in error.admin_message
    assert "CallRecords.Read.All" in error.admin_message
    assert "admin consent" in error.admin_message and "Global Administrator" in error.admin_message
    assert "APPLICATION permission" in error.admin_message and GRAPH_APP_ID in error.admin_message
    assert "sync" in error.admin_message
    assert len(graph.requests) == 1 and sleeps == []  # not retried
    for token in identity.issued_access_tokens:
        assert token not in str(error) and token not in error.admin_message


async def test_a_wrong_secret_is_a_graph_error_that_never_shows_the_secret(identity, graph, http_session,
                                                                             sleeps) -> None:
    wrong = "this-is-the-wrong-secret-value"
    client = make_client(identity, graph, http_session, sleeps, secret=wrong)
    with pytest.raises(GraphError) as caught:
        await read_all(client)
    error = caught.value
    assert not isinstance(error, GraphPermissionError)
    assert "client secret" in str(error) and "wrong" in str(error) and "expired" in str(error)
    assert error.code == "AADSTS7000215"
    assert wrong not in str(error) and wrong not in repr(error) and wrong not in repr(client)
    assert GRAPH_SECRET not in str(error)
    assert error.__cause__ is None and graph.requests == [] and sleeps == []
    await client.close()


@pytest.mark.parametrize("aadsts", [700016, 65001])
async def test_no_consent_at_the_token_endpoint_is_a_permission_error(client, graph, identity, aadsts) -> None:
    identity.set_tenant_error(DEFAULT_TENANT, aadsts)
    with pytest.raises(GraphPermissionError) as caught:
        await read_all(client)
    assert caught.value.code == f"AADSTS{aadsts}"
    assert "admin consent" in caught.value.admin_message
    assert "CallRecord-PstnCalls.Read.All" in caught.value.admin_message
    assert graph.requests == []


async def test_an_unknown_tenant_is_a_permission_error_naming_the_tenant(client, graph, identity) -> None:
    identity.set_tenant_error("nosuch.onmicrosoft.com", 90002)
    with pytest.raises(GraphPermissionError) as caught:
        await read_all(client, "nosuch.onmicrosoft.com")
    assert "nosuch.onmicrosoft.com" in caught.value.admin_message
    assert "Tenant ID" in caught.value.admin_message
    assert client.msal_app("nosuch.onmicrosoft.com") is None  # nothing kept; the next call tries again
    assert graph.requests == []


async def test_an_unreachable_token_endpoint_is_retried_then_a_graph_error(identity, graph, http_session,
                                                                          sleeps) -> None:
    port = aiohttp.test_utils.unused_port()
    client = GraphUsageClient(session=http_session, client_id=GRAPH_APP_ID, client_secret=GRAPH_SECRET,
                              login_url=f"https://127.0.0.1:{port}", graph_url=graph.url,
                              msal_http_client=identity.requests_session(), sleep=sleeps, max_attempts=3)
    with pytest.raises(GraphError) as caught:
        await read_all(client)
    assert caught.value.status is None and len(sleeps) == 2 and graph.requests == []
    assert GRAPH_SECRET not in str(caught.value)


def test_bearer_tokens_go_only_over_https_or_to_loopback() -> None:
    session = object()
    for url in ("http://graph.microsoft.com", "http://10.0.0.1:8080", "ftp://graph.microsoft.com"):
        with pytest.raises(ValueError):
            GraphUsageClient(session=session, client_id="a", client_secret="b", graph_url=url)  # type: ignore[arg-type]
    for url in ("https://graph.microsoft.com", "http://127.0.0.1:1234", "http://localhost:1", "http://[::1]:2"):
        GraphUsageClient(session=session, client_id="a", client_secret="b", graph_url=url)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GraphUsageClient(session=session, client_id="a", client_secret="")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GraphUsageClient(session=session, client_id="a", client_secret="b",  # type: ignore[arg-type]
                         login_url="http://login.example.com")


async def test_a_next_link_to_another_origin_is_not_followed(client, graph) -> None:
    graph.rows.extend(rows_at(4))
    graph.next_link_base = graph.url.replace("127.0.0.1", "localhost")
    pages = []
    with pytest.raises(GraphError) as caught:
        async for page in client.pstn_calls(DEFAULT_TENANT, T0, T0 + timedelta(days=1)):
            pages.append(page)
    assert len(pages) == 1 and len(graph.requests) == 1
    assert "another host" in str(caught.value)


@pytest.mark.parametrize("tenant", ["", "common", "organizations", "a/b", "x?y", "tenant id"])
async def test_a_tenant_id_must_be_a_tenant(client, tenant) -> None:
    with pytest.raises(ValueError):
        await read_all(client, tenant)


# -- windows ---------------------------------------------------------------------------------------------------


async def test_a_200_day_range_is_read_in_three_contiguous_windows_with_no_row_twice(client, graph) -> None:
    graph.page_size = 2
    start, end = T0, T0 + timedelta(days=200)
    b1, b2 = start + MAX_WINDOW, start + 2 * MAX_WINDOW
    stamps = {
        "at-start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "day-1": "2025-03-02T10:00:00.5000000Z",
        "before-b1": (b1 - timedelta(microseconds=500_000)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "at-b1": b1.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "b1-plus-100ns": b1.strftime("%Y-%m-%dT%H:%M:%S.0000001Z"),  # after b1, in the same microsecond
        "b1-plus-half-second": (b1 + timedelta(microseconds=500_000)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "middle": (start + timedelta(days=120)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "at-b2-offset": b2.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "last-second": (end - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.9999999Z"),
        "at-end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for n, (name, stamp) in enumerate(stamps.items()):
        graph.rows.append(graph_row(n, stamp, id=name))
    graph.rows.append(graph_row(99, end + timedelta(seconds=1), id="after-end"))
    graph.rows.append(graph_row(98, start - timedelta(microseconds=1), id="before-start"))

    pages = await read_all(client, start=start, end=end)
    read = ids(pages)
    assert sorted(read) == sorted(stamps) and len(read) == len(set(read))
    served = [row_id for r in graph.served() for row_id in r.row_ids]
    assert served.count("at-b1") == 2 and served.count("at-b2-offset") == 2  # Graph gave them to both windows
    assert served.count("b1-plus-100ns") == 1 and served.count("before-b1") == 1
    assert not any(isinstance(row, BadRow) for page in pages for row in page.rows)

    windows = graph.windows()
    assert len(windows) == 3
    assert windows[0][0] == start and windows[-1][1] == end
    for (_, stop), (following, _) in zip(windows, windows[1:]):
        assert stop == following  # contiguous
    assert all(stop - begin <= MAX_WINDOW for begin, stop in windows)
    assert {(p.window_start, p.window_end) for p in pages} == set(windows)
    assert [p.page_number for p in pages] == list(range(1, len(pages) + 1))
    assert len(pages) > 3  # paging within windows too


def test_split_windows() -> None:
    start = datetime(2025, 1, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    end = datetime(2025, 7, 20, 8, 30, 0, 1, tzinfo=timezone(timedelta(hours=-5)))
    windows = split_windows(start, end)
    assert windows[0][0] == datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)  # rounded down
    assert windows[-1][1] == datetime(2025, 7, 20, 13, 30, 1, tzinfo=timezone.utc)  # rounded up, UTC
    assert len(windows) == 3 and all(b - a <= MAX_WINDOW for a, b in windows)
    whole = start.replace(microsecond=0)
    assert split_windows(whole, whole) == [(whole, whole)]
    assert split_windows(start, start) == [(whole, whole + timedelta(seconds=1))]  # covers the instant
    exactly = split_windows(T0, T0 + MAX_WINDOW)
    assert exactly == [(T0, T0 + MAX_WINDOW)]
    with pytest.raises(ValueError):
        split_windows(end, start)
    with pytest.raises(ValueError):
        split_windows(datetime(2025, 1, 1), datetime(2025, 1, 2))


async def test_naive_datetimes_are_refused(client) -> None:
    with pytest.raises(ValueError):
        await read_all(client, start=datetime(2025, 1, 1), end=datetime(2025, 1, 2))


# -- mapping ---------------------------------------------------------------------------------------------------


async def test_a_full_row_becomes_the_exact_usage_row(client, graph) -> None:
    assert 0.1 + 0.02 != 0.12  # what a float would have made of it
    graph.rows.append(graph_row(7, "2025-03-04T05:06:07.1234567Z", charge=Decimal("0.1"),
                                connection_charge=Decimal("0.02"), currency="usd"))
    [page] = await read_all(client)
    [row] = page.rows
    assert row == UsageRow(
        usage_id="row-7",
        charge=Decimal("0.12"),
        currency="USD",
        occurred_at=datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc),
        capability="MCOPSTNPP",
        details={
            "user_id": "user-1", "user_name": "User 1", "upn": "user1@contoso.com",
            "call_type": "user_out_domestic", "destination": "United States", "duration_s": 67,
            "call_id": "call-3", "caller": "+14255550000", "callee": "+14255550007",
        },
    )
    assert isinstance(row.charge, Decimal) and str(row.charge) == "0.12"
    assert row.occurred_at.tzinfo == timezone.utc


def test_mapping_details() -> None:
    where = "Graph page 1 row 1"
    raw = graph_row(1, "2025-03-04T07:06:07+02:00", charge=3, connection_charge=None, userDisplayName=None,
                    callerNumber="", licenseCapability="MCOEV")
    row = map_row(raw, where)
    assert isinstance(row, UsageRow)
    assert row.charge == Decimal(3) and row.capability == "MCOEV"
    assert row.occurred_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert "user_name" not in row.details and "caller" not in row.details
    assert map_row({**raw, "connectionCharge": None}, where).charge == Decimal(3)
    assert map_row({**raw, "charge": "1.005"}, where).charge == Decimal("1.005")
    no_capability = map_row({k: v for k, v in raw.items() if k != "licenseCapability"}, where)
    assert isinstance(no_capability, UsageRow) and no_capability.capability == ""


def test_parse_graph_time() -> None:
    assert parse_graph_time("2025-01-02T03:04:05Z") == (datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), False)
    assert parse_graph_time("2025-01-02T03:04:05.1234567Z") == (
        datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc), True)
    assert parse_graph_time("2025-01-02T03:04:05.1234560-01:30")[0] == datetime(
        2025, 1, 2, 4, 34, 5, 123456, tzinfo=timezone.utc)
    for bad in ("2025-01-02T03:04:05", "2025-01-02", "yesterday", "2025-13-02T03:04:05Z", None, 17):
        with pytest.raises(ValueError):
            parse_graph_time(bad)


async def test_bad_rows_become_bad_rows_and_the_rest_of_the_page_comes_through(client, graph) -> None:
    graph.page_size = 100
    good = graph_row(1, T0 + timedelta(hours=1))
    graph.rows.extend([
        good,
        graph_row(2, T0 + timedelta(hours=2), id=None),                      # row 2: no id
        graph_row(3, T0 + timedelta(hours=3), charge="abc"),                 # row 3: charge not a number
        graph_row(4, "2025-03-01 not a time"),                              # row 4: bad time
        graph_row(5, T0 + timedelta(hours=5), currency=None),                # row 5: no currency
        graph_row(6, T0 + timedelta(hours=6), charge=RawJson("NaN")),        # row 6: not finite
        graph_row(7, T0 + timedelta(hours=7), charge=None),                  # row 7: no charge
        graph_row(8, T0 + timedelta(hours=8), connection_charge=True),       # row 8: a boolean
        graph_row(9, T0 + timedelta(hours=9), charge=RawJson("1e-2")),       # fine: 0.01 + 0.02
    ])
    [page] = await read_all(client)
    assert isinstance(page.rows[0], UsageRow) and page.rows[0].usage_id == "row-1"
    assert page.rows[-1] == map_row({**graph_row(9, T0 + timedelta(hours=9)), "charge": Decimal("1e-2")},
                                    "x")
    assert page.rows[-1].charge == Decimal("0.03")
    bad = page.rows[1:-1]
    assert all(isinstance(b, BadRow) for b in bad)
    assert [b.where for b in bad] == [f"Graph page 1 row {i}" for i in range(2, 9)]
    reasons = [b.reason for b in bad]
    assert "no id" in reasons[0]
    assert "'abc'" in reasons[1] and "not a number" in reasons[1]
    assert "not a time" in reasons[2] and "row-4" in reasons[2]
    assert "no currency" in reasons[3]
    assert "finite" in reasons[4]
    assert "no charge" in reasons[5]
    assert "Connection charge" in reasons[6]


def test_a_row_that_is_not_an_object_is_a_bad_row() -> None:
    assert map_row(42, "Graph page 3 row 9") == BadRow("Graph page 3 row 9", "Row is not a JSON object")
