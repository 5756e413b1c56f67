"""Security over HTTP, through the real app: every card verb x role x scope, across tenants, forged and replayed
tokens, secrets in logs, and who the audit trail names.

tests/test_authorization.py holds every typed command x role x scope. This file adds:

* every card verb (cards/verbs.py) x role (admin, reader, no role) x scope (personal, group chat, channel), both
  ways a button arrives (Action.Execute and Action.Submit): a role without the verb's capability gets the
  denial and changes nothing; the expected capability of each verb is written out here, independently of the
  verb table;
* two tenants, each with its own admin, reader, money, memos and a pending approval: a role in one tenant
  means nothing in the other, for every verb and every command, and nothing crosses (no read shows the other
  tenant's figures, card data naming the other tenant's approval or user reaches nothing there);
* tokens with real JWT validation: forgeries of every kind are 401 and change nothing, for messages and card
  actions alike; a replayed request (same token, same activity) is accepted, as Bot Framework allows until the
  token expires, and changes nothing: the activity id and the card's nonce are the idempotency keys;
* a realistic authenticated session at DEBUG (Graph sync with a client secret, the admin endpoint with its token,
  a PostgreSQL URL with a password, forged tokens, a connector retry): no secret, no bearer token and nothing
  JWT-shaped in any log record or on stderr;
* every change is audited with the Entra object id of the chat user who made it (and a grant keeps the display
  name of who it names).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from bot.app import create_app
from bot.i18n import t
from bot.logging_setup import LogfmtFormatter, configure_logging
from cards.verbs import VERBS
from storage import ApprovalStatus
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.fakes.graph import FakeGraph, graph_row
from tests.fakes.identity import FakeIdentity, new_rsa_key
from tests.http_chat import Chat, settings_for, store_for

BOOTSTRAP = "00000000-0000-0000-0000-0000000000020"
A_ADMIN = "1a2b3c4d-0000-4000-8000-0000000aad01"
A_ADMIN2 = "1a2b3c4d-0000-4000-8000-0000000aad04"
A_READER = "1a2b3c4d-0000-4000-8000-0000000aad02"
A_VICTIM = "1a2b3c4d-0000-4000-8000-0000000aad05"
B_ADMIN = "2b3c4d5e-0000-4000-8000-0000000bad01"
B_READER = "2b3c4d5e-0000-4000-8000-0000000bad02"
NOBODY = "3c4d5e6f-0000-4000-8000-0000000c0003"
A, B = teams.TENANT, teams.OTHER_TENANT
USERS = {
    A: {"admin": teams.user(A_ADMIN, "Adele Vance"), "reader": teams.user(A_READER, "Megan Bowen"),
        "none": teams.user(NOBODY, "Nestor Wilke")},
    B: {"admin": teams.user(B_ADMIN, "Bianca Pisani"), "reader": teams.user(B_READER, "Bruno Costa"),
        "none": teams.user(NOBODY, "Nestor Wilke")},
}
B_SUFFIX = "tenant-b"
A_MEMO, B_MEMO = "a-memo-7f3e", "b-secret-memo-91c2"

READ, MONEY, SETTINGS, ROLES, SUBS = "read", "move_money", "change_settings", "manage_roles", "manage_subscriptions"
ALLOWED = {"admin": {READ, MONEY, SETTINGS, ROLES, SUBS}, "reader": {READ}, "none": set()}
DENIALS = {t(f"denied.{cap}", language) for cap in (READ, MONEY, SETTINGS, ROLES, SUBS) for language in ("en", "da")}

#: What each card verb needs, written out here on purpose (not read from cards/verbs.py).
EXPECTED: dict[str, str | None] = {
    "balance": READ, "add_funds.open": MONEY, "add_funds.review": MONEY, "add_funds.confirm": MONEY,
    "add_funds.approve": MONEY, "add_funds.reject": MONEY, "recharge.open": SETTINGS, "recharge.save": SETTINGS,
    "alerts.open": SETTINGS, "alerts.save": SETTINGS, "history.page": READ, "usage.show": READ,
    "subscriptions.open": SUBS, "subscriptions.save": SUBS, "subscriptions.stop": SUBS, "roles.open": READ,
    "roles.grant": ROLES, "roles.revoke": ROLES, "currency.open": READ, "currency.save": SETTINGS, "help": None,
    "cancel": None,
}

#: Typed commands (one of each capability, and the ones that move money or change settings).
COMMANDS: list[tuple[str, str | None]] = [
    ("help", None), ("whoami", None), ("balance", READ), ("history", READ), ("usage", READ), ("forecast", READ),
    ("roles", READ), ("recharge", READ), ("alerts", READ), ("currency", READ), ("add 5", MONEY), ("sync", MONEY),
    ("recharge 50 below 20", SETTINGS), ("recharge off", SETTINGS), ("alerts 10, 5", SETTINGS),
    ("currency EUR", SETTINGS), ("subscribe", SUBS), ("unsubscribe", SUBS), ("alerts failed", SUBS),
    (f"grant {NOBODY} admin", ROLES), (f"revoke {A_READER}", ROLES), (f"revoke {B_READER}", ROLES),
]

_nonces = itertools.count(1)


def verb_data(verb: str, *, approval: str = "") -> dict[str, Any]:
    """Data an admin's press of `verb` would act on (a fresh nonce each time)."""
    nonce = f"matrix-nonce-{next(_nonces):06d}"
    return {
        "balance": {}, "add_funds.open": {}, "add_funds.review": {"nonce": nonce, "amount": "5", "memo": "m"},
        "add_funds.confirm": {"nonce": nonce, "amount": "5", "memo": "matrix"},
        "add_funds.approve": {"nonce": nonce, "approval": approval},
        "add_funds.reject": {"nonce": nonce, "approval": approval},
        "recharge.open": {}, "recharge.save": {"nonce": nonce, "basis": "b", "enabled": "true", "amount": "50",
                                               "trigger": "20", "cap": ""},
        "alerts.open": {}, "alerts.save": {"nonce": nonce, "basis": "b", "threshold_1": "40", "forecast_days": "7"},
        "history.page": {}, "usage.show": {"period": "7d"}, "subscriptions.open": {},
        "subscriptions.save": {"nonce": nonce, "basis": "b", "kinds": "low_balance"},
        "subscriptions.stop": {"nonce": nonce, "basis": "b"}, "roles.open": {},
        "roles.grant": {"nonce": nonce, "basis": "b", "user": NOBODY, "role": "admin"},
        "roles.revoke": {"nonce": nonce, "basis": "b", "user_id": A_VICTIM},
        "currency.open": {}, "currency.save": {"nonce": nonce, "basis": "b", "code": "EUR"}, "help": {},
        "cancel": {"of": "recharge"},
    }[verb]


