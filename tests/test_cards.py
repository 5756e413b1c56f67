"""Adaptive Cards (cards/): every card, for representative data in both languages, is valid Adaptive Card 1.5
once Teams' extensions are taken out; every button names a verb of the one table and carries what its verb
needs; no card holds a float; key cards match golden JSON (`UPDATE_GOLDEN=1` rewrites them)."""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest

import cards
from bot import commands, i18n
from cards import elements
from cards.texts import Texts
from cards.history import MAX_ROWS
from cards.verbs import PERIODS, THRESHOLD_INPUTS, VERB_TABLE, VERBS
from storage.model import (Account, Alert, AlertKind, AlertSettings, Entry, EntryKind, Lot, Posting,
                           RechargeSettings, Role, RoleGrant, Subscription)
from storage.policy import MAX_THRESHOLDS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "adaptivecards" / "1.5.0" / \
    "adaptive-card.json"
GOLDEN = Path(__file__).resolve().parent / "golden"
NONCE = "nonce-7f3a"
BASIS = "basis-1c9e"
T0 = datetime(2026, 3, 5, 14, 30, tzinfo=timezone.utc)
TENANT = "tenant-1"
LONG = ("Quarterly top-up for the Copenhagen and Aarhus call queues, approved by finance under purchase order "
        "PO-2026-0042; charge to cost centre 4711 (Customer Service, Nordics) and tell Jane when it is done.")[:200]
LONG_NAME = ("Maria Kristina Østergaard-Vestergaard Christensen-Lindqvist, Head of Global Contact Centre "
             "Operations and Telephony Platforms, Northern Europe, Microsoft Teams Phone Programme Office ")[:200]
#: Teams refuses messages above about 28 KB; a card must leave room for the activity around it.
MAX_CARD_BYTES = 26 * 1024


@dataclass(frozen=True)
class I18nTexts:
    """`cards.Texts` over bot.i18n, as the bot builds it."""

    language: str
    currency: str = "USD"
    locale: str = "en-US"

    def t(self, key: str, **params: Any) -> str:
        return i18n.t(key, self.language, **params)

    def money(self, minor: int) -> str:
        return i18n.format_money(minor, self.currency, self.locale)

    def date(self, moment: datetime | date) -> str:
        return i18n.format_date(moment, self.locale)


TEXTS = {"en": I18nTexts("en", "USD", "en-US"), "da": I18nTexts("da", "DKK", "da-DK")}


def _texts_protocol_check(texts: I18nTexts) -> Texts:
    return texts  # type-checks that I18nTexts satisfies the protocol


# --- representative data ----------------------------------------------------------------------------------------

def account(balance: int, currency: str) -> Account:
    return Account(TENANT, currency, T0 - timedelta(days=400), balance, 42)


def entry(seq: int, kind: EntryKind, amount: int, balance_after: int, *, actor: str = "aad-1", memo: str = "",
          at: datetime = T0) -> Entry:
    return Entry(seq, TENANT, kind, amount, balance_after, actor, f"k{seq}", at, memo)


RECHARGE_ON = RechargeSettings(True, 50000, 10000, 200000, 3)
RECHARGE_NEVER = RechargeSettings()
RECHARGE_FRACTION = RechargeSettings(True, 12550, 2575, None, 5)  # 125.50 / 25.75: not whole major units

LOTS = [Lot(i, T0 - timedelta(days=350 - i), T0 + timedelta(days=15 + i), 50000, 1234 * i)
        for i in range(1, 6)]

KINDS = list(EntryKind)


def many_entries(n: int = 50) -> list[Entry]:
    out = []
    balance = 500000
    for i in range(n, 0, -1):
        kind = KINDS[i % len(KINDS)]
        amount = -(137 * i) if kind in (EntryKind.USAGE, EntryKind.EXPIRY) else 25000
        actor = ["aad-1", "system", "aad-unknown", "aad-long"][i % 4]
        out.append(entry(i, kind, amount, balance, actor=actor, memo=LONG if i % 3 == 0 else "",
                         at=T0 - timedelta(hours=i)))
        balance -= amount
    return out


NAMES = {"aad-1": "Jane Doe", "aad-long": LONG_NAME}


def alert(kind: AlertKind, payload: dict[str, Any]) -> Alert:
    return Alert(f"id-{kind.value}", TENANT, kind, f"{kind.value}:{TENANT}:1", T0, payload, ("conv-1",))


ALERT_PAYLOADS: dict[AlertKind, list[dict[str, Any]]] = {
    AlertKind.RECHARGED: [{"count": 2, "total": 100000, "balance": 112345, "entry_seqs": [11, 12]}],
    AlertKind.RECHARGE_BLOCKED: [{"reason": "monthly_cap", "balance": 4200, "entry_seq": 10},
                                 {"reason": "breaker", "balance": -150, "entry_seq": 10},
                                 {"reason": "gremlins", "balance": 0, "entry_seq": 10}],
    AlertKind.LOW_BALANCE: [{"threshold": 25000, "balance": 24999, "entry_seq": 10}],
    AlertKind.EXHAUSTED: [{"balance": -2550, "entry_seq": 10}],
    # a lot of the UTC-day rule expires at the midnight after its last usable day (ADR 0008)
    AlertKind.EXPIRING: [{"lot_id": 3, "remaining": 12345, "expires_at": "2026-04-02T00:00:00+00:00"}],
    AlertKind.FORECAST: [{"balance": 30000, "daily_burn": 2150, "days_to_zero": 14, "zero_on": "2026-03-19"}],
}


