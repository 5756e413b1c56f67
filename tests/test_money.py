"""Table tests of storage/money.py: exact conversions that refuse to lose or invent money."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from storage.errors import InvalidAmount, InvalidCurrency
from storage.money import check_minor, max_minor, normalize_currency, precision, to_major, to_minor


@pytest.mark.parametrize("currency, places", [
    ("USD", 2), ("EUR", 2), ("DKK", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3), ("usd", 2),
])
def test_precision_comes_from_cldr(currency, places):
    assert precision(currency) == places


@pytest.mark.parametrize("amount, currency, minor", [
    ("12.34", "USD", 1234),
    (" 12.50 ", "USD", 1250),
    ("12.340", "USD", 1234),              # extra zeros are not extra precision
    ("+5", "USD", 500),
    (Decimal("12.3"), "USD", 1230),
    (5, "USD", 500),
    ("0.01", "USD", 1),
    ("1000", "JPY", 1000),
    ("1000.0", "JPY", 1000),
    ("1.234", "KWD", 1234),
    ("0.001", "KWD", 1),
    (".5", "USD", 50),
    ("5.", "USD", 500),
    ("10000000", "USD", 1_000_000_000),   # the sanity bound itself is allowed
    ("10000000", "JPY", 10_000_000),
])
def test_to_minor(amount, currency, minor):
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize("amount, currency, reason", [
    (1.5, "USD", "not_a_number"),          # floats are never money
    (0.0, "USD", "not_a_number"),
    (True, "USD", "not_a_number"),
    (False, "USD", "not_a_number"),
    (None, "USD", "not_a_number"),
    ("abc", "USD", "not_a_number"),
    ("", "USD", "not_a_number"),
    ("1,000", "USD", "not_a_number"),     # grouping belongs to the bot's locale-aware edge
    ("$5", "USD", "not_a_number"),
    ("NaN", "USD", "not_a_number"),
    ("sNaN", "USD", "not_a_number"),
    ("nan", "USD", "not_a_number"),
    (Decimal("NaN"), "USD", "not_a_number"),
    ("Infinity", "USD", "not_a_number"),  # strings are plain decimals only
    ("-Infinity", "USD", "not_a_number"),
    ("inf", "USD", "not_a_number"),
    (Decimal("Infinity"), "USD", "not_finite"),
    (Decimal("-Infinity"), "USD", "not_finite"),
    ("1_000", "USD", "not_a_number"),     # Decimal would read it as 1000
    ("١٢", "USD", "not_a_number"),        # Arabic-Indic digits: Decimal would read them as 12
    ("１２", "USD", "not_a_number"),      # full-width digits
    ("1e5", "USD", "not_a_number"),       # no exponent notation
    ("1e2", "USD", "not_a_number"),
    ("1E-2", "USD", "not_a_number"),
    ("1 000", "USD", "not_a_number"),
    ("0x10", "USD", "not_a_number"),
    (".", "USD", "not_a_number"),
    ("+", "USD", "not_a_number"),
    ("--1", "USD", "not_a_number"),
    ("-1", "USD", "negative"),
    ("-0.01", "USD", "negative"),
    ("0", "USD", "zero"),
    ("0.00", "USD", "zero"),
    ("-0", "USD", "zero"),
    ("0.001", "USD", "too_precise"),
    ("12.345", "USD", "too_precise"),
    ("1.5", "JPY", "too_precise"),        # the yen has no minor unit
    ("0.1", "JPY", "too_precise"),
    ("1.2345", "KWD", "too_precise"),     # the dinar has three decimals, not four
    ("10000000.01", "USD", "too_large"),
    ("1e100", "USD", "not_a_number"),
    ("100000000000000000000", "USD", "too_large"),
    (10**9, "USD", "too_large"),
])
def test_to_minor_refuses(amount, currency, reason):
    with pytest.raises(InvalidAmount) as error:
        to_minor(amount, currency)
    assert error.value.reason == reason


@pytest.mark.parametrize("amount, kwargs, minor", [
    ("0", {"allow_zero": True}, 0),
    ("-1.50", {"allow_negative": True}, -150),
    ("-10000000", {"allow_negative": True}, -1_000_000_000),
])
def test_to_minor_allowances(amount, kwargs, minor):
    assert to_minor(amount, "USD", **kwargs) == minor


def test_to_minor_still_refuses_too_large_negative_amounts():
    with pytest.raises(InvalidAmount) as error:
        to_minor("-10000000.01", "USD", allow_negative=True)
    assert error.value.reason == "too_large"


@pytest.mark.parametrize("currency", ["ZZZ", "XTS", "", 840])
def test_to_minor_refuses_unknown_currencies(currency):
    with pytest.raises(InvalidCurrency):
        to_minor("1", currency)


@pytest.mark.parametrize("minor, currency, major", [
    (1234, "USD", "12.34"),
    (1, "USD", "0.01"),
    (0, "USD", "0.00"),
    (-5, "USD", "-0.05"),
    (1000, "JPY", "1000"),
    (1, "KWD", "0.001"),
    (10125, "KWD", "10.125"),
])
def test_to_major(minor, currency, major):
    result = to_major(minor, currency)
    assert isinstance(result, Decimal) and str(result) == major


@pytest.mark.parametrize("value", [1.0, True, "1", Decimal(1)])
def test_to_major_wants_integers(value):
    with pytest.raises(TypeError):
        to_major(value, "USD")


@given(minor=st.integers(min_value=-1_000_000_000, max_value=1_000_000_000),
       currency=st.sampled_from(["USD", "JPY", "KWD", "EUR"]))
def test_minor_to_major_and_back_is_exact(minor, currency):
    minor = max(-max_minor(currency), min(max_minor(currency), minor))
    assert to_minor(to_major(minor, currency), currency, allow_zero=True, allow_negative=True) == minor
    # what to_major prints is a plain decimal that to_minor reads back
    assert to_minor(str(to_major(minor, currency)), currency, allow_zero=True, allow_negative=True) == minor


@pytest.mark.parametrize("currency, max_units", [("USD", 10**9), ("JPY", 10**7), ("KWD", 10**10)])
def test_max_minor(currency, max_units):
    assert max_minor(currency) == max_units


@pytest.mark.parametrize("code, normal", [("usd", "USD"), (" eur ", "EUR"), ("JPY", "JPY"), ("XAF", "XAF"),
                                          ("xof", "XOF"), ("XPF", "XPF"), ("XCD", "XCD")])
def test_normalize_currency(code, normal):
    assert normalize_currency(code) == normal


@pytest.mark.parametrize("code", ["XTS", "XXX", "XAU", "XDR", "ABC", "US", "USDD", "", "ÜSD", "U$D", 840, None])
def test_normalize_currency_refuses(code):
    with pytest.raises(InvalidCurrency):
        normalize_currency(code)


@pytest.mark.parametrize("value, kwargs, reason", [
    (1, {}, None),
    (10**15, {}, None),
    (0, {"allow_zero": True}, None),
    (-1, {"allow_negative": True}, None),
    (0, {}, "zero"),
    (-1, {}, "negative"),
    (10**15 + 1, {}, "too_large"),
    (-(10**15 + 1), {"allow_negative": True}, "too_large"),
    (1.0, {}, "not_a_number"),
    (True, {}, "not_a_number"),
    ("1", {}, "not_a_number"),
    (Decimal(1), {}, "not_a_number"),
    (None, {}, "not_a_number"),
])
def test_check_minor(value, kwargs, reason):
    if reason is None:
        assert check_minor(value, **kwargs) == value
    else:
        with pytest.raises(InvalidAmount) as error:
            check_minor(value, **kwargs)
        assert error.value.reason == reason
