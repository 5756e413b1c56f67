"""Hostile input at `POST /api/messages`, through the real aiohttp app, on TinyDB and PostgreSQL.

Generated (hypothesis) and hand-written activities: wrong types for every field, huge strings, deep nesting,
digits of other scripts and text-direction marks in amounts, invalid JSON, oversize and chunked bodies, missing
fields, invokes and Action.Submit messages whose `value` has the wrong shape, card fields that no card sends.

Every input is checked for the same properties:

* never a 5xx (an invoke's `statusCode` included), only the statuses `bot.endpoint` documents;
* no change to any ledger: the full export of every account (`Ledger.export_account`: entries, idempotency
  records, alerts, audit, settings, roles, subscriptions, approvals, watermarks) equals the one taken before the
  first input, and `verify()` still holds. Conversation references are left out: every activity saves its
  conversation's reference (how the bot finds the conversation again), which is not a change of the books. A
  hostile tenant id opens an empty account (first contact does that by design): it must stay empty;
* no crash: no ERROR record in the log, and no reply holds an incident id, a traceback or an exception's name;
* every reply fits in a Teams message (about 28 kB): a refusal quotes what was typed only in part;
* where a reply makes sense it says why (a bad amount gets the amount refusal for its reason).

Inputs are generated so that none of them may legitimately change the ledger (a benign command, an invalid
amount by construction, a role that may not act, a card field that cannot be valid), so "nothing changed" is the
oracle. The figures (inputs tried, statuses seen, 5xx, ledger changes) go to
`artifacts/reliability/hostile_input.json` for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import string
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.amounts import BIDI_MARKS
from bot.app import create_app
from bot.card_actions import _NONCE
from bot.commands import ECHO_MAX
from bot.endpoint import MAX_BODY, MAX_ID
from bot.i18n import MESSAGES, t
from cards.verbs import THRESHOLD_INPUTS, VERBS
from storage.money import MAX_MAJOR_UNITS
from tests import teams
from tests.fakes.connector import FakeConnector
from tests.http_chat import ADMIN, ALEX, MEGAN, NOBODY, READER, Chat, settings_for, store_for

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "artifacts" / "reliability" / "hostile_input.json"

#: Teams refuses a message larger than about 28 kB: a reply bigger than that would be lost.
TEAMS_MAX_MESSAGE = 28 * 1024
#: What `bot.endpoint` may answer.
STATUSES = {200, 400, 413, 415}
#: Statuses an invoke's body may carry (200 card or message, 400 malformed value, 429 rate limit).
INVOKE_CODES = {200, 400, 429}
CRASH_WORDS = ("Incident id", "Hændelses-id", "Traceback", "Exception", "Error:", "KeyError", "TypeError",
               "ValueError", "AttributeError", "NoneType", "object has no attribute", "Decimal(")

#: Enough examples to explore, few enough to stay within seconds per test (each input is a turn plus an export).
#: A longer campaign: CREDITS_FUZZ_EXAMPLES=2000 pytest tests/test_hostile_input.py
EXAMPLES = int(os.environ.get("CREDITS_FUZZ_EXAMPLES", "120"))
HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])

FIGURES_SEEN: dict[str, Any] = {"inputs_tried": 0, "status_5xx": 0, "ledger_changes": 0, "crashes": 0,
                                "replies_over_teams_limit": 0, "by_status": Counter(), "by_source": Counter(),
                                "by_backend": Counter()}


@pytest.fixture(scope="module", autouse=True)
def figures_file() -> Any:
    """Write what this module tried, once it is done (also when a test failed: the figures then say so)."""
    yield
    if not FIGURES_SEEN["inputs_tried"]:
        return
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    data = {**FIGURES_SEEN, "by_status": dict(sorted(FIGURES_SEEN["by_status"].items())),
            "by_source": dict(sorted(FIGURES_SEEN["by_source"].items())),
            "by_backend": dict(sorted(FIGURES_SEEN["by_backend"].items())),
            "max_body_bytes": MAX_BODY, "max_id_chars": MAX_ID, "examples_per_property": EXAMPLES,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    FIGURES.write_text(json.dumps(data, indent=2) + "\n")


# ==== the bot under attack =========================================================================================

class Target:
    """The real app over one backend, with a ledger that has something in it, and the oracle."""

    def __init__(self, chat: Chat, backend: str, caplog: pytest.LogCaptureFixture) -> None:
        self.chat = chat
        self.backend = backend
        self.caplog = caplog
        self.baseline: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return self.chat.connector.service_url

    async def snapshot(self) -> dict[str, Any]:
        ledger = self.chat.ledger
        books = {}
        for tenant in await ledger.tenants():
            export = await ledger.export_account(tenant)
            export.pop("conversations")
            books[tenant] = export
        report = await ledger.verify()
        assert report.ok, report.problems
        return books

    async def probe(self, body: dict[str, Any] | bytes | str, *, source: str,
                    content_type: str = "application/json") -> tuple[int, list[dict[str, Any]], Any]:
        """Send one input; check every property; return (status, replies posted, response body)."""
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        before = len(self.chat.connector.requests)
        logged = len(self.caplog.records)
        response = await self.chat.client.post("/api/messages", data=raw, headers={"Content-Type": content_type})
        text = await response.text()
        answer: Any = None
        if response.content_type == "application/json" and text:
            answer = json.loads(text)
        posted = [r.json for r in self.chat.connector.requests[before:] if r.method in ("POST", "PUT")]
        after = await self.snapshot()

        FIGURES_SEEN["inputs_tried"] += 1
        FIGURES_SEEN["by_status"][str(response.status)] += 1
        FIGURES_SEEN["by_source"][source] += 1
        FIGURES_SEEN["by_backend"][self.backend] += 1
        changed = _changes(self.baseline, after)
        if changed:   # compare the next input with this state: hypothesis then shrinks to the input that changed it
            self.baseline = after
        crashes = [r for r in self.caplog.records[logged:] if r.levelno >= logging.ERROR]
        too_big = [p for p in posted if len(json.dumps(p, ensure_ascii=False).encode()) > TEAMS_MAX_MESSAGE]
        FIGURES_SEEN["status_5xx"] += response.status >= 500
        FIGURES_SEEN["ledger_changes"] += bool(changed)
        FIGURES_SEEN["crashes"] += bool(crashes)
        FIGURES_SEEN["replies_over_teams_limit"] += len(too_big)

        shown = repr(raw)[:300]
        assert response.status < 500, (shown, response.status, text[:300])
        assert response.status in STATUSES, (shown, response.status, text[:300])
        assert not changed, (shown, changed)
        assert not crashes, (shown, [r.getMessage()[:300] for r in crashes])
        assert not too_big, (shown, [len(json.dumps(p)) for p in too_big])
        everything = json.dumps(posted, ensure_ascii=False) + text
        for word in CRASH_WORDS:
            assert word not in everything, (shown, word, everything[:500])
        if isinstance(answer, dict) and "statusCode" in answer:
            assert answer["statusCode"] in INVOKE_CODES, (shown, answer)
        return response.status, posted, answer


def storable(node: Any) -> bool:
    """False when a string in `node` (keys too) holds NUL: `bot.endpoint` refuses those (400) before any turn."""
    if isinstance(node, str):
        return "\x00" not in node
    if isinstance(node, dict):
        return all(storable(k) and storable(v) for k, v in node.items())
    if isinstance(node, list):
        return all(storable(v) for v in node)
    return True


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots; a new account must be an untouched one."""
    found = [f"{tenant}: {name}" for tenant, book in before.items() for name in book
             if after.get(tenant, {}).get(name) != book[name]]
    for tenant in set(after) - set(before):
        book = after[tenant]
        for name in ("entries", "ops", "alerts", "subscriptions", "roles", "approvals"):
            if book[name]:
                found.append(f"new account {tenant!r}: {name}")
        if book["watermarks"] or any(a["action"] != "account_opened" for a in book["audit"]):
            found.append(f"new account {tenant!r}: audit or watermarks")
    return found