def help_rows(language: str, role: Role | None) -> list[tuple[str, str]]:
    rows = []
    for command in commands.COMMANDS:
        for form in command.forms:
            if role is Role.ADMIN or form.capability in (None, commands.Capability.READ):
                rows.append((form.usage, i18n.t(form.summary, language, **commands.HELP_PARAMS)))
    return rows


def all_cards(language: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every card builder for representative data: empty ledger, long names and memos, 50 entries, every
    status, every alert kind."""
    texts = TEXTS[language]
    cur = texts.currency
    # balance
    for status in cards.STATUSES:
        yield f"balance-{status}-empty", cards.balance_card(texts, account=account(0, cur), recharge=RECHARGE_NEVER,
                                                            status=status)
        yield f"balance-{status}-full", cards.balance_card(
            texts, account=account(-2550 if status == "exhausted" else 123456, cur), recharge=RECHARGE_ON,
            status=status, last_recharge=entry(9, EntryKind.AUTO_RECHARGE, 50000, 60000, actor="system"),
            expiring=LOTS, forecast_line=i18n.t("forecast.zero", language, date="Mar 19, 2026"))
    # add funds
    yield "add-form-empty", cards.add_funds_form(texts, currency=cur, nonce=NONCE)
    yield "add-form-error", cards.add_funds_form(texts, currency=cur, nonce=NONCE, amount=1250, memo=LONG,
                                                 error=i18n.t("amount.zero", language))
    yield "add-form-whole", cards.add_funds_form(texts, currency=cur, nonce=NONCE, amount=25000)
    yield "add-confirm", cards.add_funds_confirm_card(texts, currency=cur, amount=25000, memo="Q3 top-up",
                                                      balance=123456, nonce=NONCE)
    yield "add-confirm-long", cards.add_funds_confirm_card(texts, currency=cur, amount=1, memo=LONG, balance=-500,
                                                           nonce=NONCE, approval_threshold=100000)
    yield "add-confirm-approval", cards.add_funds_confirm_card(texts, currency=cur, amount=500000, memo="",
                                                               balance=0, nonce=NONCE, approval_threshold=100000)
    funds = entry(43, EntryKind.FUNDS_ADDED, 25000, 148456, memo=LONG)
    yield "add-receipt", cards.add_funds_receipt_card(texts, posting=Posting((funds,), 148456), added_by=LONG_NAME)
    yield "add-receipt-replayed", cards.add_funds_receipt_card(
        texts, posting=Posting((entry(43, EntryKind.FUNDS_ADDED, 25000, 148456),), 148456, replayed=True),
        added_by="Jane Doe")
    yield "approval", cards.approval_card(texts, approval_id="ap-1", requested_by=LONG_NAME, requested_at=T0,
                                          amount=500000, memo=LONG, balance=123456, threshold=100000, nonce=NONCE)
    yield "approval-pending", cards.approval_pending_card(texts, amount=500000, memo=LONG, threshold=100000)
    for approved in (True, False):
        yield f"approval-decided-{approved}", cards.approval_decided_card(
            texts, approved=approved, requested_by=LONG_NAME, decided_by="Jane Doe", decided_at=T0, amount=500000,
            memo=LONG, balance=623456 if approved else None)
    # settings
    for name, settings in (("never", RECHARGE_NEVER), ("on", RECHARGE_ON), ("fraction", RECHARGE_FRACTION),
                           ("off", RechargeSettings(False, 50000, 10000, None, 3))):
        yield f"recharge-form-{name}", cards.recharge_form(texts, currency=cur, settings=settings, nonce=NONCE,
                                                           basis=BASIS)
        yield f"recharge-saved-{name}", cards.recharge_saved_card(texts, settings=settings)
    yield "recharge-form-error", cards.recharge_form(texts, currency=cur, settings=RECHARGE_ON, nonce=NONCE,
                                                     basis=BASIS, error=i18n.t("error.invalid_settings."
                                                                               "cap_below_amount", language))
    yield "recharge-saved-replayed", cards.recharge_saved_card(texts, settings=RECHARGE_ON, replayed=True)
    for name, settings in (("none", AlertSettings()), ("some", AlertSettings((50000, 10000, 2550), 7)),
                           ("max", AlertSettings(tuple(1000 * (i + 1) for i in range(MAX_THRESHOLDS)), 365))):
        yield f"alerts-form-{name}", cards.alerts_form(texts, currency=cur, settings=settings, nonce=NONCE,
                                                       basis=BASIS)
        yield f"alerts-saved-{name}", cards.alerts_saved_card(texts, settings=settings)
    yield "alerts-form-error", cards.alerts_form(texts, currency=cur, settings=AlertSettings((50000,), 7),
                                                 nonce=NONCE, basis=BASIS, error="x" * 200)
    yield "alerts-saved-replayed", cards.alerts_saved_card(texts, settings=AlertSettings((50000,), 7),
                                                           replayed=True)
    # administration: where alerts go, roles, currency
    here = "19:meeting_Mzk0ZDJiYjQtYjA3Ni00ZmJmLWJlOTUtY2U5ZTM0MjQ3ZDM0@thread.v2"
    subs = [Subscription("a:1" + "x" * 150, (AlertKind.LOW_BALANCE, AlertKind.EXHAUSTED), "aad-1", T0),
            Subscription(here, tuple(AlertKind), "aad-1", T0),
            Subscription("19:gone@thread.tacv2", (AlertKind.FORECAST,), "aad-1", T0, False, "bot removed (403)"),
            Subscription("conv-2", (), "aad-1", T0, False, "")]
    yield "subscriptions-none", cards.subscriptions_card(texts, conversation_id=here, subscriptions=[], nonce=NONCE,
                                                         basis=BASIS)
    yield "subscriptions-here", cards.subscriptions_card(texts, conversation_id=here, subscriptions=subs,
                                                         nonce=NONCE, basis=BASIS)
    yield "subscriptions-elsewhere", cards.subscriptions_card(texts, conversation_id="conv-9", subscriptions=subs,
                                                              nonce=NONCE, basis=BASIS, error=LONG)
    yield "subscriptions-disabled-here", cards.subscriptions_card(texts, conversation_id="19:gone@thread.tacv2",
                                                                  subscriptions=subs, nonce=NONCE, basis=BASIS)
    yield "subscriptions-many", cards.subscriptions_card(
        texts, conversation_id="conv-0", nonce=NONCE, basis=BASIS,
        subscriptions=[Subscription(f"19:{'y' * 60}-{i}@thread.tacv2", tuple(AlertKind), "aad-1", T0,
                                    i % 2 == 0, LONG) for i in range(60)])
    grants = [RoleGrant("aad-1", Role.ADMIN, "system", T0, "Jane Doe"),
              RoleGrant("aad-long", Role.READER, "aad-1", T0, LONG_NAME),
              RoleGrant("3f2504e0-4f89-11d3-9a0c-0305e82c3301", Role.READER, "aad-1", T0)]
    yield "roles-none", cards.roles_card(texts, grants=[], nonce=NONCE, basis=BASIS, bootstrap_note=True)
    yield "roles-some", cards.roles_card(texts, grants=grants, nonce=NONCE, basis=BASIS, bootstrap_note=False)
    yield "roles-viewer", cards.roles_card(texts, grants=grants, nonce=NONCE, basis=BASIS, bootstrap_note=False,
                                           viewer=("Alex Wilber " * 20, "00000000-0000-0000-0000-0000000000020",
                                                   "admin"))
    yield "roles-error", cards.roles_card(texts, grants=grants, nonce=NONCE, basis=BASIS, bootstrap_note=True,
                                          error=LONG)
    yield "roles-many", cards.roles_card(
        texts, nonce=NONCE, basis=BASIS, bootstrap_note=False,
        grants=[RoleGrant(f"{i:08d}-4f89-11d3-9a0c-0305e82c3301", Role.READER, "aad-1", T0, LONG_NAME)
                for i in range(80)])
    yield "currency-open", cards.currency_card(texts, currency=cur, locked=False, nonce=NONCE, basis=BASIS)
    yield "currency-odd", cards.currency_card(texts, currency="ISK", locked=False, nonce=NONCE, basis=BASIS,
                                              error=LONG)
    yield "currency-locked", cards.currency_card(texts, currency=cur, locked=True, nonce=NONCE, basis=BASIS)
    # history
    yield "history-empty", cards.history_card(texts, entries=[])
    yield "history-50", cards.history_card(texts, entries=many_entries(50), names=NAMES, older=1, has_newer=True)
    yield "history-first", cards.history_card(texts, entries=many_entries(10), names=NAMES, older=None,
                                              has_newer=False)
    # usage
    types = [(f"Call type {i}" if i else LONG, 10_000 * (i + 1) + 37) for i in range(12)]
    users = [(LONG_NAME, 123456), ("Jane Doe", 4550), ("", 1)]
    for period in PERIODS:
        yield f"usage-{period}", cards.usage_card(texts, currency=cur, period=period, total=sum(v for _, v in types),
                                                  calls=321, by_type=types, by_user=users)
    yield "usage-none", cards.usage_card(texts, currency=cur, period="30d", total=0, calls=0, by_type=[], by_user=[])
    yield "usage-small", cards.usage_card(texts, currency=cur, period="7d", total=49, calls=1,
                                          by_type=[("Toll-free", 49)], by_user=[("Jane Doe", 49)])
    # alerts
    for kind, payloads in ALERT_PAYLOADS.items():
        for index, payload in enumerate(payloads):
            yield f"alert-{kind.value}-{index}", cards.alert_card(texts, alert=alert(kind, payload))
        yield f"alert-{kind.value}-empty", cards.alert_card(texts, alert=alert(kind, {}))
    # help, welcome and the rest
    yield "help-admin", cards.help_card(texts, commands=help_rows(language, Role.ADMIN))
    yield "help-reader", cards.help_card(texts, commands=help_rows(language, Role.READER),
                                         footer=[i18n.t("help.no_role", language)])
    yield "welcome", cards.welcome_card(texts)
    yield "cancelled", cards.cancelled_card(texts)
    yield "notice", cards.notice_card(texts, message=i18n.t("error.crash", language, incident="abc123"),
                                      tone="attention")
    yield "notice-titled", cards.notice_card(texts, message=LONG, title=LONG_NAME)
    fresh = cards.recharge_form(texts, currency=cur, settings=RECHARGE_ON, nonce=NONCE, basis=BASIS)
    yield "out-of-date", cards.out_of_date_card(texts, fresh=fresh)


@lru_cache(maxsize=None)
def built(language: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple(all_cards(language))


CASES = [(language, name) for language in ("en", "da") for name, _ in all_cards(language)]


def get(language: str, name: str) -> dict[str, Any]:
    return dict(built(language))[name]


# --- walking cards ----------------------------------------------------------------------------------------------

def walk(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def actions_of(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for _, n in walk(card) if isinstance(n, dict) and str(n.get("type", "")).startswith("Action.")]


def inputs_of(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for _, n in walk(card) if isinstance(n, dict) and str(n.get("type", "")).startswith("Input.")]


def strip_teams(card: dict[str, Any]) -> dict[str, Any]:
    """The card as a plain 1.5 renderer sees it: no root `msteams`; a `Chart.*` element replaced by its
    `fallback` element, or dropped when it has none."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if str(node.get("type", "")).startswith("Chart."):
                fallback = node.get("fallback")
                return strip(fallback) if isinstance(fallback, dict) else None
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [x for x in (strip(v) for v in node) if x is not None]
        return node

    out = strip(card)
    out.pop("msteams", None)
    return out


@lru_cache(maxsize=1)
def validator():  # type: ignore[no-untyped-def]
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"the Adaptive Card 1.5 schema is not at {SCHEMA_PATH} (a checkout of ../shared is needed; "
                    "CI has it)")
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


