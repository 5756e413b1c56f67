"""Replies in English and Danish (bot/i18n.py): the catalog is complete and consistent, errors map to specific
messages, and money, dates and lists come out exactly as Babel writes them on this machine."""

from __future__ import annotations

import re
import string
from dataclasses import replace
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from bot import amounts, i18n
from bot.commands import COMMANDS
from bot.i18n import (LANGUAGES, MESSAGES, denied_key, format_date, format_datetime, format_list, format_money,
                      format_number_example, language_for, ledger_error_key, ledger_error_message,
                      resolve_locale, t)
from storage import errors
from storage.model import AlertKind, EntryKind, RechargeSettings, Role
from storage.policy import Capability, validate_recharge

STORAGE = Path(__file__).resolve().parents[1] / "storage"


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


# --- language and locale ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("locale,fallback,language", [
    ("da", "en-US", "da"), ("da-DK", "en-US", "da"), ("da_DK", "en-US", "da"), ("DA-dk", "en-US", "da"),
    ("da-GL", "en-US", "da"), ("en-US", "en-US", "en"), ("en-GB", "da-DK", "da"), ("de-DE", "en-US", "en"),
    ("de-DE", "da-DK", "da"), (None, "da-DK", "da"), (None, "en-US", "en"), ("", "en-US", "en"),
    ("dansk", "en-US", "en"), ("x-klingon", "fr-FR", "en"),
])
def test_language_for(locale: str | None, fallback: str, language: str) -> None:
    assert language_for(locale, fallback) == language


@pytest.mark.parametrize("locale,fallback,resolved", [
    ("en-US", "en-US", "en-US"), ("en-GB", "en-US", "en-GB"), ("da-DK", "en-US", "da-DK"), ("da", "en-US", "da"),
    ("de-DE", "en-US", "en-US"),       # reply in English, so amounts and money are English too
    ("de-DE", "da-DK", "da-DK"),
    ("en-US", "da-DK", "da-DK"),       # Danish replies (the fallback) with Danish numbers
    (None, "en-GB", "en-GB"), (None, "fr-FR", "en-US"), ("da-XX", "en-US", "da-DK"),
])
def test_resolve_locale_agrees_with_the_reply_language(locale: str | None, fallback: str, resolved: str) -> None:
    assert resolve_locale(locale, fallback) == resolved
    assert language_for(resolved, "en-US") == language_for(locale, fallback)


# --- the catalog ------------------------------------------------------------------------------------------------

def test_every_message_has_every_language() -> None:
    assert LANGUAGES == ("en", "da")
    for key, templates in MESSAGES.items():
        assert set(templates) == set(LANGUAGES), key
        for language in LANGUAGES:
            assert templates[language].strip(), (key, language)


def test_both_languages_have_the_same_placeholders() -> None:
    for key, templates in MESSAGES.items():
        assert placeholders(templates["en"]) == placeholders(templates["da"]), key


def test_every_message_formats_with_its_placeholders() -> None:
    for key, templates in MESSAGES.items():
        for language, template in templates.items():
            names = placeholders(template)
            assert all(name.isidentifier() for name in names), (key, "positional or indexed placeholder")
            text = t(key, language, **{name: f"<{name}>" for name in names})
            assert "{" not in text and "}" not in text, (key, language)


def test_danish_uses_microsofts_terms() -> None:
    danish = "\n".join(m["da"] for m in MESSAGES.values())
    for term in ("Kommunikationskreditter", "Indsæt flere penge", "Rediger indstillinger for opfyldning",
                 "Når saldoen er under", "Gem ændringer"):
        assert term in danish, term
    assert t("label.add_funds", "da") == "Indsæt flere penge"
    assert t("label.edit_recharge", "da") == "Rediger indstillinger for opfyldning"
    assert t("label.when_below", "da") == "Når saldoen er under"
    assert t("label.save_changes", "da") == "Gem ændringer"
    assert t("label.product", "da") == "Kommunikationskreditter"


def test_names_of_things_are_all_there() -> None:
    wanted = ([f"kind.{k.value}" for k in EntryKind] + [f"alert_kind.{k.value}" for k in AlertKind]
              + [f"role.{r.value}" for r in Role] + [f"period.{p}" for p in ("7d", "30d", "month")]
              + [denied_key(c) for c in Capability])
    assert [k for k in wanted if k not in MESSAGES] == []


def test_every_command_summary_is_in_the_catalog() -> None:
    for command in COMMANDS:
        for form in command.forms:
            assert form.summary in MESSAGES, (command.name, form.usage)


def test_every_amount_reason_has_its_own_message() -> None:
    keys = [f"amount.{reason}" for reason in amounts.REASONS]
    assert [k for k in keys if k not in MESSAGES] == []
    assert len({MESSAGES[k]["en"] for k in keys}) == len(keys)


def test_t_falls_back_to_english_and_refuses_unknown_keys() -> None:
    assert t("label.balance", "fr") == "Balance"
    assert t("label.balance", "da") == "Saldo"
    with pytest.raises(KeyError):
        t("no.such.key", "en")
    assert t("balance.reply", "en", balance="$5.00", unused="ignored") == "Communications Credits balance: $5.00"


