"""The outbound Bot Connector client against `FakeConnector` (real HTTP on loopback).

Retry delays go to an injected `sleep` that records them and returns at once, with a seeded random generator,
so back-off is checked exactly without waiting for it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from datetime import datetime, timedelta, timezone

import pytest

from bot.connector import Connector, ConnectorError, parse_retry_after
from bot.tokens import DEFAULT_SCOPE, OutboundTokens
from tests.fakes.identity import APP_ID, APP_PASSWORD

CONVERSATION = "19:abc123@thread.skype;messageid=1700000000000"
QUOTED_CONVERSATION = "19%3Aabc123%40thread.skype%3Bmessageid%3D1700000000000"
REPLY_TO = "1:1700000000000"
ACTIVITY = {"type": "message", "text": "Balance: USD 1,250.00"}
SEED = 7


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make(session, *, tokens=None, sleeps: Sleeps | None = None, **kwargs) -> Connector:
    return Connector(session=session, tokens=tokens, sleep=sleeps or Sleeps(), rng=random.Random(SEED), **kwargs)


@pytest.fixture
def connector(http_session, sleeps) -> Connector:
    return make(http_session, sleeps=sleeps)


@pytest.fixture
def tokens(identity) -> OutboundTokens:
    return OutboundTokens(app_id=APP_ID, password=APP_PASSWORD, authority=identity.authority(), scope=DEFAULT_SCOPE,
                          http_client=identity.requests_session())


# -- paths, bodies, headers ------------------------------------------------------------------------------------


async def test_a_reply_posts_to_the_activity_it_answers(connector, fake_connector) -> None:
    new_id = await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY, reply_to_id=REPLY_TO)
    assert new_id == "activity-1"
    [request] = fake_connector.requests
    assert request.method == "POST"
    assert request.raw_path == f"/amer/v3/conversations/{QUOTED_CONVERSATION}/activities/1%3A1700000000000"
    assert request.route == f"/v3/conversations/{CONVERSATION}/activities/{REPLY_TO}"
    assert request.json == ACTIVITY
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.headers["Accept"] == "application/json"


async def test_a_new_activity_posts_to_the_conversation(connector, fake_connector) -> None:
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY) == "activity-1"
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY) == "activity-2"
    assert [r.raw_path for r in fake_connector.requests] == [
        f"/amer/v3/conversations/{QUOTED_CONVERSATION}/activities"] * 2
    assert fake_connector.activities(CONVERSATION) == [ACTIVITY, ACTIVITY]


async def test_a_service_url_without_trailing_slash_gives_the_same_path(connector, fake_connector) -> None:
    await connector.send(fake_connector.service_url.rstrip("/"), CONVERSATION, ACTIVITY)
    assert fake_connector.requests[0].raw_path == f"/amer/v3/conversations/{QUOTED_CONVERSATION}/activities"


async def test_ids_with_slashes_and_spaces_stay_one_segment(connector, fake_connector) -> None:
    await connector.send(fake_connector.service_url, "a/b c?d#e", ACTIVITY)
    assert fake_connector.requests[0].raw_path == "/amer/v3/conversations/a%2Fb%20c%3Fd%23e/activities"


async def test_update_puts_the_activity_in_place(connector, fake_connector) -> None:
    card = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive"}]}
    assert await connector.update(fake_connector.service_url, CONVERSATION, "activity-9", card) is None
    [request] = fake_connector.requests
    assert request.method == "PUT"
    assert request.raw_path == f"/amer/v3/conversations/{QUOTED_CONVERSATION}/activities/activity-9"
    assert request.json == card


async def test_get_member(connector, fake_connector) -> None:
    member = {"id": "29:1abc", "name": "Alex Wilber", "aadObjectId": "00000000-0000-0000-0000-0000000000020",
              "userPrincipalName": "alex@contoso.example", "tenantId": "t1"}
    fake_connector.members["29:1abc"] = member
    assert await connector.get_member(fake_connector.service_url, CONVERSATION, "29:1abc") == member
    [request] = fake_connector.requests
    assert request.method == "GET"
    assert request.raw_path == f"/amer/v3/conversations/{QUOTED_CONVERSATION}/members/29%3A1abc"


async def test_an_unknown_member_is_a_404_without_retry(connector, fake_connector, sleeps) -> None:
    with pytest.raises(ConnectorError) as caught:
        await connector.get_member(fake_connector.service_url, CONVERSATION, "29:nobody")
    assert caught.value.status == 404 and caught.value.retryable is False
    assert "MemberNotFoundInConversation" in str(caught.value)
    assert len(fake_connector.requests) == 1 and sleeps.delays == []


async def test_local_mode_sends_no_authorization(connector, fake_connector) -> None:
    await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert "Authorization" not in fake_connector.requests[0].headers


async def test_the_bearer_token_comes_from_outbound_tokens(http_session, fake_connector, identity, tokens) -> None:
    fake_connector.require_bearer(lambda t: t in identity.issued_access_tokens)
    connector = make(http_session, tokens=tokens)
    for _ in range(5):
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    [issued] = identity.issued_access_tokens
    assert {r.authorization for r in fake_connector.requests} == {f"Bearer {issued}"}
    assert identity.token_requests() == 1


async def test_no_token_goes_over_plain_http_to_a_remote_host(http_session, tokens, identity) -> None:
    connector = make(http_session, tokens=tokens)
    with pytest.raises(ConnectorError) as caught:
        await connector.send("http://smba.example.invalid/amer/", CONVERSATION, ACTIVITY)
    assert caught.value.retryable is False
    assert identity.token_requests() == 0


async def test_a_token_failure_is_a_connector_error(http_session, fake_connector, identity) -> None:
    bad = OutboundTokens(app_id=APP_ID, password="wrong-password-xyz", authority=identity.authority(),
                         scope=DEFAULT_SCOPE, http_client=identity.requests_session())
    connector = make(http_session, tokens=bad)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert caught.value.retryable is False and "wrong-password-xyz" not in str(caught.value)
    assert fake_connector.requests == []


@pytest.mark.parametrize("service_url", ["ftp://host/", "not a url", ""])
async def test_a_bad_service_url_is_refused(connector, service_url) -> None:
    with pytest.raises(ConnectorError) as caught:
        await connector.send(service_url, CONVERSATION, ACTIVITY)
    assert caught.value.retryable is False


async def test_an_empty_id_is_refused(connector, fake_connector) -> None:
    with pytest.raises(ConnectorError):
        await connector.send(fake_connector.service_url, "", ACTIVITY)
    with pytest.raises(ConnectorError):
        await connector.update(fake_connector.service_url, CONVERSATION, "", ACTIVITY)
    assert fake_connector.requests == []


# -- retries ---------------------------------------------------------------------------------------------------


async def test_429_honours_retry_after_seconds(connector, fake_connector, sleeps) -> None:
    fake_connector.fail_next(1, status=429, retry_after=3)
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY) == "activity-1"
    assert sleeps.delays == [3.0]  # more than the jitter (at most base_delay 0.5) would have waited
    assert len(fake_connector.requests) == 2
    assert fake_connector.requests[0].json == fake_connector.requests[1].json == ACTIVITY


async def test_429_honours_retry_after_as_an_http_date(connector, fake_connector, sleeps) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=10)
    fake_connector.fail_next(1, status=429, retry_after=email.utils.format_datetime(when, usegmt=True))
    await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    [delay] = sleeps.delays
    assert 8.0 <= delay <= 10.0


async def test_retry_after_is_capped_at_max_delay(http_session, fake_connector, sleeps) -> None:
    connector = make(http_session, sleeps=sleeps, max_delay=30.0)
    fake_connector.fail_next(1, status=429, retry_after=120)
    await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert sleeps.delays == [30.0]


async def test_a_server_error_then_success(connector, fake_connector, sleeps) -> None:
    fake_connector.fail_next(1, status=500)
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY, reply_to_id=REPLY_TO)
    [delay] = sleeps.delays
    assert 0 <= delay <= 0.5
    assert len(fake_connector.requests) == 2


async def test_backoff_is_exponential_with_full_jitter(http_session, fake_connector, sleeps) -> None:
    connector = make(http_session, sleeps=sleeps, max_attempts=5, base_delay=0.5, max_delay=3.0)
    fake_connector.fail_next(4, status=503)
    await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    expected_rng = random.Random(SEED)
    expected = [expected_rng.uniform(0, ceiling) for ceiling in (0.5, 1.0, 2.0, 3.0)]  # capped at max_delay
    assert sleeps.delays == pytest.approx(expected)
    assert len(fake_connector.requests) == 5


async def test_attempts_are_bounded(http_session, fake_connector, sleeps) -> None:
    connector = make(http_session, sleeps=sleeps, max_attempts=4)
    fake_connector.fail_next(10, status=502)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert caught.value.status == 502 and caught.value.retryable is True
    assert len(fake_connector.requests) == 4
    assert len(sleeps.delays) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_other_client_errors_are_not_retried(connector, fake_connector, sleeps, status) -> None:
    fake_connector.fail_next(1, status=status)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert caught.value.status == status and caught.value.retryable is False
    assert len(fake_connector.requests) == 1 and sleeps.delays == []


async def test_a_timeout_is_retried(http_session, fake_connector, sleeps) -> None:
    connector = make(http_session, sleeps=sleeps, timeout=0.2)
    fake_connector.stall_next(1)  # never answers
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY) == "activity-1"
    assert len(fake_connector.requests) == 2 and len(sleeps.delays) == 1


async def test_timeouts_every_time_give_a_retryable_error(http_session, fake_connector, sleeps) -> None:
    connector = make(http_session, sleeps=sleeps, timeout=0.1, max_attempts=3)
    fake_connector.stall_next(3)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert caught.value.status is None and caught.value.retryable is True and "timed out" in str(caught.value)
    assert len(fake_connector.requests) == 3


async def test_a_dropped_connection_is_retried(connector, fake_connector, sleeps) -> None:
    fake_connector.drop_next(1)
    assert await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY) == "activity-1"
    assert len(fake_connector.requests) == 2 and len(sleeps.delays) == 1


async def test_a_refused_connection_is_retried_then_reported(http_session, sleeps) -> None:
    import aiohttp.test_utils
    port = aiohttp.test_utils.unused_port()
    connector = make(http_session, sleeps=sleeps, max_attempts=2)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(f"http://127.0.0.1:{port}/", CONVERSATION, ACTIVITY)
    assert caught.value.retryable is True and caught.value.status is None
    assert len(sleeps.delays) == 1


async def test_retries_are_only_for_the_failed_path(connector, fake_connector, sleeps) -> None:
    route = f"/v3/conversations/{CONVERSATION}/members/29:1"
    fake_connector.members["29:1"] = {"id": "29:1"}
    fake_connector.fail_next(1, status=500, path=route)
    await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    assert await connector.get_member(fake_connector.service_url, CONVERSATION, "29:1") == {"id": "29:1"}
    assert [r.method for r in fake_connector.requests] == ["POST", "GET", "GET"]


async def test_the_token_never_reaches_the_logs(http_session, fake_connector, identity, tokens, sleeps,
                                               caplog) -> None:
    caplog.set_level(logging.DEBUG)
    connector = make(http_session, tokens=tokens, sleeps=sleeps)
    fake_connector.fail_next(1, status=503)
    fake_connector.fail_next(1, status=403)
    with pytest.raises(ConnectorError) as caught:
        await connector.send(fake_connector.service_url, CONVERSATION, ACTIVITY)
    [issued] = identity.issued_access_tokens
    assert issued not in caplog.text and issued not in str(caught.value)
    assert "retrying" in caplog.text


# -- connection reuse ------------------------------------------------------------------------------------------


async def test_fifty_sends_reuse_one_connection(connector, fake_connector) -> None:
    for n in range(50):
        await connector.send(fake_connector.service_url, CONVERSATION, {**ACTIVITY, "text": str(n)})
    assert len(fake_connector.requests) == 50
    assert len(fake_connector.peers()) == 1


async def test_concurrent_sends_all_arrive(connector, fake_connector) -> None:
    ids = await asyncio.gather(*(connector.send(fake_connector.service_url, CONVERSATION, {**ACTIVITY, "n": n})
                                 for n in range(32)))
    assert sorted(ids) == sorted(f"activity-{n}" for n in range(1, 33))
    assert sorted(a["n"] for a in fake_connector.activities()) == list(range(32))


# -- Retry-After parsing ---------------------------------------------------------------------------------------


NOW = datetime(2026, 1, 15, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("  ", None), ("soon", None), ("nan", None), ("inf", None),
    ("0", 0.0), ("7", 7.0), (" 2 ", 2.0), ("1.5", 1.5), ("-3", 0.0),
    ("Thu, 15 Jan 2026 09:00:30 GMT", 30.0),
    ("Thu, 15 Jan 2026 08:59:00 GMT", 0.0),  # in the past
])
def test_parse_retry_after(value, expected) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_request_bodies_are_json_that_json_loads_reads_back() -> None:
    from bot.connector import dumps
    card = {"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "Saldo: 1.250,50\u00a0kr. \u2713 \U0001F4B3"}],
            "n": [0, -1, 2**63 - 1], "ok": True, "none": None}
    assert json.loads(dumps(card)) == card
    huge = {"amount": 10**30}   # beyond orjson's 64 bits: the standard library writes it
    assert json.loads(dumps(huge)) == huge
