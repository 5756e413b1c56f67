"""Inbound JWT validation against `FakeIdentity` (real keys, real HTTP, a server in another thread).

Tokens are dated with the test's fake clock, which the authenticator also uses for `exp`/`nbf` and for the
refresh rate limit, so time-based cases move the clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import aiohttp.test_utils
import pytest

from bot.auth import AuthenticationError, BotClaims, InboundAuthenticator
from tests.fakes.identity import APP_ID, BOT_FRAMEWORK_ISSUER, JWKS_PATH, METADATA_PATH, FakeIdentity, new_rsa_key

SERVICE_URL = "https://smba.trafficmanager.net/amer/"
CHANNEL = "msteams"


class Gate:
    """A `sleep` for the refresh task that returns only when the test says so, recording what it was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._calls: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._calls.put(future)
        await future

    async def sleeping(self) -> asyncio.Future[None]:
        """Wait until the task is asleep; returns the future that wakes it."""
        return await asyncio.wait_for(self._calls.get(), 5)


def make(identity: FakeIdentity, session: aiohttp.ClientSession, clock, **kwargs) -> InboundAuthenticator:
    kwargs.setdefault("metadata_url", identity.metadata_url)
    kwargs.setdefault("issuer", BOT_FRAMEWORK_ISSUER)
    return InboundAuthenticator(app_id=APP_ID, session=session, clock=clock, **kwargs)


@pytest.fixture
async def auth(identity, http_session, clock):
    authenticator = make(identity, http_session, clock, sleep=Gate())
    await authenticator.start()
    yield authenticator
    await authenticator.close()


def token(identity: FakeIdentity, clock, **kwargs) -> str:
    kwargs.setdefault("app_id", APP_ID)
    kwargs.setdefault("service_url", SERVICE_URL)
    return identity.issue_token(now=clock(), **kwargs)


async def reason(auth: InboundAuthenticator, header: str | None, *, service_url: str = SERVICE_URL,
                 channel_id: str = CHANNEL) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(header, service_url=service_url, channel_id=channel_id)
    return caught.value.reason


def fetches(identity: FakeIdentity) -> tuple[int, int]:
    return identity.metadata_fetches, identity.jwks_fetches


# -- the happy path --------------------------------------------------------------------------------------------


async def test_a_valid_token_passes(auth, identity, clock) -> None:
    claims = await auth.authenticate(f"Bearer {token(identity, clock)}", service_url=SERVICE_URL, channel_id=CHANNEL)
    assert isinstance(claims, BotClaims)
    assert claims.app_id == APP_ID and claims.service_url == SERVICE_URL and claims.issuer == BOT_FRAMEWORK_ISSUER
    assert claims.raw["aud"] == APP_ID and claims.raw["serviceurl"] == SERVICE_URL
    assert fetches(identity) == (1, 1)  # pre-warmed by start()


async def test_keys_are_cached_across_requests(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock)}"
    for _ in range(20):
        await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    assert fetches(identity) == (1, 1)


async def test_service_urls_compare_without_trailing_slash(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, service_url=SERVICE_URL.rstrip('/'))}"
    claims = await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    assert claims.service_url == SERVICE_URL.rstrip("/")


async def test_the_scheme_is_case_insensitive(auth, identity, clock) -> None:
    await auth.authenticate(f"bearer {token(identity, clock)}", service_url=SERVICE_URL, channel_id=CHANNEL)


async def test_authenticate_works_without_start(identity, http_session, clock) -> None:
    authenticator = make(identity, http_session, clock)
    await authenticator.authenticate(f"Bearer {token(identity, clock)}", service_url=SERVICE_URL,
                                     channel_id=CHANNEL)
    assert fetches(identity) == (1, 1)
    await authenticator.close()


# -- rejections ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, ""])
async def test_a_missing_header_is_rejected(auth, header) -> None:
    assert await reason(auth, header) == "missing_header"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "token-without-scheme",
                                    "Bearer " + "x" * 20000])
async def test_a_malformed_header_is_rejected(auth, header) -> None:
    assert await reason(auth, header) == "malformed_header"