SUBSCRIBED_SUFFIX = "subscribed"


@pytest.fixture(params=["tinydb", "postgres"])
async def target(request: Any, tmp_path: Path, fake_connector: FakeConnector, aiohttp_client: Any,
                 caplog: pytest.LogCaptureFixture) -> Target:
    """An account with funds and a memo, auto-recharge, alert thresholds, a reader and a subscribed channel: things
    an attack could change. No rate limit here (tests/test_rate_limit.py has it), no background tasks (nothing
    changes by itself between two snapshots)."""
    store = await store_for(request.param, tmp_path)
    settings = settings_for(tmp_path, CREDITS_STORE=store, CREDITS_RATE_LIMIT="0")
    client = await aiohttp_client(create_app(settings, background=False))
    chat = Chat(client, fake_connector)
    assert (await chat.say("add 250 seed")).startswith("Added")
    assert (await chat.say("recharge 50 below 20 cap 500")).startswith("Saved")
    assert "$100.00" in await chat.say("alerts 100, 25")
    assert "reader" in await chat.say(f"grant {READER} reader")
    assert (await chat.say("subscribe", scope="channel", conversation_suffix=SUBSCRIBED_SUFFIX)).startswith("This")
    caplog.set_level(logging.WARNING)
    bot = Target(chat, request.param, caplog)
    bot.baseline = await bot.snapshot()
    return bot


# ==== what hostile input looks like ================================================================================

#: Commands that change nothing whoever sends them, and changes that must be refused whoever sends them.
BENIGN_TEXTS = (
    "", "help", "balance", "saldo", "history", "history 3", "usage", "usage 7d", "usage month", "forecast", "roles",
    "recharge", "alerts", "currency", "whoami", "sync", "alerts failed",
    "add ١٠", "add 1\u200f0", "add １０", "add 10\u202e", "add \u202e10", "add -5", "add 0", "add NaN", "add 1.234",
    "add 99999999999", "add €50", "add 50 EUR", "add 1,25,0", "add", "recharge 50 below", "recharge x below 5",
    "alerts 1,25,0", "alerts -3", "grant", "revoke", "grant nobody reader", "currency XYZ",
    "subscribe nonsense", "unknown-command", "<at>Credits</at>", "&nbsp;<p></p>",
)

_json_leaf = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
              | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUES = st.recursive(_json_leaf, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=6)
HOSTILE_STRINGS = st.sampled_from([
    "", " ", "\t\n", "x" * 5000, "١٠", "１０", "\u202e", "\u200f", "\ufeff", "<at>x</at>", "<at>", "</at>",
    "29:1" + "a" * 500, "19:x@thread.tacv2;messageid=1", "a:1personal-1", teams.TENANT, teams.OTHER_TENANT, ADMIN,
    "null", "[]", "{}", "\\u0000", "%00", "../../etc/passwd", "' OR 1=1 --", "${jndi:ldap://x}", "<script>",
    "\U0001F4A9" * 50, "e\u0301" * 100,
])
ANY_VALUE = JSON_VALUES | HOSTILE_STRINGS

#: Where a mutation may strike: every field Teams sends, and some it doesn't.
PATHS: tuple[tuple[Any, ...], ...] = (
    ("type",), ("id",), ("timestamp",), ("serviceUrl",), ("channelId",), ("from",), ("from", "id"),
    ("from", "name"), ("from", "aadObjectId"), ("conversation",), ("conversation", "id"),
    ("conversation", "conversationType"), ("conversation", "tenantId"), ("conversation", "isGroup"),
    ("recipient",), ("recipient", "id"), ("recipient", "name"), ("text",), ("textFormat",), ("locale",),
    ("entities",), ("entities", 0), ("entities", 0, "type"), ("entities", 0, "locale"), ("entities", 1),
    ("entities", 1, "mentioned"), ("entities", 1, "text"), ("entities", 1, "mentioned", "id"),
    ("channelData",), ("channelData", "tenant"), ("channelData", "tenant", "id"), ("channelData", "team"),
    ("channelData", "channel"), ("channelData", "eventType"), ("value",), ("value", "action"),
    ("value", "action", "verb"), ("value", "action", "data"), ("value", "action", "type"), ("value", "verb"),
    ("name",), ("replyToId",), ("attachments",), ("membersAdded",), ("membersRemoved",), ("action",),
    ("surprise",),
)