def explain(error: Any) -> str:
    """An error of the card schema, readable. The schema checks an element as an anyOf over every element type,
    and says only "not valid under any of the given schemas"; follow the branch of the element's own type (the
    branches that fail on `type` are the other types) down to the real causes."""

    def where(e: Any) -> str:
        return "/".join(map(str, e.absolute_path)) or "<root>"

    def wrong_type(e: Any) -> bool:
        return bool(e.absolute_path) and e.absolute_path[-1] == "type" and e.validator == "enum"

    def causes(e: Any) -> list[Any]:
        if e.validator not in ("anyOf", "oneOf") or not e.context:
            return [e]
        branches: dict[Any, list[Any]] = {}
        for sub in e.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        own = [subs for subs in branches.values() if not any(wrong_type(s) for s in subs)]
        if not own:  # no branch of this type: an unknown element type, or a value of the wrong kind
            return [e]
        return [c for subs in own for s in subs for c in causes(s)]

    found = sorted({f"{where(c)}: {c.message[:200]}" for c in causes(error)})
    return "\n".join(found[:30])


# --- the schema -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language,name", CASES)
def test_card_is_valid_adaptive_card_1_5(language: str, name: str) -> None:
    card = get(language, name)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["msteams"] == {"width": "Full"}
    assert card["lang"] == language
    plain = strip_teams(card)
    errors = sorted(validator().iter_errors(plain), key=lambda e: list(map(str, e.absolute_path)))
    report = "\n".join(explain(e) for e in errors)
    assert not errors, f"{name} ({language}) is not valid Adaptive Card 1.5:\n{report}"


