"""The one table of card verbs: every button on every card names one of these, and the bot has one handler per
verb (a cross-table test holds both sides to it).

A button is always `Action.Execute` with `verb` and a `data` dict that repeats `"verb"`, so the same card works
when a client sends it as `Action.Submit` (a message whose `value` is the data merged with the inputs). What a
button's data may hold besides `"verb"`:

* `"nonce"` when `needs_nonce`: the idempotency key of the change the button makes. The caller mints it when it
  builds the card (cards never generate randomness); a double click, a Teams retry or a resubmitted old card
  carries the same nonce, so the change happens once. Several buttons of one card that make DIFFERENT changes
  must not share a key: the Revoke button of each grant on the roles card carries `f"{nonce}-{index}"`
  (index: the grant's position on the card, from 0), so revoking A and then B from one card are two changes,
  while pressing A's button twice is one. The caller's nonce stays short enough for the suffix (the server
  accepts 8..64 characters of [A-Za-z0-9_-]).
* `"basis"` when `needs_basis`: a digest of the state the card was built from (the settings a form was
  prefilled with). The server compares it with the current state and answers "out of date" with a fresh card
  when they differ, instead of silently overwriting someone else's change.
* the keys in `data` (cursors, periods, the amount and memo a confirmation repeats, an approval id).

`inputs` are the ids of the card's input fields that the verb reads; clients merge them into the data. Money
in data and inputs is in MAJOR units as a plain decimal string ("250", "12.50"; Input.Number sends what the
user typed that way), never locale-formatted: parse it with `storage.money.to_minor`. Client-side checks
(`min`, `max`, `isRequired`) are a courtesy: the server validates every field again, and checks
`capability` (None: anyone) against the caller's role on every action.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from storage.policy import MAX_THRESHOLDS, Capability

#: Ids of the alert-threshold inputs on the alerts form: "threshold_1" .. "threshold_{MAX_THRESHOLDS}".
THRESHOLD_INPUTS: tuple[str, ...] = tuple(f"threshold_{n}" for n in range(1, MAX_THRESHOLDS + 1))
#: Keys every button's data may carry whatever its verb.
BASE_KEYS = frozenset({"verb"})


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    capability: Capability | None
    needs_nonce: bool
    inputs: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    needs_basis: bool = False

    @property
    def allowed_keys(self) -> frozenset[str]:
        """Every key a submit of this verb may legitimately carry (data and inputs): anything else is tampering."""
        keys = set(BASE_KEYS) | set(self.inputs) | set(self.data)
        if self.needs_nonce:
            keys.add("nonce")
        if self.needs_basis:
            keys.add("basis")
        return frozenset(keys)


_MOVE = Capability.MOVE_MONEY
_SETTINGS = Capability.CHANGE_SETTINGS
_READ = Capability.READ
_ROLES = Capability.MANAGE_ROLES
_SUBSCRIPTIONS = Capability.MANAGE_SUBSCRIPTIONS

VERB_TABLE: tuple[Verb, ...] = (
    Verb("balance", _READ, False),
    # add funds: form -> review (confirmation card) -> confirm; the form's nonce travels through the review into
    # the confirmation, so reviewing twice and confirming both confirmations still adds once
    Verb("add_funds.open", _MOVE, False),
    Verb("add_funds.review", _MOVE, True, inputs=("amount", "memo")),
    Verb("add_funds.confirm", _MOVE, True, data=("amount", "memo")),
    # above the approval threshold: a second admin decides on an approval card
    Verb("add_funds.approve", _MOVE, True, data=("approval",)),
    Verb("add_funds.reject", _MOVE, True, data=("approval",)),
    Verb("recharge.open", _SETTINGS, False),
    Verb("recharge.save", _SETTINGS, True, inputs=("enabled", "amount", "trigger", "cap"), needs_basis=True),
    Verb("alerts.open", _SETTINGS, False),
    Verb("alerts.save", _SETTINGS, True, inputs=(*THRESHOLD_INPUTS, "forecast_days"), needs_basis=True),
    # "before": seq cursor of the next older page (Page.older); "after": seq of the newest entry shown, so the
    # newer page is the entries with seq > after (seqs have no gaps: history(before=after + limit + 1))
    Verb("history.page", _READ, False, data=("before", "after")),
    Verb("usage.show", _READ, False, data=("period",)),
    # where alerts go: the form edits THIS conversation's subscription ("kinds": comma-separated AlertKind values,
    # as a multi-select ChoiceSet sends them); "basis": the caller's digest of the subscriptions shown
    Verb("subscriptions.open", _SUBSCRIPTIONS, False),
    Verb("subscriptions.save", _SUBSCRIPTIONS, True, inputs=("kinds",), needs_basis=True),
    Verb("subscriptions.stop", _SUBSCRIPTIONS, True, needs_basis=True),
    # roles: readers may look; "user_id": the Entra object id of the grant a Revoke button removes (not "user",
    # which is the grant form's input: an Action.Submit merges every input into the data); each Revoke button's
    # nonce is f"{nonce}-{index}" (see above)
    Verb("roles.open", _READ, False),
    Verb("roles.grant", _ROLES, True, inputs=("user", "role"), needs_basis=True),
    Verb("roles.revoke", _ROLES, True, data=("user_id",), needs_basis=True),
    # currency: "code" an ISO 4217 code; only before the account's first entry (the server checks)
    Verb("currency.open", _READ, False),
    Verb("currency.save", _SETTINGS, True, inputs=("code",), needs_basis=True),
    Verb("help", None, False),
    # "of": what was cancelled ("add_funds", "recharge", "alerts", "subscriptions", "roles", "currency");
    # nothing changes
    Verb("cancel", None, False, data=("of",)),
)

VERBS: Mapping[str, Verb] = MappingProxyType({v.name: v for v in VERB_TABLE})
assert len(VERBS) == len(VERB_TABLE), "a verb is listed twice"

#: `usage.show` periods (the same as the `usage` command's).
PERIODS: tuple[str, ...] = ("7d", "30d", "month")


def verb(name: str) -> Verb:
    """The verb called `name`; `KeyError` for one that is not in the table (a bug in a card builder)."""
    return VERBS[name]
