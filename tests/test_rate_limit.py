"""The per-user rate limit (`CREDITS_RATE_LIMIT`, `bot/rate_limit.py`): through the real app on both backends,
with the app's clock a `FakeClock` that only the test moves (no sleeps), and the limiter's own rules below.

A refused command changes nothing and gets one polite answer per run of refusals (saying when to try again);
the rest of a flood is dropped silently, Teams still getting 200 (an invoke: its error answer, every time).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from bot.i18n import t
from bot.rate_limit import DEFAULT_RATE_LIMIT, MAX_USERS, RateLimit, RateLimiter, parse_rate_limit
from bot.settings import Settings, SettingsError
from storage.clock import FakeClock
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import ALEX, MEGAN, READER, Chat, settings_for, store_for


class Limited:
    def __init__(self, chat: Chat, clock: FakeClock) -> None:
        self.chat = chat
        self.clock = clock

    async def send(self, text: str, *, sender: dict[str, Any] = ALEX, **kwargs: Any) -> list[str]:
        """Send a message; return the texts of the replies to it (none when the limit dropped it)."""
        activity = teams.message(text, service_url=self.chat.connector.service_url, sender=sender, **kwargs)
        before = len(self.chat.connector.activities())
        response = await self.chat.post(activity)
        assert response.status == 200, await response.text()
        return [a.get("text") or "" for a in self.chat.connector.activities()[before:]]

    async def press(self, verb: str, data: dict[str, Any], *, sender: dict[str, Any] = ALEX) -> dict[str, Any]:
        activity = teams.message("", service_url=self.chat.connector.service_url, sender=sender)
        activity.pop("text")
        activity.update(type="invoke", name="adaptiveCard/action",
                        value={"action": {"type": "Action.Execute", "verb": verb, "data": {"verb": verb, **data}}})
        response = await self.chat.post(activity)
        assert response.status == 200, await response.text()
        return await response.json()

    async def balance(self) -> int:
        return (await self.chat.ledger.get_account(teams.TENANT)).balance


async def limited_app(backend: str, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any,
                      limit: str | None) -> Limited:
    clock = FakeClock()
    store = await store_for(backend, tmp_path)
    extra = {"CREDITS_RATE_LIMIT": limit} if limit is not None else {}
    settings = settings_for(tmp_path, CREDITS_STORE=store, **extra)
    client = await aiohttp_client(create_app(settings, clock=clock, background=False))
    return Limited(Chat(client, fake_connector), clock)


@pytest.fixture(params=["tinydb", "postgres"])
async def bot(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> Limited:
    """Three commands a minute: a burst of three, then one every 20 seconds."""
    return await limited_app(request.param, tmp_path, fake_connector, aiohttp_client, "3/min")


def slow_down(wait: str, language: str = "en") -> str:
    return t("rate_limit.slow_down", language, wait=wait)


# ==== through the app ==============================================================================================

async def test_a_flood_gets_one_polite_answer_and_changes_nothing(bot: Limited) -> None:
    assert (await bot.send("add 1"))[0].startswith("Added")
    assert (await bot.send("add 1"))[0].startswith("Added")
    assert (await bot.send("balance"))[0].startswith("Communications Credits balance: $2.00")
    assert await bot.send("add 100") == [slow_down("20 seconds")]     # refused: said once, with the wait
    for _ in range(20):
        assert await bot.send("add 100") == []                          # the rest of the flood: dropped
    assert await bot.balance() == 200
    assert len((await bot.chat.ledger.history(teams.TENANT)).items) == 2


async def test_when_the_window_frees_commands_work_again_and_a_new_flood_is_told_again(bot: Limited) -> None:
    for _ in range(3):
        await bot.send("balance")
    assert await bot.send("balance") == [slow_down("20 seconds")]
    bot.clock.advance(seconds=10)
    assert await bot.send("balance") == []                              # still waiting: silent
    bot.clock.advance(seconds=10)                                       # one command's worth has come back
    assert (await bot.send("add 5"))[0].startswith("Added")
    assert await bot.send("add 5") == [slow_down("20 seconds")]        # a new run of refusals: told again
    bot.clock.advance(minutes=1)                                        # a full bucket again: three at once
    for _ in range(3):
        assert (await bot.send("add 5"))[0].startswith("Added")
    assert await bot.balance() == 2000


async def test_the_limit_is_per_user_and_per_tenant(bot: Limited) -> None:
    await bot.send(f"grant {READER} reader")
    for _ in range(2):
        await bot.send("balance")
    assert await bot.send("balance") == [slow_down("20 seconds")]
    assert (await bot.send("balance", sender=MEGAN))[0].startswith("Communications Credits")   # another user
    other = await bot.send("balance", tenant=teams.OTHER_TENANT, conversation_suffix="other")   # same id,
    assert other[0].startswith("Communications Credits")                                         # other tenant


async def test_card_actions_count_and_an_invoke_is_always_answered(bot: Limited) -> None:
    await bot.send("balance")
    body = await bot.press("add_funds.confirm", {"nonce": "n" * 22, "amount": "5", "memo": ""})
    assert body["type"] == "application/vnd.microsoft.card.adaptive"
    await bot.send("balance")
    for _ in range(3):   # every press of a refused user gets the refusal: an invoke must be answered
        refused = await bot.press("add_funds.confirm", {"nonce": "m" * 22, "amount": "7", "memo": ""})
        assert refused == {"statusCode": 429, "type": "application/vnd.microsoft.error",
                           "value": {"code": "TooManyRequests", "message": slow_down("20 seconds")}}
    assert await bot.balance() == 500
    bot.clock.advance(seconds=20)
    body = await bot.press("add_funds.confirm", {"nonce": "m" * 22, "amount": "7", "memo": ""})
    assert body["type"] == "application/vnd.microsoft.card.adaptive"   # the refused press left its key free
    assert await bot.balance() == 1200


async def test_action_submit_counts_as_a_message(bot: Limited) -> None:
    for _ in range(3):
        await bot.send("balance")
    activity = teams.message("", service_url=bot.chat.connector.service_url, sender=ALEX)
    activity.pop("text")
    activity.update(value={"verb": "add_funds.confirm", "nonce": "s" * 22, "amount": "9", "memo": ""},
                    replyToId="card-1")
    before = len(bot.chat.connector.activities())
    assert (await bot.chat.post(activity)).status == 200
    assert [a["text"] for a in bot.chat.connector.activities()[before:]] == [slow_down("20 seconds")]
    assert await bot.balance() == 0


async def test_installing_the_bot_is_not_limited(bot: Limited) -> None:
    for _ in range(4):
        await bot.send("balance")
    response = await bot.chat.post(teams.installation_update(service_url=bot.chat.connector.service_url,
                                                             sender=ALEX, scope="groupChat"))
    assert response.status == 200
    assert bot.chat.connector.activities()[-1]["text"].startswith("Hi! I keep track")


async def test_the_answer_is_in_the_users_language(bot: Limited) -> None:
    for _ in range(3):
        await bot.send("saldo", locale="da-DK")
    assert await bot.send("saldo", locale="da-DK") == [slow_down("20 sekunder", "da")]


async def test_an_hourly_limit_says_minutes(tmp_path: Path, fake_connector: FakeConnector,
                                            aiohttp_client: Any) -> None:
    bot = await limited_app("tinydb", tmp_path, fake_connector, aiohttp_client, "2/h")
    await bot.send("balance")
    await bot.send("balance")
    assert await bot.send("balance") == [slow_down("30 minutes")]
    bot.clock.advance(minutes=29, seconds=59)
    assert await bot.send("balance") == []
    bot.clock.advance(seconds=1)
    assert (await bot.send("balance"))[0].startswith("Communications Credits")


def test_how_long_to_wait_reads_well() -> None:
    from bot.actions import Actions
    actions = Actions(None, bootstrap_admins=(), default_currency="USD", fallback_locale="en-US")  # type: ignore
    said = {seconds: actions.slow_down_text("en-US", timedelta(seconds=seconds)) for seconds in (1, 2, 119, 120, 121)}
    assert said == {1: slow_down("1 second"), 2: slow_down("2 seconds"), 119: slow_down("119 seconds"),
                    120: slow_down("2 minutes"), 121: slow_down("3 minutes")}
    assert actions.slow_down_text("da-DK", timedelta(seconds=1)) == slow_down("1 sekund", "da")


async def test_zero_turns_the_limit_off(tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> None:
    bot = await limited_app("tinydb", tmp_path, fake_connector, aiohttp_client, "0")
    for _ in range(40):   # more than the default's burst of 30
        assert (await bot.send("balance"))[0].startswith("Communications Credits")


async def test_the_default_is_30_a_minute(tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> None:
    bot = await limited_app("tinydb", tmp_path, fake_connector, aiohttp_client, None)
    for _ in range(30):
        assert (await bot.send("balance"))[0].startswith("Communications Credits")
    assert await bot.send("balance") == [slow_down("2 seconds")]


# ==== the setting ==================================================================================================

@pytest.mark.parametrize("text, limit", [
    ("30/min", RateLimit(30, 60)), ("2/s", RateLimit(2, 1)), ("100/h", RateLimit(100, 3600)),
    (" 5 / Minute ", RateLimit(5, 60)), ("1/sec", RateLimit(1, 1)), ("7/hour", RateLimit(7, 3600)),
    ("0", None), ("0/min", None),
])
def test_parse_rate_limit(text: str, limit: RateLimit | None) -> None:
    assert parse_rate_limit(text) == limit
    assert Settings.from_env({"CREDITS_RATE_LIMIT": text}).rate_limit == limit


@pytest.mark.parametrize("text", ["30", "x", "-1/min", "1/day", "1.5/min", "30/min/h", "/min", "1e3/min",
                                  "３０/min"])
def test_a_malformed_rate_limit_is_a_settings_error(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CREDITS_RATE_LIMIT": text})
    assert [p.split(":")[0] for p in caught.value.problems] == ["CREDITS_RATE_LIMIT"]


def test_the_default_setting() -> None:
    assert Settings.from_env({}).rate_limit == parse_rate_limit(DEFAULT_RATE_LIMIT) == RateLimit(30, 60)
    assert Settings.from_env({"CREDITS_RATE_LIMIT": ""}).rate_limit == RateLimit(30, 60)   # empty is unset


# ==== the limiter ==================================================================================================

def test_the_run_of_refusals_ends_only_with_an_allowed_command() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(1, 60), clock=clock)
    assert limiter.check("a").allowed
    first = limiter.check("a")
    assert (first.allowed, first.notify, first.retry_after) == (False, True, timedelta(seconds=60))
    clock.advance(seconds=59)
    again = limiter.check("a")
    assert (again.allowed, again.notify, again.retry_after) == (False, False, timedelta(seconds=1))
    clock.advance(seconds=1)
    assert limiter.check("a").allowed
    assert limiter.check("a").notify                                    # a new run: told again


def test_a_burst_then_the_steady_rate_exactly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(30, 60), clock=clock)
    assert all(limiter.check("a").allowed for _ in range(30))
    assert not limiter.check("a").allowed
    allowed = 0
    for _ in range(600):                      # ten minutes, a check every second: one in two goes through
        clock.advance(seconds=1)
        allowed += limiter.check("a").allowed
    assert allowed == 300


def test_refused_checks_do_not_use_up_the_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(2, 60), clock=clock)
    limiter.check("a"), limiter.check("a")
    for _ in range(1000):
        assert not limiter.check("a").allowed
    clock.advance(seconds=30)
    assert limiter.check("a").allowed


def test_a_clock_that_steps_back_refills_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(1, 60), clock=clock)
    assert limiter.check("a").allowed
    clock.advance(hours=-5)
    assert not limiter.check("a").allowed
    clock.advance(hours=5, seconds=59)
    assert not limiter.check("a").allowed
    clock.advance(seconds=1)
    assert limiter.check("a").allowed


def test_idle_users_are_forgotten() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(1, 60), clock=clock)     # a bucket is full again a minute after its use
    for user in range(500):
        limiter.check(("t", str(user)))
    assert len(limiter) == 500
    clock.advance(seconds=59)
    limiter.check(("t", "someone"))
    assert len(limiter) == 501                  # not yet full again: still remembered
    clock.advance(seconds=1)                    # everyone's bucket is full again: the same as no bucket
    limiter.check(("t", "someone else"))
    assert len(limiter) == 2


def test_memory_is_bounded_under_a_flood_of_senders_and_fails_open() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(1, 3600), clock=clock, max_users=100)
    assert limiter.check("victim").allowed
    assert not limiter.check("victim").allowed
    for user in range(10_000):
        limiter.check(user)
        assert len(limiter) <= 100
    assert limiter.check("victim").allowed      # forgotten: a fresh bucket (open, never closed)
    assert MAX_USERS >= 1000


def test_no_limit_remembers_nobody() -> None:
    limiter = RateLimiter(None)
    assert all(limiter.check(n).allowed for n in range(1000))
    assert len(limiter) == 0