def test_the_schema_would_catch_a_teams_extension() -> None:
    """The stripping is what makes cards pass: unstripped, `msteams` and the chart element are rejected."""
    card = get("en", "usage-30d")
    assert not validator().is_valid(card)
    assert validator().is_valid(strip_teams(card))
    assert not validator().is_valid({**strip_teams(card), "msteams": {"width": "Full"}})


@pytest.mark.parametrize("language,name", CASES)
def test_card_has_no_floats_and_fits_in_a_teams_message(language: str, name: str) -> None:
    card = get(language, name)
    floats = [path for path, node in walk(card) if isinstance(node, float)]
    assert floats == [], f"{name}: floats at {floats}"
    size = len(json.dumps(card, ensure_ascii=False).encode())
    assert size <= MAX_CARD_BYTES, f"{name} ({language}) is {size} bytes"


# --- verbs ------------------------------------------------------------------------------------------------------

def test_every_verb_is_on_some_card_and_every_button_has_a_verb_of_the_table() -> None:
    used: set[str] = set()
    for language in ("en", "da"):
        for name, card in built(language):
            for action in actions_of(card):
                assert action["type"] == "Action.Execute", (name, action)
                assert action["verb"] in VERBS, (name, action["verb"])
                used.add(action["verb"])
    assert used == set(VERBS), f"verbs on no card: {sorted(set(VERBS) - used)}"