class World:
    """The app with two tenants, each with an admin, a reader, money, a memo and a pending approval."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.approvals: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.chat.connector.service_url

    async def say(self, text: str, *, tenant: str, who: str | dict[str, Any], scope: str = "personal") -> str:
        sender = USERS[tenant][who] if isinstance(who, str) else who
        return await self.chat.say(text, sender=sender, scope=scope, tenant=tenant,
                                   conversation_suffix="1" if tenant == A else B_SUFFIX)

    async def press(self, verb: str, data: dict[str, Any], *, tenant: str, sender: dict[str, Any], scope: str,
                    path: str) -> str:
        """Press a button; return everything the bot answered, as text (card JSON included)."""
        activity = teams.message("", service_url=self.url, sender=sender, scope=scope, tenant=tenant,
                                 conversation_suffix="1" if tenant == A else B_SUFFIX)
        activity.pop("text")
        if path == "execute":
            activity.update(type="invoke", name="adaptiveCard/action",
                            value={"action": {"type": "Action.Execute", "verb": verb, "data": {"verb": verb, **data}}})
        else:
            activity.update(value={"verb": verb, **data}, replyToId="card-message-1")
        before = len(self.chat.connector.requests)
        response = await self.chat.post(activity)
        assert response.status == 200, await response.text()
        posted = [r.json for r in self.chat.connector.requests[before:] if r.method == "POST"]
        if path == "execute":
            body = await response.json()
            assert body["statusCode"] == 200, body
            return json.dumps(body["value"], ensure_ascii=False)
        assert len(posted) == 1, posted
        return json.dumps(posted[0], ensure_ascii=False)

    async def books(self, tenant: str) -> dict[str, Any]:
        """Every fact of a tenant's account but the conversation references (saved by every activity)."""
        export = await self.chat.ledger.export_account(tenant)
        export.pop("conversations")
        return export


