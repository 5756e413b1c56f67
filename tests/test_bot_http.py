"""The bot over HTTP, as Teams talks to it: the real aiohttp app, real TinyDB files, a fake Bot Connector on
loopback that records the replies, and (in the authenticated tests) real JWT validation against signing keys
served from a thread and outbound tokens from the real msal flow against a fake token endpoint."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bot.i18n import t
from storage import Role
from tests import teams
from tests.fakes.identity import FakeIdentity
from tests.http_chat import ADMIN, ALEX, MEGAN, READER, Chat

# ==== a conversation ============================================================================================

async def test_a_personal_chat_adds_funds_and_reads_the_balance(chat: Chat) -> None:
    assert "$0.00" in await chat.say("balance")
    assert await chat.say("add 250 Q3 top-up") == "Added $250.00. The balance is now $250.00."
    assert "$250.00" in await chat.say("balance")
    history = await chat.say("history")
    assert "Funds added" in history and "Q3 top-up" in history
    entries = await chat.ledger.history(teams.TENANT)
    assert [(e.amount, e.actor, e.memo) for e in entries] == [(25000, ADMIN, "Q3 top-up")]


async def test_a_channel_message_with_the_bots_mention_is_understood(chat: Chat) -> None:
    reply = await chat.say("add 10", scope="channel")
    assert reply == "Added $10.00. The balance is now $10.00."
    refs = await chat.ledger.conversations(teams.TENANT)
    assert [r.conversation_id for r in refs] == [teams.channel_id()]  # the channel, not the thread
    assert refs[0].reference["conversation"]["id"] == teams.conversation("channel")["id"]


async def test_the_conversation_reference_is_written_once_not_on_every_message(chat: Chat) -> None:
    """Each message carries a new activity id; the saved reference leaves it out (a proactive send drops it), so
    a conversation that did not change costs no write per turn."""
    await chat.say("balance", activity_id="first-message")
    [saved] = await chat.ledger.conversations(teams.TENANT)
    assert "activityId" not in saved.reference
    for n in range(3):
        await chat.say("balance", activity_id=f"later-{n}")
    assert await chat.ledger.conversations(teams.TENANT) == [saved]     # updated_at unchanged: never rewritten


async def test_a_group_chat_works_too(chat: Chat) -> None:
    assert "$0.00" in await chat.say("balance", scope="groupChat")


async def test_a_teams_retry_of_the_same_message_adds_nothing_twice(chat: Chat) -> None:
    first = await chat.say("add 25", activity_id="retry-me")
    again = await chat.say("add 25", activity_id="retry-me")
    assert first == "Added $25.00. The balance is now $25.00."
    assert again.startswith("That was already done")
    assert (await chat.ledger.get_account(teams.TENANT)).balance == 2500


async def test_auto_recharge_and_alert_thresholds_through_chat(chat: Chat) -> None:
    assert (await chat.say("recharge 50 below 20 cap 500")).startswith("Saved: $50.00 is added when the balance is below $20.00.")
    assert "$500.00" in await chat.say("recharge")
    assert "Auto-recharge is now off" in await chat.say("recharge off")
    assert (await chat.say("recharge on")).startswith("Auto-recharge is now on")
    assert "$100.00" in await chat.say("alerts 100, 25")
    settings = await chat.ledger.alert_settings(teams.TENANT)
    assert settings.thresholds == (10000, 2500)


async def test_bad_amounts_get_their_own_answer_and_change_nothing(chat: Chat) -> None:
    answers = {text: await chat.say(text) for text in
               ("add -5", "add 0", "add NaN", "add 1.234", "add 99999999999", "add €50", "add ١٢٣", "add 1,25,0")}
    assert len(set(answers.values())) == len(answers), answers     # each its own explanation
    for text, answer in answers.items():
        assert "Incident" not in answer and "Traceback" not in answer, (text, answer)
    assert (await chat.ledger.get_account(teams.TENANT)).balance == 0
    assert await chat.ledger.history(teams.TENANT) == await chat.ledger.history(teams.TENANT)
    assert len(await chat.ledger.history(teams.TENANT)) == 0


async def test_an_unknown_command_gets_the_closest_ones(chat: Chat) -> None:
    reply = await chat.say("balanse")
    assert "balance" in reply and "help" in reply


async def test_danish_users_get_danish_replies_and_danish_amounts(chat: Chat) -> None:
    assert "DKK" in await chat.say("currency DKK")
    reply = await chat.say("add 1.250,50 kr.", locale="da-DK")
    assert "1.250,50" in reply and "kr." in reply
    assert (await chat.ledger.get_account(teams.TENANT)).balance == 125050
    assert "Kommunikationskreditter" in await chat.say("saldo", locale="da-DK")


async def test_help_lists_the_commands(chat: Chat) -> None:
    reply = await chat.say("help")
    for name in ("balance", "add", "recharge", "alerts", "history", "usage", "forecast", "subscribe", "roles",
                 "grant", "revoke", "whoami", "currency"):
        assert name in reply


async def test_roles_are_granted_by_mention_and_the_reader_can_only_read(chat: Chat) -> None:
    chat.connector.members[MEGAN["id"]] = {"id": MEGAN["id"], "name": "Megan Bowen", "aadObjectId": READER}
    reply = await chat.say("grant <at>Megan Bowen</at> reader", scope="channel",
                           mentions=[{"id": MEGAN["id"], "name": "Megan Bowen"}])
    assert reply == "Megan Bowen now has the reader role."
    assert [(g.user_id, g.role) for g in await chat.ledger.roles(teams.TENANT)] == [(READER, Role.READER)]
    assert "$0.00" in await chat.say("balance", sender=MEGAN)
    assert await chat.say("add 5", sender=MEGAN) == t("denied.move_money", "en")
    assert len(await chat.ledger.history(teams.TENANT)) == 0
    assert "reader" in await chat.say("whoami", sender=MEGAN)


async def test_the_audit_trail_names_the_chat_user(chat: Chat) -> None:
    await chat.say("add 5")
    await chat.say("recharge 50 below 20")
    records = await chat.ledger.audit(teams.TENANT)
    assert {(r.action, r.actor) for r in records.items if r.action != "account_opened"} == \
        {("funds_added", ADMIN), ("recharge_settings", ADMIN)}


async def test_a_crash_is_answered_with_an_incident_id_and_never_the_exception(
        chat: Chat, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(tenant_id: str) -> Any:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(chat.ledger, "account_view", broken)   # every command reads it: a crash mid-command
    with caplog.at_level(logging.ERROR):
        reply = await chat.say("balance")
    assert "hunter2" not in reply and "RuntimeError" not in reply
    incident = reply.split("Incident id: ")[1].split(".")[0]
    assert any(incident in record.getMessage() for record in caplog.records)


async def test_installing_welcomes_once_and_subscribes_nothing(chat: Chat) -> None:
    url = chat.connector.service_url
    assert (await chat.post(teams.installation_update(service_url=url, sender=ALEX))).status == 200
    assert (await chat.post(teams.bot_added(service_url=url, sender=ALEX))).status == 200
    sent = chat.connector.activities()
    assert len(sent) == 1 and sent[0]["text"].startswith("Hi! I keep track")
    assert "subscribe" in sent[0]["text"]
    assert await chat.ledger.subscriptions(teams.TENANT) == []
    assert len(await chat.ledger.conversations(teams.TENANT)) == 1


async def test_subscribe_makes_the_channel_an_alert_destination(chat: Chat) -> None:
    reply = await chat.say("subscribe recharged, low_balance", scope="channel")
    assert reply.startswith("This conversation will get these alerts")
    subs = await chat.ledger.subscriptions(teams.TENANT)
    assert [(s.conversation_id, [k.value for k in s.kinds]) for s in subs] == \
        [(teams.channel_id(), ["recharged", "low_balance"])]
    assert "no longer" in await chat.say("unsubscribe", scope="channel")


# ==== refusals before any turn ==================================================================================

async def test_http_refusals_write_nothing(chat: Chat) -> None:
    url = chat.connector.service_url
    good = teams.message("add 5", service_url=url, sender=ALEX)
    cases = [
        (await chat.client.post("/api/messages", data=json.dumps(good), headers={"Content-Type": "text/plain"}), 415),
        (await chat.client.post("/api/messages", data="{not json", headers={"Content-Type": "application/json"}), 400),
        (await chat.post({**good, "conversation": None}), 400),
        (await chat.post({**good, "id": ""}), 400),
        (await chat.post({**good, "serviceUrl": "https://smba.trafficmanager.net/amer/"}), 400),  # local mode
        (await chat.post({**good, "text": "add 5" + " " * (300 * 1024)}), 413),
    ]
    assert [response.status for response, _ in cases] == [status for _, status in cases]
    assert await chat.ledger.tenants() == []
    assert chat.connector.activities() == []


# ==== authentication ============================================================================================

async def test_an_authenticated_conversation_replies_with_a_bot_framework_token(secure_chat: Chat,
                                                                                identity: FakeIdentity) -> None:
    assert await secure_chat.say("add 5") == "Added $5.00. The balance is now $5.00."
    reply_request = secure_chat.connector.requests[-1]
    assert reply_request.authorization in {f"Bearer {tok}" for tok in identity.issued_access_tokens}


@pytest.mark.parametrize("forgery", ["forged_signature", "expired", "wrong_audience", "wrong_serviceurl",
                                     "missing_header", "unknown_kid", "wrong_issuer", "not_bearer"])
async def test_every_authentication_failure_is_401_and_writes_nothing(secure_chat: Chat, identity: FakeIdentity,
                                                                      forgery: str) -> None:
    from tests.fakes.identity import new_rsa_key

    activity = teams.message("add 5", service_url=secure_chat.connector.service_url, sender=ALEX)
    mint = lambda **kw: identity.issue_token(app_id=teams.BOT_APP_ID, service_url=activity["serviceUrl"], **kw)
    header = {
        "forged_signature": lambda: f"Bearer {mint(signing_key=new_rsa_key())}",
        "expired": lambda: f"Bearer {mint(expires_in=-3600)}",
        "wrong_audience": lambda: f"Bearer {mint(audience='someone-else')}",
        "wrong_serviceurl": lambda: "Bearer " + identity.issue_token(app_id=teams.BOT_APP_ID,
                                                                     service_url="https://evil.example/amer/"),
        "missing_header": lambda: None,
        "unknown_kid": lambda: f"Bearer {mint(kid='not-a-published-kid', signing_key=new_rsa_key())}",
        "wrong_issuer": lambda: f"Bearer {mint(issuer='https://sts.example/')}",
        "not_bearer": lambda: f"Basic {mint()}",
    }[forgery]()
    headers = {"Content-Type": "application/json"} | ({"Authorization": header} if header else {})
    response = await secure_chat.client.post("/api/messages", data=json.dumps(activity), headers=headers)
    assert response.status == 401
    assert "Traceback" not in await response.text()
    assert await secure_chat.ledger.tenants() == []
    assert secure_chat.connector.activities() == []


async def test_one_token_request_per_token_lifetime_over_200_turns(secure_chat: Chat, identity: FakeIdentity) -> None:
    senders = [ALEX] + [teams.user(f"aad-user-{n}", f"User {n}") for n in range(9)]   # within each one's rate limit
    for i in range(200):
        await secure_chat.say("balance", activity_id=f"turn-{i}", sender=senders[i % len(senders)])
    assert identity.token_requests() == 1
    assert len(secure_chat.connector.peers()) == 1          # every reply over one pooled connection


# ==== typed commands continue as cards ==========================================================================

async def _reply_activity(chat: Chat, text: str, sender: dict[str, Any] = ALEX) -> dict[str, Any]:
    await chat.say(text, sender=sender)
    return chat.connector.activities()[-1]


def _verbs(activity: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.add(node["verb"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(activity.get("attachments") or [])
    return found


async def test_reading_commands_bring_the_card_that_continues_from_them(chat: Chat) -> None:
    assert {"add_funds.open", "recharge.open", "history.page"} <= _verbs(await _reply_activity(chat, "balance"))
    assert "recharge.save" in _verbs(await _reply_activity(chat, "recharge"))
    assert "alerts.save" in _verbs(await _reply_activity(chat, "alerts"))
    assert "roles.grant" in _verbs(await _reply_activity(chat, "roles"))
    assert {"balance", "add_funds.open", "roles.open"} <= _verbs(await _reply_activity(chat, "help"))
    me = await _reply_activity(chat, "whoami")
    assert "roles.grant" in _verbs(me) and ADMIN in json.dumps(me["attachments"])


async def test_a_reader_gets_no_settings_form(chat: Chat) -> None:
    await chat.say(f"grant {READER} reader")
    assert _verbs(await _reply_activity(chat, "recharge", sender=MEGAN)) == set()
    assert "add_funds.open" in _verbs(await _reply_activity(chat, "balance", sender=MEGAN))  # checked when pressed
