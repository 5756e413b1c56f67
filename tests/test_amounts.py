"""Amounts typed by people (bot/amounts.py): every accepted form, every refusal, in en-US and da-DK."""

from __future__ import annotations

import pytest

from bot import amounts
from bot.amounts import AmountError, currency_of, parse_amount, parse_positive_int
from storage.errors import InvalidAmount
from storage.money import MAX_MAJOR_UNITS, max_minor

ACCEPTED = [
    # text, currency, locale, minor units
    ("250", "USD", "en-US", 25000),
    ("250.50", "USD", "en-US", 25050),
    ("$250", "USD", "en-US", 25000),
    ("250 USD", "USD", "en-US", 25000),
    ("USD 250", "USD", "en-US", 25000),
    ("usd 250", "USD", "en-US", 25000),
    ("1,250.00", "USD", "en-US", 125000),
    ("$1,250.00", "USD", "en-US", 125000),
    ("$ 1,250.5", "USD", "en-US", 125050),
    ("250$", "USD", "en-US", 25000),
    ("US$250", "USD", "en-US", 25000),
    ("1,000,000", "USD", "en-US", 100000000),
    (".5", "USD", "en-US", 50),
    ("  250\u00a0USD ", "USD", "en-US", 25000),
    ("+250", "USD", "en-US", 25000),
    ("10000000", "USD", "en-US", 1000000000),  # exactly the bound
    ("250", "USD", "en_US", 25000),
    ("1.250,50 kr.", "DKK", "da-DK", 125050),
    ("1.250,50 DKK", "DKK", "da-DK", 125050),
    ("1.250,50\u00a0kr.", "DKK", "da-DK", 125050),  # as Babel formats it
    ("250 kr", "DKK", "da-DK", 25000),
    ("250 kr.", "DKK", "da-DK", 25000),
    ("kr. 250", "DKK", "da-DK", 25000),
    ("kr 250", "DKK", "da-DK", 25000),
    ("KR. 250", "DKK", "da-DK", 25000),
    ("250,5", "DKK", "da-DK", 25050),
    ("dkk 250", "DKK", "da-DK", 25000),
    ("250 kr", "DKK", "en-US", 25000),       # Danish symbol in an English client
    ("kr.250", "DKK", "en-US", 25000),       # "kr." is the symbol, not a decimal point
    ("US$250", "USD", "da-DK", 25000),
    ("$250", "USD", "da-DK", 25000),         # the English symbol counts too
    ("€250", "EUR", "en-US", 25000),
    ("250 €", "EUR", "da-DK", 25000),
    ("¥1,250", "JPY", "en-US", 1250),
    ("1250", "JPY", "en-US", 1250),
    ("1.250", "KWD", "en-US", 1250),         # three decimals are KWD's own
    ("50 kr", "SEK", "en-US", 5000),         # Swedish kronor, from the locale of the country that uses them
    ("1 250,50", "EUR", "fr-FR", 125050),    # a locale that groups with a (narrow) no-break space
]


@pytest.mark.parametrize("text,currency,locale,minor", ACCEPTED)
def test_accepted_forms(text: str, currency: str, locale: str, minor: int) -> None:
    assert parse_amount(text, currency=currency, locale=locale) == minor