async def _world(backend: str, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> World:
    store = await store_for(backend, tmp_path)
    settings = settings_for(tmp_path, CREDITS_STORE=store, CREDITS_RATE_LIMIT="0", CREDITS_APPROVAL_THRESHOLD="1000")
    world = World(Chat(await aiohttp_client(create_app(settings, background=False)), fake_connector))
    boot = teams.user(BOOTSTRAP, "Alex Wilber")
    # bootstrap admins act until the tenant has an admin of its own: then that admin grants the rest
    for tenant, who, user, role in ((A, boot, A_READER, "reader"), (A, boot, A_VICTIM, "reader"),
                                    (A, boot, A_ADMIN, "admin"), (A, "admin", A_ADMIN2, "admin"),
                                    (B, boot, B_READER, "reader"), (B, boot, B_ADMIN, "admin")):
        reply = await world.say(f"grant {user} {role}", tenant=tenant, who=who)
        assert reply == t("grant.done", "en", name=user, role=t(f"role.{role}", "en")), reply
    assert (await world.say(f"add 25 {A_MEMO}", tenant=A, who="admin")).startswith("Added $25.00")
    assert (await world.say(f"add 7 {B_MEMO}", tenant=B, who="admin")).startswith("Added $7.00")
    for tenant in (A, B):
        assert "approv" in await world.say("add 5000 big", tenant=tenant, who="admin")
        [pending] = await world.chat.ledger.approvals(tenant, status=ApprovalStatus.PENDING)
        world.approvals[tenant] = pending.approval_id
    return world


@pytest.fixture(params=["tinydb", "postgres"])
async def world(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any) -> World:
    return await _world(request.param, tmp_path, fake_connector, aiohttp_client)


def _denial(answer: str) -> str | None:
    return next((d for d in DENIALS if d in answer or json.dumps(d, ensure_ascii=False)[1:-1] in answer), None)


# ==== every card verb x role x scope ===============================================================================

def test_the_expected_capabilities_cover_every_verb() -> None:
    assert set(EXPECTED) == set(VERBS)
    assert {v: (VERBS[v].capability.value if VERBS[v].capability else None) for v in VERBS} == EXPECTED


@pytest.mark.parametrize("scope", ["personal", "groupChat", "channel"])
@pytest.mark.parametrize("role", ["admin", "reader", "none"])
async def test_every_card_verb_is_allowed_exactly_to_its_roles_in_every_scope(world: World, role: str,
                                                                              scope: str) -> None:
    sender = USERS[A][role]
    for verb in sorted(VERBS):
        capability = EXPECTED[verb]
        allowed = capability is None or capability in ALLOWED[role]
        for path in ("execute", "submit"):
            before = await world.books(A), await world.books(B)
            answer = await world.press(verb, verb_data(verb, approval=world.approvals[A]), tenant=A, sender=sender,
                                       scope=scope, path=path)
            assert "Incident" not in answer, (role, scope, verb, path, answer[:300])
            if allowed:
                assert _denial(answer) is None, (role, scope, verb, path, answer[:300])
                assert await world.books(B) == before[1], (role, scope, verb, path)   # never the other tenant
            else:
                assert _denial(answer) == t(f"denied.{capability}", "en"), (role, scope, verb, path, answer[:300])
                assert (await world.books(A), await world.books(B)) == before, (role, scope, verb, path)


# ==== two tenants ==================================================================================================

@pytest.mark.parametrize("role", ["admin", "reader"])
@pytest.mark.parametrize("home, away", [(A, B), (B, A)], ids=["A-user-in-B", "B-user-in-A"])
async def test_a_role_in_one_tenant_means_nothing_in_another_for_every_verb_and_command(
        world: World, home: str, away: str, role: str) -> None:
    """The user has `role` at `home`; the activity says it comes from `away` (which has its own admin)."""
    sender = USERS[home][role]
    before = await world.books(home), await world.books(away)
    for verb in sorted(VERBS):
        for path in ("execute", "submit"):
            answer = await world.press(verb, verb_data(verb, approval=world.approvals[away]), tenant=away,
                                       sender=sender, scope="channel", path=path)
            if EXPECTED[verb] is not None:
                assert _denial(answer) == t(f"denied.{EXPECTED[verb]}", "en"), (home, role, verb, answer[:300])
            for secret in (A_MEMO, B_MEMO, "$25.00", "$7.00"):
                assert secret not in answer, (home, role, verb, secret)
    for text, capability in COMMANDS:
        reply = await world.say(text, tenant=away, who=sender)
        if capability is not None:
            assert reply == t(f"denied.{capability}", "en"), (home, role, text, reply)
    assert (await world.books(home), await world.books(away)) == before


async def test_card_data_naming_the_other_tenant_reaches_nothing_there(world: World) -> None:
    admin = USERS[A]["admin"]
    before_b = await world.books(B)
    approve = await world.press("add_funds.approve", verb_data("add_funds.approve", approval=world.approvals[B]),
                                tenant=A, sender=admin, scope="personal", path="execute")
    assert t("error.not_found.approval", "en") in approve
    await world.press("roles.revoke", {**verb_data("roles.revoke"), "user_id": B_ADMIN}, tenant=A, sender=admin,
                      scope="personal", path="execute")
    smuggled = {**verb_data("add_funds.confirm"), "tenant_id": B, "tenantId": B, "tenant": {"id": B}, "actor": B_ADMIN}
    await world.press("add_funds.confirm", smuggled, tenant=A, sender=admin, scope="personal", path="execute")
    assert await world.books(B) == before_b
    [entry] = [e for e in (await world.chat.ledger.history(A, limit=50)).items if e.memo == "matrix"]
    assert (entry.amount, entry.actor) == (500, A_ADMIN)                      # in A, by A's admin, as pressed
    assert (await world.chat.ledger.get_approval(B, world.approvals[B])).status is ApprovalStatus.PENDING


async def test_reads_show_only_the_readers_own_tenant(world: World) -> None:
    for tenant, own, other in ((A, (A_MEMO, "$25.00"), (B_MEMO, "$7.00")), (B, (B_MEMO, "$7.00"),
                                                                           (A_MEMO, "$25.00"))):
        reader = USERS[tenant]["reader"]
        seen = " ".join([
            await world.say("balance", tenant=tenant, who="reader"), await world.say("history", tenant=tenant,
                                                                                     who="reader"),
            await world.press("balance", {}, tenant=tenant, sender=reader, scope="personal", path="execute"),
            await world.press("history.page", {}, tenant=tenant, sender=reader, scope="personal", path="execute"),
            await world.press("roles.open", {}, tenant=tenant, sender=reader, scope="personal", path="execute")])
        for mine in own:
            assert mine in seen, (tenant, mine)
        their_people = (B_ADMIN, B_READER) if tenant == A else (A_ADMIN, A_READER)
        for theirs in (*other, *their_people):
            assert theirs not in seen, (tenant, theirs)


# ==== tokens =======================================================================================================

@pytest.fixture
async def secure(tmp_path: Path, fake_connector: FakeConnector, identity: FakeIdentity,
                 aiohttp_client: Any) -> Chat:
    settings = settings_for(tmp_path, CREDITS_RATE_LIMIT="0", **identity.settings_env(app_id=teams.BOT_APP_ID))
    identity.add_client(teams.BOT_APP_ID, settings.app_password or "")
    client = await aiohttp_client(create_app(settings, msal_http_client=identity.requests_session(),
                                             background=False))
    return Chat(client, fake_connector)


def _activity(chat: Chat, kind: str, *, activity_id: str, nonce: str = "token-nonce-0001") -> dict[str, Any]:
    activity = teams.message("add 5", service_url=chat.connector.service_url, sender=teams.user(BOOTSTRAP, "Alex"),
                             activity_id=activity_id)
    if kind == "invoke":
        activity.pop("text")
        activity.update(type="invoke", name="adaptiveCard/action", value={"action": {
            "type": "Action.Execute", "verb": "add_funds.confirm",
            "data": {"verb": "add_funds.confirm", "nonce": nonce, "amount": "5", "memo": ""}}})
    return activity


def _forgeries(identity: FakeIdentity, service_url: str) -> dict[str, str]:
    def mint(**kwargs: Any) -> str:
        kwargs.setdefault("app_id", teams.BOT_APP_ID)
        kwargs.setdefault("service_url", service_url)
        return identity.issue_token(**kwargs)

    good = mint()
    head, body, signature = good.split(".")
    public_pem = new_rsa_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "signed by someone else": mint(signing_key=new_rsa_key()),
        "unknown key id": mint(kid="kid-nobody-published", signing_key=new_rsa_key()),
        "no key id": mint(kid="", signing_key=new_rsa_key()),
        "alg none": _handmade(body, {"alg": "none", "typ": "JWT", "kid": identity.kid}, None),
        "HS256 with a public key as secret": _handmade(body, {"alg": "HS256", "typ": "JWT", "kid": identity.kid},
                                                       public_pem),
        "payload of another token": ".".join([head, mint(service_url="https://evil.example/amer/").split(".")[1],
                                              signature]),
        "signature stripped": f"{head}.{body}.",
        "expired an hour ago": mint(now=now - dt.timedelta(hours=2)),
        "expired past the leeway": mint(now=now - dt.timedelta(hours=1, minutes=6)),
        "not valid yet": mint(not_before=now + dt.timedelta(minutes=30)),
        "for another bot": mint(audience="another-bot-app-id"),
        "for another service URL": mint(service_url="https://evil.example/amer/"),
        "another issuer": mint(issuer="https://sts.windows.net/evil/"),
        "for another channel": mint(kid=identity.add_key(endorsements=["webchat"])),
    }


