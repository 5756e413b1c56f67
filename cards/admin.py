"""Administration cards: where alerts go (subscriptions), who has which role, and the account's currency.

Like the settings forms, each form carries a nonce (the idempotency key of its change) and a `basis` (the
caller's digest of the state the card was built from: the subscriptions, the grants, the currency), so a card
built before someone else's change is answered "out of date" instead of acting on a stale picture. The buttons
appear whatever the viewer's role: the server checks the role on every press.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from babel.core import UnknownLocaleError
from babel.numbers import get_currency_name

from storage.model import AlertKind, Role, RoleGrant, Subscription

from .elements import card, column_set, execute, facts, header, notice, text, truncate
from .texts import Texts

#: Currencies the currency form offers (the account's current one is added when it is not among them).
CURRENCY_CHOICES: tuple[str, ...] = ("USD", "EUR", "GBP", "DKK", "SEK", "NOK", "CHF", "JPY", "CAD", "AUD")
#: Longest Entra object id the grant form takes (a GUID is 36 characters).
USER_ID_MAX_LENGTH = 64
#: Grants (and subscriptions) listed one by one; the rest are counted in one line (the card must stay small).
ROWS_SHOWN = 25
#: A conversation id longer than this is shown shortened in the middle.
CONVERSATION_ID_SHOWN = 28


def short_id(value: str, limit: int = CONVERSATION_ID_SHOWN) -> str:
    """`value` with its middle cut out when it is longer than `limit` ("19:abcdef…@thread.v2"): Teams
    conversation ids are long, and their start and end are what tells them apart."""
    if len(value) <= limit:
        return value
    tail = limit // 3
    head = limit - tail - 1
    return value[:head] + "\u2026" + value[-tail:]


def _kinds_text(texts: Texts, kinds: Sequence[AlertKind]) -> str:
    return ", ".join(texts.t(f"alert_kind.{k.value}") for k in AlertKind if k in kinds) or texts.t("label.none")


def _more(texts: Texts, rest: int) -> list[dict[str, Any]]:
    return [text(texts.t("card.more", count=rest), isSubtle=True, spacing="Small")] if rest > 0 else []


# --- where alerts go --------------------------------------------------------------------------------------------

def subscriptions_card(texts: Texts, *, conversation_id: str, subscriptions: Sequence[Subscription], nonce: str,
                       basis: str, error: str | None = None,
                       places: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every conversation that gets alerts ("this conversation" for `conversation_id`; else its name in
    `places`, conversation id -> a friendly name the caller made from the saved reference such as "channel
    General", or the shortened id when it has none), with its kinds and, when disabled, the reason; then a form
    for THIS conversation: "kinds", a multi-select of every `AlertKind`
    (comma-separated values, as Adaptive Cards sends them), prefilled with this conversation's kinds, or with
    every kind when it gets none yet (as `subscribe` does). Buttons: "Send these alerts here"
    (`subscriptions.save`), "Stop alerts here" (`subscriptions.stop`, only when this conversation has a
    subscription, also a disabled one), Cancel."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.subscriptions.title"))]
    if error:
        body.append(notice(error, tone="attention"))
    body.append(text(texts.t("card.subscriptions.intro"), isSubtle=True))
    here = next((s for s in subscriptions if s.conversation_id == conversation_id), None)
    ordered = ([here] if here else []) + [s for s in subscriptions if s is not here]
    if not ordered:
        body.append(text(texts.t("card.subscriptions.none"), weight="Bolder"))
    for index, sub in enumerate(ordered[:ROWS_SHOWN]):
        place = (texts.t("label.this_conversation") if sub.conversation_id == conversation_id
                 else truncate(places[sub.conversation_id], 120) if places and places.get(sub.conversation_id)
                 else short_id(sub.conversation_id))
        items = [text(place, weight="Bolder"), text(_kinds_text(texts, sub.kinds), isSubtle=True, spacing="None")]
        if not sub.enabled:
            reason = truncate(sub.disabled_reason, 120) if sub.disabled_reason else ""
            items.append(text(texts.t("card.subscriptions.disabled", reason=reason) if reason
                              else texts.t("card.subscriptions.disabled_plain"),
                              color="attention", size="Small", spacing="None"))
        body.append({"type": "Container", "items": items, "separator": index > 0,
                     "spacing": "Small" if index else "Medium"})
    body += _more(texts, len(ordered) - ROWS_SHOWN)
    chosen = here.kinds if here else tuple(AlertKind)
    body.append({
        "type": "Input.ChoiceSet", "id": "kinds", "label": texts.t("card.subscriptions.kinds_label"),
        "isMultiSelect": True, "style": "expanded", "wrap": True, "isRequired": True,
        "errorMessage": texts.t("card.subscriptions.kinds_error"),
        "choices": [{"title": texts.t(f"alert_kind.{k.value}"), "value": k.value} for k in AlertKind],
        "value": ",".join(k.value for k in AlertKind if k in chosen), "separator": True, "spacing": "Medium",
    })
    actions = [execute("subscriptions.save", texts.t("card.subscriptions.save"), nonce=nonce, basis=basis,
                       style="positive", with_inputs=True)]
    if here is not None:
        actions.append(execute("subscriptions.stop", texts.t("card.subscriptions.stop"), nonce=nonce, basis=basis,
                               style="destructive"))
    actions.append(execute("cancel", texts.t("label.cancel"), data={"of": "subscriptions"}))
    return card(texts, body, actions, summary=texts.t("card.subscriptions.title"))


# --- roles ------------------------------------------------------------------------------------------------------

def roles_card(texts: Texts, *, grants: Sequence[RoleGrant], nonce: str, basis: str, error: str | None = None,
               bootstrap_note: bool, viewer: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """Every grant (display name, else the user id; the role; the id under a display name) with a Revoke button
    (`roles.revoke`, data "user_id"; its nonce is f"{nonce}-{index}", index = the grant's position on the card,
    so revoking two people from one card is two changes), then a grant form: "user" (an Entra object id) and
    "role" ("admin"/"reader"), button Grant (`roles.grant`), and Cancel. `bootstrap_note`: say that the
    configured bootstrap admins act as admins until the account has one of its own. `viewer`: (name, Entra
    object id, role text) of the person looking, shown first (what `whoami` answers)."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.roles.title"))]
    if viewer is not None:
        name, object_id, role = viewer
        body.append(facts([(texts.t("card.roles.you"), f"{truncate(name, 120)} \u00b7 {role}"),
                           (texts.t("card.roles.object_id"), object_id)]))
    if error:
        body.append(notice(error, tone="attention"))
    if bootstrap_note:
        body.append(notice(texts.t("roles.bootstrap"), tone="accent"))
    if not grants:
        body.append(text(texts.t("roles.none")))
    for index, grant in enumerate(grants[:ROWS_SHOWN]):
        name = truncate(grant.display_name, 120) if grant.display_name else grant.user_id
        role = texts.t(f"role.{grant.role.value}")
        detail = f"{role} \u00b7 {grant.user_id}" if grant.display_name else role
        revoke = execute("roles.revoke", texts.t("card.roles.revoke"), nonce=f"{nonce}-{index}", basis=basis,
                         data={"user_id": grant.user_id}, style="destructive")
        body.append(column_set([([text(name, weight="Bolder"), text(detail, isSubtle=True, spacing="None")],
                                 "stretch"),
                                ([{"type": "ActionSet", "actions": [revoke]}], "auto")],
                               separator=index > 0, spacing="Small" if index else "Medium"))
    body += _more(texts, len(grants) - ROWS_SHOWN)
    body += [
        text(texts.t("card.roles.grant_title"), weight="Bolder", separator=True, spacing="Large"),
        {"type": "Input.Text", "id": "user", "label": texts.t("card.roles.user_label"),
         "placeholder": texts.t("card.roles.user_placeholder"), "maxLength": USER_ID_MAX_LENGTH,
         "isRequired": True, "errorMessage": texts.t("card.roles.user_error", max=USER_ID_MAX_LENGTH)},
        {"type": "Input.ChoiceSet", "id": "role", "label": texts.t("card.roles.role_label"), "style": "compact",
         "isRequired": True, "errorMessage": texts.t("card.roles.role_error"), "value": Role.READER.value,
         "choices": [{"title": texts.t(f"role.{r.value}"), "value": r.value} for r in (Role.ADMIN, Role.READER)]},
    ]
    actions = [execute("roles.grant", texts.t("card.roles.grant"), nonce=nonce, basis=basis, style="positive",
                       with_inputs=True),
               execute("cancel", texts.t("label.cancel"), data={"of": "roles"})]
    return card(texts, body, actions, summary=texts.t("card.roles.title"))