def _base(kind: str, text: str, scope: str, sender: dict[str, Any], url: str) -> dict[str, Any]:
    activity = teams.message(text, service_url=url, sender=sender, scope=scope)
    if kind == "invoke":
        activity.pop("text")
        activity.update(type="invoke", name="adaptiveCard/action",
                        value={"action": {"type": "Action.Execute", "verb": "balance", "data": {"verb": "balance"}}})
    elif kind == "submit":
        activity.pop("text")
        activity.update(value={"verb": "history.page", "before": "3"}, replyToId="card-1")
    elif kind == "install":
        activity = teams.installation_update(service_url=url, sender=sender, scope=scope)
    elif kind == "added":
        activity = teams.bot_added(service_url=url, sender=sender, scope=scope)
    return activity


def _mutate(activity: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node: Any = activity
    for step in path[:-1]:
        if isinstance(node, dict) and isinstance(step, str):
            node = node.setdefault(step, {})
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return  # an earlier mutation changed the shape: nothing to strike here
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            del node[last]
        else:
            node[last] = value


MUTATIONS = st.lists(st.tuples(st.sampled_from(PATHS), ANY_VALUE, st.booleans()), min_size=1, max_size=4)


# --- amounts that cannot be valid, by construction ----------------------------------------------------------------

_ASCII_DIGITS = st.from_regex(r"[1-9][0-9]{0,4}", fullmatch=True)
_OTHER_DIGITS = st.characters(categories=["Nd", "No", "Nl"], exclude_characters=string.digits)


def _insert(pair: tuple[str, str, int]) -> str:
    digits, mark, at = pair
    at = at % (len(digits) + 1)
    return digits[:at] + mark + digits[at:]


BAD_AMOUNT_TEXT = st.one_of(
    st.text(_OTHER_DIGITS, min_size=1, max_size=5),                                   # ١٠, １０, ², Ⅻ
    st.tuples(_ASCII_DIGITS, _OTHER_DIGITS, st.integers(0, 5)).map(_insert),           # 1١0
    st.tuples(_ASCII_DIGITS, st.sampled_from(sorted(BIDI_MARKS)), st.integers(0, 5)).map(_insert),  # 1\u200f0
    _ASCII_DIGITS.map(lambda d: "-" + d),
    st.integers(min_value=int(MAX_MAJOR_UNITS) + 1, max_value=10**40).map(str),
    st.tuples(_ASCII_DIGITS, st.from_regex(r"[0-9]{2,5}[1-9]", fullmatch=True)).map(lambda p: f"{p[0]}.{p[1]}"),
    st.sampled_from(["NaN", "nan", "inf", "Infinity", "-Infinity", "∞", "1e5", "1E+3", "0x10", "1_000", "12abc3",
                     "€5", "5 EUR", "£3", "5 DKK", "kr. 5", "¥100", "1,25,0", "1.2.3", "--5", "5-", "$-5-"]),
    # no ASCII digit at all (and nothing HTML could turn into one: "&#49;")
    st.text(st.characters(exclude_characters=string.digits + "\x00&<", exclude_categories=["Cs"]), min_size=1,
            max_size=12).filter(lambda s: s.strip() and not any(c in s for c in "\u200b\u2060\ufeff")),
)
#: Zero, which `add` refuses (a recharge trigger may be zero).
ZEROS = st.sampled_from(["0", "0.00", "-0", "+0", "00"])
_NO_DIGITS = st.text(st.characters(exclude_characters=string.digits + "\x00&<", exclude_categories=["Cs"]),
                     max_size=30)

#: English templates of the refusals a typed command can get, as patterns (placeholders match anything).
_REFUSAL_KEYS = [k for k in MESSAGES if k.startswith(("amount.", "parse."))]


def _pattern(key: str) -> re.Pattern[str]:
    parts = re.split(r"\{[a-z_]+\}", MESSAGES[key]["en"])
    return re.compile(".*".join(re.escape(p) for p in parts), re.DOTALL)


REFUSALS = {key: _pattern(key) for key in _REFUSAL_KEYS}


def refusal_of(reply: str) -> str | None:
    """The message key of a parse or amount refusal that `reply` is, else None."""
    return next((key for key, pattern in REFUSALS.items() if pattern.fullmatch(reply)), None)


#: Typed commands whose argument cannot be valid; `refusals` are the keys the reply must be one of.
_AMOUNT_KEYS = {k for k in _REFUSAL_KEYS if k.startswith("amount.")}
def _reads_as_a_command(text: str) -> bool:
    from bot.commands import Invocation, parse
    return isinstance(parse(text, currency="USD", locale="en-US"), Invocation)


TYPED = st.one_of(
    (BAD_AMOUNT_TEXT | ZEROS).map(lambda a: (f"add {a}", _AMOUNT_KEYS | {"parse.usage"})),
    st.tuples(BAD_AMOUNT_TEXT | ZEROS, _NO_DIGITS).map(
        lambda p: (f"add {p[0]} {p[1]}", _AMOUNT_KEYS | {"parse.usage", "parse.memo_too_long"})),
    st.text(st.characters(categories=["L"]), min_size=201, max_size=400).map(
        lambda memo: (f"add 5 {memo}", {"parse.memo_too_long"})),
    BAD_AMOUNT_TEXT.map(lambda a: (f"recharge {a} below 20", _AMOUNT_KEYS | {"parse.usage"})),
    BAD_AMOUNT_TEXT.map(lambda a: (f"recharge 50 below 20 cap {a}", _AMOUNT_KEYS | {"parse.usage"})),
    BAD_AMOUNT_TEXT.filter(lambda a: a.strip().casefold() not in {"off", "none", "clear", "fra", "ingen",
                                                                  "failed", "fejlede"}).map(
        lambda a: (f"alerts {a}", _AMOUNT_KEYS | {"parse.usage"})),
    # reads: the parser itself may say which texts are valid counts and periods
    st.text(max_size=40).map(lambda s: f"history {s}").filter(lambda s: not _reads_as_a_command(s)).map(
        lambda s: (s, {"parse.history_count"})),
    st.text(max_size=40).map(lambda s: f"usage {s}").filter(lambda s: not _reads_as_a_command(s)).map(
        lambda s: (s, {"parse.usage"})),
    st.text(st.characters(exclude_categories=["Cs", "Zs", "Cc"]), min_size=1, max_size=40).map(
        lambda s: (f"currency {s}", None)),     # refused one way or another: the account has entries
    st.text(max_size=60).map(lambda s: (f"zz{s}", {"parse.unknown_command", "parse.unknown_command_suggest"})),
)


# --- card fields that cannot be valid ---------------------------------------------------------------------------

BAD_NONCES = st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
                       st.text(max_size=80).filter(lambda s: not _NONCE.fullmatch(s)))