def test_messages_the_brief_spells_out() -> None:
    assert t("error.crash", "en", incident="abc123") == \
        "Something went wrong on our side. Incident id: abc123. Nothing was changed."
    assert t(denied_key(Capability.MOVE_MONEY), "en") == \
        "Only admins of this account can add funds. Ask an admin to grant you the admin role."
    assert t("parse.unknown_command_suggest", "en", command="balanse", suggestions="balance") == \
        "I don't know 'balanse'. Did you mean: balance? Type `help` to see everything I can do."
    assert t("amount.too_precise", "en", text="1.234", currency="USD", places=2) == \
        "'1.234' has more decimals than USD allows (2)."
    assert "Hændelses-id: abc123" in t("error.crash", "da", incident="abc123")


# --- amount failures --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,currency,locale,language,expected", [
    ("1.234", "USD", "en-US", "en", "'1.234' has more decimals than USD allows (2)."),
    ("12.5", "JPY", "en-US", "en", "'12.5' has more decimals than JPY allows (0)."),
    ("€50", "USD", "en-US", "en", "'€50' is in EUR, but this account uses USD. Amounts are never converted: "
                                  "please give the amount in USD."),
    ("99999999999", "USD", "en-US", "en",
     "'99999999999' is more than the largest amount allowed at once ($10,000,000.00)."),
    ("1,250.00", "DKK", "da-DK", "da", "Jeg kan ikke læse »1,250.00« som et beløb. Skriv det sådan her: 1.250,50."),
    ("abc", "USD", "en-US", "en", "I can't read 'abc' as an amount. Write it like this: 1,250.50."),
    ("0", "DKK", "da-DK", "da", "Beløbet skal være større end nul."),
])
def test_amount_failures_read_well(text: str, currency: str, locale: str, language: str, expected: str) -> None:
    with pytest.raises(amounts.AmountError) as caught:
        amounts.parse_amount(text, currency=currency, locale=locale)
    key, params = i18n.amount_failure(caught.value, text=text, currency=currency, locale=locale)
    assert t(key, language, **params) == expected


# --- ledger errors ----------------------------------------------------------------------------------------------

def storage_literals(pattern: str) -> set[str]:
    found: set[str] = set()
    for path in STORAGE.rglob("*.py"):
        found |= set(re.findall(pattern, path.read_text(encoding="utf-8")))
    return found


def invalid_settings_reasons() -> set[str]:
    reasons = storage_literals(r'InvalidSettings\("(\w+)"\)')
    # validate_recharge builds three reasons with an f-string; collect those by asking it.
    for name in ("amount", "trigger", "max_per_day", "monthly_cap"):
        with pytest.raises(errors.InvalidSettings) as caught:
            validate_recharge(replace(RechargeSettings(), **{name: "1"}))
        reasons.add(caught.value.reason)
    return reasons


def test_every_invalid_settings_reason_has_its_own_message() -> None:
    reasons = invalid_settings_reasons()
    assert {"amount_zero", "cap_below_amount", "unknown_kind", "amount_not_integer"} <= reasons  # the scan works
    keys = {reason: ledger_error_key(errors.InvalidSettings(reason), currency="USD", locale="en-US")[0]
            for reason in reasons}
    assert {r: k for r, k in keys.items() if k != f"error.invalid_settings.{r}"} == {}


def test_every_invalid_amount_reason_has_its_own_message() -> None:
    reasons = storage_literals(r'InvalidAmount\("(\w+)"')
    assert {"not_a_number", "not_finite", "negative", "zero", "too_precise", "too_large"} == reasons
    for reason in reasons:
        key, _ = ledger_error_key(errors.InvalidAmount(reason), currency="USD", locale="en-US")
        assert key == f"error.invalid_amount.{reason}"


def test_every_not_found_kind_has_its_own_message() -> None:
    whats = storage_literals(r'NotFound\("(\w+)"')
    assert "role" in whats and "subscription" in whats
    for what in whats:
        key, _ = ledger_error_key(errors.NotFound(what, "x"), currency="USD", locale="en-US")
        assert key == f"error.not_found.{what}"