@pytest.mark.parametrize("value", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"])
async def test_a_malformed_token_is_rejected(auth, value) -> None:
    assert await reason(auth, f"Bearer {value}") == "malformed"


async def test_a_forged_signature_is_rejected(auth, identity, clock) -> None:
    forged = token(identity, clock, signing_key=new_rsa_key())  # the current kid, someone else's key
    assert await reason(auth, f"Bearer {forged}") == "bad_signature"
    assert fetches(identity) == (1, 1)  # a known kid needs no refresh


async def test_a_tampered_payload_is_rejected(auth, identity, clock) -> None:
    good = token(identity, clock)
    other = token(identity, clock, service_url="https://evil.example/amer/")
    head, _, sig = good.split(".")
    spliced = ".".join([head, other.split(".")[1], sig])
    assert await reason(auth, f"Bearer {spliced}") == "bad_signature"


async def test_an_expired_token_is_rejected_after_the_leeway(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, expires_in=3600)}"
    clock.advance(timedelta(hours=1, minutes=4))  # expired, but within the 5-minute leeway
    await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    clock.advance(timedelta(minutes=1, seconds=1))
    assert await reason(auth, header) == "expired"


async def test_a_token_not_yet_valid_is_rejected(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, not_before=clock() + timedelta(minutes=10))}"
    assert await reason(auth, header) == "not_yet_valid"
    clock.advance(timedelta(minutes=5))  # within the leeway now
    await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)


async def test_the_wrong_audience_is_rejected(auth, identity, clock) -> None:
    assert await reason(auth, f"Bearer {token(identity, clock, audience='another-bot')}") == "wrong_audience"


async def test_the_wrong_issuer_is_rejected(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, issuer='https://sts.windows.net/evil/')}"
    assert await reason(auth, header) == "wrong_issuer"


async def test_a_token_for_another_service_url_is_rejected(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, service_url='https://evil.example/amer/')}"
    assert await reason(auth, header) == "serviceurl_mismatch"


async def test_a_token_without_serviceurl_is_rejected(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock, extra_claims={'serviceurl': None})}"
    assert await reason(auth, header) == "serviceurl_mismatch"


@pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
async def test_required_claims(auth, identity, clock, claim) -> None:
    header = f"Bearer {token(identity, clock, extra_claims={claim: None})}"
    assert await reason(auth, header) == f"missing_claim_{claim}"


async def test_only_rs256_is_accepted(auth, identity, clock) -> None:
    rs512 = token(identity, clock, algorithm="RS512")
    assert await reason(auth, f"Bearer {rs512}") == "bad_algorithm"
    import jwt
    hs256 = jwt.encode({"aud": APP_ID, "iss": BOT_FRAMEWORK_ISSUER, "serviceurl": SERVICE_URL,
                        "exp": int(clock().timestamp()) + 600}, "a-shared-secret-of-at-least-32-bytes!",
                       algorithm="HS256",
                       headers={"kid": identity.kid})
    assert await reason(auth, f"Bearer {hs256}") == "bad_algorithm"


async def test_a_token_without_kid_is_rejected(auth, identity, clock) -> None:
    assert await reason(auth, f"Bearer {token(identity, clock, kid='', signing_key=new_rsa_key())}") == "missing_kid"


async def test_endorsements_must_include_the_channel(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock)}"  # the key is endorsed for msteams only
    assert await reason(auth, header, channel_id="webchat") == "endorsement_mismatch"
    assert await reason(auth, header, channel_id="") == "endorsement_mismatch"
    await auth.authenticate(header, service_url=SERVICE_URL, channel_id="msteams")


async def test_a_key_without_endorsements_accepts_any_channel(auth, identity, clock) -> None:
    kid = identity.add_key(endorsements=None)
    await auth.refresh()
    header = f"Bearer {token(identity, clock, kid=kid)}"
    await auth.authenticate(header, service_url=SERVICE_URL, channel_id="webchat")


async def test_the_error_text_never_holds_the_token(auth, identity, clock) -> None:
    forged = token(identity, clock, signing_key=new_rsa_key())
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(f"Bearer {forged}", service_url=SERVICE_URL, channel_id=CHANNEL)
    assert forged not in str(caught.value) and forged not in repr(caught.value)


# -- key rotation and the refresh rate limit -------------------------------------------------------------------


