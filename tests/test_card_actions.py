"""Card buttons over HTTP, both ways Teams sends them: Action.Execute (an `adaptiveCard/action` invoke answered
with the card that replaces the pressed one) and Action.Submit (a message whose `value` is the data plus the
inputs; the bot replies and replaces the original card). Nothing happens twice; stale and tampered cards
change nothing."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from bot.card_actions import CardActions
from bot.i18n import t
from cards.verbs import VERBS
from tests import teams
from tests.http_chat import ALEX, MEGAN, READER, Chat

_ids = iter(range(1, 10**6))


def actions_of(card: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every Action.Execute in a card, wherever it sits."""
    if isinstance(card, dict):
        if card.get("type") == "Action.Execute":
            yield card
        for value in card.values():
            yield from actions_of(value)
    elif isinstance(card, list):
        for item in card:
            yield from actions_of(item)


def button(card: dict[str, Any], verb: str) -> dict[str, Any]:
    found = [a for a in actions_of(card) if a["verb"] == verb]
    assert found, f"no {verb} button in {json.dumps(card)[:300]}"
    return dict(found[0]["data"])


async def execute(chat: Chat, verb: str, data: dict[str, Any], *, sender: dict[str, Any] = ALEX,
                  scope: str = "personal") -> dict[str, Any]:
    """Press a button with Action.Execute; return the invoke answer's body ({statusCode, type, value})."""
    base = teams.message("", service_url=chat.connector.service_url, sender=sender, scope=scope)
    activity = {**base, "type": "invoke", "name": "adaptiveCard/action", "id": f"invoke-{next(_ids)}",
                "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"}}
    activity.pop("text", None)
    response = await chat.post(activity)
    assert response.status == 200, await response.text()
    return await response.json()


async def card_of(chat: Chat, verb: str, data: dict[str, Any], **kw: Any) -> dict[str, Any]:
    body = await execute(chat, verb, data, **kw)
    assert body["statusCode"] == 200 and body["type"] == "application/vnd.microsoft.card.adaptive", body
    return body["value"]


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card, ensure_ascii=False)


async def balance(chat: Chat) -> int:
    return (await chat.ledger.get_account(teams.TENANT)).balance


async def audit_size(chat: Chat) -> int:
    return len((await chat.ledger.audit(teams.TENANT, limit=500)).items)


async def opened(chat: Chat) -> None:
    await chat.say("balance")  # first contact opens the account


# ==== Action.Execute ============================================================================================

async def test_every_verb_has_a_handler_and_every_handler_a_verb() -> None:
    handlers = CardActions(ledger=None).verbs  # type: ignore[arg-type]
    assert handlers == set(VERBS)


async def test_add_funds_through_the_cards_adds_once_however_often_confirm_is_pressed(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "add_funds.open", {"verb": "add_funds.open"})
    review = {**button(form, "add_funds.review"), "amount": "250.50", "memo": "Q3 top-up"}
    confirmation = await card_of(chat, "add_funds.review", review)
    assert "$250.50" in card_text(confirmation)
    confirm = button(confirmation, "add_funds.confirm")
    receipt = await card_of(chat, "add_funds.confirm", confirm)
    assert await balance(chat) == 25050
    again = await card_of(chat, "add_funds.confirm", confirm)              # a double click
    also = await card_of(chat, "add_funds.confirm", button(await card_of(chat, "add_funds.review", review),
                                                           "add_funds.confirm"))   # a second review, same nonce
    assert await balance(chat) == 25050
    assert card_text(receipt) != card_text(again)                           # the repeat says it was a repeat
    assert [e.memo for e in await chat.ledger.history(teams.TENANT)] == ["Q3 top-up"]
    assert also["type"] == "AdaptiveCard"