# --- currency ---------------------------------------------------------------------------------------------------

def _currency_title(texts: Texts, code: str) -> str:
    try:
        name = get_currency_name(code, locale=texts.language)
    except (UnknownLocaleError, ValueError):  # a locale Babel doesn't know: the code alone says enough
        name = code
    return code if not name or name == code else f"{code} \u00b7 {name}"


def currency_card(texts: Texts, *, currency: str, locked: bool, nonce: str, basis: str,
                  error: str | None = None) -> dict[str, Any]:
    """The account's currency. Not `locked` (no entry yet): "code", a choice of `CURRENCY_CHOICES` and the current
    one, prefilled with it; Save changes (`currency.save`) / Cancel. `locked`: a notice that the currency is
    fixed after the first entry, and no form."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.currency.title"))]
    if error:
        body.append(notice(error, tone="attention"))
    body.append(facts([(texts.t("card.currency.current"), _currency_title(texts, currency))]))
    if locked:
        body.append(notice(texts.t("card.currency.locked"), tone="accent"))
        actions = [execute("balance", texts.t("card.button.balance"))]
        return card(texts, body, actions, summary=texts.t("card.currency.title"))
    codes = list(CURRENCY_CHOICES) if currency in CURRENCY_CHOICES else [currency, *CURRENCY_CHOICES]
    body += [
        text(texts.t("card.currency.intro"), isSubtle=True),
        {"type": "Input.ChoiceSet", "id": "code", "label": texts.t("card.currency.code_label"), "style": "compact",
         "isRequired": True, "errorMessage": texts.t("card.currency.code_error"), "value": currency,
         "choices": [{"title": _currency_title(texts, c), "value": c} for c in codes]},
    ]
    actions = [execute("currency.save", texts.t("label.save_changes"), nonce=nonce, basis=basis, style="positive",
                       with_inputs=True),
               execute("cancel", texts.t("label.cancel"), data={"of": "currency"})]
    return card(texts, body, actions, summary=texts.t("card.currency.title"))
