"""Chat commands (bot/commands.py): every command and form parses to typed args and the capability it needs,
every refusal is a specific message, and help is generated from the table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot import commands
from bot.commands import (COMMANDS, Command, Form, Invocation, Mention, ParseFailure, command_names,
                          find_command, help_text, normalize_text, parse)
from bot.i18n import MESSAGES, t
from storage.model import AlertKind, Role
from storage.policy import Capability

READ, SETTINGS = Capability.READ, Capability.CHANGE_SETTINGS
JANE = Mention("29:1abcJane", "Jane Doe", "aad-jane")
BOB = Mention("29:1abcBob", "Bob", None)
ALL_KINDS = tuple(AlertKind)


def ok(text: str, *, currency: str = "USD", locale: str = "en-US", mentions: tuple[Mention, ...] = ()) -> Invocation:
    result = parse(text, currency=currency, locale=locale, mentions=mentions)
    assert isinstance(result, Invocation), result
    return result


def fail(text: str, *, currency: str = "USD", locale: str = "en-US",
         mentions: tuple[Mention, ...] = ()) -> ParseFailure:
    result = parse(text, currency=currency, locale=locale, mentions=mentions)
    assert isinstance(result, ParseFailure), result
    return result


# --- every command and form --------------------------------------------------------------------------------------

PARSED: list[tuple[str, str, str, str, Capability | None, dict[str, Any]]] = [
    # text, currency, locale, command, capability, args
    ("help", "USD", "en-US", "help", None, {}),
    ("help add", "USD", "en-US", "help", None, {}),
    ("hjælp", "USD", "en-US", "help", None, {}),
    ("", "USD", "en-US", "help", None, {}),
    ("balance", "USD", "en-US", "balance", READ, {}),
    ("Balance", "USD", "en-US", "balance", READ, {}),
    ("SALDO", "DKK", "da-DK", "balance", READ, {}),
    ("/balance", "USD", "en-US", "balance", READ, {}),
    ("add 250", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": ""}),
    ("add 250 Q3 top-up", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "Q3 top-up"}),
    ("add 250.50", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25050, "memo": ""}),
    ("add $250 for Q3", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "for Q3"}),
    ("add 250 USD Q3", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "Q3"}),
    ("add USD 250 Q3", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "Q3"}),
    ("add 1,250.00", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 125000, "memo": ""}),
    ("add $1,250.00 budget 2026", "USD", "en-US", "add", Capability.MOVE_MONEY,
     {"amount": 125000, "memo": "budget 2026"}),
    ("add 250 all hands", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "all hands"}),
    ("add 250 top up", "USD", "en-US", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "top up"}),
    ("add 1.250,50 kr. Q3-opfyldning", "DKK", "da-DK", "add", Capability.MOVE_MONEY,
     {"amount": 125050, "memo": "Q3-opfyldning"}),
    ("add 1.250,50 DKK", "DKK", "da-DK", "add", Capability.MOVE_MONEY, {"amount": 125050, "memo": ""}),
    ("add 250 kr", "DKK", "da-DK", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": ""}),
    ("add kr. 250 budget", "DKK", "da-DK", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": "budget"}),
    ("indsæt 250", "DKK", "da-DK", "add", Capability.MOVE_MONEY, {"amount": 25000, "memo": ""}),
    ("add 1250", "JPY", "en-US", "add", Capability.MOVE_MONEY, {"amount": 1250, "memo": ""}),
    ("recharge", "USD", "en-US", "recharge", READ, {}),
    ("recharge on", "USD", "en-US", "recharge", SETTINGS, {"enabled": True}),
    ("recharge OFF", "USD", "en-US", "recharge", SETTINGS, {"enabled": False}),
    ("opfyldning til", "DKK", "da-DK", "recharge", SETTINGS, {"enabled": True}),
    ("opfyldning fra", "DKK", "da-DK", "recharge", SETTINGS, {"enabled": False}),
    ("recharge 500 below 100", "USD", "en-US", "recharge", SETTINGS, {"amount": 50000, "trigger": 10000, "cap": None}),
    ("recharge $500 below $100 cap $2,000", "USD", "en-US", "recharge", SETTINGS,
     {"amount": 50000, "trigger": 10000, "cap": 200000}),
    ("recharge 500 USD BELOW 100 USD CAP 2000 USD", "USD", "en-US", "recharge", SETTINGS,
     {"amount": 50000, "trigger": 10000, "cap": 200000}),
    ("recharge 500 below 0", "USD", "en-US", "recharge", SETTINGS, {"amount": 50000, "trigger": 0, "cap": None}),
    ("recharge 500,50 kr. under 100 kr. loft 2.000 kr.", "DKK", "da-DK", "recharge", SETTINGS,
     {"amount": 50050, "trigger": 10000, "cap": 200000}),
    ("alerts", "USD", "en-US", "alerts", READ, {}),
    ("alerts 500", "USD", "en-US", "alerts", SETTINGS, {"thresholds": (50000,)}),
    ("alerts 500, 100", "USD", "en-US", "alerts", SETTINGS, {"thresholds": (50000, 10000)}),
    ("alerts 500,100", "USD", "en-US", "alerts", SETTINGS, {"thresholds": (50010000,)}),  # grouping, not a list
    ("alerts $1,000, $500; 100 USD 50", "USD", "en-US", "alerts", SETTINGS,
     {"thresholds": (100000, 50000, 10000, 5000)}),
    ("alerts 500 100", "USD", "en-US", "alerts", SETTINGS, {"thresholds": (50000, 10000)}),
    ("alerts off", "USD", "en-US", "alerts", SETTINGS, {"thresholds": ()}),
    ("advarsler 100,50; 50 kr.", "DKK", "da-DK", "alerts", SETTINGS, {"thresholds": (10050, 5000)}),
    ("alerts 500, 100", "DKK", "da-DK", "alerts", SETTINGS, {"thresholds": (50000, 10000)}),
    ("alerts failed", "USD", "en-US", "alerts", Capability.MANAGE_SUBSCRIPTIONS, {"failed": True}),
    ("Alerts FAILED", "USD", "en-US", "alerts", Capability.MANAGE_SUBSCRIPTIONS, {"failed": True}),
    ("advarsler fejlede", "DKK", "da-DK", "alerts", Capability.MANAGE_SUBSCRIPTIONS, {"failed": True}),
    ("alerts fejlede", "USD", "en-US", "alerts", Capability.MANAGE_SUBSCRIPTIONS, {"failed": True}),
    ("history", "USD", "en-US", "history", READ, {"n": 10}),
    ("history 1", "USD", "en-US", "history", READ, {"n": 1}),
    ("history 50", "USD", "en-US", "history", READ, {"n": 50}),
    ("historik 20", "DKK", "da-DK", "history", READ, {"n": 20}),
    ("usage", "USD", "en-US", "usage", READ, {"period": "30d"}),
    ("usage 7d", "USD", "en-US", "usage", READ, {"period": "7d"}),
    ("usage 30d", "USD", "en-US", "usage", READ, {"period": "30d"}),
    ("usage month", "USD", "en-US", "usage", READ, {"period": "month"}),
    ("usage 7 days", "USD", "en-US", "usage", READ, {"period": "7d"}),
    ("forbrug måned", "DKK", "da-DK", "usage", READ, {"period": "month"}),
    ("forecast", "USD", "en-US", "forecast", READ, {}),
    ("sync", "USD", "en-US", "sync", Capability.MOVE_MONEY, {}),
    ("Synkroniser", "DKK", "da-DK", "sync", Capability.MOVE_MONEY, {}),
    ("subscribe", "USD", "en-US", "subscribe", Capability.MANAGE_SUBSCRIPTIONS, {"kinds": ALL_KINDS}),
    ("subscribe all", "USD", "en-US", "subscribe", Capability.MANAGE_SUBSCRIPTIONS, {"kinds": ALL_KINDS}),
    ("subscribe low_balance", "USD", "en-US", "subscribe", Capability.MANAGE_SUBSCRIPTIONS,
     {"kinds": (AlertKind.LOW_BALANCE,)}),
    ("subscribe exhausted, low-balance recharged", "USD", "en-US", "subscribe", Capability.MANAGE_SUBSCRIPTIONS,
     {"kinds": (AlertKind.RECHARGED, AlertKind.LOW_BALANCE, AlertKind.EXHAUSTED)}),
    ("subscribe forecast,forecast", "USD", "en-US", "subscribe", Capability.MANAGE_SUBSCRIPTIONS,
     {"kinds": (AlertKind.FORECAST,)}),
    ("unsubscribe", "USD", "en-US", "unsubscribe", Capability.MANAGE_SUBSCRIPTIONS, {}),
    ("roles", "USD", "en-US", "roles", READ, {}),
    ("grant 00000000-0000-0000-0000-0000000000020 reader", "USD", "en-US", "grant", Capability.MANAGE_ROLES,
     {"user": "00000000-0000-0000-0000-0000000000020", "role": Role.READER}),
    ("grant 00000000-0000-0000-0000-0000000000020 ADMIN", "USD", "en-US", "grant", Capability.MANAGE_ROLES,
     {"user": "00000000-0000-0000-0000-0000000000020", "role": Role.ADMIN}),
    ("revoke 00000000-0000-0000-0000-0000000000020", "USD", "en-US", "revoke", Capability.MANAGE_ROLES,
     {"user": "00000000-0000-0000-0000-0000000000020"}),
    ("whoami", "USD", "en-US", "whoami", None, {}),
    ("currency", "USD", "en-US", "currency", READ, {}),
    ("currency dkk", "USD", "en-US", "currency", SETTINGS, {"code": "DKK"}),
    ("valuta EUR", "DKK", "da-DK", "currency", SETTINGS, {"code": "EUR"}),
]


@pytest.mark.parametrize("text,currency,locale,name,capability,args", PARSED)
def test_parse(text: str, currency: str, locale: str, name: str, capability: Capability | None,
               args: dict[str, Any]) -> None:
    result = ok(text, currency=currency, locale=locale)
    assert (result.command.name, result.capability, dict(result.args)) == (name, capability, args)


def test_every_command_and_form_is_exercised() -> None:
    names = {name for _, _, _, name, _, _ in PARSED}
    assert names == set(command_names())
    capabilities = {(name, cap) for _, _, _, name, cap, _ in PARSED}
    for command in COMMANDS:
        for form in command.forms:
            assert (command.name, form.capability) in capabilities, form.usage


def test_args_are_typed() -> None:
    add = ok("add 250 memo")
    assert type(add.args["amount"]) is int
    kinds = ok("subscribe low_balance").args["kinds"]
    assert all(isinstance(k, AlertKind) for k in kinds) and isinstance(kinds, tuple)
    assert isinstance(ok("grant 00000000-0000-0000-0000-0000000000020 admin").args["role"], Role)
    assert isinstance(ok("alerts 5, 1").args["thresholds"], tuple)


# --- text as Teams sends it ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "  balance  ", "\u00a0balance\u00a0", "balance&nbsp;", "&nbsp;balance", "<p>balance</p>", "balance\n",
    "\tbalance", "balance\u200b", "\u202fbalance", "<at>Credits</at> balance", "<at>Credits</at>&nbsp;balance",
])
def test_whitespace_and_html_residue(text: str) -> None:
    assert ok(text).command.name == "balance"


def test_nfc_but_no_digit_folding() -> None:
    assert ok("forbrug ma\u030aned").args == {"period": "month"}  # "a" + combining ring is "å"
    assert ok("hj\u00e6lp").command.name == "help"
    assert normalize_text("add\u00a0\u00a0２５０ ") == "add ２５０"
    failure = fail("add ２５０")
    assert failure.message_key == "amount.unicode_digits"


def test_a_mention_is_no_amount() -> None:
    failure = fail("add <at>Jane Doe</at>", mentions=(JANE,))
    assert (failure.message_key, failure.params["text"]) == ("amount.not_a_number", "Jane Doe")


def test_memo_keeps_its_text_and_names() -> None:
    assert ok("add 250 Tom &amp; Jerry's   budget").args["memo"] == "Tom & Jerry's budget"
    assert ok("add 250 thanks <at>Jane Doe</at>", mentions=(JANE,)).args["memo"] == "thanks Jane Doe"


def test_memo_length_is_bounded() -> None:
    assert ok("add 1 " + "x" * commands.MAX_MEMO).args["memo"] == "x" * commands.MAX_MEMO
    failure = fail("add 1 " + "x" * (commands.MAX_MEMO + 1))
    assert (failure.message_key, failure.params["max"]) == ("parse.memo_too_long", commands.MAX_MEMO)


# --- mentions -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,mentions,user,role", [
    ("grant <at>Jane Doe</at> admin", (JANE,), JANE, Role.ADMIN),
    ("grant <at>Jane Doe</at> reader", (BOB, JANE), JANE, Role.READER),
    ("grant admin <at>Bob</at>", (BOB, JANE), BOB, Role.ADMIN),
    ("grant @Jane Doe admin", (JANE,), JANE, Role.ADMIN),            # tags already stripped by someone
    ("grant Jane Doe reader", (JANE,), JANE, Role.READER),
    ("grant <at>J. Doe</at> admin", (JANE,), JANE, Role.ADMIN),       # the only mention, shown by another name
    ("<at>Credits</at> grant <at>Bob</at> reader", (BOB,), BOB, Role.READER),
])
def test_grant_with_mentions(text: str, mentions: tuple[Mention, ...], user: Mention, role: Role) -> None:
    result = ok(text, mentions=mentions)
    assert result.args == {"user": user, "role": role}


def test_revoke_with_a_mention() -> None:
    assert ok("revoke <at>Bob</at>", mentions=(BOB, JANE)).args == {"user": BOB}


@pytest.mark.parametrize("text,mentions,key", [
    ("grant <at>Nobody</at> admin", (BOB, JANE), "parse.mention_not_found"),
    ("grant @jane admin", (), "parse.mention_not_found"),
    ("grant jane admin", (), "parse.mention_not_found"),     # a name is not an object id
    ("grant me admin", (), "parse.mention_not_found"),
    ("grant <at>Bob</at> owner", (BOB,), "parse.usage"),
    ("grant <at>Bob</at>", (BOB,), "parse.usage"),
    ("grant", (), "parse.usage"),
    ("revoke", (), "parse.usage"),
    ("revoke <at>Bob</at> <at>Jane Doe</at>", (BOB, JANE), "parse.mention_not_found"),
])
def test_grant_and_revoke_refusals(text: str, mentions: tuple[Mention, ...], key: str) -> None:
    assert fail(text, mentions=mentions).message_key == key


# --- refusals -----------------------------------------------------------------------------------------------------

REFUSED = [
    # text, currency, locale, key, params that must be there
    ("add", "USD", "en-US", "parse.usage", {"command": "add", "usage": "add <amount> [memo]"}),
    ("add -5", "USD", "en-US", "amount.negative", {"text": "-5"}),
    ("add 0", "USD", "en-US", "amount.zero", {}),
    ("add NaN", "USD", "en-US", "amount.not_finite", {"text": "NaN"}),
    ("add inf", "USD", "en-US", "amount.not_finite", {}),
    ("add ∞", "USD", "en-US", "amount.not_finite", {}),
    ("add 1.234", "USD", "en-US", "amount.too_precise", {"text": "1.234", "currency": "USD", "places": 2}),
    ("add 12.5", "JPY", "en-US", "amount.too_precise", {"currency": "JPY", "places": 0}),
    ("add 99999999999", "USD", "en-US", "amount.too_large", {"max": "$10,000,000.00"}),
    ("add €50", "USD", "en-US", "amount.other_currency", {"other": "EUR", "currency": "USD"}),
    ("add 50 EUR", "USD", "en-US", "amount.other_currency", {"other": "EUR", "text": "50 EUR"}),
    ("add EUR 50", "USD", "en-US", "amount.other_currency", {"other": "EUR"}),
    ("add 50 kr", "USD", "en-US", "amount.other_currency", {"other": "DKK"}),
    ("add ١٢٣", "USD", "en-US", "amount.unicode_digits", {}),
    ("add １２３", "USD", "en-US", "amount.unicode_digits", {}),
    ("add 12\u200f3", "USD", "en-US", "amount.unicode_digits", {}),
    ("add 1,25,0", "USD", "en-US", "amount.not_a_number", {"text": "1,25,0", "example": "1,250.50"}),
    ("add abc", "USD", "en-US", "amount.not_a_number", {"text": "abc"}),
    ("add 1,250.00", "DKK", "da-DK", "amount.not_a_number", {"example": "1.250,50"}),
    ("recharge 500", "USD", "en-US", "parse.usage", {"usage": "recharge <amount> below <trigger> [cap <amount>]"}),
    ("recharge below 100", "USD", "en-US", "parse.usage", {}),
    ("recharge 500 below", "USD", "en-US", "parse.usage", {}),
    ("recharge 500 below 100 cap", "USD", "en-US", "parse.usage", {}),
    ("recharge maybe", "USD", "en-US", "parse.usage", {}),
    ("recharge 500 below -1", "USD", "en-US", "amount.negative", {"text": "-1"}),
    ("recharge 0 below 100", "USD", "en-US", "amount.zero", {}),
    ("recharge 500 below 100 cap 0.001", "USD", "en-US", "amount.too_precise", {"text": "0.001"}),
    ("recharge 500 EUR below 100", "USD", "en-US", "amount.other_currency", {"other": "EUR"}),
    ("alerts 500, abc", "USD", "en-US", "amount.not_a_number", {"text": "abc"}),
    ("alerts 0", "USD", "en-US", "amount.zero", {}),
    ("alerts ;", "USD", "en-US", "parse.usage", {}),
    ("alerts failed 5", "USD", "en-US", "parse.usage", {"usage": "alerts failed"}),
    ("history 0", "USD", "en-US", "parse.history_count", {"text": "0", "max": 50}),
    ("history 51", "USD", "en-US", "parse.history_count", {"text": "51"}),
    ("history -1", "USD", "en-US", "parse.history_count", {}),
    ("history ten", "USD", "en-US", "parse.history_count", {}),
    ("history ٣", "USD", "en-US", "parse.history_count", {}),
    ("history 5 10", "USD", "en-US", "parse.history_count", {}),
    ("usage year", "USD", "en-US", "parse.usage", {"usage": "usage [7d|30d|month]"}),
    ("subscribe everything", "USD", "en-US", "parse.unknown_alert_kind", {"kind": "everything"}),
    ("currency dollars", "USD", "en-US", "parse.invalid_currency", {"code": "dollars"}),
    ("currency XTS", "USD", "en-US", "parse.invalid_currency", {"code": "XTS"}),
    ("currency USD EUR", "USD", "en-US", "parse.usage", {}),
    ("balance now", "USD", "en-US", "parse.usage", {"usage": "balance"}),
    ("forecast 7d", "USD", "en-US", "parse.usage", {}),
    ("whoami please", "USD", "en-US", "parse.usage", {}),
    ("roles all", "USD", "en-US", "parse.usage", {}),
    ("unsubscribe all", "USD", "en-US", "parse.usage", {}),
]


@pytest.mark.parametrize("text,currency,locale,key,params", REFUSED)
def test_refusals(text: str, currency: str, locale: str, key: str, params: dict[str, Any]) -> None:
    failure = fail(text, currency=currency, locale=locale)
    assert failure.message_key == key
    assert {k: failure.params.get(k) for k in params} == params
    assert failure.command is find_command(text.split()[0])
    # every failure renders in both languages with the params it carries
    for language in ("en", "da"):
        assert t(failure.message_key, language, **failure.params)


def test_every_amount_reason_reaches_the_user_as_its_own_key() -> None:
    from bot.amounts import REASONS
    reached = {key for _, _, _, key, _ in REFUSED if key.startswith("amount.")}
    assert reached | {"amount.empty"} == {f"amount.{r}" for r in REASONS}


@pytest.mark.parametrize("text,suggestions", [
    ("balanse", ("balance",)),
    ("recharg", ("recharge",)),
    ("BALANSE", ("balance",)),
    ("histroy", ("history",)),
    ("saldi", ("balance",)),           # close to the Danish alias, suggested by its English name
    ("subscrib", ("subscribe", "unsubscribe")),
])
def test_unknown_commands_get_suggestions(text: str, suggestions: tuple[str, ...]) -> None:
    failure = fail(text)
    assert failure.message_key == "parse.unknown_command_suggest"
    assert failure.params["suggestion_list"] == suggestions
    assert failure.params["command"] == text
    assert failure.command is None
    assert len(failure.params["suggestion_list"]) <= 3


def test_unknown_command_reply() -> None:
    failure = fail("balanse")
    assert t(failure.message_key, "en", **failure.params) == \
        "I don't know 'balanse'. Did you mean: balance? Type `help` to see everything I can do."
    assert t(failure.message_key, "da", **failure.params) == \
        "Jeg kender ikke »balanse«. Mente du: balance? Skriv `hjælp` for at se alt, hvad jeg kan."
    nothing = fail("xyzzy")
    assert nothing.message_key == "parse.unknown_command"
    assert nothing.params["suggestion_list"] == ()
    two = fail("subscrib")
    assert two.params["suggestions"] == "subscribe or unsubscribe"


def test_suggestions_are_at_most_three() -> None:
    failure = fail("re")  # close to nothing much; whatever comes, never more than three
    assert len(failure.params.get("suggestion_list", ())) <= 3


# --- the table ----------------------------------------------------------------------------------------------------

def test_the_table_has_one_entry_per_command() -> None:
    assert command_names() == ("help", "balance", "add", "recharge", "alerts", "history", "usage", "forecast",
                               "sync", "subscribe", "unsubscribe", "roles", "grant", "revoke", "whoami", "currency")
    words = [w.casefold() for c in COMMANDS for w in (c.name, *c.aliases)]
    assert len(words) == len(set(words))


def test_capabilities_of_the_table() -> None:
    by_name = {c.name: c for c in COMMANDS}
    assert by_name["whoami"].capability is None and by_name["help"].capability is None
    assert by_name["add"].capability is Capability.MOVE_MONEY
    assert by_name["grant"].capability is by_name["revoke"].capability is Capability.MANAGE_ROLES
    assert [f.capability for f in by_name["recharge"].forms] == [READ, SETTINGS, SETTINGS]
    assert [f.capability for f in by_name["currency"].forms] == [READ, SETTINGS]
    assert [f.capability for f in by_name["alerts"].forms] == [READ, SETTINGS, Capability.MANAGE_SUBSCRIPTIONS]


def test_commands_are_frozen() -> None:
    with pytest.raises(Exception):
        COMMANDS[0].name = "other"  # type: ignore[misc]


# --- help -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "da"])
def test_admin_help_lists_every_command_and_form(language: str) -> None:
    text = help_text(language, role=Role.ADMIN)
    for command in COMMANDS:
        assert f"`{command.name}" in text
        for form in command.forms:
            assert f"`{form.usage}`" in text
            assert f": {t(form.summary, language, **commands.HELP_PARAMS)}\n" in text + "\n"
    assert t("help.admins_can_do_more", language, commands="").split(":")[0] not in text


@pytest.mark.parametrize("role", [None, Role.READER])
def test_reader_help_shows_what_readers_can_do_and_says_admins_can_do_more(role: Role | None) -> None:
    text = help_text("en", role=role)
    for usage in ("balance", "history [n]", "usage [7d|30d|month]", "forecast", "roles", "whoami", "help",
                  "recharge", "alerts", "currency"):
        assert f"`{usage}`" in text
    for usage in ("add <amount> [memo]", "recharge on|off", "grant @user admin|reader", "subscribe [kinds]"):
        assert f"`{usage}`" not in text
    assert "Admins of this account can also use: add, recharge, alerts, sync, subscribe, unsubscribe, grant, " \
           "revoke, currency." in text
    assert ("You don't have a role" in text) is (role is None)


def test_help_lists_english_names_and_danish_aliases_in_danish() -> None:
    text = help_text("da", role=Role.ADMIN)
    assert "- `balance` (også: saldo): Vis saldoen" in text
    assert "hjaelp" not in text  # the ASCII spelling works but is not advertised
    assert "saldo" not in help_text("en", role=Role.ADMIN)


def test_help_is_generated_from_the_table() -> None:
    extra = Command("ping", "ping [loud]", "help.help", None)
    table = (*COMMANDS, extra)
    assert "`ping [loud]`" in help_text("en", role=None, commands=table)
    shorter = tuple(c for c in COMMANDS if c.name != "forecast")
    assert "`forecast`" not in help_text("en", role=Role.ADMIN, commands=shorter)
    renamed = tuple(replace(c, usage="balance [now]") if c.name == "balance" else c for c in COMMANDS)
    assert "`balance [now]`" in help_text("en", role=Role.READER, commands=renamed)
    admin_form = tuple(replace(c, more_forms=(Form("whoami --all", "help.whoami", Capability.MANAGE_ROLES),))
                       if c.name == "whoami" else c for c in COMMANDS)
    assert "`whoami --all`" in help_text("en", role=Role.ADMIN, commands=admin_form)
    assert "`whoami --all`" not in help_text("en", role=Role.READER, commands=admin_form)
    assert "also use: add, recharge, alerts, sync, subscribe, unsubscribe, grant, revoke, whoami, currency." in \
        help_text("en", role=Role.READER, commands=admin_form)


def test_no_bot_framework_and_no_io_in_these_modules() -> None:
    from tests.test_layering import ROOT, imported_modules, top_level
    for name in ("amounts", "commands", "i18n"):
        imported = top_level(imported_modules(ROOT / "bot" / f"{name}.py"))
        assert not imported & {"botbuilder", "botframework", "aiohttp", "os", "socket", "time", "pathlib",
                               "asyncio", "logging"}, name
        assert imported <= {"__future__", "babel", "storage", "bot", "dataclasses", "datetime", "decimal",
                            "difflib", "functools", "html", "re", "types", "typing", "unicodedata"}, name


def test_every_parse_failure_key_exists() -> None:
    import re as regex
    source = (commands.__file__ and open(commands.__file__, encoding="utf-8").read())
    keys = set(regex.findall(r'_Fail\("([\w.]+)"', source)) | {"parse.usage", "parse.unknown_command",
                                                              "parse.unknown_command_suggest"}
    assert keys and [k for k in keys if k not in MESSAGES] == []