GOOD_NONCES = st.from_regex(r"[A-Za-z0-9_-]{8,40}", fullmatch=True)
_BAD_TYPES = st.one_of(st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                          st.integers(), max_size=2))
BAD_MONEY = st.one_of(BAD_AMOUNT_TEXT, _BAD_TYPES, st.integers(max_value=-1),
                      st.integers(min_value=int(MAX_MAJOR_UNITS) * 100 + 1, max_value=10**30))
BAD_REQUIRED_MONEY = BAD_MONEY | ZEROS | st.sampled_from([None, "", "   "])
BAD_TOGGLE = st.one_of(st.none(), st.integers(), st.text(max_size=8).filter(lambda s: s not in ("true", "false")),
                       st.lists(st.booleans(), max_size=2))
BAD_DAYS = st.one_of(_BAD_TYPES, st.integers(max_value=0), st.integers(min_value=10**12),
                     st.text(min_size=1, max_size=8).filter(lambda s: not (s.isascii() and s.isdigit())))
_KINDS = {"recharged", "recharge_blocked", "low_balance", "exhausted", "expiring", "forecast"}
BAD_KINDS = st.one_of(st.none(), _BAD_TYPES, st.integers(),
                      st.text(max_size=40).filter(lambda s: not {k.strip() for k in s.split(",")} <= _KINDS | {""}))
BAD_USER = st.one_of(st.none(), _BAD_TYPES, st.integers(), st.just(""), st.just("a b"), st.just("x" * 65),
                     st.text(max_size=8).filter(lambda s: not s.strip() or any(c.isspace() for c in s.strip())))
BAD_ROLE = st.one_of(st.none(), _BAD_TYPES, st.text(max_size=10).filter(lambda s: s not in ("admin", "reader")))
BAD_MEMO = st.one_of(_BAD_TYPES, st.integers(), st.text(st.characters(categories=["L"]), min_size=201,
                                                         max_size=300))

#: For each verb that changes something: the fields that must all be valid for the change to happen, each with a
#: strategy of values it refuses and a valid value (so that the refusal tested is that field's, not an earlier one).
BREAKABLE: dict[str, dict[str, tuple[Any, Any]]] = {
    "add_funds.confirm": {"amount": (BAD_REQUIRED_MONEY, "5"), "memo": (BAD_MEMO, "")},
    "recharge.save": {"enabled": (BAD_TOGGLE, "true"), "amount": (BAD_MONEY, "50"), "trigger": (BAD_MONEY, "20"),
                      "cap": (BAD_MONEY, "")},
    "alerts.save": {**{name: (BAD_MONEY, "") for name in THRESHOLD_INPUTS}, "forecast_days": (BAD_DAYS, "")},
    "subscriptions.save": {"kinds": (BAD_KINDS, "low_balance")},
    "roles.grant": {"user": (BAD_USER, "abcdefgh-1"), "role": (BAD_ROLE, "reader")},
    "currency.save": {"code": (st.one_of(st.none(), _BAD_TYPES, st.text(max_size=6)), "EUR")},
}
#: The other verbs change nothing whatever their data (reads, forms, a review), or cannot here (no approval
#: exists, this personal chat has no subscription, nobody has the role a random id names).


@st.composite
def broken_press(draw: Any) -> tuple[str, dict[str, Any]]:
    """An admin's press of a verb that changes things, with exactly one thing wrong: the nonce or one field."""
    verb = draw(st.sampled_from(sorted(BREAKABLE)))
    fields = BREAKABLE[verb]
    data: dict[str, Any] = {"verb": verb, "nonce": draw(GOOD_NONCES), "basis": draw(st.text(max_size=16))}
    data.update({name: good for name, (_, good) in fields.items()})
    broken = draw(st.sampled_from(["nonce", *fields]))
    if broken == "nonce":
        data["nonce"] = draw(BAD_NONCES)
        if data["nonce"] is None and draw(st.booleans()):
            del data["nonce"]
    else:
        data[broken] = draw(fields[broken][0])
    return verb, data


@st.composite
def any_press(draw: Any) -> tuple[str, dict[str, Any]]:
    """Any verb (or none we know) with any data: for people who may not act, and for verbs that cannot change."""
    verb = draw(st.sampled_from(sorted(VERBS)) | st.text(max_size=20))
    data = draw(st.dictionaries(st.sampled_from(sorted({k for v in VERBS.values() for k in v.allowed_keys}))
                                | st.text(max_size=8), ANY_VALUE, max_size=6))
    data["verb"] = verb
    if draw(st.booleans()):
        data["nonce"] = draw(GOOD_NONCES)
    return verb, data


def press_activity(url: str, verb: Any, data: Any, *, sender: dict[str, Any], path: str,
                   scope: str = "personal") -> dict[str, Any]:
    base = teams.message("", service_url=url, sender=sender, scope=scope)
    base.pop("text")
    if path == "execute":
        base.update(type="invoke", name="adaptiveCard/action",
                    value={"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"})
    else:
        base.update(value=data, replyToId="card-message-1")
    return base


# ==== properties (hypothesis) ======================================================================================

@HYPOTHESIS
@given(kind=st.sampled_from(["message", "invoke", "submit", "install", "added"]), text=st.sampled_from(BENIGN_TEXTS),
       scope=st.sampled_from(["personal", "groupChat", "channel"]), who=st.sampled_from(["admin", "reader", "none"]),
       mutations=MUTATIONS)