REFUSED = [
    # text, currency, locale, reason, detail (None: not checked)
    ("", "USD", "en-US", "empty", None),
    ("   ", "USD", "en-US", "empty", None),
    ("\u00a0", "USD", "en-US", "empty", None),
    ("-5", "USD", "en-US", "negative", None),
    ("\u22125", "USD", "en-US", "negative", None),  # minus sign
    ("-$5", "USD", "en-US", "negative", None),
    ("$-5", "USD", "en-US", "negative", None),
    ("USD -5", "USD", "en-US", "negative", None),
    ("-5 kr.", "DKK", "da-DK", "negative", None),
    ("0", "USD", "en-US", "zero", None),
    ("0.00", "USD", "en-US", "zero", None),
    ("$0", "USD", "en-US", "zero", None),
    ("-0", "USD", "en-US", "zero", None),
    ("0 kr.", "DKK", "da-DK", "zero", None),
    ("NaN", "USD", "en-US", "not_finite", None),
    ("nan", "USD", "en-US", "not_finite", None),
    ("inf", "USD", "en-US", "not_finite", None),
    ("-inf", "USD", "en-US", "not_finite", None),
    ("Infinity", "USD", "en-US", "not_finite", None),
    ("∞", "USD", "en-US", "not_finite", None),
    ("$∞", "USD", "en-US", "not_finite", None),
    ("1.234", "USD", "en-US", "too_precise", "2"),
    ("0.001", "USD", "en-US", "too_precise", "2"),
    ("1.250", "USD", "en-US", "too_precise", "2"),   # not 1.25: in Danish that is 1250
    ("250.500", "USD", "en-US", "too_precise", "2"),
    ("12.5", "JPY", "en-US", "too_precise", "0"),
    ("1,250", "DKK", "da-DK", "too_precise", "2"),   # not 1.25 kr.
    ("1.2345", "KWD", "en-US", "too_precise", "3"),
    ("99999999999", "USD", "en-US", "too_large", None),
    ("10000000.01", "USD", "en-US", "too_large", None),
    ("99.999.999.999 kr.", "DKK", "da-DK", "too_large", None),
    ("€50", "USD", "en-US", "other_currency", "EUR"),
    ("50 EUR", "USD", "en-US", "other_currency", "EUR"),
    ("50 eur", "USD", "en-US", "other_currency", "EUR"),
    ("EUR 50", "USD", "en-US", "other_currency", "EUR"),
    ("£50", "USD", "en-US", "other_currency", "GBP"),
    ("¥50", "USD", "en-US", "other_currency", "JPY"),
    ("50 kr", "USD", "en-US", "other_currency", "DKK"),
    ("50 kr.", "USD", "da-DK", "other_currency", "DKK"),
    ("$50", "DKK", "da-DK", "other_currency", "USD"),
    ("$50", "EUR", "en-US", "other_currency", "USD"),
    ("50 SEK", "DKK", "da-DK", "other_currency", "SEK"),
    ("CA$50", "USD", "en-US", "other_currency", "CAD"),
    ("€-50", "USD", "en-US", "other_currency", "EUR"),  # the currency is checked before the number
    ("١٢٣", "USD", "en-US", "unicode_digits", None),  # Arabic-Indic
    ("１２３", "USD", "en-US", "unicode_digits", None),  # full-width
    ("²", "USD", "en-US", "unicode_digits", None),
    ("1²", "USD", "en-US", "unicode_digits", None),
    ("१२३", "USD", "en-US", "unicode_digits", None),  # Devanagari
    ("Ⅻ", "USD", "en-US", "unicode_digits", None),
    ("12\u200f3", "USD", "en-US", "unicode_digits", None),  # RLM
    ("\u200e123", "USD", "en-US", "unicode_digits", None),  # LRM
    ("\u202e321", "USD", "en-US", "unicode_digits", None),  # RLO
    ("123\u2066", "USD", "en-US", "unicode_digits", None),  # LRI
    ("\u2069123", "USD", "en-US", "unicode_digits", None),  # PDI
    ("$\u061c5", "USD", "en-US", "unicode_digits", None),   # ALM
    ("1,25,0", "USD", "en-US", "not_a_number", None),
    ("1,2500", "USD", "en-US", "not_a_number", None),
    ("1.250,50", "USD", "en-US", "not_a_number", None),
    ("1,250.00", "DKK", "da-DK", "not_a_number", None),
    ("1.25.0", "DKK", "da-DK", "not_a_number", None),
    ("abc", "USD", "en-US", "not_a_number", None),
    ("12abc", "USD", "en-US", "not_a_number", None),
    ("1e5", "USD", "en-US", "not_a_number", None),
    ("1_000", "USD", "en-US", "not_a_number", None),
    ("1 000", "USD", "en-US", "not_a_number", None),
    ("0x10", "USD", "en-US", "not_a_number", None),
    ("5.", "USD", "en-US", "not_a_number", None),
    ("--5", "USD", "en-US", "not_a_number", None),
    ("$5 USD", "USD", "en-US", "not_a_number", None),  # two currencies
    ("5 XYZ", "USD", "en-US", "not_a_number", None),
    ("info", "USD", "en-US", "not_a_number", None),    # "inf" only as a word
    ("$", "USD", "en-US", "not_a_number", None),
    ("1\u200b000", "USD", "en-US", "not_a_number", None),  # zero-width space
]


@pytest.mark.parametrize("text,currency,locale,reason,detail", REFUSED)
def test_refusals(text: str, currency: str, locale: str, reason: str, detail: str | None) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(text, currency=currency, locale=locale)
    assert caught.value.reason == reason
    if detail is not None:
        assert caught.value.detail == detail