@pytest.mark.parametrize("language,name", CASES)
def test_buttons_carry_what_their_verb_needs(language: str, name: str) -> None:
    card = get(language, name)
    input_ids = {i["id"] for i in inputs_of(card)}
    for action in actions_of(card):
        verb = VERBS[action["verb"]]
        data = action["data"]
        assert data["verb"] == action["verb"], (name, action)
        assert action["title"].strip(), (name, action)
        assert set(data) <= verb.allowed_keys, (name, verb.name, set(data) - verb.allowed_keys)
        # an Action.Submit merges every input of the card into the data: a data key must not be an input's id
        assert not set(data) & input_ids, (name, verb.name, set(data) & input_ids)
        if verb.name == "roles.revoke":
            # one key per grant: revoking A and B from one card are two changes (cards.verbs)
            assert data.get("nonce", "").startswith(f"{NONCE}-"), (name, verb.name, data)
        elif verb.needs_nonce:
            assert data.get("nonce") == NONCE, (name, verb.name, data)
        else:
            assert "nonce" not in data, (name, verb.name)
        if verb.needs_basis:
            assert data.get("basis") == BASIS, (name, verb.name, data)
        if verb.inputs:
            # the button sends the card's inputs, and every one of them is an input the verb reads
            assert action["associatedInputs"] == "auto", (name, verb.name)
            assert input_ids and input_ids <= set(verb.inputs), (name, verb.name, input_ids - set(verb.inputs))
        else:
            # no inputs: no client-side validation to get in the way (Cancel on a half-filled form)
            assert action["associatedInputs"] == "none", (name, verb.name)
        for value in data.values():
            assert isinstance(value, (str, int)) and not isinstance(value, bool), (name, verb.name, data)


def test_the_verb_table() -> None:
    assert len({v.name for v in VERB_TABLE}) == len(VERB_TABLE)
    moving = {v.name for v in VERB_TABLE if v.needs_nonce}
    assert moving == {"add_funds.review", "add_funds.confirm", "add_funds.approve", "add_funds.reject",
                      "recharge.save", "alerts.save", "subscriptions.save", "subscriptions.stop", "roles.grant",
                      "roles.revoke", "currency.save"}
    assert {v.name for v in VERB_TABLE if v.needs_basis} == {"recharge.save", "alerts.save", "subscriptions.save",
                                                             "subscriptions.stop", "roles.grant", "roles.revoke",
                                                             "currency.save"}
    for v in VERB_TABLE:
        assert v.capability is None or v.capability in set(commands.Capability), v
        if v.needs_nonce:
            assert v.capability is not None and v.capability.value in (
                "move_money", "change_settings", "manage_roles", "manage_subscriptions"), v
    assert VERBS["alerts.save"].inputs == (*THRESHOLD_INPUTS, "forecast_days")
    assert len(THRESHOLD_INPUTS) == MAX_THRESHOLDS


def test_a_button_without_what_its_verb_needs_is_refused_when_the_card_is_built() -> None:
    with pytest.raises(ValueError, match="nonce"):
        elements.execute("add_funds.confirm", "Add", data={"amount": "1"})
    with pytest.raises(ValueError, match="basis"):
        elements.execute("recharge.save", "Save", nonce="n")
    with pytest.raises(ValueError, match="data"):
        elements.execute("balance", "Balance", data={"amount": "1"})
    with pytest.raises(ValueError, match="no nonce"):
        elements.execute("balance", "Balance", nonce="n")
    with pytest.raises(KeyError):
        elements.execute("no.such.verb", "?")


def test_the_confirmation_repeats_amount_and_memo_in_major_units() -> None:
    card = cards.add_funds_confirm_card(TEXTS["en"], currency="USD", amount=125050, memo="Q3", balance=0,
                                        nonce=NONCE)
    confirm = next(a for a in actions_of(card) if a["verb"] == "add_funds.confirm")
    assert confirm["data"] == {"verb": "add_funds.confirm", "amount": "1250.50", "memo": "Q3", "nonce": NONCE}
    jpy = cards.add_funds_confirm_card(I18nTexts("en", "JPY"), currency="JPY", amount=1250, memo="", balance=0,
                                       nonce=NONCE)
    assert next(a for a in actions_of(jpy) if a["verb"] == "add_funds.confirm")["data"]["amount"] == "1250"


# --- inputs -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language,name", CASES)
def test_inputs_are_labelled_and_numbers_are_bounded(language: str, name: str) -> None:
    card = get(language, name)
    ids = [i["id"] for i in inputs_of(card)]
    assert len(ids) == len(set(ids)), (name, ids)
    for field in inputs_of(card):
        assert field["id"] and (field.get("label") or field.get("title")), (name, field)
        if field["type"] in ("Input.Number", "Input.Text"):
            assert isinstance(field.get("isRequired"), bool) and field.get("errorMessage"), (name, field)
        if field["type"] == "Input.Number":
            assert isinstance(field["min"], int) and isinstance(field["max"], int), (name, field)
            if "value" in field:
                assert field["min"] <= field["value"] <= field["max"], (name, field)