async def test_mutated_activities_never_fail_and_change_nothing(target: Target, kind: str, text: str, scope: str,
                                                                who: str, mutations: list[Any]) -> None:
    sender = {"admin": ALEX, "reader": MEGAN, "none": NOBODY}[who]
    activity = copy.deepcopy(_base(kind, text, scope, sender, target.url))   # the sender dicts are shared
    for path, value, delete in mutations:
        _mutate(activity, path, copy.deepcopy(value), delete)
    await target.probe(activity, source="hypothesis: mutated activity")


@HYPOTHESIS
@given(typed=TYPED, scope=st.sampled_from(["personal", "groupChat", "channel"]), locale=st.sampled_from(
    ["en-US", "en-GB", "en-AU", "", "xx-YY"]))   # locales where "." is the decimal point: "1.001" is too precise
async def test_bad_arguments_get_the_refusal_that_says_why(target: Target, typed: tuple[str, set[str] | None],
                                                           scope: str, locale: str) -> None:
    text, expected = typed
    activity = teams.message(text, service_url=target.url, sender=ALEX, scope=scope, locale=locale or "en-US")
    if not locale:
        activity.pop("locale")
    status, posted, _ = await target.probe(activity, source="hypothesis: typed command")
    if not storable(activity):
        assert status == 400 and not posted
        return
    assert status == 200
    assert len(posted) == 1, (text, posted)
    reply = posted[0]["text"]
    if expected is not None:
        assert refusal_of(reply) in expected, (text, reply)
    assert not reply.startswith(("Added", "Saved")), (text, reply)


@HYPOTHESIS
@given(press=broken_press(), path=st.sampled_from(["execute", "submit"]))
async def test_an_admins_card_with_one_bad_field_changes_nothing(target: Target, press: tuple[str, Any],
                                                                 path: str) -> None:
    verb, data = press
    activity = press_activity(target.url, verb, data, sender=ALEX, path=path)
    status, posted, answer = await target.probe(activity, source="hypothesis: admin card, one field bad")
    if not storable(activity):
        assert status == 400 and not posted
        return
    assert status == 200
    if path == "execute":
        assert answer["statusCode"] == 200 and answer["type"] == "application/vnd.microsoft.card.adaptive", answer
    else:
        assert posted and posted[0].get("attachments"), posted   # the answer card, posted


@HYPOTHESIS
@given(press=any_press(), path=st.sampled_from(["execute", "submit"]), who=st.sampled_from(["reader", "none",
                                                                                             "admin"]))
async def test_any_press_by_anyone_who_may_not_act_changes_nothing(target: Target, press: tuple[Any, Any],
                                                                   path: str, who: str) -> None:
    verb, data = press
    if who == "admin" and verb in BREAKABLE:
        verb = data["verb"] = "balance" if verb != "balance" else "help"   # admins: harmless verbs only
    sender = {"admin": ALEX, "reader": MEGAN, "none": NOBODY}[who]
    await target.probe(press_activity(target.url, verb, data, sender=sender, path=path),
                       source="hypothesis: any card press")


@HYPOTHESIS
@given(value=ANY_VALUE, shape=st.sampled_from(["value", "action", "data", "verb"]))
async def test_invoke_values_of_every_wrong_shape(target: Target, value: Any, shape: str) -> None:
    """adaptiveCard/action with `value`, its `action`, the action's `data` or `verb` replaced by anything."""
    activity = press_activity(target.url, "balance", {"verb": "balance"}, sender=ALEX, path="execute")
    if shape == "value":
        activity["value"] = value
    elif shape == "action":
        activity["value"]["action"] = value
    elif shape == "data":
        activity["value"]["action"]["data"] = value
    else:
        activity["value"]["action"]["verb"] = "balance" if isinstance(value, str) and value in BREAKABLE else value
    status, _, answer = await target.probe(activity, source="hypothesis: invoke value shape")
    if storable(activity):
        assert status == 200 and answer["statusCode"] in (200, 400), answer
    else:
        assert status == 400


@HYPOTHESIS
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
async def test_arbitrary_bodies(target: Target, raw: bytes) -> None:
    status, posted, _ = await target.probe(raw, source="hypothesis: arbitrary body")
    assert status == 400 and not posted


# ==== hand-written cases ===========================================================================================

async def test_unicode_digits_and_direction_marks_in_amounts_are_refused_with_the_reason(target: Target) -> None:
    for text in ("add ١٠", "add 1\u200f0", "add １０", "add 10\u202e", "add \u202e10", "add 1\u200e0",
                 "add ²", "add Ⅻ", "recharge ١٠ below 5", "alerts １０", "add 5\u2066"):
        _, posted, _ = await target.probe(teams.message(text, service_url=target.url, sender=ALEX),
                                          source="hand-written: unicode amount")
        assert posted[0]["text"] == t("amount.unicode_digits", "en"), (text, posted[0]["text"])
    _, posted, _ = await target.probe(teams.message("add ١٠", service_url=target.url, sender=ALEX, locale="da-DK"),
                                      source="hand-written: unicode amount")
    assert posted[0]["text"] == t("amount.unicode_digits", "da")


async def test_every_bad_amount_says_what_is_wrong_with_it(target: Target) -> None:
    cases = {"add -5": "amount.negative", "add 0": "amount.zero", "add NaN": "amount.not_finite",
             "add 1.234": "amount.too_precise", "add 99999999999": "amount.too_large",
             "add €50": "amount.other_currency", "add 1,25,0": "amount.not_a_number", "add abc": "amount.not_a_number",
             "add": "parse.usage", "add 5 " + "memo " * 50: "parse.memo_too_long"}
    for text, key in cases.items():
        _, posted, _ = await target.probe(teams.message(text, service_url=target.url, sender=ALEX),
                                          source="hand-written: bad amount")
        assert refusal_of(posted[0]["text"]) == key, (text, posted[0]["text"])


