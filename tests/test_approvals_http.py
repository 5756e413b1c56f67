"""Adding funds above the approval threshold over HTTP: the request goes to the other admins' personal chats
as a card; one of them approves and the funds are added once; the requester cannot approve their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import ALEX, Chat, settings_for, store_for
from tests.test_card_actions import button, card_text, execute

BEA_ID = "2b3c4d5e-0000-4000-8000-0000000000b2"
BEA = teams.user(BEA_ID, "Bea Admin")


@pytest.fixture(params=["tinydb", "postgres"])
async def chat(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> Chat:
    store = await store_for(request.param, tmp_path)
    client = await aiohttp_client(create_app(settings_for(tmp_path, CREDITS_STORE=store,
                                                          CREDITS_APPROVAL_THRESHOLD="1000")))
    chat = Chat(client, fake_connector)
    assert "admin" in await chat.say(f"grant {ALEX['aadObjectId']} admin")   # the bootstrap admin makes it real
    assert "admin" in await chat.say(f"grant {BEA_ID} admin")
    await chat.say("balance", sender=BEA, conversation_suffix="bea")         # Bea has a personal chat with the bot
    return chat


def approval_cards(chat: Chat, conversation_id: str) -> list[dict[str, Any]]:
    return [a["attachments"][0]["content"] for a in chat.connector.activities(conversation_id)
            if a.get("attachments") and "add_funds.approve" in card_text(a["attachments"][0]["content"])]


async def ask(chat: Chat, text: str, **kw: Any) -> str:
    """Send a message; return the bot's reply to it (other messages, such as approval cards, may go out too)."""
    activity = teams.message(text, service_url=chat.connector.service_url, sender=ALEX, **kw)
    assert (await chat.post(activity)).status == 200
    [reply] = [a for a in chat.connector.activities() if a.get("replyToId") == activity["id"]][-1:]
    return reply["text"]


async def balance(chat: Chat) -> int:
    return (await chat.ledger.get_account(teams.TENANT)).balance


async def test_a_large_top_up_waits_for_another_admin_and_is_added_once(chat: Chat) -> None:
    reply = await ask(chat, "add 5000 board approved", activity_id="big-1")
    assert "second admin must approve" in reply
    assert await balance(chat) == 0
    bea_chat = teams.conversation("personal", suffix="bea")["id"]
    [card] = approval_cards(chat, bea_chat)
    approve = button(card, "add_funds.approve")

    own = await execute(chat, "add_funds.approve", approve, sender=ALEX)     # the requester may not approve
    assert "another admin has to approve" in card_text(own)
    assert await balance(chat) == 0

    decided = await execute(chat, "add_funds.approve", approve, sender=BEA)
    assert decided["statusCode"] == 200 and "approved" in card_text(decided).lower()
    assert await balance(chat) == 500000
    [entry] = (await chat.ledger.history(teams.TENANT)).items
    assert (entry.amount, entry.actor, entry.memo) == (500000, BEA_ID, "board approved")

    again = await execute(chat, "add_funds.approve", approve, sender=BEA)     # a double click
    late_reject = await execute(chat, "add_funds.reject", button(card, "add_funds.reject"), sender=BEA)
    assert await balance(chat) == 500000
    assert "already" in card_text(late_reject)
    assert again["statusCode"] == 200

    await ask(chat, "add 5000 board approved", activity_id="big-1")         # Teams retries the message
    assert len(approval_cards(chat, bea_chat)) == 1                           # nobody is asked twice


async def test_a_rejected_request_adds_nothing(chat: Chat) -> None:
    await ask(chat, "add 2000")
    [card] = approval_cards(chat, teams.conversation("personal", suffix="bea")["id"])
    answer = await execute(chat, "add_funds.reject", button(card, "add_funds.reject"), sender=BEA)
    assert "rejected" in card_text(answer).lower()
    assert await balance(chat) == 0
    [approval] = await chat.ledger.approvals(teams.TENANT)
    assert (approval.status.value, approval.decided_by) == ("rejected", BEA_ID)


async def test_below_the_threshold_funds_are_added_at_once_with_a_receipt_card(chat: Chat) -> None:
    activity = teams.message("add 1000", service_url=chat.connector.service_url, sender=ALEX)
    assert (await chat.post(activity)).status == 200
    [reply] = chat.connector.activities()[-1:]
    assert reply["text"].startswith("Added $1,000.00")
    assert reply["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert await balance(chat) == 100000