async def test_an_unknown_kid_triggers_exactly_one_refresh_then_401(auth, identity, clock) -> None:
    kid = identity.add_key(publish=False)  # signs, but nobody published it
    header = f"Bearer {token(identity, clock, kid=kid)}"
    assert await reason(auth, header) == "unknown_kid"
    assert fetches(identity) == (2, 2)  # start() + one refresh
    # Within min_refresh_gap: no more fetches, however many forged kids arrive.
    forger = new_rsa_key()
    for i in range(10):
        forged = token(identity, clock, kid=f"forged-{i}", signing_key=forger)
        assert await reason(auth, f"Bearer {forged}") == "unknown_kid"
    clock.advance(timedelta(seconds=59))
    assert await reason(auth, header) == "unknown_kid"
    assert fetches(identity) == (2, 2)
    clock.advance(timedelta(minutes=1))  # the gap has passed: one more refresh is allowed
    assert await reason(auth, header) == "unknown_kid"
    assert fetches(identity) == (3, 3)


async def test_a_rotated_key_is_picked_up_at_once(auth, identity, clock) -> None:
    old_header = f"Bearer {token(identity, clock)}"
    new_kid = identity.rotate_key()
    header = f"Bearer {token(identity, clock)}"
    assert new_kid not in auth.key_ids
    claims = await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    assert claims.app_id == APP_ID
    assert fetches(identity) == (2, 2)
    assert new_kid in auth.key_ids
    await auth.authenticate(old_header, service_url=SERVICE_URL, channel_id=CHANNEL)  # still published


async def test_a_retired_key_stops_working_after_a_refresh(auth, identity, clock) -> None:
    old_header = f"Bearer {token(identity, clock)}"
    identity.rotate_key(retire_old=True)
    assert await auth.refresh() is True
    assert await reason(auth, old_header) == "unknown_kid"


async def test_concurrent_unknown_kids_share_one_refresh(auth, identity, clock) -> None:
    identity.set_delay(0.2, path=METADATA_PATH)  # so that the requests overlap the fetch
    unknown = [token(identity, clock, kid=identity.add_key(publish=False)) for _ in range(2)]
    outcomes = await asyncio.gather(*(auth.authenticate(f"Bearer {t}", service_url=SERVICE_URL, channel_id=CHANNEL)
                                      for t in unknown), return_exceptions=True)
    assert [getattr(o, "reason", o) for o in outcomes] == ["unknown_kid", "unknown_kid"]
    assert fetches(identity) == (2, 2)


async def test_requests_waiting_for_a_refresh_get_the_rotated_key(auth, identity, clock) -> None:
    identity.set_delay(0.2, path=JWKS_PATH)
    identity.rotate_key()
    header = f"Bearer {token(identity, clock)}"
    results = await asyncio.gather(*(auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
                                     for _ in range(10)))
    assert len(results) == 10
    assert fetches(identity) == (2, 2)


# -- unavailable metadata --------------------------------------------------------------------------------------


async def test_unreachable_metadata_is_not_fatal_and_fails_closed(identity, http_session, clock) -> None:
    identity.fail_next(2, status=503, path=METADATA_PATH)
    authenticator = make(identity, http_session, clock, sleep=Gate())
    await authenticator.start()  # logged, not raised
    assert authenticator.key_ids == frozenset()
    header = f"Bearer {token(identity, clock)}"
    assert await reason(authenticator, header) == "keys_unavailable"  # tried once more, failed again
    assert await reason(authenticator, header) == "keys_unavailable"  # within the gap: not tried
    assert identity.metadata_fetches == 2
    clock.advance(timedelta(minutes=1))
    await authenticator.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)  # recovered
    await authenticator.close()


async def test_a_dead_metadata_host_fails_closed(http_session, identity, clock) -> None:
    closed = aiohttp.test_utils.unused_port()
    authenticator = make(identity, http_session, clock, metadata_url=f"http://127.0.0.1:{closed}/metadata",
                         sleep=Gate())
    await authenticator.start()
    assert await reason(authenticator, f"Bearer {token(identity, clock)}") == "keys_unavailable"
    await authenticator.close()


@pytest.mark.parametrize("path, status", [(METADATA_PATH, 500), (JWKS_PATH, 404)])
async def test_a_failed_refresh_keeps_the_keys(auth, identity, clock, path, status) -> None:
    identity.fail_next(1, status=status, path=path)
    assert await auth.refresh() is False
    assert auth.refresh_failures == 1
    await auth.authenticate(f"Bearer {token(identity, clock)}", service_url=SERVICE_URL, channel_id=CHANNEL)


# -- never blocking the loop; the background refresh -----------------------------------------------------------


