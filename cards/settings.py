"""Settings forms and their "saved" cards: auto-recharge and low-balance alerts.

Both forms are prefilled from the current settings and carry a nonce (the idempotency key of the save) and a
`basis` (the caller's digest of the settings the form was prefilled with): when the settings changed since the
form was sent, the server answers with `out_of_date_card` around a fresh form instead of overwriting.
"""

from __future__ import annotations

from typing import Any

from storage.model import AlertSettings, RechargeSettings
from storage.policy import MAX_THRESHOLDS

from .balance import recharge_facts
from .elements import card, execute, facts, header, money_input, notice, text
from .funds import amount_error
from .texts import Texts
from .verbs import THRESHOLD_INPUTS

#: Threshold fields the alerts form shows at least (more when more are set, one empty to add, up to the max).
MIN_THRESHOLD_SLOTS = 3


def recharge_form(texts: Texts, *, currency: str, settings: RechargeSettings, nonce: str, basis: str,
                  error: str | None = None) -> dict[str, Any]:
    """Edit recharge settings: the toggle ("enabled": "true"/"false"), "Add this amount" ("amount"), "When the
    balance is below" ("trigger"), the monthly cap ("cap", empty for none); Save changes / Cancel. The burst
    breaker is shown, not edited."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("label.edit_recharge"))]
    if error:
        body.append(notice(error, tone="attention"))
    money_label = lambda key: texts.t("card.input.money_label", label=texts.t(key), currency=currency)  # noqa: E731
    body += [
        text(texts.t("card.recharge.intro"), isSubtle=True),
        {"type": "Input.Toggle", "id": "enabled", "title": texts.t("card.recharge.toggle"),
         "value": "true" if settings.enabled else "false", "valueOn": "true", "valueOff": "false",
         "wrap": True},
        money_input("amount", label=money_label("label.recharge_amount"), currency=currency,
                    value=settings.amount or None, required=True, error=amount_error(texts, currency)),
        money_input("trigger", label=money_label("label.when_below"), currency=currency, value=settings.trigger,
                    required=True, error=amount_error(texts, currency)),
        money_input("cap", label=money_label("label.monthly_cap"), currency=currency, value=settings.monthly_cap,
                    required=False, error=amount_error(texts, currency),
                    placeholder=texts.t("card.recharge.cap_placeholder")),
        text(texts.t("recharge.breaker", max_per_day=settings.max_per_day), isSubtle=True, size="Small"),
    ]
    actions = [
        execute("recharge.save", texts.t("label.save_changes"), nonce=nonce, basis=basis, style="positive",
                with_inputs=True),
        execute("cancel", texts.t("label.cancel"), data={"of": "recharge"}),
    ]
    return card(texts, body, actions, summary=texts.t("label.edit_recharge"))


def recharge_saved_card(texts: Texts, *, settings: RechargeSettings, replayed: bool = False) -> dict[str, Any]:
    """What Save turns the form into: the settings now in force."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.recharge.saved_title"), color="good")]
    if replayed:
        body.append(notice(texts.t("done.replayed"), tone="accent"))
    body.append(facts(recharge_facts(texts, settings)))
    body.append(text(texts.t("recharge.breaker", max_per_day=settings.max_per_day), isSubtle=True, size="Small"))
    if not settings.enabled:
        body.append(text(texts.t("card.recharge.off_warning"), color="attention"))
    actions = [execute("recharge.open", texts.t("label.edit_recharge")),
               execute("balance", texts.t("card.button.balance"))]
    return card(texts, body, actions, summary=texts.t("card.recharge.saved_title"))


def alerts_form(texts: Texts, *, currency: str, settings: AlertSettings, nonce: str, basis: str,
                error: str | None = None) -> dict[str, Any]:
    """Low-balance thresholds ("threshold_1".. in `verbs.THRESHOLD_INPUTS`: the set ones, one empty field to add
    one, at least `MIN_THRESHOLD_SLOTS`, at most `MAX_THRESHOLDS`; an empty field is no threshold) and the
    forecast horizon in days ("forecast_days", 1..365)."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.alerts.title"))]
    if error:
        body.append(notice(error, tone="attention"))
    body.append(text(texts.t("card.alerts.intro"), isSubtle=True))
    thresholds = list(settings.thresholds)[:MAX_THRESHOLDS]
    slots = min(MAX_THRESHOLDS, max(len(thresholds) + 1, MIN_THRESHOLD_SLOTS))
    for index in range(slots):
        body.append(money_input(
            THRESHOLD_INPUTS[index], currency=currency, required=False, error=amount_error(texts, currency),
            label=texts.t("card.alerts.threshold_label", n=index + 1, currency=currency),
            value=thresholds[index] if index < len(thresholds) else None))
    body.append({"type": "Input.Number", "id": "forecast_days", "label": texts.t("card.alerts.forecast_days_label"),
                 "min": 1, "max": 365, "value": settings.forecast_days, "isRequired": True,
                 "errorMessage": texts.t("card.alerts.forecast_days_error"), "separator": True})
    actions = [
        execute("alerts.save", texts.t("label.save_changes"), nonce=nonce, basis=basis, style="positive",
                with_inputs=True),
        execute("cancel", texts.t("label.cancel"), data={"of": "alerts"}),
        execute("subscriptions.open", texts.t("card.button.subscriptions")),
    ]
    return card(texts, body, actions, summary=texts.t("card.alerts.title"))


def alerts_saved_card(texts: Texts, *, settings: AlertSettings, replayed: bool = False) -> dict[str, Any]:
    """The thresholds now in force (highest first) and the forecast horizon."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.alerts.saved_title"), color="good")]
    if replayed:
        body.append(notice(texts.t("done.replayed"), tone="accent"))
    if settings.thresholds:
        body.append(text(texts.t("card.alerts.below"), weight="Bolder"))
        body += [text(texts.money(v), spacing="None") for v in sorted(settings.thresholds, reverse=True)]
    else:
        body.append(text(texts.t("alerts.cleared")))
    body.append(facts([(texts.t("card.fact.forecast_days"),
                        texts.t("card.value.days", days=settings.forecast_days))]))
    actions = [execute("alerts.open", texts.t("card.button.edit_alerts")),
               execute("subscriptions.open", texts.t("card.button.subscriptions")),
               execute("balance", texts.t("card.button.balance"))]
    return card(texts, body, actions, summary=texts.t("card.alerts.saved_title"))
