"""Exact money: integers in minor units inside, `Decimal` only at the edges, never float.

A currency's precision (2 for USD and DKK, 0 for JPY, 3 for KWD) comes from Babel's CLDR data. Conversions
refuse anything that would lose or invent money: more decimals than the currency has, NaN, infinities,
non-positive amounts where a positive one is needed, and magnitudes beyond `MAX_MAJOR_UNITS`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, list_currencies

from .errors import InvalidAmount, InvalidCurrency

#: Sanity bound on a single amount, in major units. A Communications Credits balance is a few hundred to a few
#: hundred thousand; ten million in one operation is a typo, not a top-up.
MAX_MAJOR_UNITS = Decimal(10_000_000)

_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


@lru_cache(maxsize=None)
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def normalize_currency(code: str) -> str:
    """Upper-cased ISO 4217 code, or `InvalidCurrency`. Funds codes and test codes (XTS, XXX) are refused."""
    if not isinstance(code, str):
        raise InvalidCurrency(repr(code))
    return _normalized(code)


@lru_cache(maxsize=1024)   # an import asks once per row, nearly always for the same code; refusals are not kept
def _normalized(code: str) -> str:
    upper = code.strip().upper()
    if len(upper) != 3 or not upper.isascii() or not upper.isalpha() or upper not in _known_currencies():
        raise InvalidCurrency(code)
    if upper.startswith("X") and upper not in {"XAF", "XOF", "XPF", "XCD"}:
        raise InvalidCurrency(code)  # metals, test and "no currency" codes are not money you pay calls with
    return upper


@lru_cache(maxsize=None)
def precision(currency: str) -> int:
    """Number of decimals of the currency's minor unit."""
    return get_currency_precision(normalize_currency(currency))


def max_minor(currency: str) -> int:
    return int(MAX_MAJOR_UNITS.scaleb(precision(currency)))


def to_minor(amount: Decimal | int | str, currency: str, *, allow_zero: bool = False,
             allow_negative: bool = False) -> int:
    """Major units (exact) to integer minor units of `currency`.

    `str` is parsed as a plain decimal (no grouping, no symbols: locale parsing belongs to the bot's edge).
    Raises `InvalidAmount` with a stable `reason`: not_a_number, not_finite, negative, zero, too_precise,
    too_large.
    """
    if isinstance(amount, bool) or isinstance(amount, float):
        raise InvalidAmount("not_a_number", "floats are never money")
    if isinstance(amount, str):
        text = amount.strip()
        if not _PLAIN_DECIMAL.fullmatch(text):  # no grouping, no "_", no non-ASCII digits, no NaN/Infinity
            raise InvalidAmount("not_a_number", amount)
        try:
            amount = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise InvalidAmount("not_a_number", amount) from None
    if isinstance(amount, int):
        amount = Decimal(amount)
    if not isinstance(amount, Decimal):
        raise InvalidAmount("not_a_number", type(amount).__name__)
    if amount.is_nan():
        raise InvalidAmount("not_a_number", "NaN")
    if not amount.is_finite():
        raise InvalidAmount("not_finite")
    if amount < 0 and not allow_negative:
        raise InvalidAmount("negative")
    if amount == 0 and not allow_zero:
        raise InvalidAmount("zero")
    if abs(amount) > MAX_MAJOR_UNITS:
        raise InvalidAmount("too_large", str(MAX_MAJOR_UNITS))
    places = precision(currency)
    scaled = amount.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount("too_precise", str(places))
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """Integer minor units to an exact `Decimal` in major units (for display and export)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("minor units are integers")
    places = precision(currency)
    return Decimal(minor).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def check_minor(value: int, *, what: str = "amount", allow_zero: bool = False,
                allow_negative: bool = False) -> int:
    """Validate an integer minor-unit amount handed to the ledger (type, sign, bound)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount("not_a_number", f"{what} must be an integer number of minor units")
    if value < 0 and not allow_negative:
        raise InvalidAmount("negative", what)
    if value == 0 and not allow_zero:
        raise InvalidAmount("zero", what)
    if abs(value) > 10**15:
        raise InvalidAmount("too_large", what)
    return value
