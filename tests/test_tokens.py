"""Outbound tokens through the real msal flow against `FakeIdentity`'s token endpoint (https on loopback).

msal's rules, read in msal 1.39's source and held here against the real library: a cached access token is
served until fewer than 5 minutes are left (`application.py`: `if expires_in < 5*60: # Then consider it
expired`); a 5xx answer from the token endpoint is remembered by msal's `ThrottledHttpClient` for
`Retry-After` seconds (default 5), during which msal answers the same error without asking again.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp.test_utils
import pytest

from bot.tokens import DEFAULT_SCOPE, MSAL_EXPIRY_MARGIN, OutboundTokens, TokenError
from tests.fakes.identity import APP_ID, APP_PASSWORD, FakeIdentity

TOKEN_PATH = "/botframework.com/oauth2/v2.0/token"
DISCOVERY_PATH = "/botframework.com/v2.0/.well-known/openid-configuration"


def make(identity: FakeIdentity, *, password: str = APP_PASSWORD, authority: str | None = None) -> OutboundTokens:
    return OutboundTokens(app_id=APP_ID, password=password, authority=authority or identity.authority(),
                          scope=DEFAULT_SCOPE, http_client=identity.requests_session())


class FakeTime:
    """Replaces `time.time` (msal and OutboundTokens read it) so a token's lifetime can pass instantly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def test_two_hundred_concurrent_callers_cause_one_token_request(identity) -> None:
    tokens = make(identity)
    results = await asyncio.gather(*(tokens.token() for _ in range(200)))
    assert len(set(results)) == 1
    assert results[0] == identity.issued_access_tokens[0]
    assert identity.token_requests() == 1
    assert identity.count(DISCOVERY_PATH) == 1  # one msal application, built once
    assert tokens.msal_calls == 1  # the other 199 waited for that call and reused its answer


async def test_concurrent_callers_share_one_failure(identity) -> None:
    identity.set_delay(0.1, path=TOKEN_PATH)
    tokens = make(identity, password="not-the-secret")
    outcomes = await asyncio.gather(*(tokens.token() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(o, TokenError) for o in outcomes)
    assert identity.token_requests() == 1 and tokens.msal_calls == 1


async def test_serial_callers_reuse_the_cached_token(identity) -> None:
    tokens = make(identity)
    first = await tokens.token()
    for _ in range(200):
        assert await tokens.token() == first
    assert identity.token_requests() == 1


async def test_the_request_is_a_client_credentials_grant_for_the_scope(identity) -> None:
    await make(identity).token()
    [request] = [r for r in identity.requests() if r.path == TOKEN_PATH]
    assert request.form["grant_type"] == "client_credentials"
    assert request.form["client_id"] == APP_ID
    assert request.form["scope"] == DEFAULT_SCOPE


async def test_a_token_is_reused_until_five_minutes_before_expiry(identity, monkeypatch) -> None:
    clock = FakeTime(monkeypatch)
    identity.token_expires_in = 3600
    tokens = make(identity)
    first = await tokens.token()
    clock.advance(3600 - MSAL_EXPIRY_MARGIN - 10)  # 5 min 10 s left: still good
    assert await tokens.token() == first
    assert identity.token_requests() == 1
    clock.advance(20)  # 4 min 50 s left: msal considers it expired
    second = await tokens.token()
    assert second != first
    assert identity.token_requests() == 2
    assert await tokens.token() == second  # and the new one is cached again
    assert identity.token_requests() == 2


async def test_the_memo_defers_to_msal_and_msal_uses_its_cache(identity, monkeypatch) -> None:
    """Our memo ends where msal's rule ends; in between, msal itself is asked only when the memo lapses."""
    clock = FakeTime(monkeypatch)
    tokens = make(identity)
    first = await tokens.token()
    tokens._fresh_until = 0.0  # forget the memo: the next call goes through msal, which answers from its cache
    clock.advance(60)
    assert await tokens.token() == first
    assert tokens.msal_calls == 2 and identity.token_requests() == 1


async def test_a_short_lived_token_is_fetched_again_on_every_call(identity) -> None:
    identity.token_expires_in = MSAL_EXPIRY_MARGIN - 1  # msal treats it as expired on arrival
    tokens = make(identity)
    seen = [await tokens.token() for _ in range(5)]
    assert len(set(seen)) == 5
    assert identity.token_requests() == 5
    assert identity.count(DISCOVERY_PATH) == 1  # the msal application is still built only once


async def test_a_wrong_password_raises_token_error_without_the_password(identity) -> None:
    secret = "wrong-secret-that-must-never-be-shown"
    tokens = make(identity, password=secret)
    with pytest.raises(TokenError) as caught:
        await tokens.token()
    error = caught.value
    assert "invalid_client" in str(error)
    assert secret not in str(error) and secret not in repr(error) and secret not in repr(tokens)
    assert APP_PASSWORD not in str(error)
    assert error.transient is False
    assert error.__cause__ is None  # nothing chained that could carry the request
    assert identity.token_requests() == 1
    with pytest.raises(TokenError):  # not remembered as a success; asks again
        await tokens.token()
    assert identity.token_requests() == 2


async def test_an_error_description_echoing_the_secret_is_scrubbed(identity) -> None:
    tokens = make(identity, password="s3cret-value")
    message = tokens._describe_error({"error": "invalid_client", "error_description": "bad secret s3cret-value"})
    assert "s3cret-value" not in message and "***" in message


async def test_an_unreachable_authority_is_a_transient_token_error(identity) -> None:
    port = aiohttp.test_utils.unused_port()
    tokens = make(identity, authority=f"https://127.0.0.1:{port}/botframework.com")
    with pytest.raises(TokenError) as caught:
        await tokens.token()
    assert caught.value.transient is True
    assert APP_PASSWORD not in str(caught.value)


async def test_a_failed_discovery_is_retried_on_the_next_call(identity) -> None:
    identity.fail_next(1, status=500, path=DISCOVERY_PATH)
    tokens = make(identity)
    with pytest.raises(TokenError):
        await tokens.token()
    assert await tokens.token()  # the msal application is built on this call
    assert identity.count(DISCOVERY_PATH) == 2


async def test_msal_throttles_after_a_server_error(identity) -> None:
    """msal remembers a 5xx from the token endpoint for its Retry-After (default 5 s): no request in between."""
    identity.fail_next(1, status=500, path=TOKEN_PATH)
    tokens = make(identity)
    with pytest.raises(TokenError):
        await tokens.token()
    with pytest.raises(TokenError):
        await tokens.token()
    assert identity.token_requests() == 1


async def test_token_requests_do_not_block_the_event_loop(identity) -> None:
    identity.set_delay(0.3, path=TOKEN_PATH)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await make(identity).token()
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed >= 0.3
    during = [t for t in ticks if started <= t <= started + elapsed]
    assert len(during) >= 10 and max(b - a for a, b in zip(during, during[1:])) < 0.2


async def test_a_cancelled_caller_does_not_cause_a_second_request(identity) -> None:
    identity.set_delay(0.2, path=TOKEN_PATH)
    tokens = make(identity)
    first = asyncio.create_task(tokens.token())
    await asyncio.sleep(0)  # it is now waiting for the request in flight
    first.cancel()
    assert await tokens.token() == identity.issued_access_tokens[0]
    assert identity.token_requests() == 1


def test_credentials_are_required() -> None:
    with pytest.raises(ValueError):
        OutboundTokens(app_id=APP_ID, password="", authority="https://login.microsoftonline.com/botframework.com",
                       scope=DEFAULT_SCOPE)
