"""Authorization matrix over HTTP: every command form x role x scope x tenant.

Deny by default: no role reads nothing; readers read; admins move money, change settings, manage roles and
subscriptions. A user's role in one tenant means nothing in another. The expected capability of each form is
written out here, independently of the command table, so a wrong entry in the table fails this test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from bot.i18n import t
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import Chat, settings_for, store_for

BOOTSTRAP = "00000000-0000-0000-0000-0000000000020"
ADMIN = "1a2b3c4d-0000-4000-8000-00000000ad01"
READER = "1a2b3c4d-0000-4000-8000-00000000ad02"
NOBODY = "1a2b3c4d-0000-4000-8000-00000000ad03"
USERS = {"admin": teams.user(ADMIN, "Adele Vance"), "reader": teams.user(READER, "Megan Bowen"),
         "none": teams.user(NOBODY, "Nestor Wilke")}

READ, MONEY, SETTINGS, ROLES, SUBS = "read", "move_money", "change_settings", "manage_roles", "manage_subscriptions"

#: (command as typed, capability it needs; None = anyone)
FORMS: list[tuple[str, str | None]] = [
    ("help", None), ("whoami", None),
    ("balance", READ), ("history", READ), ("history 3", READ), ("usage", READ), ("usage 7d", READ),
    ("usage month", READ), ("forecast", READ), ("roles", READ), ("recharge", READ), ("alerts", READ),
    ("currency", READ),
    ("add 5", MONEY), ("add 5 coffee money", MONEY), ("sync", MONEY),
    ("recharge 50 below 20", SETTINGS), ("recharge 50 below 20 cap 200", SETTINGS), ("recharge off", SETTINGS),
    ("recharge on", SETTINGS), ("alerts 10, 5", SETTINGS), ("currency EUR", SETTINGS),
    ("subscribe", SUBS), ("subscribe recharged", SUBS), ("unsubscribe", SUBS), ("alerts failed", SUBS),
    (f"grant {'9' * 8}-0000-4000-8000-000000000099 reader", ROLES),
    (f"revoke {'9' * 8}-0000-4000-8000-000000000099", ROLES),
]

ALLOWED = {"admin": {READ, MONEY, SETTINGS, ROLES, SUBS}, "reader": {READ}, "none": set()}
DENIALS = {t(f"denied.{cap}", "en") for cap in (READ, MONEY, SETTINGS, ROLES, SUBS)}


async def _state(chat: Chat, tenant: str) -> Any:
    """Everything a command could change in a tenant's account (None when it has no account)."""
    if tenant not in await chat.ledger.tenants():
        return None
    account = await chat.ledger.get_account(tenant)
    return (account.balance, account.currency, account.entry_count, await chat.ledger.recharge_settings(tenant),
            await chat.ledger.alert_settings(tenant), await chat.ledger.subscriptions(tenant),
            await chat.ledger.roles(tenant), len((await chat.ledger.audit(tenant, limit=500)).items))


@pytest.fixture(params=["tinydb", "postgres"])
async def chat(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> Chat:
    """An account where the bootstrap admin has granted an admin and a reader (from then on only the granted
    admin is admin: bootstrap admins count until the tenant has an admin of its own)."""
    store = await store_for(request.param, tmp_path)
    client = await aiohttp_client(create_app(settings_for(tmp_path, CREDITS_STORE=store)))
    chat = Chat(client, fake_connector)
    boot = teams.user(BOOTSTRAP, "Alex Wilber")
    assert "reader" in await chat.say(f"grant {READER} reader", sender=boot)
    assert "admin" in await chat.say(f"grant {ADMIN} admin", sender=boot)
    return chat


@pytest.mark.parametrize("scope", ["personal", "groupChat", "channel"])
@pytest.mark.parametrize("role", ["admin", "reader", "none"])
async def test_each_role_may_do_exactly_its_commands_in_every_scope(chat: Chat, role: str, scope: str) -> None:
    for text, capability in FORMS:
        before = await _state(chat, teams.TENANT)
        reply = await chat.say(text, sender=USERS[role], scope=scope)
        allowed = capability is None or capability in ALLOWED[role]
        if allowed:
            assert reply not in DENIALS, (role, scope, text, reply)
        else:
            assert reply == t(f"denied.{capability}", "en"), (role, scope, text, reply)
            assert await _state(chat, teams.TENANT) == before, (role, scope, text)
        assert "Incident" not in reply, (role, scope, text, reply)


@pytest.mark.parametrize("role", ["admin", "reader"])
async def test_a_role_in_one_tenant_means_nothing_in_another(chat: Chat, role: str) -> None:
    home = await _state(chat, teams.TENANT)
    for text, capability in FORMS:
        reply = await chat.say(text, sender=USERS[role], tenant=teams.OTHER_TENANT, conversation_suffix="other")
        if capability is not None:
            assert reply == t(f"denied.{capability}", "en"), (role, text, reply)
    assert await _state(chat, teams.TENANT) == home          # nothing leaked back into the home tenant
    other = await chat.ledger.get_account(teams.OTHER_TENANT)
    assert other.entry_count == 0 and await chat.ledger.roles(teams.OTHER_TENANT) == []


async def test_bootstrap_admins_act_in_a_tenant_until_it_has_an_admin_of_its_own(chat: Chat) -> None:
    boot = teams.user(BOOTSTRAP, "Alex Wilber")
    # in a fresh tenant the configured admin is admin ...
    assert (await chat.say("add 5", sender=boot, tenant=teams.OTHER_TENANT)).startswith("Added")
    # ... and in the home tenant, which now has its own admin, no longer
    assert await chat.say("add 5", sender=boot) == t("denied.move_money", "en")
