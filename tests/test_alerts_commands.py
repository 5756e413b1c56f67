"""`alerts` over HTTP, as admins read it: where alerts go (disabled destinations with their reason, by friendly
names), the hint that some alerts could not be delivered, and `alerts failed`, which lists them.

Dead alerts are made the way the notifier makes them: a threshold is crossed so the ledger queues an alert, then
the outbox is driven directly (claim, release with an error and a retry time already passed) until the alert has
used every attempt. The notifier's own loop is off (`background=False`), so nothing races these tests.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import cards
from cards.admin import short_id
from bot.app import create_app
from bot.commands import help_text
from bot.context import Voice
from bot.i18n import format_date, place_name, t
from storage import Alert, AlertKind, AlertStatus, Role, Subscription, UsageRecord
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import ADMIN, ALEX, MEGAN, READER, Chat, settings_for, store_for

GONE = "Teams answered 403: the bot is no longer in this conversation"
WORKER = "test-worker"


@pytest.fixture(params=["tinydb", "postgres"])
async def chat(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> Chat:
    """The real app in local mode, with its notifier and daily jobs stopped: the tests drive the outbox."""
    store = await store_for(request.param, tmp_path)
    client = await aiohttp_client(create_app(settings_for(tmp_path, CREDITS_STORE=store), background=False))
    chat = Chat(client, fake_connector)
    await chat.say(f"grant {READER} reader")
    return chat


async def say_named(chat: Chat, text: str, *, scope: str, name: str, sender: dict[str, Any] = ALEX,
                    locale: str = "en-US") -> dict[str, Any]:
    """Send a message in a conversation that has a name (a named channel or group chat); return the reply."""
    activity = teams.message(text, service_url=chat.connector.service_url, sender=sender, scope=scope,
                             locale=locale)
    activity["conversation"]["name"] = name
    before = len(chat.connector.activities())
    response = await chat.post(activity)
    assert response.status == 200, await response.text()
    replies = chat.connector.activities()[before:]
    assert len(replies) == 1, replies
    return replies[0]


async def open_card(chat: Chat, verb: str, *, scope: str = "personal") -> dict[str, Any]:
    """Press a card button (Action.Execute) that opens a card; return the card of the answer."""
    base = teams.message("", service_url=chat.connector.service_url, sender=ALEX, scope=scope)
    activity = {**base, "type": "invoke", "name": "adaptiveCard/action",
                "value": {"action": {"type": "Action.Execute", "verb": verb, "data": {}}, "trigger": "manual"}}
    activity.pop("text", None)
    response = await chat.post(activity)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["statusCode"] == 200, body
    return body["value"]


async def cross_threshold(chat: Chat, n: int = 1) -> None:
    """Queue `n` low-balance alerts: with a threshold of $100, drop from $150 to $50 (and back), `n` times."""
    assert "$100.00" in await chat.say("alerts 100")
    await chat.ledger.adjust(teams.TENANT, 5000, actor=ADMIN, key="test-credit")
    for i in range(n):
        await chat.ledger.adjust(teams.TENANT, 10000, actor=ADMIN, key=f"test-credit-{i}")
        await chat.ledger.adjust(teams.TENANT, -10000, actor=ADMIN, key=f"test-debit-{i}")


async def kill_pending(chat: Chat, error: str = "HTTP 500: Internal Server Error") -> list[Alert]:
    """Fail every pending alert until the ledger gives up on it; the dead alerts, newest first."""
    for _ in range(1000):
        claimed = await chat.ledger.claim_alerts(WORKER, lease=timedelta(minutes=1), limit=50)
        if not claimed:
            break
        for alert in claimed:
            await chat.ledger.release_alert(alert.alert_id, worker=WORKER, error=error,
                                            retry_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert await chat.ledger.alerts(teams.TENANT, status=AlertStatus.PENDING) == []
    dead = await chat.ledger.alerts(teams.TENANT, status=AlertStatus.DEAD, limit=100)
    assert dead
    return dead


# ==== alerts failed =============================================================================================

async def test_no_failed_alert_is_said_plainly(chat: Chat) -> None:
    assert await chat.say("alerts failed") == \
        "No alert has failed: every alert was delivered or is still being retried."
    # a delivered alert is not a failed one
    await say_named(chat, "subscribe low_balance", scope="channel", name="Finance")
    await cross_threshold(chat)
    [alert] = await chat.ledger.claim_alerts(WORKER, lease=timedelta(minutes=1))
    await chat.ledger.mark_delivered(alert.alert_id, teams.channel_id(), worker=WORKER)
    assert (await chat.say("alerts failed")).startswith("No alert has failed")


async def test_failed_alerts_say_what_when_how_often_where_and_why(chat: Chat) -> None:
    await say_named(chat, "subscribe low_balance", scope="channel", name="Finance")
    await chat.say("subscribe")                                  # Alex's personal chat with the bot
    await cross_threshold(chat)
    [dead] = await kill_pending(chat, error="HTTP 500: " + "x" * 400)
    assert dead.attempts == 12 and set(dead.pending_destinations) == {teams.channel_id(), "a:1personal-1"}

    reply = await chat.say("alerts failed", scope="groupChat")   # neither destination is "this conversation"
    lines = reply.split("\n\n")
    assert lines[0] == "1 alert could not be delivered:"
    date = format_date(dead.created_at, "en-US")
    assert lines[1].startswith(f"- Low balance, raised {date} (attempts: 12). Not delivered to: ")
    assert "channel Finance" in lines[1] and "Alex Wilber's personal chat" in lines[1]
    assert teams.channel_id() not in reply and "a:1personal-1" not in reply
    error = lines[1].split("Last error: ")[1]
    assert error.startswith("HTTP 500: xxx") and error.endswith("\u2026") and len(error) == 200
    assert lines[-1].startswith("I no longer try to send these.")

    # in the personal chat that one is "this conversation"
    assert "this conversation" in await chat.say("alerts failed")
    # the command reads and changes nothing: thresholds are not amounts "failed"
    assert (await chat.ledger.alert_settings(teams.TENANT)).thresholds == (10000,)


async def test_failed_alerts_are_listed_newest_first_and_at_most_twenty(chat: Chat) -> None:
    await chat.say("subscribe")
    await cross_threshold(chat, 21)
    await chat.ledger.adjust(teams.TENANT, 1000, actor=ADMIN, key="test-credit-last")
    await chat.ledger.record_usage(teams.TENANT, UsageRecord("row-1", 7000, "USD", datetime.now(timezone.utc)))
    dead = await kill_pending(chat)
    assert len(dead) == 22 and dead[0].kind is AlertKind.EXHAUSTED

    reply = await chat.say("alerts failed")
    items = [line for line in reply.split("\n\n") if line.startswith("- ")]
    assert reply.startswith("More than 20 alerts could not be delivered; the 20 newest:")
    assert len(items) == 20
    assert items[0].startswith("- Balance used up, raised ")
    assert all(item.startswith("- Low balance, raised ") for item in items[1:])
    assert "1 alert" not in reply


async def test_alerts_failed_is_never_read_as_amounts(chat: Chat) -> None:
    await chat.say("alerts 100")
    before = await chat.ledger.alert_settings(teams.TENANT)
    for text in ("alerts failed", "alerts FAILED", "advarsler fejlede"):
        reply = await chat.say(text)
        assert "amount" not in reply and "Saved" not in reply, (text, reply)
    assert await chat.say("alerts failed 5") == t("parse.usage", "en", command="alerts", usage="alerts failed")
    assert await chat.ledger.alert_settings(teams.TENANT) == before
    assert (await chat.say("alerts off")).startswith("Saved. There are no low-balance alerts now.")


async def test_a_reader_may_not_list_failed_alerts_and_gets_no_hint(chat: Chat) -> None:
    await chat.say("subscribe")
    await cross_threshold(chat)
    await kill_pending(chat)
    assert await chat.say("alerts failed", sender=MEGAN) == t("denied.manage_subscriptions", "en")
    reader = await chat.say("alerts", sender=MEGAN)
    assert "could not be delivered" not in reader and "alerts failed" not in reader
    assert "Low-balance alerts when the balance falls below: $100.00." in reader
    admin = await chat.say("alerts")
    assert admin.split("\n\n")[-1] == "1 alert could not be delivered: type `alerts failed` to see why."


async def test_the_hint_counts_the_failed_alerts(chat: Chat) -> None:
    await chat.say("subscribe")
    assert "could not be delivered" not in await chat.say("alerts")
    await cross_threshold(chat, 3)
    await kill_pending(chat)
    reply = await chat.say("alerts")
    assert "3 alerts could not be delivered: type `alerts failed` to see why." in reply
    assert (await chat.say("alerts failed")).startswith("3 alerts could not be delivered (newest first):")


# ==== where alerts go ===========================================================================================

async def test_destinations_have_friendly_names(chat: Chat) -> None:
    await say_named(chat, "subscribe low_balance", scope="channel", name="Finance")
    await say_named(chat, "subscribe exhausted", scope="groupChat", name="Budget owners")
    reply = await chat.say("alerts")                             # in Alex's personal chat
    assert "Alerts go to: channel Finance (low balance); group chat Budget owners (balance used up)." in reply
    assert teams.channel_id() not in reply
    # in the channel itself, the channel is "this conversation"
    here = (await say_named(chat, "alerts", scope="channel", name="Finance"))["text"]
    assert "this conversation (low balance)" in here and "channel Finance" not in here


async def test_a_disabled_destination_is_shown_with_its_reason(chat: Chat) -> None:
    await say_named(chat, "subscribe", scope="channel", name="General")
    await chat.say("subscribe low_balance")
    await chat.ledger.disable_subscription(teams.TENANT, teams.channel_id(), reason=GONE)

    reply = await chat.say("alerts")
    assert "Alerts go to: this conversation (low balance)." in reply
    assert f"Disabled: channel General — {GONE}. An admin can type `subscribe` there again after adding the " \
           "bot back." in reply
    # readers see where alerts go, and what is off, too
    assert f"Disabled: channel General — {GONE}." in await chat.say("alerts", sender=MEGAN)
    # typed in the disabled conversation itself
    here = (await say_named(chat, "alerts", scope="channel", name="General"))["text"]
    assert f"Disabled: this conversation — {GONE}. An admin can type `subscribe` here to get alerts again." \
        in here
    # and subscribing there again enables it
    await say_named(chat, "subscribe", scope="channel", name="General")
    assert "Disabled" not in await chat.say("alerts")


async def test_a_disabled_destination_without_a_reason_or_a_reference(chat: Chat) -> None:
    await chat.ledger.subscribe(teams.TENANT, "19:unknown@thread.v2", [AlertKind.LOW_BALANCE], actor=ADMIN,
                                key="test-subscribe")
    reply = await chat.say("alerts")
    assert "Alerts go to: 19:unknown@thread.v2 (low balance)." in reply   # no reference: the id is all we have
    await chat.ledger.disable_subscription(teams.TENANT, "19:unknown@thread.v2", reason="")
    assert "Disabled: 19:unknown@thread.v2. An admin can type `subscribe` there again after adding the bot " \
           "back." in await chat.say("alerts")
    assert "No conversation gets alerts yet." in await chat.say("alerts")


async def test_the_subscriptions_card_names_conversations_too(chat: Chat) -> None:
    await say_named(chat, "subscribe", scope="channel", name="Finance")
    await chat.ledger.disable_subscription(teams.TENANT, teams.channel_id(), reason=GONE)
    await chat.say("subscribe low_balance")
    shown = json.dumps(await open_card(chat, "subscriptions.open"), ensure_ascii=False)
    assert "channel Finance" in shown and "this conversation" in shown and GONE in shown
    assert "19:channel" not in shown


# ==== help, welcome and Danish ==================================================================================

async def test_help_lists_alerts_failed_for_admins_only(chat: Chat) -> None:
    admin = await chat.say("help")
    assert "- `alerts failed`: List the alerts that could not be delivered, and why" in admin
    reader = await chat.say("help", sender=MEGAN)
    assert "`alerts failed`" not in reader and "`alerts`" in reader
    assert "`alerts failed`" in help_text("da", role=Role.ADMIN)
    assert "Vis de advarsler, der ikke kunne leveres, og hvorfor" in help_text("da", role=Role.ADMIN)


async def test_the_welcome_says_how_alerts_are_subscribed(chat: Chat) -> None:
    url = chat.connector.service_url
    before = len(chat.connector.activities())
    installed = teams.installation_update(service_url=url, sender=ALEX, tenant=teams.OTHER_TENANT)
    assert (await chat.post(installed)).status == 200
    [welcome] = chat.connector.activities()[before:]
    text = welcome["text"]
    assert text.startswith("Hi! I keep track")
    assert "No alerts are sent anywhere yet: an admin types `subscribe` in the channel or chat" in text
    assert "(`subscribe low_balance recharged` for some kinds only), or in their personal chat with me" in text
    danish = t("welcome", "da")
    assert "en administrator skriver `subscribe`" in danish
    assert "`subscribe low_balance recharged`" in danish and "personlige chat med mig" in danish
    # and an admin may subscribe in the personal chat, as the welcome says
    assert (await chat.say("subscribe")).startswith("This conversation will get these alerts")
    assert [s.conversation_id for s in await chat.ledger.subscriptions(teams.TENANT)] == ["a:1personal-1"]


async def test_danish(chat: Chat) -> None:
    assert await chat.say("advarsler fejlede", locale="da-DK") == t("alerts.failed_none", "da")
    await say_named(chat, "subscribe", scope="channel", name="Økonomi", locale="da-DK")
    await chat.say("subscribe low_balance", locale="da-DK")
    await cross_threshold(chat)
    [dead] = await kill_pending(chat)
    await chat.ledger.disable_subscription(teams.TENANT, teams.channel_id(), reason=GONE)

    reply = await chat.say("advarsler fejlede", locale="da-DK")
    assert reply.startswith("1 advarsel kunne ikke leveres:")
    assert f"- Lav saldo, opstået {format_date(dead.created_at, 'da-DK')} (forsøg: 12). Ikke leveret til: " \
           "kanalen Økonomi og denne samtale." in reply
    assert "Seneste fejl: HTTP 500: Internal Server Error" in reply

    reading = await chat.say("advarsler", locale="da-DK")
    assert "Advarsler sendes til: denne samtale (lav saldo)." in reading
    assert "Slået fra: kanalen Økonomi — Teams svarede 403: boten er ikke længere med i denne samtale. En " \
           "administrator kan skrive `subscribe` dér igen" in reading
    assert "1 advarsel kunne ikke leveres: skriv `alerts failed` for at se hvorfor." in reading
    assert await chat.say("alerts failed", sender=MEGAN, locale="da-DK") == \
        t("denied.manage_subscriptions", "da")


# ==== place names (pure) ========================================================================================

def _ref(scope: str, name: str | None = None, user: str | None = None) -> dict[str, Any]:
    conversation: dict[str, Any] = {"id": "c-1", "conversationType": scope}
    if name is not None:
        conversation["name"] = name
    return {"conversation": conversation, "user": {"id": "29:1", "name": user} if user else {"id": "29:1"},
            "serviceUrl": "https://smba.example/", "locale": "en-US"}


@pytest.mark.parametrize("reference,en,da", [
    (_ref("channel", "General"), "channel General", "kanalen General"),
    (_ref("channel"), "a channel", "en kanal"),
    (_ref("channel", "  "), "a channel", "en kanal"),
    (_ref("groupChat", "Budget owners"), "group chat Budget owners", "gruppechatten Budget owners"),
    (_ref("groupChat"), "a group chat", "en gruppechat"),
    (_ref("personal", user="Alex Wilber"), "Alex Wilber's personal chat", "den personlige chat med Alex Wilber"),
    (_ref("personal"), "a personal chat", "en personlig chat"),
    (None, "c-1", "c-1"),
])
def test_place_name(reference: dict[str, Any] | None, en: str, da: str) -> None:
    assert place_name("c-1", reference, "en") == en
    assert place_name("c-1", reference, "da") == da
    assert place_name("c-1", reference, "en", current="c-1") == "this conversation"
    assert place_name("c-1", reference, "da", current="c-1") == "denne samtale"


def test_the_subscriptions_card_takes_names_from_the_caller() -> None:
    texts = Voice("en", "en-US", "USD")
    now = datetime(2026, 3, 5, tzinfo=timezone.utc)
    subs = [Subscription("19:long-channel-id-0123456789@thread.tacv2", (AlertKind.LOW_BALANCE,), ADMIN, now),
            Subscription("19:other-0123456789abcdef@thread.v2", (AlertKind.EXHAUSTED,), ADMIN, now)]
    named = str(cards.subscriptions_card(texts, conversation_id="here", subscriptions=subs, nonce="n" * 16,
                                         basis="b", places={subs[0].conversation_id: "channel Finance"}))
    assert "channel Finance" in named and "19:long-channel" not in named
    assert short_id(subs[1].conversation_id) in named            # no name: the shortened id, as before


def test_the_reason_the_notifier_stores_is_recognised_for_translation() -> None:
    from bot.notifier import removed_reason, removed_status
    assert removed_reason(403) == GONE
    assert [removed_status(removed_reason(s)) for s in (403, 404)] == [403, 404]
    assert removed_status("the admin turned it off") is None
    assert removed_status(GONE + " and more") is None