async def test_huge_strings_are_refused_or_answered_briefly(target: Target) -> None:
    url = target.url
    for text in ("x" * (200 * 1024), "add " + "9" * 100_000, "add 5 " + "m" * 150_000, "history " + "7" * 50_000,
                 "currency " + "Q" * 100_000, "grant " + "a1" * 40_000 + " reader", "<at>" * 20_000,
                 "subscribe " + "z" * 100_000):
        status, posted, _ = await target.probe(teams.message(text, service_url=url, sender=ALEX),
                                               source="hand-written: huge string")
        assert status == 200 and len(posted) == 1
        reply = posted[0]["text"]
        assert len(reply) < 4000, (text[:40], len(reply))     # help is the longest answer
    one_mb = teams.message("x" * (1024 * 1024), service_url=url, sender=ALEX)
    status, posted, answer = await target.probe(one_mb, source="hand-written: huge string")
    assert (status, posted, answer) == (413, [], {"error": "activity too large"})
    long_name = teams.message("whoami", service_url=url, sender=teams.user("9" * 36, "N" * MAX_ID))
    status, posted, _ = await target.probe(long_name, source="hand-written: huge string")
    assert status == 200 and len(posted[0]["text"]) < 1000     # the name is cut to Teams' 256 characters
    huge_name = teams.message("whoami", service_url=url, sender=teams.user("9" * 36, "N" * 100_000))
    status, posted, _ = await target.probe(huge_name, source="hand-written: huge string")
    assert status == 400 and not posted                        # every reply would repeat it
    for field in ("id", "replyToId", "locale"):
        status, _, _ = await target.probe({**teams.message("balance", service_url=url, sender=ALEX),
                                           field: "i" * (MAX_ID + 1)}, source="hand-written: huge string")
        assert status == 400, field