def _handmade(body: str, header: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token PyJWT refuses to make: unsigned (`alg: none`), or HMAC-signed with a public key (the algorithm
    confusion attack against verifiers that take `alg` from the token)."""
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    if hmac_key is None:
        return f"{head}.{body}."
    mac = hmac.new(hmac_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@pytest.mark.parametrize("kind", ["message", "invoke"])
async def test_forged_and_expired_tokens_are_refused_and_change_nothing(secure: Chat, identity: FakeIdentity,
                                                                        kind: str) -> None:
    for name, token in _forgeries(identity, secure.connector.service_url).items():
        activity = _activity(secure, kind, activity_id=f"forged-{kind}-{abs(hash(name))}")
        response = await secure.post(activity, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401, (name, response.status)
        assert await response.json() == {"error": "unauthorized"}, name
    for header in ("", "Bearer", "Basic dXNlcjpwYXNz", f"Bearer {'x' * 5000}", "Bearer a.b.c"):
        response = await secure.post(_activity(secure, kind, activity_id="no-token"), headers={"Authorization": header})
        assert response.status == 401, header
    assert await secure.ledger.tenants() == []                 # not even an account was opened
    assert secure.connector.activities() == []


async def test_a_token_just_past_its_expiry_still_works_within_the_five_minute_leeway(
        secure: Chat, identity: FakeIdentity) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    token = identity.issue_token(app_id=teams.BOT_APP_ID, service_url=secure.connector.service_url,
                                 now=now - dt.timedelta(hours=1, minutes=4))
    response = await secure.post(_activity(secure, "message", activity_id="leeway"),
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200


@pytest.mark.parametrize("kind", ["message", "invoke"])
async def test_a_replayed_request_is_accepted_and_changes_nothing(secure: Chat, identity: FakeIdentity,
                                                                  kind: str) -> None:
    token = identity.issue_token(app_id=teams.BOT_APP_ID, service_url=secure.connector.service_url)
    activity = _activity(secure, kind, activity_id=f"captured-{kind}")
    headers = {"Authorization": f"Bearer {token}"}
    first = await secure.post(activity, headers=headers)
    assert first.status == 200
    books = await secure.ledger.export_account(teams.TENANT)
    for _ in range(3):                                          # the captured request, sent again as it was
        again = await secure.post(activity, headers=headers)
        assert again.status == 200
    after = await secure.ledger.export_account(teams.TENANT)
    books.pop("conversations"), after.pop("conversations")
    assert after == books
    assert (await secure.ledger.get_account(teams.TENANT)).balance == 500
    # the same card's nonce under a new activity id (a resubmitted old card) is the same change, too
    if kind == "invoke":
        await secure.post(_activity(secure, kind, activity_id="captured-invoke-2"), headers=headers)
        assert (await secure.ledger.get_account(teams.TENANT)).balance == 500


# ==== secrets never reach the logs =================================================================================

GRAPH_APP_ID = "6f1c2b3a-0000-4000-8000-00000000c0de"
GRAPH_SECRET = "graph-client-secret-3e8c1d-never-logged"
ADMIN_TOKEN = "admin-token-5b7f0a9e2c4d6e8f1a3b5c7d"
PG_PASSWORD = "pg-password-4a6c8e-never-logged"
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


@pytest.fixture
def debug_logging() -> Any:
    """The bot's own logging set-up at DEBUG (what LOG_LEVEL=DEBUG does), undone afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("DEBUG")
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scanner below is only worth something if it would see a leak."""
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "token %s", ("eyJhbGciOi.eyJzdWIiOi.c2ln",), None)
    record.secret = GRAPH_SECRET
    line = LogfmtFormatter().format(record)
    assert JWT_SHAPE.search(line) and GRAPH_SECRET in line


@pytest.mark.parametrize("backend", ["tinydb", "postgres"])
async def test_no_secret_or_token_reaches_the_logs(backend: str, tmp_path: Path, fake_connector: FakeConnector,
                                                   identity: FakeIdentity, aiohttp_client: Any, debug_logging: Any,
                                                   caplog: pytest.LogCaptureFixture,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    identity.add_client(GRAPH_APP_ID, GRAPH_SECRET)
    store = await store_for(backend, tmp_path)
    if backend == "postgres":
        store = store.replace("postgresql://postgres@", f"postgresql://postgres:{PG_PASSWORD}@")
        assert PG_PASSWORD in store
    now = dt.datetime.now(dt.timezone.utc)
    rows = [graph_row(n, now - dt.timedelta(hours=30 + n)) for n in range(3)]
    async with FakeGraph(identity, tenant=teams.TENANT, rows=rows) as graph:
        env = identity.settings_env(app_id=teams.BOT_APP_ID)
        settings = settings_for(tmp_path, CREDITS_STORE=store, LOG_LEVEL="DEBUG", CREDITS_ADMIN_TOKEN=ADMIN_TOKEN,
                                GRAPH_TENANT_ID=teams.TENANT, GRAPH_CLIENT_ID=GRAPH_APP_ID,
                                GRAPH_CLIENT_SECRET=GRAPH_SECRET, GRAPH_LOGIN_URL=identity.https_url,
                                GRAPH_URL=graph.url, **env)
        identity.add_client(teams.BOT_APP_ID, settings.app_password or "")
        inbound: list[str] = []

        def token(activity: dict[str, Any]) -> str:
            inbound.append(identity.issue_token(app_id=teams.BOT_APP_ID, service_url=activity["serviceUrl"]))
            return inbound[-1]

        client = await aiohttp_client(create_app(settings, msal_http_client=identity.requests_session(),
                                                 background=False))
        chat = Chat(client, fake_connector, token=token)
        # a realistic session: commands, a card, a reply Teams refuses once, Graph sync, the admin endpoint
        assert (await chat.say("add 50 top-up")).startswith("Added")
        assert "$50.00" in await chat.say("balance")
        fake_connector.fail_next(1, status=503)                # the reply is retried (and logged)
        assert (await chat.post(teams.message("recharge 20 below 10", service_url=fake_connector.service_url,
                                              sender=teams.user(BOOTSTRAP, "Alex")))).status == 200
        invoke = teams.message("", service_url=fake_connector.service_url, sender=teams.user(BOOTSTRAP, "Alex"))
        invoke.pop("text")
        invoke.update(type="invoke", name="adaptiveCard/action", value={"action": {
            "type": "Action.Execute", "verb": "add_funds.confirm",
            "data": {"verb": "add_funds.confirm", "nonce": "secrets-nonce-1", "amount": "5", "memo": ""}}})
        assert (await chat.post(invoke)).status == 200
        assert "debited" in await chat.say("sync")
        for header, status in ((f"Bearer {ADMIN_TOKEN}", 200), (f"Bearer {ADMIN_TOKEN}x", 401),
                               ("Bearer wrong-token", 401), (ADMIN_TOKEN, 401)):
            response = await client.post("/api/admin/sync", headers={"Authorization": header}, json={})
            assert response.status == status, (header[:10], response.status, await response.text())
        forged = _forgeries(identity, fake_connector.service_url)
        for name, value in forged.items():
            response = await chat.post(teams.message("add 1", service_url=fake_connector.service_url,
                                                     sender=teams.user(BOOTSTRAP, "Alex")),
                                       headers={"Authorization": f"Bearer {value}"})
            assert response.status == 401, name
        await client.close()                                   # shutdown logs too

    formatter = LogfmtFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    stderr = capfd.readouterr().err
    everything = "\n".join(lines) + "\n" + stderr
    assert len(lines) > 20 and any(r.levelno == logging.DEBUG for r in caplog.records)   # DEBUG was on
    assert any("authentication failed" in line for line in lines)                         # the forgeries were seen
    assert "level=" in stderr                                                              # and written to stderr
    secrets = {"MicrosoftAppPassword": settings.app_password, "GRAPH_CLIENT_SECRET": GRAPH_SECRET,
               "CREDITS_ADMIN_TOKEN": ADMIN_TOKEN, "postgres password": PG_PASSWORD}
    secrets.update({f"inbound token {i}": tok for i, tok in enumerate(inbound)})
    secrets.update({f"forged token {name}": tok for name, tok in forged.items()})
    secrets.update({f"outbound token {i}": tok for i, tok in enumerate(identity.issued_access_tokens)})
    assert identity.issued_access_tokens, "no outbound token was issued: the session did not authenticate"
    for name, secret in secrets.items():
        assert secret and secret not in everything, f"{name} is in the logs"
        assert secret[:12] not in everything or name.startswith("forged"), f"the start of {name} is in the logs"
    assert not JWT_SHAPE.search(everything), JWT_SHAPE.search(everything)
    assert "Bearer " not in everything


# ==== the audit trail ==============================================================================================

async def test_every_change_is_audited_with_the_chat_users_object_id(world: World) -> None:
    """Changes by two admins of A, typed and pressed; each audit record names who made it."""
    adele, other = USERS[A]["admin"], teams.user(A_ADMIN2, "Lynne Robbins")
    ledger = world.chat.ledger
    seen_before = {r.seq for r in (await ledger.audit(A, limit=500)).items}
    expected: list[tuple[str, str]] = []                       # (action, actor), in order

    async def typed(text: str, who: dict[str, Any], action: str, **kwargs: Any) -> None:
        await world.chat.say(text, sender=who, tenant=A, **kwargs)
        expected.append((action, who["aadObjectId"]))

    async def pressed(verb: str, data: dict[str, Any], who: dict[str, Any], action: str) -> None:
        await world.press(verb, data, tenant=A, sender=who, scope="personal", path="execute")
        expected.append((action, who["aadObjectId"]))

    await typed("add 3 typed", adele, "funds_added")
    await pressed("add_funds.confirm", verb_data("add_funds.confirm"), other, "funds_added")
    await typed("recharge 50 below 20", adele, "recharge_settings")
    await typed("alerts 30", other, "alert_settings")
    await typed("subscribe", adele, "subscribe", scope="channel")
    await typed("unsubscribe", other, "unsubscribe", scope="channel")
    world.chat.connector.members[USERS[A]["none"]["id"]] = {"id": USERS[A]["none"]["id"], "name": "Nestor Wilke",
                                                           "aadObjectId": NOBODY}
    await typed("grant <at>Nestor Wilke</at> reader", adele, "grant_role", scope="channel",
                mentions=[{"id": USERS[A]["none"]["id"], "name": "Nestor Wilke"}])
    await typed(f"revoke {NOBODY}", other, "revoke_role")
    await pressed("add_funds.approve", verb_data("add_funds.approve", approval=world.approvals[A]), other,
                  "approval_decided")
    records = [r for r in (await ledger.audit(A, limit=500)).items if r.seq not in seen_before]
    records.sort(key=lambda r: r.seq)
    assert [r.actor for r in records] and all(r.actor in (A_ADMIN, A_ADMIN2) for r in records), \
        [(r.action, r.actor) for r in records]
    assert [(r.action, r.actor) for r in records] == expected
    [grant] = [r for r in records if r.action == "grant_role"]
    assert grant.details["user_id"] == NOBODY and grant.details["display_name"] == "Nestor Wilke"
    entries = (await ledger.history(A, limit=50)).items
    assert entries and all(e.actor in (A_ADMIN, A_ADMIN2) for e in entries), [(e.kind, e.actor) for e in entries]
    approved = [e for e in entries if e.reference == world.approvals[A]]
    assert [e.actor for e in approved] == [A_ADMIN2]            # the approver made the money move
