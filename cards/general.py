"""Help, welcome, and the cards that wrap or replace others: out of date, cancelled, a plain notice."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from .elements import card, column_set, execute, header, notice, text
from .texts import Texts

NOTICE_TONES = ("accent", "good", "warning", "attention")


def help_card(texts: Texts, *, commands: Sequence[tuple[str, str]], footer: Sequence[str] = ()) -> dict[str, Any]:
    """Help generated from the bot's command table: `commands` are (usage, translated summary) pairs in table
    order (cards cannot import `bot`, so the caller walks `bot.commands.COMMANDS` for the user's role);
    `footer`: finished lines such as "admins can also use ..." or how to get a role."""
    rows = [column_set([([text(usage, fontType="Monospace", weight="Bolder")], 2),
                        ([text(summary)], 3)], spacing="Small", separator=index > 0)
            for index, (usage, summary) in enumerate(commands)]
    body = [*header(texts, texts.t("card.help.title")), text(texts.t("help.intro")), *rows]
    body += [text(line, isSubtle=True, spacing="Medium") for line in footer]
    # the account's administration: readers may look at both (the server checks the role on every press)
    body += [text(texts.t("card.help.admin"), weight="Bolder", separator=True, spacing="Large"),
             {"type": "ActionSet", "actions": [execute("roles.open", texts.t("card.button.roles")),
                                               execute("currency.open", texts.t("card.button.currency"))]}]
    # two rows of two: four buttons in one row are cut off in Danish on a phone-width card
    body += [{"type": "ActionSet", "spacing": "Large", "actions": [
                 execute("balance", texts.t("card.button.balance")),
                 execute("add_funds.open", texts.t("label.add_funds"))]},
             {"type": "ActionSet", "spacing": "Small", "actions": [
                 execute("recharge.open", texts.t("card.button.recharge_settings")),
                 execute("usage.show", texts.t("card.button.usage"), data={"period": "30d"})]}]
    return card(texts, body, summary=texts.t("card.help.title"))


def welcome_card(texts: Texts) -> dict[str, Any]:
    """Sent when the bot is installed or a member joins a chat with it."""
    body = [*header(texts, texts.t("card.welcome.title")), text(texts.t("welcome")),
            text(texts.t("card.welcome.roles"), isSubtle=True, size="Small")]
    actions = [execute("balance", texts.t("card.button.balance"), style="positive"),
               execute("help", texts.t("card.button.help"))]
    return card(texts, body, actions, summary=texts.t("card.welcome.title"))


def out_of_date_card(texts: Texts, *, fresh: Mapping[str, Any]) -> dict[str, Any]:
    """`fresh` (a card built from the current state) with a notice on top: "This card is out of date; here is
    the current one." `fresh` is not modified."""
    out = copy.deepcopy(dict(fresh))
    out["body"] = [notice(texts.t("card.out_of_date"), tone="warning"), *out.get("body", [])]
    return out


def cancelled_card(texts: Texts) -> dict[str, Any]:
    """What Cancel turns a form or a confirmation into."""
    body = [*header(texts, texts.t("card.cancelled.title")), text(texts.t("card.cancelled.text"))]
    return card(texts, body, [execute("balance", texts.t("card.button.balance"))],
                summary=texts.t("card.cancelled.title"))


def notice_card(texts: Texts, *, message: str, title: str | None = None, tone: str = "accent") -> dict[str, Any]:
    """A card that only says something (a refusal, an error with its incident id, "already decided"): for an
    Action.Execute answer, which must be a card. No buttons."""
    if tone not in NOTICE_TONES:
        raise ValueError(f"unknown tone {tone!r}")
    body: list[dict[str, Any]] = [*header(texts, title)] if title else [
        text(texts.t("label.product"), size="Small", isSubtle=True, weight="Bolder")]
    body.append(notice(message, tone=tone))
    return card(texts, body, summary=message)
