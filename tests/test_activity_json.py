"""`bot.activity_json` gives exactly what msrest gives, inbound and outbound, and takes its fast path for the
shapes Teams sends (otherwise it would only be msrest with extra steps)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botbuilder.core import MessageFactory, TurnContext
from botbuilder.schema import Activity, Attachment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msrest.serialization import Model

from bot import activity_json
from bot.activity_json import activity_from_json, activity_to_json
from tests import teams

URL = "https://smba.trafficmanager.net/emea/"
ADA = teams.user("00000000-0000-0000-0000-00000000ada1", "Ada")
GOLDEN = Path(__file__).parent / "golden"


def same(a: Any, b: Any) -> bool:
    """Deep equality of msrest models (class and every attribute, `additional_properties` included)."""
    if isinstance(a, Model) or isinstance(b, Model):
        return type(a) is type(b) and vars(a).keys() == vars(b).keys() and all(
            same(vars(a)[k], vars(b)[k]) for k in vars(a))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return type(a) is type(b) and a == b


def msrest_in(body: Any) -> Any:
    try:
        return Activity().deserialize(copy.deepcopy(body))
    except Exception as error:
        return ("refused", type(error).__name__)


def fast_in(body: Any) -> Any:
    try:
        return activity_from_json(copy.deepcopy(body))
    except Exception as error:
        return ("refused", type(error).__name__)


def teams_shapes() -> list[dict[str, Any]]:
    mention = {"id": "29:1bob", "name": "Bob", "aadObjectId": "00000000-0000-0000-0000-0000000000b0"}
    submit = teams.message("", service_url=URL, sender=ADA)
    submit.pop("text")
    submit["value"] = {"verb": "add_funds.confirm", "amount": "10.00", "nonce": "n" * 32}
    invoke = teams.message("", service_url=URL, sender=ADA)
    invoke.update(type="invoke", name="adaptiveCard/action", replyToId="1700000000001",
                  value={"action": {"type": "Action.Execute", "verb": "balance.open", "data": {"verb": "x"}},
                         "trigger": "manual"})
    upload = teams.message("", service_url=URL, sender=ADA)
    upload["attachments"] = [{"contentType": "application/vnd.microsoft.teams.file.download.info",
                              "name": "usage.csv", "content": {"downloadUrl": "https://x/y", "fileType": "csv"}},
                             {"contentType": "text/html", "content": "<p>usage</p>"}]
    update = teams.bot_added(service_url=URL, sender=ADA, scope="channel")
    update["membersRemoved"] = [ADA]
    return [
        teams.message("balance", service_url=URL, sender=ADA),
        teams.message("grant @Bob reader", service_url=URL, sender=ADA, scope="channel", mentions=[mention]),
        teams.message("help", service_url=URL, sender=ADA, scope="groupChat", locale="da-DK"),
        submit, invoke, upload, update,
        teams.installation_update(service_url=URL, sender=ADA, scope="groupChat"),
        {"type": "message", "id": "1", "serviceUrl": URL, "channelId": "msteams", "conversation": {"id": "a:1"},
         "localTimestamp": "2026-11-23T11:00:00.123+01:00", "unknownField": {"a": [1, 2]}, "from": None},
    ]


@pytest.mark.parametrize("body", teams_shapes(), ids=lambda b: f"{b['type']}-{b.get('conversation', {}).get('id')}")
def test_teams_shapes_deserialize_as_msrest_does(body: dict[str, Any]) -> None:
    assert same(fast_in(body), msrest_in(body))


@pytest.mark.parametrize("body", teams_shapes()[:6])
def test_teams_shapes_take_the_fast_path(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = msrest_in(body)
    monkeypatch.setattr(Activity, "deserialize", lambda *a, **k: pytest.fail("msrest was asked"))
    assert same(activity_from_json(body), expected)


_leaf = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
         | st.text(max_size=10) | st.sampled_from(["2026-11-23T10:00:00Z", "not a date", "2026-13-45T99:00:00Z"]))
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=8)
_paths = st.sampled_from([("type",), ("id",), ("timestamp",), ("localTimestamp",), ("from",), ("from", "id"),
                          ("from", "aadObjectId"), ("from", "properties"), ("conversation",),
                          ("conversation", "isGroup"), ("conversation", "tenantId"), ("recipient",), ("text",),
                          ("entities",), ("entities", 0), ("entities", 0, "type"), ("attachments",),
                          ("membersAdded",), ("membersAdded", 0), ("value",), ("channelData",), ("historyDisclosed",),
                          ("suggestedActions",), ("relatesTo",), ("relatesTo", "user"), ("listenFor",),
                          ("textHighlights",), ("semanticAction",), ("expiration",), ("zzz",)])


def _put(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = body
    for step in path[:-1]:
        if isinstance(node, dict) and isinstance(step, str):
            node = node.setdefault(step, {})
        elif isinstance(node, list) and isinstance(step, int) and len(node) > step:
            node = node[step]
        else:
            return
    if isinstance(node, dict) and isinstance(path[-1], str):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and len(node) > path[-1]:
        node[path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(teams_shapes()))), st.lists(st.tuples(_paths, _json), min_size=1, max_size=4))
def test_mutated_activities_deserialize_as_msrest_does(which: int, changes: list[tuple[Any, Any]]) -> None:
    body = teams_shapes()[which]
    for path, value in changes:
        _put(body, path, value)
    assert same(fast_in(body), msrest_in(body))


# --- outbound ---------------------------------------------------------------------------------------------------

def replies() -> list[Activity]:
    inbound = Activity().deserialize(teams.message("balance", service_url=URL, sender=ADA, scope="channel"))
    reference = TurnContext.get_conversation_reference(inbound)
    cards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN.glob("card_*.json"))]
    assert cards, "the golden cards are missing"
    out = [MessageFactory.text("Balance: **$12.00**")]
    for card in cards:
        out.append(MessageFactory.attachment(Attachment(content_type="application/vnd.microsoft.card.adaptive",
                                                        content=card), text="with text"))
    update = MessageFactory.attachment(Attachment(content_type="application/vnd.microsoft.card.adaptive",
                                                  content=cards[0]))
    update.id = "1700000000001"
    out.append(update)
    out.append(Activity(type="invokeResponse", value={"status": 200, "body": {"statusCode": 200, "value": None}}))
    return [TurnContext.apply_conversation_reference(a, reference) if a.type == "message" else a for a in out]


@pytest.mark.parametrize("reply", replies(), ids=lambda a: f"{a.type}-{bool(a.attachments)}")
def test_replies_serialize_as_msrest_does(reply: Activity, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reply.serialize()
    monkeypatch.setattr(Model, "serialize", lambda *a, **k: pytest.fail("msrest was asked"))
    got = activity_to_json(reply)
    assert got == expected
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_unusual_replies_are_left_to_msrest() -> None:
    reply = MessageFactory.text("x")
    reply.timestamp = datetime(2026, 11, 23, 10, 0)
    reply.entities = [activity_from_json({"type": "message", "id": "1", "serviceUrl": URL, "channelId": "msteams",
                                          "conversation": {"id": "a"},
                                          "entities": [{"type": "mention", "text": "<at>x</at>"}]}).entities[0]]
    assert reply.entities[0].additional_properties == {"text": "<at>x</at>"}
    assert activity_to_json(reply) == reply.serialize()
    reply.text = 12   # not a string: msrest's rules (it writes "12")
    assert activity_to_json(reply) == reply.serialize()


def test_the_plans_cover_the_activity_model() -> None:
    # a botbuilder upgrade that adds flattened keys or polymorphism to Activity would silently turn the fast
    # path off: this says so instead
    assert activity_json._plan(Activity) is not None


@pytest.mark.parametrize("body", teams_shapes(), ids=lambda b: f"{b['type']}-{b.get('conversation', {}).get('id')}")
def test_conversation_references_serialize_as_msrest_does(body: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reference = TurnContext.get_conversation_reference(activity_from_json(body))
    expected = reference.serialize()
    monkeypatch.setattr(Model, "serialize", lambda *a, **k: pytest.fail("msrest was asked"))
    assert activity_json.model_to_json(reference) == expected


async def test_a_sent_reply_is_not_deep_copied_yet_the_caller_keeps_its_activity() -> None:
    """`bot.handler._send` hands botbuilder a reply whose deep copy is shallow: botbuilder only assigns the
    conversation's attributes on its copy, which must leave the reply built by the handler as it was."""
    from bot.handler import _not_deep_copied
    inbound = activity_from_json(teams.message("balance", service_url=URL, sender=ADA))
    reply = _not_deep_copied(MessageFactory.text("hello"))
    before = activity_to_json(reply)
    sent = TurnContext.apply_conversation_reference(copy.deepcopy(reply), TurnContext.get_conversation_reference(inbound))
    assert activity_to_json(reply) == before and reply.conversation is None
    assert sent.conversation.id == inbound.conversation.id and sent.text == "hello"
    assert activity_to_json(sent) == sent.serialize()


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])),
       st.sampled_from(["seconds", "milliseconds", "microseconds"]), st.booleans())
def test_timestamps_read_as_msrest_reads_them(moment: datetime, spec: str, zulu: bool) -> None:
    text = moment.isoformat(timespec=spec)
    if zulu and moment.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    body = {"type": "message", "id": "1", "serviceUrl": URL, "channelId": "msteams", "conversation": {"id": "a"},
            "timestamp": text, "localTimestamp": text.lower()}
    assert same(fast_in(body), msrest_in(body))