async def test_a_bad_amount_on_the_form_comes_back_with_the_reason(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "add_funds.open", {"verb": "add_funds.open"})
    for amount, needle in (("-5", "negative"), ("0", "more than zero"), ("12.345", "decimals"),
                           ("99999999999", "largest"), ("abc", "can't read"), ("", "give an amount")):
        answer = await card_of(chat, "add_funds.review", {**button(form, "add_funds.review"), "amount": amount})
        assert needle in card_text(answer), (amount, card_text(answer)[:400])
        assert any(a["verb"] == "add_funds.review" for a in actions_of(answer))   # the form again
    assert await balance(chat) == 0


@pytest.mark.parametrize("tampered", [
    {"amount": "-100"}, {"amount": "1e9"}, {"amount": ["100"]}, {"amount": {"v": 1}}, {"amount": True},
    {"amount": "100", "memo": 42}, {"amount": "100", "memo": "x" * 5000}, {"nonce": "short"}, {"nonce": None},
])
async def test_a_tampered_confirmation_changes_nothing(chat: Chat, tampered: dict[str, Any]) -> None:
    await opened(chat)
    data = {"verb": "add_funds.confirm", "nonce": "n" * 22, "amount": "100", "memo": "", **tampered}
    body = await execute(chat, "add_funds.confirm", data)
    assert body["statusCode"] == 200
    assert await balance(chat) == 0
    assert "Incident" not in card_text(body)


async def test_extra_fields_are_ignored_not_acted_on(chat: Chat) -> None:
    await opened(chat)
    data = {"verb": "add_funds.confirm", "nonce": "n" * 22, "amount": "10", "memo": "", "tenant_id": "other",
            "actor": "someone-else", "msteams": {"x": 1}}
    await card_of(chat, "add_funds.confirm", data)
    [entry] = (await chat.ledger.history(teams.TENANT)).items
    assert (entry.amount, entry.actor) == (1000, ALEX["aadObjectId"])


async def test_recharge_form_saves_once_and_a_stale_form_is_out_of_date(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "recharge.open", {"verb": "recharge.open"})
    older_form = await card_of(chat, "recharge.open", {"verb": "recharge.open"})
    save = {**button(form, "recharge.save"), "enabled": "true", "amount": "50", "trigger": "20", "cap": "500"}
    saved = await card_of(chat, "recharge.save", save)
    settings = await chat.ledger.recharge_settings(teams.TENANT)
    assert (settings.enabled, settings.amount, settings.trigger, settings.monthly_cap) == (True, 5000, 2000, 50000)
    audits = await audit_size(chat)
    again = await card_of(chat, "recharge.save", save)                     # double click: replayed, same settings
    assert await audit_size(chat) == audits and "recharge.save" not in card_text(again)
    stale = {**button(older_form, "recharge.save"), "enabled": "true", "amount": "75", "trigger": "20", "cap": ""}
    answer = await card_of(chat, "recharge.save", stale)                   # built before the save above
    assert t("card.out_of_date", "en") in card_text(answer)
    assert (await chat.ledger.recharge_settings(teams.TENANT)).amount == 5000
    fresh = button(answer, "recharge.save")                                 # the fresh form works
    await card_of(chat, "recharge.save", {**fresh, "enabled": "true", "amount": "75", "trigger": "20", "cap": ""})
    assert (await chat.ledger.recharge_settings(teams.TENANT)).amount == 7500
    assert saved["type"] == "AdaptiveCard"


async def test_invalid_recharge_settings_return_the_form_with_the_reason(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "recharge.open", {"verb": "recharge.open"})
    save = {**button(form, "recharge.save"), "enabled": "true", "amount": "50", "trigger": "20", "cap": "10"}
    answer = await card_of(chat, "recharge.save", save)                     # a cap below one recharge
    assert any(a["verb"] == "recharge.save" for a in actions_of(answer))
    assert not (await chat.ledger.recharge_settings(teams.TENANT)).enabled


async def test_alert_thresholds_through_the_form(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "alerts.open", {"verb": "alerts.open"})
    await card_of(chat, "alerts.save", {**button(form, "alerts.save"), "threshold_1": "100", "threshold_2": "25",
                                        "forecast_days": "7"})
    assert (await chat.ledger.alert_settings(teams.TENANT)).thresholds == (10000, 2500)