def test_forms_are_prefilled_exactly() -> None:
    texts = TEXTS["en"]
    form = cards.recharge_form(texts, currency="USD", settings=RECHARGE_ON, nonce=NONCE, basis=BASIS)
    fields = {f["id"]: f for f in inputs_of(form)}
    assert fields["enabled"]["value"] == "true"
    assert (fields["amount"]["type"], fields["amount"]["value"]) == ("Input.Number", 500)
    assert fields["trigger"]["value"] == 100 and fields["cap"]["value"] == 2000
    assert fields["amount"]["isRequired"] and not fields["cap"]["isRequired"]
    # a value that is not whole major units can't be an Input.Number value without a float: exact text instead
    odd = {f["id"]: f for f in inputs_of(cards.recharge_form(texts, currency="USD", settings=RECHARGE_FRACTION,
                                                              nonce=NONCE, basis=BASIS))}
    assert (odd["amount"]["type"], odd["amount"]["value"]) == ("Input.Text", "125.50")
    assert (odd["trigger"]["type"], odd["trigger"]["value"]) == ("Input.Text", "25.75")
    assert odd["cap"]["type"] == "Input.Number" and "value" not in odd["cap"]
    never = {f["id"]: f for f in inputs_of(cards.recharge_form(texts, currency="USD", settings=RECHARGE_NEVER,
                                                                nonce=NONCE, basis=BASIS))}
    assert never["enabled"]["value"] == "false" and "value" not in never["amount"] and never["trigger"]["value"] == 0
    alerts = {f["id"]: f for f in inputs_of(cards.alerts_form(texts, currency="USD",
                                                               settings=AlertSettings((50000, 10000), 14),
                                                               nonce=NONCE, basis=BASIS))}
    assert [alerts[i].get("value") for i in THRESHOLD_INPUTS[:3]] == [500, 100, None]
    assert alerts["forecast_days"]["value"] == 14
    memo = next(f for f in inputs_of(cards.add_funds_form(texts, currency="USD", nonce=NONCE, memo=LONG))
                if f["id"] == "memo")
    assert memo["value"] == LONG and memo["maxLength"] == commands.MAX_MEMO == elements.MEMO_MAX_LENGTH


def test_usage_periods_are_the_usage_commands() -> None:
    assert PERIODS == typing.get_args(commands.Period)


# --- content ----------------------------------------------------------------------------------------------------

def texts_of(card: dict[str, Any]) -> str:
    return "\n".join(str(n) for _, n in walk(card) if isinstance(n, str))


def test_danish_cards_use_microsofts_terms() -> None:
    assert "Kommunikationskreditter" in texts_of(get("da", "balance-ok-full"))
    assert "Indsæt flere penge" in texts_of(get("da", "balance-ok-full"))
    form = texts_of(get("da", "recharge-form-on"))
    for term in ("Rediger indstillinger for opfyldning", "Når saldoen er under", "Gem ændringer",
                 "Indsæt dette beløb"):
        assert term in form, term
    assert "1.234,56\xa0kr." in texts_of(get("da", "balance-ok-full"))


def test_no_text_is_coloured_warning() -> None:
    """Teams' light theme draws "warning" text in a pale yellow that is hard to read on white (seen in the
    rendering check); warning stays a container background only."""
    def texts_coloured_warning(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node.get("text", "")] if node.get("type") == "TextBlock" and node.get("color") == "warning" else []
            return found + [t for v in node.values() for t in texts_coloured_warning(v)]
        if isinstance(node, list):
            return [t for v in node for t in texts_coloured_warning(v)]
        return []
    offenders = {(language, name): found for language in ("en", "da") for name, card in built(language)
                 if (found := texts_coloured_warning(card))}
    assert offenders == {}


def test_every_status_has_its_colour() -> None:
    colours = {}
    for status in cards.STATUSES:
        big = get("en", f"balance-{status}-full")["body"][2]
        colours[status] = big["color"]
        assert big["size"] == "ExtraLarge"
    assert colours == {"ok": "good", "below_trigger": "accent", "low": "attention", "exhausted": "attention"}
    with pytest.raises(ValueError):
        cards.balance_card(TEXTS["en"], account=account(0, "USD"), recharge=RECHARGE_NEVER,
                           status="fine")  # type: ignore[arg-type]


@pytest.mark.parametrize("balance,recharge,thresholds,status", [
    (0, RECHARGE_ON, (), "exhausted"), (-1, RECHARGE_NEVER, (), "exhausted"),
    (5000, RECHARGE_ON, (), "below_trigger"), (5000, RECHARGE_NEVER, (), "ok"),
    (5000, RECHARGE_ON, (20000, 6000), "low"), (10000, RECHARGE_ON, (10000,), "ok"),
    (10000, RECHARGE_ON, (10001,), "low"),
])
def test_balance_status(balance: int, recharge: RechargeSettings, thresholds: tuple[int, ...], status: str) -> None:
    assert cards.balance_status(balance, recharge, thresholds) == status


