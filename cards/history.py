"""The history card: a page of journal entries, newest first, with Older / Newer paging."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from storage.model import SYSTEM_ACTOR, Entry

from .elements import card, column_set, execute, header, text, truncate
from .texts import Texts

#: A list row shows at most this much of a memo and a name (a card must stay under Teams' ~28 KB).
ROW_MEMO_CHARS = 80
ROW_NAME_CHARS = 40
#: Rows on one card. A longer page is cut here and its Older button continues from the last row shown, so any
#: page size works and the card stays well under Teams' message size (50 rows with memos are ~37 KB).
MAX_ROWS = 25


def actor_name(texts: Texts, actor: str, names: Mapping[str, str]) -> str:
    """Display name of an entry's actor: "System" for the ledger's own entries, the name when known, else the
    (opaque) Entra object id."""
    if actor == SYSTEM_ACTOR:
        return texts.t("card.actor.system")
    return names.get(actor) or actor


def signed_money(texts: Texts, amount: int) -> str:
    return ("+" if amount > 0 else "") + texts.money(amount)


def _row(texts: Texts, entry: Entry, names: Mapping[str, str], first: bool) -> dict[str, Any]:
    left = [text(texts.t(f"kind.{entry.kind.value}"), weight="Bolder"),
            text(texts.t("card.history.meta", date=texts.date(entry.at),
                         name=truncate(actor_name(texts, entry.actor, names), ROW_NAME_CHARS)),
                 isSubtle=True, size="Small", spacing="None")]
    if entry.memo:
        left.append(text(truncate(entry.memo, ROW_MEMO_CHARS), size="Small", spacing="None", maxLines=2))
    right = [text(signed_money(texts, entry.amount), weight="Bolder", horizontalAlignment="Right",
                  color="good" if entry.amount > 0 else "default"),
             text(texts.t("card.history.balance_after", balance=texts.money(entry.balance_after)),
                  isSubtle=True, size="Small", spacing="None", horizontalAlignment="Right")]
    return column_set([(left, "stretch"), (right, "auto")], separator=not first, spacing="Small")


def history_card(texts: Texts, *, entries: Sequence[Entry], names: Mapping[str, str] | None = None,
                 older: int | None = None, has_newer: bool = False) -> dict[str, Any]:
    """`entries` newest first (a `Page`'s items); `names` maps actor ids to display names. `older` is the
    page's cursor (`Page.older`, None at the start of history): the Older button sends it as "before".
    With `has_newer`, the Newer button sends "after" = the seq of the newest entry shown. At most `MAX_ROWS`
    entries are shown; when there are more, Older continues from the last one shown."""
    names = names or {}
    if len(entries) > MAX_ROWS:
        entries = entries[:MAX_ROWS]
        older = entries[-1].seq if entries[-1].seq > 1 else None
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.history.title"))]
    if not entries:
        body.append(text(texts.t("history.empty"), isSubtle=True))
    body += [_row(texts, e, names, i == 0) for i, e in enumerate(entries)]
    actions = []
    if older is not None:
        actions.append(execute("history.page", texts.t("card.button.older"), data={"before": older}))
    if has_newer and entries:
        actions.append(execute("history.page", texts.t("card.button.newer"), data={"after": entries[0].seq}))
    actions.append(execute("balance", texts.t("card.button.balance")))
    return card(texts, body, actions, summary=texts.t("card.history.title"))
