"""The balance card: the number, its status, auto-recharge, the last recharge, what expires soon, the forecast."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from storage.model import Account, Entry, Lot, RechargeSettings

from .elements import card, execute, facts, header, text
from .texts import Texts

Status = Literal["ok", "below_trigger", "low", "exhausted"]
STATUSES: tuple[Status, ...] = ("ok", "below_trigger", "low", "exhausted")
#: Adaptive Cards colour of each status.
#: Text colours only from the readable ones: Teams' light-theme "warning" is a pale yellow on white.
STATUS_COLORS: Mapping[str, str] = {"ok": "good", "below_trigger": "accent", "low": "attention",
                                    "exhausted": "attention"}
#: Expiring lots listed one by one; the rest are summed up in one line.
EXPIRING_SHOWN = 3


def balance_status(balance: int, recharge: RechargeSettings, thresholds: Sequence[int] = ()) -> Status:
    """The worst that holds: "exhausted" at or below zero (calls that need credits fail), "low" below the
    highest low-balance alert threshold, "below_trigger" below an enabled auto-recharge's trigger (a recharge is
    due or was blocked), else "ok"."""
    if balance <= 0:
        return "exhausted"
    if thresholds and balance < max(thresholds):
        return "low"
    if recharge.enabled and balance < recharge.trigger:
        return "below_trigger"
    return "ok"


def recharge_facts(texts: Texts, settings: RechargeSettings) -> list[tuple[str, str]]:
    """Auto-recharge as facts: on/off and, when it has an amount, what it adds, below what, and the cap."""
    out = [(texts.t("label.auto_recharge"), texts.t("card.value.on" if settings.enabled else "card.value.off"))]
    if settings.amount:
        out.append((texts.t("label.recharge_amount"), texts.money(settings.amount)))
        out.append((texts.t("label.when_below"), texts.money(settings.trigger)))
        cap = texts.money(settings.monthly_cap) if settings.monthly_cap is not None else texts.t("label.none")
        out.append((texts.t("label.monthly_cap"), cap))
    return out


def recharge_summary(texts: Texts, settings: RechargeSettings) -> str:
    if settings.enabled:
        return texts.t("card.recharge.summary_on", amount=texts.money(settings.amount),
                       trigger=texts.money(settings.trigger))
    return texts.t("card.value.off")


def balance_card(texts: Texts, *, account: Account, recharge: RechargeSettings, status: Status,
                 last_recharge: Entry | None = None, expiring: Sequence[Lot] = (),
                 forecast_line: str | None = None) -> dict[str, Any]:
    """`expiring`: the lots with money left that expire within 30 days (the caller picks them: cards have no
    clock), oldest first. `last_recharge`: the latest `auto_recharge` entry. `forecast_line`: a finished
    sentence from the forecast, or None."""
    if status not in STATUS_COLORS:
        raise ValueError(f"unknown status {status!r}")
    color = STATUS_COLORS[status]
    body: list[dict[str, Any]] = [
        *header(texts, texts.t("label.balance")),
        text(texts.money(account.balance), size="ExtraLarge", weight="Bolder", color=color, spacing="Small"),
        text(texts.t(f"card.status.{status}"), color=color, weight="Bolder", spacing="None"),
    ]
    if account.balance < 0:
        body.append(text(texts.t("balance.below_zero"), isSubtle=True, size="Small", spacing="Small"))
    pairs = [(texts.t("label.auto_recharge"), recharge_summary(texts, recharge))]
    if recharge.enabled and recharge.monthly_cap is not None:
        pairs.append((texts.t("label.monthly_cap"), texts.money(recharge.monthly_cap)))
    if last_recharge is not None:
        pairs.append((texts.t("card.fact.last_recharge"),
                      texts.t("card.amount_on_date", amount=texts.money(last_recharge.amount),
                              date=texts.date(last_recharge.at))))
    else:
        pairs.append((texts.t("card.fact.last_recharge"), texts.t("label.none")))
    body.append(facts(pairs, separator=True, spacing="Medium"))
    if expiring:
        body.append(text(texts.t("card.fact.expiring"), weight="Bolder", spacing="Medium"))
        for lot in expiring[:EXPIRING_SHOWN]:
            body.append(text(texts.t("card.amount_on_date", amount=texts.money(lot.remaining),
                                     date=texts.date(lot.last_day)), spacing="None"))
        rest = expiring[EXPIRING_SHOWN:]
        if rest:
            body.append(text(texts.t("card.expiring.more", amount=texts.money(sum(lot.remaining for lot in rest))),
                             spacing="None", isSubtle=True))
    if forecast_line:
        body.append(text(forecast_line, isSubtle=True, spacing="Medium"))
    # two rows: five buttons in one row are cut off at Teams' card width (titles never wrap there)
    body.append({"type": "ActionSet", "spacing": "Medium", "actions": [
        execute("alerts.open", texts.t("card.button.alerts")),
        execute("history.page", texts.t("card.button.history")),
        execute("balance", texts.t("card.button.refresh")),
    ]})
    actions = [
        execute("add_funds.open", texts.t("label.add_funds"), style="positive"),
        execute("recharge.open", texts.t("card.button.recharge_settings")),
    ]
    summary = texts.t("balance.reply", balance=texts.money(account.balance))
    return card(texts, body, actions, summary=summary)