async def test_fetching_keys_never_blocks_the_event_loop(identity, http_session, clock) -> None:
    identity.set_delay(0.5, path=METADATA_PATH)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    authenticator = make(identity, http_session, clock, sleep=Gate())
    started = time.monotonic()
    await authenticator.authenticate(f"Bearer {token(identity, clock)}", service_url=SERVICE_URL,
                                     channel_id=CHANNEL)
    elapsed = time.monotonic() - started
    task.cancel()
    await authenticator.close()
    assert elapsed >= 0.5
    during = [t for t in ticks if started <= t <= started + elapsed]
    assert len(during) >= 20, "the loop did not run while the keys were being fetched"
    assert max(b - a for a, b in zip(during, during[1:])) < 0.2


async def test_the_background_task_refreshes_every_refresh_every(identity, http_session, clock) -> None:
    gate = Gate()
    authenticator = make(identity, http_session, clock, sleep=gate, refresh_every=timedelta(hours=24))
    await authenticator.start()
    wake = await gate.sleeping()
    assert gate.delays == [24 * 3600]
    new_kid = identity.rotate_key()
    wake.set_result(None)
    await gate.sleeping()  # asleep again: the refresh is done
    assert fetches(identity) == (2, 2) and new_kid in authenticator.key_ids
    assert gate.delays == [24 * 3600, 24 * 3600]
    await authenticator.close()


async def test_the_background_task_retries_sooner_after_a_failure(identity, http_session, clock) -> None:
    gate = Gate()
    identity.fail_next(3, status=503, path=METADATA_PATH)
    authenticator = make(identity, http_session, clock, sleep=gate, min_refresh_gap=timedelta(minutes=1))
    await authenticator.start()  # fails (1)
    for _ in range(3):
        (await gate.sleeping()).set_result(None)  # fails (2), (3), then succeeds
    await gate.sleeping()
    assert gate.delays == [60, 120, 240, 24 * 3600]  # back-off from min_refresh_gap, then the normal rhythm
    assert authenticator.key_ids
    await authenticator.close()


async def test_close_stops_the_background_task(identity, http_session, clock) -> None:
    gate = Gate()
    authenticator = make(identity, http_session, clock, sleep=gate)
    await authenticator.start()
    await gate.sleeping()
    task = authenticator._task
    await authenticator.close()
    assert task is not None and task.done()
    await authenticator.close()  # idempotent


async def test_an_app_id_is_required(http_session) -> None:
    with pytest.raises(ValueError):
        InboundAuthenticator(app_id="", session=http_session, metadata_url="http://127.0.0.1/x",
                             issuer=BOT_FRAMEWORK_ISSUER)


# -- a token seen before: its signature is not checked again, everything else is ---------------------------------


async def test_a_token_seen_before_skips_only_the_signature_check(auth, identity, clock, monkeypatch) -> None:
    header = f"Bearer {token(identity, clock, expires_in=3600)}"
    decodes = []
    real = auth._decode
    monkeypatch.setattr(auth, "_decode", lambda *a: decodes.append(1) or real(*a))
    for _ in range(3):
        await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    assert len(decodes) == 1
    # per activity: the service URL, the channel's endorsement, the time
    assert await reason(auth, header, service_url="https://evil.example/") == "serviceurl_mismatch"
    assert await reason(auth, header, channel_id="webchat") == "endorsement_mismatch"
    clock.advance(timedelta(hours=1, minutes=6))
    assert await reason(auth, header) == "expired"
    assert len(decodes) == 1


async def test_a_token_seen_before_stops_working_when_its_key_is_retired(auth, identity, clock) -> None:
    header = f"Bearer {token(identity, clock)}"
    await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    identity.rotate_key(retire_old=True)
    assert await auth.refresh() is True
    assert await reason(auth, header) == "unknown_kid"


async def test_a_refused_token_is_not_remembered(auth, identity, clock) -> None:
    good = token(identity, clock)
    head, payload, signature = good.split(".")
    forged = f"{head}.{payload}.{signature[:-6]}AAAAAA"
    for _ in range(2):
        assert await reason(auth, f"Bearer {forged}") == "bad_signature"


async def test_remembered_tokens_are_bounded(auth, identity, clock, monkeypatch) -> None:
    monkeypatch.setattr("bot.auth.VERIFIED_TOKENS_KEPT", 3)
    headers = [f"Bearer {token(identity, clock, expires_in=3600 + i)}" for i in range(5)]
    for header in headers:
        await auth.authenticate(header, service_url=SERVICE_URL, channel_id=CHANNEL)
    assert len(auth._verified) == 3
    assert set(auth._verified) == {h.split(" ", 1)[1] for h in headers[2:]}
