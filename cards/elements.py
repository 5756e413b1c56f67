"""Small builders shared by the cards: the card envelope, text, facts, buttons and inputs.

Everything here returns plain dicts of str/int/bool/list/dict (never floats: money is exact, and an
Input.Number's `value`, `min` and `max` are whole major units). Buttons are built only through `execute`,
which looks the verb up in the table and refuses a button that lacks the nonce or basis its verb needs, or that
carries data the verb does not declare.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping, Sequence

from storage.money import MAX_MAJOR_UNITS, to_major

from .texts import Texts
from .verbs import BASE_KEYS, verb as lookup_verb

SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
#: Largest amount a money input offers (major units), the ledger's bound on one amount.
MAX_MAJOR = int(MAX_MAJOR_UNITS)
#: Longest memo the add-funds form takes (bot.commands.MAX_MEMO says the same for `add`; a test compares).
MEMO_MAX_LENGTH = 200
#: Plain decimal, as the server parses card amounts (`storage.money.to_minor`); only for the text fallback of a
#: money input whose current value is not a whole number (see `money_input`).
PLAIN_DECIMAL_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*$"

Element = dict[str, Any]


def card(texts: Texts, body: Sequence[Element], actions: Sequence[Element] = (), *,
         summary: str | None = None) -> dict[str, Any]:
    """The envelope: schema 1.5, the card's language, full width in Teams, and a `fallbackText` for clients
    that cannot render it (`summary`, else a generic line)."""
    out: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA,
        "version": VERSION,
        "lang": texts.language,
        "fallbackText": summary or texts.t("card.fallback"),
        "body": list(body),
    }
    if actions:
        out["actions"] = list(actions)
    out["msteams"] = {"width": "Full"}
    return out


def text(value: str, **props: Any) -> Element:
    """A wrapping TextBlock (long names and memos wrap instead of being clipped)."""
    return {"type": "TextBlock", "text": value, "wrap": True, **props}


def header(texts: Texts, title: str, *, color: str | None = None) -> list[Element]:
    """The product name, small and subtle, above the card's title."""
    title_block = text(title, size="Large", weight="Bolder", style="heading", spacing="None")
    if color:
        title_block["color"] = color
    return [text(texts.t("label.product"), size="Small", isSubtle=True, weight="Bolder"), title_block]


def facts(pairs: Iterable[tuple[str, str]], **props: Any) -> Element:
    return {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in pairs], **props}


def notice(value: str, *, tone: str = "warning") -> Element:
    """A highlighted line in a coloured box: "attention" (an error on a form), "warning", "good", "accent"."""
    return {"type": "Container", "style": tone, "items": [text(value, weight="Bolder")]}


def execute(name: str, title: str, *, nonce: str | None = None, basis: str | None = None,
            data: Mapping[str, Any] | None = None, style: str | None = None,
            with_inputs: bool = False) -> Element:
    """An Action.Execute button for the verb `name`, its `data` repeating the verb. `with_inputs=False` sends
    no inputs and skips client-side validation (Cancel on a half-filled form must work)."""
    v = lookup_verb(name)
    if v.needs_nonce and not nonce:
        raise ValueError(f"verb {name!r} needs a nonce")
    if not v.needs_nonce and nonce is not None:
        raise ValueError(f"verb {name!r} takes no nonce")
    if v.needs_basis and basis is None:
        raise ValueError(f"verb {name!r} needs a basis")
    extra = set(data or ()) - set(v.data)
    if extra:
        raise ValueError(f"verb {name!r} does not take data {sorted(extra)}")
    payload: dict[str, Any] = {"verb": name, **(data or {})}
    if nonce is not None:
        payload["nonce"] = nonce
    if basis is not None:
        payload["basis"] = basis
    assert set(payload) <= v.allowed_keys | BASE_KEYS
    action: Element = {"type": "Action.Execute", "title": title, "verb": name, "data": payload,
                       "associatedInputs": "auto" if with_inputs else "none"}
    if style:
        action["style"] = style
    return action


def major_text(minor: int, currency: str) -> str:
    """Minor units as a plain major-unit decimal string ("250.00", "1250" for JPY): how amounts travel in data."""
    return str(to_major(minor, currency))


def whole_major(minor: int, currency: str) -> int | None:
    """Minor units as whole major units, or None when that would drop a fraction (an Input.Number's value must
    be a JSON number, and a card never holds a float)."""
    major = to_major(minor, currency)
    return int(major) if major == major.to_integral_value() else None


def rounded_major(minor: int, currency: str) -> int:
    """Whole major units rounded half up: for charts only, whose bars need numbers and no float may appear."""
    return int(to_major(minor, currency).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money_input(input_id: str, *, label: str, currency: str, value: int | None, required: bool,
                error: str, minimum: int = 0, placeholder: str | None = None) -> Element:
    """An amount field in major units: Input.Number with min, max, isRequired and errorMessage.

    Prefilled with `value` (minor units) when it is a whole number of major units. A value with a fraction
    (12.50) cannot be an Input.Number's value without a float, so that one field becomes an Input.Text holding
    the exact plain decimal ("12.50") with a pattern; the server reads both the same way."""
    field: Element
    if value is not None and whole_major(value, currency) is None:
        field = {"type": "Input.Text", "id": input_id, "label": label, "value": major_text(value, currency),
                 "regex": PLAIN_DECIMAL_PATTERN, "maxLength": 20}
    else:
        field = {"type": "Input.Number", "id": input_id, "label": label, "min": minimum, "max": MAX_MAJOR}
        if value is not None:
            field["value"] = whole_major(value, currency)
    field["isRequired"] = required
    field["errorMessage"] = error
    if placeholder:
        field["placeholder"] = placeholder
    return field


def column_set(columns: Sequence[tuple[Sequence[Element], str | int]], **props: Any) -> Element:
    """A ColumnSet from (items, width) pairs."""
    return {"type": "ColumnSet", "columns": [{"type": "Column", "width": width, "items": list(items)}
                                             for items, width in columns], **props}


def truncate(value: str, limit: int) -> str:
    """At most `limit` characters, an ellipsis marking a cut (lists only; detail cards show everything)."""
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "\u2026"