def test_expiring_credits_are_listed_then_summed() -> None:
    text = texts_of(get("en", "balance-ok-full"))
    assert "$12.34 on Mar 21, 2026" in text
    assert "$111.06 more expires later" in text  # 49.36 + 61.70


def test_a_lot_is_shown_with_its_last_usable_day() -> None:
    """A lot of the UTC-day rule expires at 00:00 UTC after its last day: the card shows that last day."""
    lot = Lot(1, T0, datetime(2026, 3, 22, tzinfo=timezone.utc), 5000, 1234)
    card = cards.balance_card(TEXTS["en"], account=Account("t", "USD", T0, 5000, 1), recharge=RechargeSettings(),
                              status=cards.balance_status(5000, RechargeSettings(), ()), last_recharge=None,
                              expiring=[lot], forecast_line=None)
    assert "$12.34 on Mar 21, 2026" in texts_of(card)


def test_history_pages_and_names() -> None:
    card = get("en", "history-50")
    by_title = {a["title"]: a["data"] for a in actions_of(card)}
    # 50 entries (seq 50..1) are cut to MAX_ROWS: Older continues from the last row shown
    assert by_title["Older"] == {"verb": "history.page", "before": 50 - MAX_ROWS + 1}
    assert by_title["Newer"] == {"verb": "history.page", "after": 50}
    assert len([n for _, n in walk(card) if isinstance(n, dict) and n.get("type") == "ColumnSet"]) == MAX_ROWS
    ten = cards.history_card(TEXTS["en"], entries=many_entries(50)[:10], older=41)
    assert {a["title"]: a["data"] for a in actions_of(ten)}["Older"] == {"verb": "history.page", "before": 41}
    text = texts_of(card)
    assert "Jane Doe" in text and "System" in text and "aad-unknown" in text
    assert "+$250.00" in text and "-$64.39" in text  # usage of 137 * 47 cents
    first = {a["title"] for a in actions_of(get("en", "history-first"))}
    assert "Older" not in first and "Newer" not in first
    assert "There are no entries yet." in texts_of(get("en", "history-empty"))


def test_usage_has_a_teams_chart_with_a_plain_fallback() -> None:
    card = get("en", "usage-30d")
    charts = [n for _, n in walk(card) if isinstance(n, dict) and str(n.get("type", "")).startswith("Chart.")]
    assert len(charts) == 1
    chart = charts[0]
    assert chart["type"] in ("Chart.VerticalBar", "Chart.Donut", "Chart.HorizontalBar", "Chart.Pie")
    assert len(chart["data"]) == 8 and chart["data"][-1]["x"] == "Other"
    assert all(isinstance(p["y"], int) for p in chart["data"])
    assert chart["fallback"]["type"] == "Container"
    assert "$1,200.37" in texts_of(chart["fallback"])  # exact amounts in the table: 120037 cents
    # a plain renderer shows the table in the chart's place
    plain = strip_teams(card)
    assert "$1,200.37" in texts_of(plain) and "Chart." not in json.dumps(plain)
    periods = [a["data"]["period"] for a in actions_of(card) if a["verb"] == "usage.show"]
    assert periods == ["7d", "month"]


@pytest.mark.parametrize("kind,fix", [
    (AlertKind.RECHARGED, "recharge.open"), (AlertKind.RECHARGE_BLOCKED, "recharge.open"),
    (AlertKind.LOW_BALANCE, "add_funds.open"), (AlertKind.EXHAUSTED, "add_funds.open"),
    (AlertKind.EXPIRING, "balance"), (AlertKind.FORECAST, "add_funds.open"),
])
def test_every_alert_leads_to_what_fixes_it(kind: AlertKind, fix: str) -> None:
    card = get("en", f"alert-{kind.value}-0")
    assert actions_of(card)[0]["verb"] == fix


def test_alert_texts() -> None:
    assert "Auto-recharge added $1,000.00" in texts_of(get("en", "alert-recharged-0"))
    assert "monthly cap" in texts_of(get("en", "alert-recharge_blocked-0"))
    assert "24 hours" in texts_of(get("en", "alert-recharge_blocked-1"))
    assert "Low balance: $249.99" in texts_of(get("en", "alert-low_balance-0"))
    assert "$123.45 can be used until Apr 1, 2026." in texts_of(get("en", "alert-expiring-0"))
    assert "around Mar 19, 2026" in texts_of(get("en", "alert-forecast-0"))
    assert "-$25.50" in texts_of(get("en", "alert-exhausted-0"))


def test_out_of_date_wraps_a_fresh_card_without_changing_it() -> None:
    fresh = get("en", "recharge-form-on")
    before = json.dumps(fresh)
    wrapped = cards.out_of_date_card(TEXTS["en"], fresh=fresh)
    assert json.dumps(fresh) == before
    assert wrapped["body"][0]["items"][0]["text"] == "This card is out of date; here is the current one."
    assert wrapped["body"][1:] == fresh["body"] and wrapped["actions"] == fresh["actions"]


