"""Alert cards, one per `AlertKind`, each with a button to the form that fixes it.

Payload fields read (storage/reference.py, "Conventions the backends share"):

* recharged         {"count", "total", "balance", "entry_seqs"}
* recharge_blocked  {"reason": "monthly_cap" | "breaker", "balance", "entry_seq"}
* low_balance       {"threshold", "balance", "entry_seq"}
* exhausted         {"balance", "entry_seq"}
* expiring          {"lot_id", "remaining", "expires_at": ISO 8601}
* forecast          (raised by the bot; storage leaves it open) {"balance", "daily_burn", "days_to_zero",
                    "zero_on": ISO date}

A field that is missing or of the wrong type is left out rather than failing the card: an alert that cannot
be rendered would be retried until it is dead, and a slightly shorter card is better than none.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Callable, Mapping

from storage.model import Alert, AlertKind, last_usable_day, parse_iso

from .elements import card, execute, facts, header, text
from .texts import Texts

#: Colour of each alert's title.
ALERT_COLORS: Mapping[AlertKind, str] = {
    AlertKind.RECHARGED: "good", AlertKind.RECHARGE_BLOCKED: "attention", AlertKind.LOW_BALANCE: "attention",
    AlertKind.EXHAUSTED: "attention", AlertKind.EXPIRING: "accent", AlertKind.FORECAST: "accent",
}


def _int(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _moment(payload: Mapping[str, Any], key: str) -> datetime | date | None:
    value = payload.get(key)
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value) if "T" in value else date.fromisoformat(value)
    except ValueError:
        return None


def _money_fact(texts: Texts, title_key: str, value: int | None) -> list[tuple[str, str]]:
    return [] if value is None else [(texts.t(title_key), texts.money(value))]


def _recharged(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    total = _int(p, "total")
    title = texts.t("card.alert.recharged.title", total=texts.money(total)) if total is not None \
        else texts.t("card.alert.recharged.title_plain")
    pairs = []
    if (count := _int(p, "count")) is not None:
        pairs.append((texts.t("card.fact.recharges"), str(count)))
    pairs += _money_fact(texts, "card.fact.balance_now", _int(p, "balance"))
    body = [text(texts.t("card.alert.recharged.text")), facts(pairs)]
    return title, body, [execute("recharge.open", texts.t("label.edit_recharge")),
                         execute("balance", texts.t("card.button.balance"))]


def _blocked(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    reason = p.get("reason")
    key = f"card.alert.recharge_blocked.{reason}" if reason in ("monthly_cap", "breaker") \
        else "card.alert.recharge_blocked.other"
    body = [text(texts.t(key)), facts(_money_fact(texts, "card.fact.balance_now", _int(p, "balance")))]
    return texts.t("card.alert.recharge_blocked.title"), body, [
        execute("recharge.open", texts.t("label.edit_recharge"), style="positive"),
        execute("add_funds.open", texts.t("label.add_funds")),
    ]


def _low(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    balance, threshold = _int(p, "balance"), _int(p, "threshold")
    title = texts.t("card.alert.low_balance.title", balance=texts.money(balance)) if balance is not None \
        else texts.t("card.status.low")
    body = [text(texts.t("card.alert.low_balance.text", threshold=texts.money(threshold)))
            if threshold is not None else text(texts.t("card.status.low")),
            facts(_money_fact(texts, "card.fact.balance_now", balance)
                  + _money_fact(texts, "card.fact.threshold", threshold))]
    return title, body, [execute("add_funds.open", texts.t("label.add_funds"), style="positive"),
                         execute("alerts.open", texts.t("card.button.edit_alerts"))]


def _exhausted(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    body = [text(texts.t("card.alert.exhausted.text")),
            facts(_money_fact(texts, "card.fact.balance_now", _int(p, "balance")))]
    return texts.t("card.alert.exhausted.title"), body, [
        execute("add_funds.open", texts.t("label.add_funds"), style="positive"),
        execute("recharge.open", texts.t("label.edit_recharge")),
    ]


def _expiring(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    remaining, expires_at = _int(p, "remaining"), _moment(p, "expires_at")
    # shown: the last day the money can be used (a lot expires at the midnight after it, ADR 0008)
    when = last_usable_day(expires_at) if isinstance(expires_at, datetime) else expires_at
    if remaining is not None and when is not None:
        title = texts.t("balance.expiring", amount=texts.money(remaining), date=texts.date(when))
    else:
        title = texts.t("card.alert.expiring.title_plain")
    pairs = _money_fact(texts, "card.fact.amount_left", remaining)
    if when is not None:
        pairs.append((texts.t("card.fact.expires"), texts.date(when)))
    body = [text(texts.t("card.alert.expiring.text")), facts(pairs)]
    return title, body, [execute("balance", texts.t("card.button.balance")),
                         execute("usage.show", texts.t("card.button.usage"), data={"period": "30d"})]


def _forecast(texts: Texts, p: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    zero_on = _moment(p, "zero_on")
    title = texts.t("card.alert.forecast.title", date=texts.date(zero_on)) if zero_on is not None \
        else texts.t("card.alert.forecast.title_plain")
    pairs = _money_fact(texts, "card.fact.balance_now", _int(p, "balance"))
    pairs += _money_fact(texts, "card.fact.daily_usage", _int(p, "daily_burn"))
    if (days := _int(p, "days_to_zero")) is not None:
        pairs.append((texts.t("card.fact.days_left"), str(days)))
    body = [text(texts.t("card.alert.forecast.text")), facts(pairs)]
    return title, body, [execute("add_funds.open", texts.t("label.add_funds"), style="positive"),
                         execute("recharge.open", texts.t("label.edit_recharge"))]


_BUILDERS: Mapping[AlertKind, Callable[[Texts, Mapping[str, Any]],
                                       tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]] = {
    AlertKind.RECHARGED: _recharged, AlertKind.RECHARGE_BLOCKED: _blocked, AlertKind.LOW_BALANCE: _low,
    AlertKind.EXHAUSTED: _exhausted, AlertKind.EXPIRING: _expiring, AlertKind.FORECAST: _forecast,
}


def alert_reference(alert: Alert) -> str:
    """The short reference a card shows (the alert id's first 8 characters): the same on every send of one
    alert, so a copy sent again after a crash is recognisably the same alert (docs/decisions/0006)."""
    return alert.alert_id[:8]


def alert_card(texts: Texts, *, alert: Alert) -> dict[str, Any]:
    """The card for an outbox alert: a coloured title, what happened, the numbers, when it was raised, and the
    button that fixes it (blocked -> recharge settings, low or exhausted -> add funds, ...)."""
    kind = AlertKind(alert.kind)
    title, body, actions = _BUILDERS[kind](texts, alert.payload)
    body = [b for b in body if b["type"] != "FactSet" or b["facts"]]  # a payload without numbers: no empty facts
    content = [*header(texts, title, color=ALERT_COLORS[kind]), *body,
               text(texts.t("card.alert.raised", date=texts.date(alert.created_at), ref=alert_reference(alert)),
                    isSubtle=True, size="Small")]
    return card(texts, content, actions, summary=title)
