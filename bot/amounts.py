"""Amounts typed by people, read exactly: text in a locale to integer minor units of the account's currency.

Pure: no I/O, no clock. Locale data comes from Babel (CLDR); there are no hand-written separator or symbol
tables here. The rules, in the order they are checked:

1. Non-ASCII digits ("١٢٣", "１２３", "²", "Ⅻ"...) and text-direction marks (U+200E, U+200F, U+061C,
   U+202A-U+202E, U+2066-U+2069) are refused as `unicode_digits`: never stripped, never converted, because
   a mark can reorder what the person saw and another script's digits are easy to misread.
2. The text is split into an optional sign, an optional currency (before or after the number, with or without
   a space) and the number. The currency may be the account's ISO code (any case) or its symbol in the given
   locale, in English, in Danish (the languages the bot replies in) or in a locale of a country that uses it
   ("$" for USD, "kr." and "kr" for DKK, "kr" for SEK, "€" for EUR); a symbol ending in "." also counts
   without it. Another currency's ISO code or symbol is `other_currency` with `detail` set to its code: money
   is never converted.
3. The number may contain only ASCII digits and the locale's decimal and grouping symbols, and Babel's strict
   parser must accept its grouping ("1,25,0" is refused). In en-US "," groups and "." is the decimal point;
   in da-DK it is the other way round, so "1,250.00" there is `not_a_number`.
4. More typed decimals than the currency has is `too_precise`, even when they are zeros: in en-US "1.250" is
   refused for USD rather than read as 1.25 (it is how 1250 is written in Danish).
5. The value then goes through `storage.money.to_minor` (negative, zero, too large...).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from decimal import Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.numbers import (NumberFormatError, get_currency_symbol, get_decimal_symbol, get_group_symbol,
                           get_territory_currencies, list_currencies, parse_decimal)

from storage.errors import InvalidAmount
from storage.money import MAX_MAJOR_UNITS, normalize_currency, precision, to_minor

#: Stable reasons of `AmountError`, in the order of the checks that raise them.
REASONS = ("empty", "unicode_digits", "not_finite", "other_currency", "not_a_number", "negative", "zero",
           "too_large", "too_precise")

#: Locales whose currency symbols are always recognised, besides the one the text is read in: the languages
#: the bot replies in (`bot.i18n.LANGUAGES`; a test keeps the two in step).
SYMBOL_LOCALES = ("en", "da")

#: Text-direction marks: LRM, RLM, ALM, the embeddings/overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
BIDI_MARKS = frozenset("\u200e\u200f\u061c" + "".join(map(chr, range(0x202A, 0x202F)))
                       + "".join(map(chr, range(0x2066, 0x206A))))

_SIGNS = "-\u2212+"  # hyphen-minus, minus sign, plus
_NON_FINITE = re.compile(r"(?<![^\W\d_])(?:nan|inf(?:inity)?)(?![^\W\d_])|∞", re.IGNORECASE)
_SPLIT = re.compile(r"(?P<pre>[^0-9]*)(?P<num>[0-9](?:.*[0-9])?)(?P<post>[^0-9]*)", re.DOTALL)
_POSITIVE_INT = re.compile(r"[0-9]+")


class AmountError(Exception):
    """An amount a person typed that cannot be read as money of the account. `reason` is one of `REASONS`
    (a stable code the bot translates); `detail` is extra data (the other currency's code for
    `other_currency`, the currency's decimals for `too_precise`, the bound for `too_large`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- locale data ------------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def babel_locale(locale: str) -> Locale:
    """`Locale` for "en-US", "en_US" or "da"; `ValueError` for a locale Babel does not know."""
    try:
        return Locale.parse(locale.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError, AttributeError):
        raise ValueError(f"unknown locale {locale!r}") from None


def _key(token: str) -> str:
    return token.strip().casefold()


def _with_dotless(symbols: set[str]) -> set[str]:
    """A symbol that is an abbreviation ("kr.") also counts without its final dot ("kr")."""
    return symbols | {s[:-1] for s in symbols if len(s) > 1 and s.endswith(".")}


@lru_cache(maxsize=None)
def _territory_currencies(territory: str) -> tuple[str, ...]:
    """Legal-tender currencies a country has ever had. Over all time, so that no clock is read (Babel defaults
    to today) and the answer never changes under a running bot."""
    return tuple(get_territory_currencies(territory, start_date=date.min, end_date=date.max, tender=True))


@lru_cache(maxsize=None)
def _currency_locales(currency: str) -> tuple[str, ...]:
    """The likely locale of each country that uses `currency` today (da_DK, fo_FO, kl_GL for DKK)."""
    likely = get_global("likely_subtags")
    found: list[str] = []
    for territory in sorted(get_global("territory_currencies")):
        if currency in _territory_currencies(territory):
            tag = likely.get(f"und_{territory}")
            if tag:
                found.append(tag)
    return tuple(found)


@lru_cache(maxsize=256)
def _own_symbols(currency: str, locale: str, *, home: bool) -> frozenset[str]:
    """Case-folded tokens that mean `currency`: its code and its symbol in `locale` and `SYMBOL_LOCALES`, and
    (with `home`) in the locales of the countries that use it."""
    names = [locale, *SYMBOL_LOCALES]
    if home:
        names += _currency_locales(currency)
    symbols: set[str] = set()
    for name in names:
        try:
            symbols.add(get_currency_symbol(currency, locale=babel_locale(name)))
        except ValueError:  # pragma: no cover - likely subtags name known locales
            continue
    return frozenset(_key(s) for s in _with_dotless(symbols) | {currency})


@lru_cache(maxsize=64)
def _symbol_map(locale: str) -> dict[str, str]:
    """Case-folded symbol -> ISO code of the currencies that have a symbol of their own in `locale`. Where two
    currencies share a symbol the locale's own currency wins, then the first code alphabetically; exact
    symbols win over their dotless forms."""
    loc = babel_locale(locale)
    home = _territory_currencies(loc.territory) if loc.territory else ()
    order = sorted(loc.currency_symbols, key=lambda code: (code not in home, code))
    exact: dict[str, str] = {}
    dotless: dict[str, str] = {}
    for code in order:
        symbol = loc.currency_symbols[code]
        if not symbol or symbol == code:
            continue
        exact.setdefault(_key(symbol), code)
        if len(symbol) > 1 and symbol.endswith("."):
            dotless.setdefault(_key(symbol[:-1]), code)
    return {**dotless, **exact}


@lru_cache(maxsize=1)
def _iso_codes() -> frozenset[str]:
    return frozenset(list_currencies())


def currency_of(token: str, *, currency: str, locale: str, strict_codes: bool = False) -> str | None:
    """The ISO code that `token` (a currency code or symbol on its own) stands for, or None if it is none.
    The account's `currency` is recognised first. With `strict_codes`, another currency's ISO code counts only
    in upper case ("EUR", not "eur"), so that ordinary words in a memo ("all", "top") are not taken for codes."""
    key = _key(token)
    if not key:
        return None
    if key in _own_symbols(currency, locale, home=False):
        return currency
    upper = token.strip().upper()
    if len(upper) == 3 and upper.isascii() and upper.isalpha() and upper in _iso_codes() and (
            not strict_codes or token.strip() == upper):
        return upper
    code = _symbol_map(locale).get(key)
    if code is not None:
        return code
    if key in _own_symbols(currency, locale, home=True):  # "kr" for SEK: Swedish, not Danish, kroner
        return currency
    for name in SYMBOL_LOCALES:
        code = _symbol_map(name).get(key)
        if code is not None:
            return code
    return None


# --- parsing ----------------------------------------------------------------------------------------------------

def check_script(text: str) -> None:
    """`AmountError("unicode_digits")` if `text` holds a non-ASCII digit or a text-direction mark."""
    for ch in text:
        if ch in BIDI_MARKS or (not ch.isascii() and ch.isnumeric()):
            raise AmountError("unicode_digits", f"U+{ord(ch):04X}")


def _peel_sign(part: str) -> tuple[str, bool]:
    """Remove one sign next to the number (and one at the outer edge of a prefix: "-$5", "$-5")."""
    negative = False
    part = part.strip()
    if part and part[-1] in _SIGNS:
        negative = part[-1] != "+"
        part = part[:-1].strip()
    if part and part[0] in _SIGNS:
        if negative:  # "--5", "-$-5"
            raise AmountError("not_a_number")
        negative = part[0] != "+"
        part = part[1:].strip()
    return part, negative


def parse_amount(text: str, *, currency: str, locale: str, allow_zero: bool = False) -> int:
    """Read `text` (for example "1,250.00", "$250", "250 USD"; in da-DK "1.250,50 kr.") as a positive amount of
    `currency` in the conventions of `locale`, and return it in minor units. Raises `AmountError` with one of
    `REASONS`. `allow_zero` admits 0 (an auto-recharge trigger of zero). `ValueError` for an unknown locale,
    `storage.errors.InvalidCurrency` for an invalid account currency (both are the caller's mistakes)."""
    currency = normalize_currency(currency)
    loc = babel_locale(locale)
    if not isinstance(text, str):
        raise AmountError("not_a_number", type(text).__name__)
    text = unicodedata.normalize("NFC", text)
    check_script(text)
    text = " ".join(text.split())
    if not text:
        raise AmountError("empty")

    match = _SPLIT.fullmatch(text)
    if match is None:  # no ASCII digit at all
        raise AmountError("not_finite" if _NON_FINITE.search(text) else "not_a_number")
    number = match["num"]
    decimal_symbol = get_decimal_symbol(loc)
    pre, negative = _peel_sign(match["pre"])
    if pre.endswith(decimal_symbol) and currency_of(pre, currency=currency, locale=str(loc)) is None:
        # ".5", "$.5", "-.5" (but "kr.250" is the symbol "kr." before 250)
        pre, number = pre[: -len(decimal_symbol)], decimal_symbol + number
        pre, negative_too = _peel_sign(pre)
        if negative and negative_too:
            raise AmountError("not_a_number")
        negative = negative or negative_too
    post = match["post"].strip()

    if pre and post:
        raise AmountError("not_a_number", "two currencies")
    token = pre or post
    if token:
        code = currency_of(token, currency=currency, locale=str(loc))
        if code is None:
            raise AmountError("not_a_number", token)
        if code != currency:
            raise AmountError("other_currency", code)

    value = _parse_number(number, loc, decimal_symbol)
    if negative:
        value = -value
    try:
        minor = to_minor(value, currency, allow_zero=allow_zero)
    except InvalidAmount as exc:
        raise AmountError(exc.reason, exc.detail) from None
    places = precision(currency)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:  # "1.250" for USD: typed too precisely
        raise AmountError("too_precise", str(places))
    return minor


def _parse_number(number: str, loc: Locale, decimal_symbol: str) -> Decimal:
    group_symbol = get_group_symbol(loc)
    if group_symbol.isspace():  # fr, sv, nb group with (narrow) no-break spaces; people type plain ones
        number = number.replace(" ", group_symbol)
    allowed = set("0123456789") | set(decimal_symbol) | set(group_symbol)
    if any(ch not in allowed for ch in number):  # "1e5", "1_000", "12abc3": Decimal would take some of these
        raise AmountError("not_a_number", number)
    try:
        value = parse_decimal(number, locale=loc, strict=True)
    except NumberFormatError as exc:
        suggestions = getattr(exc, "suggestions", None) or []
        raise AmountError("not_a_number", " / ".join(suggestions)) from None
    if not value.is_finite():  # pragma: no cover - excluded by the character check above
        raise AmountError("not_finite")
    return value


def parse_positive_int(text: str, *, max_value: int) -> int:
    """A count such as the `n` of `history [n]`: ASCII digits only, 1 to `max_value`. Raises `AmountError`
    with reason empty, unicode_digits, negative, zero, too_large (detail: `max_value`) or not_a_number."""
    text = unicodedata.normalize("NFC", text)
    check_script(text)
    text = text.strip()
    if not text:
        raise AmountError("empty")
    digits = text[1:].strip() if text[0] in _SIGNS else text
    if not _POSITIVE_INT.fullmatch(digits):
        raise AmountError("not_a_number", text)
    significant = digits.lstrip("0")
    if significant and text[0] in "-\u2212":
        raise AmountError("negative")
    if not significant:
        raise AmountError("zero")
    # compared by length first: Python refuses int() of more than 4300 digits (a ValueError, not an answer)
    if len(significant) > len(str(max_value)) or int(significant) > max_value:
        raise AmountError("too_large", str(max_value))
    return int(significant)


def max_amount_minor(currency: str) -> int:
    """The largest amount one operation accepts, in minor units (`storage.money.MAX_MAJOR_UNITS`)."""
    return int(MAX_MAJOR_UNITS.scaleb(precision(currency)))