def test_help_lists_every_form_the_role_may_use() -> None:
    text = texts_of(get("en", "help-admin"))
    for command in commands.COMMANDS:
        for form in command.forms:
            assert form.usage in text
    assert "grant @user admin|reader" not in texts_of(get("en", "help-reader"))


def test_cards_do_not_depend_on_the_bot() -> None:
    """The Texts protocol is all a card needs: a stub works as well as bot.i18n."""

    class Stub:
        language = "en"

        def t(self, key: str, **params: Any) -> str:
            return key

        def money(self, minor: int) -> str:
            return f"{minor}c"

        def date(self, moment: datetime | date) -> str:
            return moment.isoformat()

    card = cards.balance_card(Stub(), account=account(5, "USD"), recharge=RECHARGE_ON, status="ok")
    assert card["body"][2]["text"] == "5c"


# --- golden -----------------------------------------------------------------------------------------------------

GOLDEN_CARDS = {
    "balance": "balance-below_trigger-full",
    "recharge_form": "recharge-form-on",
    "add_funds_confirm": "add-confirm",
    "alert_recharged": "alert-recharged-0",
    "usage": "usage-30d",
}


@pytest.mark.parametrize("golden,name", sorted(GOLDEN_CARDS.items()))
def test_golden(golden: str, name: str) -> None:
    path = GOLDEN / f"card_{golden}.en.json"
    card = get("en", name)
    text = json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 to write it"
    assert json.loads(path.read_text(encoding="utf-8")) == card, \
        f"{name} changed; if that is deliberate, rerun with UPDATE_GOLDEN=1 and review the diff of {path.name}"


# --- administration ---------------------------------------------------------------------------------------------

def test_subscriptions_form_edits_this_conversation() -> None:
    here = get("en", "subscriptions-here")
    kinds = next(f for f in inputs_of(here) if f["id"] == "kinds")
    assert kinds["isMultiSelect"] and kinds["style"] == "expanded"
    assert [c["value"] for c in kinds["choices"]] == [k.value for k in AlertKind]
    assert kinds["value"] == ",".join(k.value for k in AlertKind)
    places = lambda c: [n["text"] for _, n in walk(c)  # noqa: E731
                        if isinstance(n, dict) and n.get("type") == "TextBlock" and n.get("weight") == "Bolder"]
    assert "this conversation" in places(here) and "bot removed (403)" in texts_of(here)
    assert "subscriptions.stop" in {a["verb"] for a in actions_of(here)}
    elsewhere = get("en", "subscriptions-elsewhere")
    assert "subscriptions.stop" not in {a["verb"] for a in actions_of(elsewhere)}
    assert "this conversation" not in places(elsewhere)
    assert "a:1" + "x" * 15 + "\u2026" + "x" * 9 in places(elsewhere)  # a long id is cut in the middle
    gone = get("en", "subscriptions-disabled-here")
    assert next(f for f in inputs_of(gone) if f["id"] == "kinds")["value"] == "forecast"
    assert "subscriptions.stop" in {a["verb"] for a in actions_of(gone)}
    cancel = next(a for a in actions_of(here) if a["verb"] == "cancel")
    assert cancel["data"] == {"verb": "cancel", "of": "subscriptions"}
    alerts = cards.alerts_form(TEXTS["en"], currency="USD", settings=AlertSettings(), nonce=NONCE, basis=BASIS)
    assert "subscriptions.open" in {a["verb"] for a in actions_of(alerts)}


def test_each_revoke_button_has_its_own_nonce() -> None:
    card = get("en", "roles-some")
    revokes = [a["data"] for a in actions_of(card) if a["verb"] == "roles.revoke"]
    assert revokes == [{"verb": "roles.revoke", "user_id": uid, "nonce": f"{NONCE}-{i}", "basis": BASIS}
                       for i, uid in enumerate(["aad-1", "aad-long", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"])]
    grant = next(a for a in actions_of(card) if a["verb"] == "roles.grant")
    assert grant["data"]["nonce"] == NONCE
    fields = {f["id"]: f for f in inputs_of(card)}
    assert fields["user"]["maxLength"] == 64 and fields["user"]["isRequired"]
    assert [c["value"] for c in fields["role"]["choices"]] == ["admin", "reader"]
    assert "Jane Doe" in texts_of(card) and "reader" in texts_of(card)
    assert "configuration" in texts_of(get("en", "roles-none"))
    assert "configuration" not in texts_of(card)


def test_currency_form_only_before_the_first_entry() -> None:
    open_ = get("en", "currency-open")
    code = next(f for f in inputs_of(open_) if f["id"] == "code")
    assert code["value"] == "USD" and [c["value"] for c in code["choices"]][:3] == ["USD", "EUR", "GBP"]
    odd = next(f for f in inputs_of(get("en", "currency-odd")) if f["id"] == "code")
    assert odd["value"] == "ISK" and odd["choices"][0]["value"] == "ISK"
    locked = get("en", "currency-locked")
    assert inputs_of(locked) == [] and "currency.save" not in {a["verb"] for a in actions_of(locked)}
    assert "first entry" in texts_of(locked)
    assert {"roles.open", "currency.open"} <= {a["verb"] for a in actions_of(get("en", "help-reader"))}