async def test_a_reader_pressing_an_admin_button_is_refused_and_nothing_changes(chat: Chat) -> None:
    await chat.say(f"grant {READER} reader")
    for verb, data in (("add_funds.confirm", {"nonce": "n" * 22, "amount": "5", "memo": ""}),
                       ("recharge.save", {"nonce": "n" * 22, "basis": "x", "enabled": "true", "amount": "5",
                                          "trigger": "1", "cap": ""}),
                       ("recharge.open", {})):
        answer = await card_of(chat, verb, {"verb": verb, **data}, sender=MEGAN)
        assert t("denied.move_money" if verb.startswith("add") else "denied.change_settings", "en") in card_text(answer)
    assert await balance(chat) == 0 and not (await chat.ledger.recharge_settings(teams.TENANT)).enabled
    assert "Communications Credits" in card_text(await card_of(chat, "balance", {"verb": "balance"}, sender=MEGAN))


async def test_reading_cards(chat: Chat) -> None:
    await chat.say("add 40")
    await chat.say("add 2")
    assert "$42.00" in card_text(await card_of(chat, "balance", {"verb": "balance"}))
    history = await card_of(chat, "history.page", {"verb": "history.page"})
    assert "$40.00" in card_text(history)
    assert "AdaptiveCard" == (await card_of(chat, "usage.show", {"verb": "usage.show", "period": "7d"}))["type"]
    assert "balance" in card_text(await card_of(chat, "help", {"verb": "help"}))
    assert "AdaptiveCard" == (await card_of(chat, "cancel", {"verb": "cancel", "of": "recharge"}))["type"]
    bad = await card_of(chat, "usage.show", {"verb": "usage.show", "period": "1y"})
    assert t("card.tampered", "en") in card_text(bad)


async def test_unknown_verbs_and_malformed_invokes_are_answered_never_500(chat: Chat) -> None:
    await opened(chat)
    assert t("card.unknown_button", "en") in card_text(await card_of(chat, "self_destruct", {}))
    base = teams.message("", service_url=chat.connector.service_url, sender=ALEX)
    for value in (None, "x", {"action": None}, {"action": {"type": "Action.Submit", "verb": "balance"}},
                  {"action": {"type": "Action.Execute", "verb": 7}}, {"action": {"type": "Action.Execute"}}):
        activity = {**base, "type": "invoke", "name": "adaptiveCard/action", "id": f"bad-{next(_ids)}",
                    "value": value}
        response = await chat.post(activity)
        assert response.status == 200, value
        assert (await response.json())["statusCode"] == 400, value
    other = {**base, "type": "invoke", "name": "task/fetch", "id": "task-1", "value": {}}
    assert (await chat.post(other)).status == 400


# ==== Action.Submit =============================================================================================

async def test_action_submit_reaches_the_same_handler_and_replaces_the_card(chat: Chat) -> None:
    await opened(chat)
    form = await card_of(chat, "recharge.open", {"verb": "recharge.open"})
    value = {**button(form, "recharge.save"), "enabled": "true", "amount": "50", "trigger": "20", "cap": ""}
    activity = teams.message("", service_url=chat.connector.service_url, sender=ALEX)
    activity.pop("text")
    activity.update({"value": value, "replyToId": "card-message-1"})
    before = len(chat.connector.requests)
    assert (await chat.post(activity)).status == 200
    new = chat.connector.requests[before:]
    assert [(r.method, r.segments[-1]) for r in new] == [("POST", activity["id"]), ("PUT", "card-message-1")]
    assert (await chat.ledger.recharge_settings(teams.TENANT)).amount == 5000
    assert (await chat.post({**activity, "id": "resubmitted"})).status == 200   # the same card submitted again
    assert [r.action for r in (await chat.ledger.audit(teams.TENANT, limit=50)).items].count("recharge_settings") == 1