LEDGER_ERRORS = [
    (errors.AccountNotFound("t1"), "en", "There is no Communications Credits account for this organisation yet."),
    (errors.InvalidCurrency("ABC"), "en",
     "'ABC' is not a currency code I can use. Give an ISO 4217 code such as USD, EUR or DKK."),
    (errors.CurrencyMismatch("USD", "EUR"), "en",
     "This account uses USD, but the amount is in EUR. Amounts are never converted."),
    (errors.CurrencyLocked("USD"), "en",
     "The currency is USD, and it can't change once the account has its first entry."),
    (errors.InsufficientFunds(1000, 125050), "en",
     "The balance ($10.00) is less than $1,250.50, so nothing was taken."),
    (errors.InsufficientFunds(1000, 125050), "da",
     "Saldoen (10,00\xa0US$) er mindre end 1.250,50\xa0US$, så intet er trukket."),
    (errors.IdempotencyConflict("k", "add_funds"), "en",
     "This request was already used for a different change, so nothing was done. Please send the command "
     "again, or open a fresh form."),
    (errors.InvalidSettings("cap_below_amount"), "en",
     "The monthly cap must be at least the recharge amount, or no recharge could ever happen."),
    (errors.InvalidSettings("too_many_thresholds"), "en", "At most 10 alert thresholds can be set."),
    (errors.InvalidSettings("brand_new_reason"), "en", "Those settings can't work, so nothing was saved."),
    (errors.InvalidAmount("too_precise", "2"), "en", "That amount has more decimals than USD allows (2)."),
    (errors.NotFound("role", "aad-1"), "en", "Jane Doe has no role in this account."),
    (errors.NotFound("subscription", "conv"), "da", "Denne samtale abonnerer ikke på advarsler."),
    (errors.NotFound("gadget", "x"), "en", "That doesn't exist (any more)."),
    (errors.LeaseLost("a", "w"), "en", "That couldn't be done, and nothing was changed."),
]


@pytest.mark.parametrize("exc,language,expected", LEDGER_ERRORS)
def test_ledger_errors_read_well(exc: errors.LedgerError, language: str, expected: str) -> None:
    locale = "da-DK" if language == "da" else "en-US"
    assert ledger_error_message(exc, language, currency="USD", locale=locale, names={"aad-1": "Jane Doe"}) == \
        expected


def test_every_user_facing_ledger_error_class_is_covered() -> None:
    specific = {errors.AccountNotFound: errors.AccountNotFound("t"), errors.InvalidAmount: errors.InvalidAmount("zero"),
                errors.InvalidCurrency: errors.InvalidCurrency("X"),
                errors.CurrencyMismatch: errors.CurrencyMismatch("USD", "EUR"),
                errors.CurrencyLocked: errors.CurrencyLocked("USD"),
                errors.InsufficientFunds: errors.InsufficientFunds(1, 2),
                errors.IdempotencyConflict: errors.IdempotencyConflict("k", "op"),
                errors.InvalidSettings: errors.InvalidSettings("amount_zero"),
                errors.NotFound: errors.NotFound("role", "u")}
    for cls, exc in specific.items():
        key, _ = ledger_error_key(exc, currency="USD", locale="en-US")
        assert key != "error.ledger", cls


# --- formatting -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("minor,currency,locale,expected", [
    (125050, "USD", "en-US", "$1,250.50"),
    (125050, "DKK", "da-DK", "1.250,50\xa0kr."),
    (1250, "JPY", "en-US", "¥1,250"),
    (1250, "JPY", "da-DK", "1.250\xa0JP¥"),
    (-500, "USD", "en-US", "-$5.00"),
    (0, "USD", "en-US", "$0.00"),
    (1250, "KWD", "en-US", "KWD\xa01.250"),       # CLDR currency spacing, which Babel leaves out
    (125050, "DKK", "en-US", "DKK\xa01,250.50"),
    (-125050, "DKK", "en-US", "-DKK\xa01,250.50"),
    (125050, "SEK", "da-DK", "1.250,50\xa0SEK"),
    (125050, "EUR", "da-DK", "1.250,50\xa0€"),
    (125050, "USD", "da-DK", "1.250,50\xa0US$"),
    (100000000000, "USD", "en-US", "$1,000,000,000.00"),
])
def test_format_money(minor: int, currency: str, locale: str, expected: str) -> None:
    assert format_money(minor, currency, locale) == expected


def test_format_money_takes_integers_only() -> None:
    with pytest.raises(TypeError):
        format_money(12.5, "USD", "en-US")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_money(Decimal("12.5"), "USD", "en-US")  # type: ignore[arg-type]


def test_format_dates_and_lists() -> None:
    moment = datetime(2026, 3, 5, 14, 30, tzinfo=timezone.utc)
    assert format_date(moment, "en-US") == "Mar 5, 2026"
    assert format_date(date(2026, 3, 5), "da-DK") == "5. mar. 2026"
    assert format_datetime(moment, "da-DK") == "05.03.2026 14.30"
    assert format_datetime(moment, "en-US") == "3/5/26, 2:30\u202fPM"
    assert format_list(["a", "b", "c"], "en-US") == "a, b, and c"
    assert format_list(["a", "b", "c"], "da-DK", style="or") == "a, b eller c"
    assert i18n.format_money_list([50000, 10000], "DKK", "da-DK") == "500,00\xa0kr. og 100,00\xa0kr."


@pytest.mark.parametrize("currency,locale,expected", [
    ("USD", "en-US", "1,250.50"), ("DKK", "da-DK", "1.250,50"), ("JPY", "en-US", "1,250"),
    ("KWD", "en-US", "1,250.500"),
])
def test_number_example_is_readable_back(currency: str, locale: str, expected: str) -> None:
    example = format_number_example(currency, locale)
    assert example == expected
    amounts.parse_amount(example, currency=currency, locale=locale)