async def test_invalid_json_and_bodies_that_are_not_activities(target: Target) -> None:
    good = teams.message("balance", service_url=target.url, sender=ALEX)
    for raw in ("\ufeff" + json.dumps(good), json.dumps(good).encode("utf-16")):   # JSON in another dress:
        status, _, _ = await target.probe(raw, source="hand-written: invalid JSON")  # read or refused, never 5xx
        assert status in (200, 400)
    for raw in ("", "{not json", "{", "null", "[]", "42", '"activity"', "true", '{"type": "message"',
                json.dumps(good)[:-1], json.dumps(good) + "garbage",
                json.dumps(good).replace('"balance"', "NaN"), json.dumps(good).replace('"balance"', "Infinity"),
                b"\xff\xfe\xfa" + json.dumps(good).encode(), b"\xc3\x28" + json.dumps(good).encode(),
                json.dumps(good).replace('"balance"', '"\\ud800"'), json.dumps(good).replace('"balance"', '"a\\u0000"'),
                "[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000):
        status, posted, _ = await target.probe(raw, source="hand-written: invalid JSON")
        assert status == 400 and not posted, repr(raw)[:80]
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        status, _, _ = await target.probe(json.dumps(good), content_type=content_type,
                                          source="hand-written: content type")
        assert status == 415, content_type


async def test_deep_nesting_anywhere(target: Target) -> None:
    good = teams.message("balance", service_url=target.url, sender=ALEX)
    for depth in (50, 500, 900, 5000):
        for where in ("value", "channelData", "conversation", "from", "entities0", "attachments", "extra"):
            activity = copy.deepcopy(good)
            if where == "entities0":
                activity["entities"][0]["x"] = "__DEEP__"
            elif where == "attachments":
                activity["attachments"] = [{"contentType": "x", "content": "__DEEP__"}]
            elif where in ("value", "extra"):
                activity[where] = "__DEEP__"
            else:
                activity[where]["x"] = "__DEEP__"
            raw = json.dumps(activity).replace('"__DEEP__"', "[" * depth + "]" * depth)
            status, posted, _ = await target.probe(raw, source="hand-written: deep nesting")
            if depth <= 900:
                assert status == 200 and "$250.00" in posted[0]["text"], (depth, where, status)
            else:
                assert status == 400 and not posted, (depth, where, status)


async def test_missing_and_wrongly_typed_fields(target: Target) -> None:
    good = teams.message("balance", service_url=target.url, sender=ALEX)
    tried = 0
    for field in list(good) + ["value", "name", "replyToId", "attachments"]:
        for bad in ("<missing>", None, 1, -1.5, True, [], {}, "", "x", [1], {"a": 1}, "\u202e", "9" * 400):
            activity = copy.deepcopy(good)
            activity["id"] = f"typed-{field}-{tried}"
            if bad == "<missing>":
                activity.pop(field, None)
            else:
                activity[field] = bad
            await target.probe(activity, source="hand-written: field types")
            tried += 1
    for parent in ("from", "recipient", "conversation"):
        for field in ("id", "name", "aadObjectId", "conversationType", "tenantId", "isGroup"):
            for bad in ("<missing>", None, 7, [], {}, "", "x" * 2000):
                activity = copy.deepcopy(good)
                if bad == "<missing>":
                    activity[parent].pop(field, None)
                else:
                    activity[parent][field] = bad
                await target.probe(activity, source="hand-written: field types")
    for tenant in (None, 5, [], {}, {"id": 5}, {"id": ""}, {"id": None}, {"id": ["x"]}, {"id": "x" * (MAX_ID + 1)}):
        activity = copy.deepcopy(good)
        activity["channelData"]["tenant"] = tenant
        status, posted, _ = await target.probe(activity, source="hand-written: field types")
        if status == 200:
            assert posted[0]["text"] == t("error.no_tenant", "en"), (tenant, posted)


async def test_malformed_mentions_are_read_around_not_crashed_on(target: Target) -> None:
    """Found by this suite: botbuilder's `remove_recipient_mention` indexed `mentioned` without looking, so a
    mention entity without one (or with a string or null there) failed the turn before it reached the actions."""
    for entities in ([{"type": "mention"}], [{"type": "mention", "mentioned": None}],
                     [{"type": "mention", "mentioned": 5}], [{"type": "mention", "mentioned": {"id": 5}, "text": 7}],
                     [{"type": "mention", "mentioned": {"id": teams.BOT["id"]}}],
                     [{"type": "mention", "mentioned": {"id": teams.BOT["id"], "name": 3}, "text": None}],
                     [{"type": "mention", "mentioned": {"id": teams.BOT["id"]}, "text": "<at>(</at>"}],
                     [{"x": 1}], [{"type": None}], [{"type": 5}],
                     [{"type": "mention", "mentioned": {"id": "29:x", "aadObjectId": 5}, "text": "<at>X</at>"}]):
        for kind in ("message", "invoke"):
            activity = _base(kind, "balance", "channel", ALEX, target.url)
            activity["entities"] = entities
            status, posted, answer = await target.probe(activity, source="hand-written: mentions")
            assert status == 200
            if kind == "message":
                assert len(posted) == 1 and "$250.00" in posted[0]["text"], (entities, posted)
            else:
                assert answer["statusCode"] == 200, (entities, answer)


async def test_card_values_of_the_wrong_shape(target: Target) -> None:
    url = target.url
    nonce = "n" * 22
    for verb, data in (
            ("add_funds.confirm", {"nonce": nonce}), ("add_funds.confirm", {"nonce": nonce, "amount": ["1"]}),
            ("add_funds.confirm", {"nonce": nonce, "amount": {"x": 1}}),
            ("add_funds.confirm", {"nonce": nonce, "amount": "5", "memo": ["a"]}),
            ("add_funds.confirm", {"nonce": "short", "amount": "5"}), ("add_funds.confirm", {"amount": "5"}),
            ("add_funds.review", {"nonce": nonce, "amount": "1" * 10_000, "memo": ["a"]}),
            ("roles.grant", {"nonce": nonce, "user": 5, "role": []}),
            ("roles.grant", {"nonce": nonce, "user": "x" * 65, "role": "admin"}),
            ("history.page", {"before": "x"}), ("history.page", {"before": -5}), ("history.page", {"after": 10**30}),
            ("history.page", {"before": [1]}), ("usage.show", {"period": []}), ("cancel", {"of": {}}),
            ("alerts.save", {"nonce": nonce, "threshold_1": [1], "forecast_days": 10**40}),
            ("recharge.save", {"nonce": nonce, "enabled": [], "amount": "5", "trigger": "1"}),
            ("subscriptions.save", {"nonce": nonce, "kinds": 5}), ("currency.save", {"nonce": nonce, "code": 5}),
            ("add_funds.approve", {"nonce": nonce, "approval": 5}),
            ("add_funds.approve", {"nonce": nonce, "approval": "x" * 1000}),
            ("self_destruct", {}), ("", {}), (None, {})):
        for path in ("execute", "submit"):
            activity = press_activity(url, verb, {"verb": verb, **data}, sender=ALEX, path=path)
            status, posted, answer = await target.probe(activity, source="hand-written: card shape")
            assert status == 200
    for value in (None, "x", 5, [], [1], {"action": None}, {"action": []}, {"action": "x"},
                  {"action": {"type": "Action.Submit", "verb": "balance"}}, {"action": {"type": "Action.Execute"}},
                  {"action": {"type": "Action.Execute", "verb": 7}}, {"action": {"type": "Action.Execute", "verb": ""}},
                  {"action": {"type": "Action.Execute", "verb": "balance", "data": []}},
                  {"action": {"type": "Action.Execute", "verb": "balance", "data": "x"}},
                  {"action": {"type": "Action.Execute", "verb": "add_funds.confirm", "data": [["nonce", nonce]]}}):
        activity = press_activity(url, "balance", {}, sender=ALEX, path="execute")
        activity["value"] = value
        status, _, answer = await target.probe(activity, source="hand-written: invoke shape")
        assert status == 200 and answer["statusCode"] in (200, 400), (value, answer)
    for name in (None, 5, "", "task/fetch", "signin/verifyState", "composeExtension/query", "healthCheck"):
        activity = press_activity(url, "balance", {}, sender=ALEX, path="execute")
        activity["name"] = name
        status, _, _ = await target.probe(activity, source="hand-written: invoke name")
        assert status in (200, 400), name
    for value in ([], [1], "x", 5, True, {"verb": 5}, {"verb": None}, {"verb": ["balance"]}):
        activity = press_activity(url, "balance", {}, sender=ALEX, path="submit")
        activity["value"] = value
        status, posted, _ = await target.probe(activity, source="hand-written: submit shape")
        assert status == 200 and len(posted) == 1, (value, posted)


async def test_json_numbers_in_card_data_are_read_exactly(target: Target) -> None:
    """Found by this suite: msrest cannot deserialize a Decimal (how the endpoint reads JSON numbers with a
    fraction, never float), so any card data with a number like 12.5 was a 400 instead of an answer."""
    form = {"verb": "add_funds.review", "nonce": "n" * 22, "memo": ""}
    for amount in ("12.5", "1e2", "0.001", "-3.25", "1E+400"):
        raw = json.dumps(press_activity(target.url, "add_funds.review", {**form, "amount": "__N__"}, sender=ALEX,
                                        path="execute")).replace('"__N__"', amount)
        status, _, answer = await target.probe(raw, source="hand-written: JSON numbers")
        assert status == 200 and answer["statusCode"] == 200, (amount, answer)
        shown = json.dumps(answer["value"], ensure_ascii=False)
        if amount in ("12.5", "1e2"):
            assert {"12.5": "$12.50", "1e2": "$100.00"}[amount] in shown, (amount, shown[:300])


async def test_bodies_are_read_whole_however_they_arrive_and_limited_however_they_arrive(target: Target) -> None:
    """Found by this suite: `StreamReader.read(n)` returns what has arrived so far, so a body that came in more
    than one piece was cut at the first and refused as "not JSON"."""
    good = json.dumps(teams.message("balance " + " " * 20_000, service_url=target.url, sender=ALEX)).encode()

    async def pieces(data: bytes, size: int):  # type: ignore[no-untyped-def]
        for i in range(0, len(data), size):
            yield data[i:i + size]
            await asyncio.sleep(0)   # let the server read what has come so far (a slow network), not a wait

    response = await target.chat.client.post("/api/messages", data=pieces(good, 1000),
                                             headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    FIGURES_SEEN["inputs_tried"] += 1
    FIGURES_SEEN["by_source"]["hand-written: chunked body"] += 1
    FIGURES_SEEN["by_backend"][target.backend] += 1
    huge = b'{"type": "message", "text": "' + b"x" * (MAX_BODY + 10) + b'"}'
    response = await target.chat.client.post("/api/messages", data=pieces(huge, 64 * 1024),
                                             headers={"Content-Type": "application/json"})
    assert response.status == 413
    FIGURES_SEEN["inputs_tried"] += 1
    FIGURES_SEEN["by_source"]["hand-written: chunked body"] += 1
    FIGURES_SEEN["by_backend"][target.backend] += 1
    assert _changes(target.baseline, await target.snapshot()) == []
    status, _, _ = await target.probe(b"x" * (MAX_BODY + 1), source="hand-written: oversize")
    assert status == 413


async def test_service_urls_that_are_not_urls(target: Target) -> None:
    """Found by this suite: "http://[::1" made `urlsplit` raise outside any handler: a bare 500."""
    good = teams.message("balance", service_url=target.url, sender=ALEX)
    for url in ("http://[::1", "http://127.0.0.1:99999/", "http://127.0.0.1:-1/", "ftp://127.0.0.1/", "127.0.0.1",
                "http:///x", "", target.url + " ", target.url + "\r\nX-Injected: 1", "javascript:alert(1)",
                "http://evil.example/amer/"):
        status, posted, _ = await target.probe({**good, "serviceUrl": url}, source="hand-written: service URL")
        assert status == 400 and not posted, url


async def test_strings_no_store_can_keep_are_refused_before_the_turn(target: Target) -> None:
    """Found by this suite: NUL cannot be stored by PostgreSQL and a lone surrogate by neither backend (not
    UTF-8), so such a character anywhere the bot saves (a memo, a name, an id, a locale) crashed the turn; a
    lone surrogate also made the reply itself unsendable. No Teams client sends either: the endpoint says 400."""
    good = teams.message("add 5 memo", service_url=target.url, sender=ALEX)
    for where in ("text", "locale", "id", "from.name", "from.aadObjectId", "conversation.id", "recipient.name",
                  "channelData.tenant.id", "entities.0.locale", "value.x"):
        for bad in ("\u0000", "\ud800", "\udfff"):
            activity = copy.deepcopy(good)
            node: Any = activity
            *parents, last = where.split(".")
            for step in parents:
                node = node[int(step)] if step.isdigit() else node.setdefault(step, {})
            node[last] = f"a{bad}b" if last != "text" else f"add 5 a{bad}b"
            status, posted, _ = await target.probe(activity, source="hand-written: unstorable strings")
            assert status == 400 and not posted, where
    emoji = copy.deepcopy(good)
    emoji["text"] = "balance"
    emoji["from"] = {**emoji["from"], "name": "Alex \U0001F600"}   # a surrogate PAIR is fine: one code point
    status, posted, _ = await target.probe(emoji, source="hand-written: unstorable strings")
    assert status == 200 and "$250.00" in posted[0]["text"]


async def test_other_activity_types_are_answered_or_ignored(target: Target) -> None:
    for kind in ("conversationUpdate", "installationUpdate", "messageReaction", "typing", "event", "endOfConversation",
                 "messageUpdate", "messageDelete", "trace", "handoff", "command", "delay", "invokeResponse", "x"):
        activity = teams.message("add 5", service_url=target.url, sender=ALEX)
        activity["type"] = kind
        for extra in ({}, {"membersAdded": 5}, {"membersAdded": [5]}, {"membersRemoved": [{"id": 5}]},
                      {"reactionsAdded": "x"}, {"action": 5}, {"name": 5, "value": []},
                      {"channelData": {"tenant": {"id": teams.TENANT}, "eventType": 5, "team": "x"}}):
            await target.probe({**activity, **extra}, source="hand-written: activity types")


async def test_a_replayed_activity_changes_nothing_and_gets_the_first_answer(target: Target) -> None:
    """The same activity id again (a Teams retry, or a replay of a captured request) is the same change: the
    ledger answers the original result and writes nothing (whatever else the replay carries)."""
    first = teams.message("add 7 once", service_url=target.url, sender=ALEX, activity_id="replayed-1")
    response = await target.chat.post(first)
    assert response.status == 200
    target.baseline = await target.snapshot()
    for replay in (first, {**first, "text": "add 8 twice"}, {**first, "locale": "da-DK"}):
        status, posted, _ = await target.probe(replay, source="hand-written: replay")
        assert status == 200 and not posted[0]["text"].startswith("Added $8"), posted


# ==== what the fuzzing found, each pinned ============================================================================

async def test_refusals_quote_what_was_typed_only_in_part(target: Target) -> None:
    """Found by this suite: "I don't know '<200 kB>'" was a 200 kB reply, which Teams refuses: the user got no
    answer at all. Every refusal now quotes at most `ECHO_MAX` characters of what was typed."""
    _, posted, _ = await target.probe(teams.message("q" * 100_000, service_url=target.url, sender=ALEX),
                                      source="hand-written: echo")
    reply = posted[0]["text"]
    assert refusal_of(reply) == "parse.unknown_command" and "q" * (ECHO_MAX - 1) + "\u2026" in reply
    assert "q" * ECHO_MAX not in reply


async def test_a_turn_that_fails_outside_the_actions_tells_the_user_its_incident_id(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by this suite: a failure before the actions (there, the mention bug) gave no reply to a message
    and a bare 501 to an invoke. Now: logged with an incident id, and the user told that id (never the text)."""
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail hunter2")

    # the first turn in a conversation saves its reference (before the actions): two new conversations
    monkeypatch.setattr(target.chat.ledger, "save_conversation", broken)
    target.caplog.clear()
    message = await target.chat.post(teams.message("balance", service_url=target.url, sender=ALEX,
                                                   conversation_suffix="first-contact-1"))
    press = press_activity(target.url, "balance", {"verb": "balance"}, sender=ALEX, path="execute")
    press["conversation"]["id"] += "-first-contact-2"
    invoke = await target.chat.post(press)
    assert message.status == 200 and invoke.status == 200
    body = await invoke.json()
    assert body["statusCode"] == 500 and body["type"] == "application/vnd.microsoft.error"
    said = [target.chat.connector.activities()[-1]["text"], body["value"]["message"]]
    incidents = [re.search(r"Incident id: ([0-9a-f]{12})", text)[1] for text in said]   # type: ignore[index]
    logged = [r.getMessage() for r in target.caplog.records if r.levelno >= logging.ERROR]
    for incident in incidents:
        assert any(incident in line for line in logged)
    assert all("hunter2" not in text and "RuntimeError" not in text for text in said)
    monkeypatch.undo()
    assert _changes(target.baseline, await target.snapshot()) == []
