"""The usage card: spend in a period by call type (a Teams bar chart, with a table for other renderers) and by
top users."""

from __future__ import annotations

from typing import Any, Sequence

from .elements import card, column_set, execute, facts, header, rounded_major, text, truncate
from .texts import Texts
from .verbs import PERIODS

#: Call types charted one by one; the rest are one "Other" bar (and row).
MAX_TYPES = 8
ROW_NAME_CHARS = 60
#: The Teams chart element (a Teams extension: the strict 1.5 schema does not know it, other renderers show
#: its `fallback`).
CHART_TYPE = "Chart.VerticalBar"


def _top(texts: Texts, rows: Sequence[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    rows = sorted(rows, key=lambda r: -r[1])
    if len(rows) <= limit:
        return list(rows)
    return [*rows[: limit - 1], (texts.t("card.usage.other"), sum(v for _, v in rows[limit - 1:]))]


def _table(texts: Texts, rows: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """Name | amount rows: a Container of ColumnSets (every renderer shows it)."""
    items = [column_set([([text(truncate(name or "-", ROW_NAME_CHARS))], "stretch"),
                         ([text(texts.money(amount), horizontalAlignment="Right")], "auto")],
                        spacing="Small", separator=index > 0)
             for index, (name, amount) in enumerate(rows)]
    return {"type": "Container", "items": items}


def usage_card(texts: Texts, *, currency: str, period: str, total: int, calls: int,
               by_type: Sequence[tuple[str, int]], by_user: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """`period`: "7d", "30d" or "month"; `total` and the amounts in `by_type` (call type, spend) and `by_user`
    (display name, spend; the caller picks the top few) in minor units; `calls`: the number of usage rows.
    The chart's bars are whole major units (rounded: a chart needs numbers and a card holds no floats); the
    table and the facts show the exact amounts. Buttons switch to the other periods."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    label = texts.t(f"period.{period}")
    title = texts.t("card.usage.title", period=label)
    body: list[dict[str, Any]] = [*header(texts, title)]
    if not calls:
        body.append(text(texts.t("usage.none", period=label), isSubtle=True))
    else:
        body.append(facts([(texts.t("card.fact.total"), texts.money(total)),
                           (texts.t("card.fact.calls"), str(calls))]))
        types = _top(texts, by_type, MAX_TYPES)
        if types:
            body.append(text(texts.t("card.usage.by_type"), weight="Bolder", spacing="Medium", separator=True))
            body.append({
                "type": CHART_TYPE,
                "xAxisTitle": texts.t("card.usage.chart_x"),
                "yAxisTitle": texts.t("card.usage.chart_y", currency=currency),
                "showBarValues": True,
                "colorSet": "categorical",
                "data": [{"x": truncate(name or "-", ROW_NAME_CHARS), "y": rounded_major(amount, currency)}
                         for name, amount in types],
                "fallback": _table(texts, types),
            })
        if by_user:
            body.append(text(texts.t("card.usage.top_users"), weight="Bolder", spacing="Medium", separator=True))
            body.append(_table(texts, list(by_user)))
    actions = [execute("usage.show", texts.t(f"card.button.period_{p}"), data={"period": p})
               for p in PERIODS if p != period]
    actions.append(execute("balance", texts.t("card.button.balance")))
    return card(texts, body, actions, summary=title)
