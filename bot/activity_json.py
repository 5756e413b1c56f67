"""Activities from and to JSON without msrest's generic (de)serializer on every turn.

botbuilder's models are msrest `Model`s; `Activity().deserialize(body)` and `activity.serialize()` walk their
`_attribute_map`s through msrest's general machinery (key extractors, copies of every attribute description,
a recursive walk of every card), which cost 0.1 to 0.2 ms per inbound activity and about 0.5 ms per reply
with a card: the largest fixed costs of a turn after the storage (docs/performance.md).

This module reads the same `_attribute_map`s once, and then:

* `activity_from_json(body)` builds the same objects msrest would (same classes, same attribute values, unknown
  keys in `additional_properties`) for the shapes channels send: strings where the map says `str`, booleans
  where it says `bool`, objects and lists of objects for models. Anything else (a number where a string is
  expected, a flattened key, a polymorphic model) is handed to msrest itself, so the result never differs from
  `Activity().deserialize(body)` (timestamps: the same instant and offset, as the standard library's tzinfo); `tests/test_activity_json.py` checks both ways on every Teams
  shape we know and on generated ones.
* `activity_to_json(activity)` gives the dict `activity.serialize()` gives: attributes that are None are left
  out, as are `additional_properties`; enums become their values; models become dicts under their JSON keys, `object` attributes (card content, channel data, values) are
  passed through as they are: the bot builds them from JSON types only. Anything unusual goes to msrest.

Values are not copied: an `object` attribute of the result is the very dict of the input. The endpoint parses a
fresh body per request and replies are built per turn, so nothing is shared between turns.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any, Mapping

from botbuilder.schema import Activity
from msrest.serialization import Deserializer, Model, Serializer

__all__ = ["activity_from_json", "activity_to_json", "model_to_json"]


class _Unusual(Exception):
    """A shape the fast path does not cover: msrest decides."""


# (attribute, JSON key, type) per model class, without `additional_properties`; None: msrest only
_Plan = tuple[tuple[str, str, str], ...]
_PLANS: dict[type, _Plan | None] = {}
_MODELS: dict[str, type] = {name: cls for name, cls in Activity._infer_class_models().items()
                            if isinstance(cls, type) and issubclass(cls, Model)}


def _plan(cls: type) -> _Plan | None:
    plan = _PLANS.get(cls, ...)
    if plan is ...:
        plan = _compile(cls)
        _PLANS[cls] = plan
    return plan  # type: ignore[return-value]


def _compile(cls: type) -> _Plan | None:
    if getattr(cls, "_subtype_map", None) or any(
            rules.get("readonly") or rules.get("constant") for rules in getattr(cls, "_validation", {}).values()):
        return None
    steps = []
    for attr, desc in cls._attribute_map.items():
        key, kind = desc["key"], desc["type"]
        if attr == "additional_properties" or not key or "." in key or "\\" in key:
            return None   # flattened or explicit additional properties: msrest's rules
        steps.append((attr, key, kind))
    return tuple(steps)


# --- inbound ----------------------------------------------------------------------------------------------------

def activity_from_json(body: Mapping[str, Any]) -> Activity:
    """The `Activity` msrest's `Activity().deserialize(body)` makes, usually without msrest. Raises what msrest
    raises for a body it cannot deserialize."""
    try:
        return _decode_model(Activity, body)
    except _Unusual:
        return Activity().deserialize(body)


def _decode_model(cls: type, data: Any) -> Any:
    plan = _plan(cls)
    if plan is None or type(data) is not dict:
        raise _Unusual
    values = {}
    known = 0
    for attr, key, kind in plan:
        raw = data.get(key)
        if key in data:
            known += 1
        values[attr] = None if raw is None else _decode(kind, raw)
    obj = cls(**values)
    if known != len(data):
        obj.additional_properties = {key: value for key, value in data.items()
                                     if key not in {k for _, k, _ in plan}}
    return obj


def _decode(kind: str, raw: Any) -> Any:
    if kind == "str":
        if type(raw) is not str:
            raise _Unusual
        return raw
    if kind == "object":
        return raw
    if kind == "bool":
        if type(raw) is not bool:
            raise _Unusual
        return raw
    if kind == "iso-8601":
        if type(raw) is not str:
            raise _Unusual
        return _timestamp(raw)
    if kind.startswith("[") and kind.endswith("]"):
        if type(raw) is not list:
            raise _Unusual
        inner = kind[1:-1]
        return [None if item is None else _decode(inner, item) for item in raw]
    model = _MODELS.get(kind)
    if model is None:
        raise _Unusual
    return _decode_model(model, raw)


#: The timestamps channels send ("2026-11-23T10:00:00.123Z", "...+01:00"): `datetime.fromisoformat` reads them
#: as msrest's isodate-based `deserialize_iso` does, at a tenth of the cost; anything else goes to msrest.
_PLAIN_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def _timestamp(raw: str) -> datetime:
    """The aware datetime msrest makes of `raw` (same instant and UTC offset; the offset's tzinfo class is the
    standard library's)."""
    if _PLAIN_TIMESTAMP.fullmatch(raw):
        try:
            moment = datetime.fromisoformat(raw)
            if 1 <= moment.utctimetuple().tm_year <= 9999:
                return moment
        except (ValueError, OverflowError):
            pass
    try:
        return Deserializer.deserialize_iso(raw)
    except Exception:
        raise _Unusual from None


# --- outbound ---------------------------------------------------------------------------------------------------

def activity_to_json(activity: Activity) -> dict[str, Any]:
    """The dict `activity.serialize()` gives, usually without msrest."""
    return model_to_json(activity)


def model_to_json(model: Model) -> dict[str, Any]:
    """The dict `model.serialize()` gives for any botbuilder model (a `ConversationReference`...), usually
    without msrest."""
    try:
        return _encode_model(model)
    except _Unusual:
        return model.serialize()


def _encode_model(obj: Any) -> dict[str, Any]:
    plan = _plan(type(obj))
    if plan is None:
        raise _Unusual
    out: dict[str, Any] = {}
    for attr, key, kind in plan:
        value = getattr(obj, attr, None)
        if value is not None:
            out[key] = _encode(kind, value)
    return out   # like msrest, without `additional_properties` (keys the model does not map are not sent)


def _encode(kind: str, value: Any) -> Any:
    if kind == "str":
        if type(value) is str:
            return value
        if isinstance(value, Enum) and type(value.value) is str:   # ActivityTypes, InputHints...: their value
            return value.value
        raise _Unusual
    if kind == "object":
        if type(value) in (dict, list, str, int, bool) or isinstance(value, dict):
            return value
        raise _Unusual
    if kind == "bool":
        if type(value) is not bool:
            raise _Unusual
        return value
    if kind == "iso-8601":
        return Serializer.serialize_iso(value)
    if kind.startswith("[") and kind.endswith("]"):
        if type(value) is not list:
            raise _Unusual
        inner = kind[1:-1]
        return [None if item is None else _encode(inner, item) for item in value]
    if isinstance(value, Model):
        return _encode_model(value)
    raise _Unusual