def test_every_reason_is_listed_and_reachable() -> None:
    reached = {reason for *_, reason, _ in REFUSED}
    assert reached == set(amounts.REASONS)


def test_amount_error_is_a_plain_exception_with_a_stable_reason() -> None:
    error = AmountError("other_currency", "EUR")
    assert isinstance(error, Exception) and not isinstance(error, InvalidAmount)
    assert (error.reason, error.detail) == ("other_currency", "EUR")
    assert AmountError("zero").detail == ""


def test_zero_is_allowed_when_asked() -> None:
    assert parse_amount("0", currency="USD", locale="en-US", allow_zero=True) == 0
    with pytest.raises(AmountError, match="negative"):
        parse_amount("-1", currency="USD", locale="en-US", allow_zero=True)


def test_the_bound_is_storages() -> None:
    assert parse_amount(str(MAX_MAJOR_UNITS), currency="USD", locale="en-US") == max_minor("USD")
    assert amounts.max_amount_minor("JPY") == max_minor("JPY")


def test_unicode_digits_are_refused_not_converted() -> None:
    # Python's Decimal and Babel would both happily read these as 123.
    for text in ("١٢٣", "１２３", "۱۲۳"):
        with pytest.raises(AmountError) as caught:
            parse_amount(text, currency="USD", locale="en-US")
        assert caught.value.reason == "unicode_digits"


def test_a_bad_locale_or_currency_is_the_callers_mistake() -> None:
    with pytest.raises(ValueError):
        parse_amount("5", currency="USD", locale="xx-klingon")
    from storage.errors import InvalidCurrency
    with pytest.raises(InvalidCurrency):
        parse_amount("5", currency="ZZZ", locale="en-US")


CURRENCY_TOKENS = [
    # token, account currency, locale, strict_codes, code
    ("$", "USD", "en-US", False, "USD"),
    ("usd", "USD", "en-US", True, "USD"),
    ("kr.", "DKK", "da-DK", False, "DKK"),
    ("kr", "DKK", "da-DK", False, "DKK"),
    ("€", "USD", "en-US", False, "EUR"),
    ("EUR", "USD", "en-US", True, "EUR"),
    ("eur", "USD", "en-US", True, None),   # a lower-case word in a memo is not taken for a code
    ("all", "USD", "en-US", True, None),
    ("all", "USD", "en-US", False, "ALL"),
    ("Q3", "USD", "en-US", False, None),
    ("", "USD", "en-US", False, None),
]


@pytest.mark.parametrize("token,currency,locale,strict,code", CURRENCY_TOKENS)
def test_currency_of(token: str, currency: str, locale: str, strict: bool, code: str | None) -> None:
    assert currency_of(token, currency=currency, locale=locale, strict_codes=strict) == code


def test_symbol_locales_are_the_reply_languages() -> None:
    from bot.i18n import LANGUAGES
    assert tuple(amounts.SYMBOL_LOCALES) == tuple(LANGUAGES)


@pytest.mark.parametrize("currency,locale", [
    ("USD", "en-US"), ("DKK", "da-DK"), ("JPY", "en-US"), ("JPY", "da-DK"), ("EUR", "da-DK"), ("USD", "da-DK"),
    ("DKK", "en-US"), ("KWD", "en-US"), ("SEK", "da-DK"), ("GBP", "en-GB"), ("CHF", "de-CH"),
])
@pytest.mark.parametrize("minor", [1, 99, 125050, 10000000])
def test_what_the_bot_writes_it_can_read_back(currency: str, locale: str, minor: int) -> None:
    from bot.i18n import format_money
    assert parse_amount(format_money(minor, currency, locale), currency=currency, locale=locale) == minor


POSITIVE_INTS = [("1", 1), ("50", 50), (" 7 ", 7), ("+3", 3), ("007", 7)]


@pytest.mark.parametrize("text,value", POSITIVE_INTS)
def test_parse_positive_int(text: str, value: int) -> None:
    assert parse_positive_int(text, max_value=50) == value


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("0", "zero"), ("-3", "negative"), ("51", "too_large"), ("2.5", "not_a_number"),
    ("ten", "not_a_number"), ("٣", "unicode_digits"), ("1\u200f0", "unicode_digits"), ("1e1", "not_a_number"),
])
def test_parse_positive_int_refusals(text: str, reason: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_positive_int(text, max_value=50)
    assert caught.value.reason == reason