# ==== administration through cards ===============================================================================

async def test_alert_destinations_through_the_card(chat: Chat) -> None:
    await opened(chat)
    card = await card_of(chat, "subscriptions.open", {"verb": "subscriptions.open"}, scope="channel")
    save = {**button(card, "subscriptions.save"), "kinds": "recharged,low_balance"}
    after = await card_of(chat, "subscriptions.save", save, scope="channel")
    subs = await chat.ledger.subscriptions(teams.TENANT)
    assert [(s.conversation_id, [k.value for k in s.kinds]) for s in subs] == \
        [(teams.channel_id(), ["recharged", "low_balance"])]
    audits = await audit_size(chat)
    await card_of(chat, "subscriptions.save", save, scope="channel")         # double click
    assert await audit_size(chat) == audits
    bad = await card_of(chat, "subscriptions.save", {**button(after, "subscriptions.save"), "kinds": "everything"},
                        scope="channel")
    assert t("card.tampered", "en") in card_text(bad)
    await card_of(chat, "subscriptions.stop", button(after, "subscriptions.stop"), scope="channel")
    assert await chat.ledger.subscriptions(teams.TENANT) == []


async def test_roles_through_the_card_and_a_stale_roles_card(chat: Chat) -> None:
    await opened(chat)
    card = await card_of(chat, "roles.open", {"verb": "roles.open"})
    old = await card_of(chat, "roles.open", {"verb": "roles.open"})
    await card_of(chat, "roles.grant", {**button(card, "roles.grant"), "user": READER, "role": "reader"})
    assert [(g.user_id, g.role.value) for g in await chat.ledger.roles(teams.TENANT)] == [(READER, "reader")]
    stale = await card_of(chat, "roles.grant", {**button(old, "roles.grant"), "user": "someone-else-1",
                                                "role": "admin"})
    assert t("card.out_of_date", "en") in card_text(stale)
    assert len(await chat.ledger.roles(teams.TENANT)) == 1
    revoke = button(await card_of(chat, "roles.open", {"verb": "roles.open"}), "roles.revoke")
    assert revoke["user_id"] == READER
    await card_of(chat, "roles.revoke", revoke)
    assert await chat.ledger.roles(teams.TENANT) == []
    tampered = await card_of(chat, "roles.grant", {**button(card, "roles.grant"), "user": "a b", "role": "owner"})
    assert t("card.tampered", "en") in card_text(tampered) and await chat.ledger.roles(teams.TENANT) == []


async def test_a_reader_cannot_grant_through_the_card(chat: Chat) -> None:
    await chat.say(f"grant {READER} reader")
    card = await card_of(chat, "roles.open", {"verb": "roles.open"}, sender=MEGAN)     # readers may look
    answer = await card_of(chat, "roles.grant", {**button(card, "roles.grant"), "user": READER, "role": "admin"},
                           sender=MEGAN)
    assert t("denied.manage_roles", "en") in card_text(answer)
    assert [(g.user_id, g.role.value) for g in await chat.ledger.roles(teams.TENANT)] == [(READER, "reader")]


async def test_currency_through_the_card_until_the_first_entry(chat: Chat) -> None:
    await opened(chat)
    card = await card_of(chat, "currency.open", {"verb": "currency.open"})
    await card_of(chat, "currency.save", {**button(card, "currency.save"), "code": "DKK"})
    assert (await chat.ledger.get_account(teams.TENANT)).currency == "DKK"
    bad = await card_of(chat, "currency.save", {**button(await card_of(chat, "currency.open",
                                                                        {"verb": "currency.open"}),
                                                         "currency.save"), "code": "XYZ"})
    assert "XYZ" in card_text(bad) and (await chat.ledger.get_account(teams.TENANT)).currency == "DKK"
    await chat.say("add 5")
    locked = await card_of(chat, "currency.open", {"verb": "currency.open"})
    assert not [a for a in actions_of(locked) if a["verb"] == "currency.save"]


