"""The text a card shows comes in through `Texts`: cards never import `bot` (DESIGN.md section 2).

The bot implements it over `bot.i18n` (the message catalog, Babel formatting in the user's locale and the
account's currency); tests build one the same way. Card builders only ever call these three methods and read
`language`, so a card in Danish and one in English differ in their strings and nothing else.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Protocol


class Texts(Protocol):
    language: str
    """"en" or "da": written into the card's `lang`."""

    def t(self, key: str, **params: Any) -> str:
        """The catalog message `key` (a key of `bot.i18n.MESSAGES`) in `language`, filled with `params`."""
        ...

    def money(self, minor: int) -> str:
        """Minor units formatted in the account's currency for the user's locale ("$1,250.50")."""
        ...

    def date(self, moment: datetime | date) -> str:
        """A date in the user's locale, medium form ("Mar 5, 2026", "5. mar. 2026")."""
        ...