async def test_a_danish_admin_may_type_amounts_the_danish_way_in_a_card(chat: Chat) -> None:
    await chat.say("currency DKK")
    form = await card_of(chat, "add_funds.open", {"verb": "add_funds.open"})
    danish = {**button(form, "add_funds.review"), "amount": "1.250,50", "memo": ""}
    base = teams.message("", service_url=chat.connector.service_url, sender=ALEX, locale="da-DK")
    activity = {**base, "type": "invoke", "name": "adaptiveCard/action", "id": "da-review",
                "value": {"action": {"type": "Action.Execute", "verb": "add_funds.review", "data": danish}}}
    activity.pop("text", None)
    confirmation = (await (await chat.post(activity)).json())["value"]
    assert button(confirmation, "add_funds.confirm")["amount"] == "1250.50"


# ==== the same guarantees whichever way the button arrives ======================================================

async def press(chat: Chat, path: str, verb: str, data: dict[str, Any], *,
                sender: dict[str, Any] = ALEX) -> dict[str, Any]:
    """Press a button as Action.Execute (the invoke's card) or Action.Submit (the card the bot posts back)."""
    if path == "execute":
        return await card_of(chat, verb, data, sender=sender)
    activity = teams.message("", service_url=chat.connector.service_url, sender=sender)
    activity.pop("text")
    activity.update({"value": {**data, "verb": verb}, "replyToId": "card-message"})
    before = len(chat.connector.requests)
    assert (await chat.post(activity)).status == 200
    posted = [r.json for r in chat.connector.requests[before:]           # the reply, not the PUT that replaces
              if r.method == "POST" and r.json.get("replyToId") == activity["id"]]   # the pressed card
    assert len(posted) == 1 and posted[0]["attachments"], posted
    return posted[0]["attachments"][0]["content"]


@pytest.mark.parametrize("path", ["execute", "submit"])
async def test_double_submit_adds_once(chat: Chat, path: str) -> None:
    await opened(chat)
    confirm = {"verb": "add_funds.confirm", "nonce": "double-" + path * 3, "amount": "30", "memo": ""}
    first = await press(chat, path, "add_funds.confirm", confirm)
    second = await press(chat, path, "add_funds.confirm", confirm)
    assert await balance(chat) == 3000
    assert card_text(first) != card_text(second)          # the second says it was already done


@pytest.mark.parametrize("path", ["execute", "submit"])
async def test_a_stale_form_is_out_of_date(chat: Chat, path: str) -> None:
    await opened(chat)
    old = button(await card_of(chat, "recharge.open", {"verb": "recharge.open"}), "recharge.save")
    await chat.say("recharge 50 below 20")
    answer = await press(chat, path, "recharge.save", {**old, "enabled": "true", "amount": "99", "trigger": "1",
                                                        "cap": ""})
    assert t("card.out_of_date", "en") in card_text(answer)
    assert (await chat.ledger.recharge_settings(teams.TENANT)).amount == 5000


@pytest.mark.parametrize("path", ["execute", "submit"])
@pytest.mark.parametrize("amount", ["-1", "99999999999", "12.345", "NaN"])
async def test_tampered_amounts_change_nothing(chat: Chat, path: str, amount: str) -> None:
    await opened(chat)
    await press(chat, path, "add_funds.confirm", {"verb": "add_funds.confirm", "nonce": "t" * 22,
                                                  "amount": amount, "memo": ""})
    assert await balance(chat) == 0


@pytest.mark.parametrize("path", ["execute", "submit"])
async def test_a_reader_pressing_add_funds_changes_nothing(chat: Chat, path: str) -> None:
    await chat.say(f"grant {READER} reader")
    answer = await press(chat, path, "add_funds.confirm", {"verb": "add_funds.confirm", "nonce": "r" * 22,
                                                           "amount": "5", "memo": ""}, sender=MEGAN)
    assert t("denied.move_money", "en") in card_text(answer)
    assert await balance(chat) == 0
