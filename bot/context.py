"""The per-turn context every action works in: who asks, in which language and locale, in which currency, with
which role. It is also the `cards.Texts` the card builders write with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Mapping

from storage import Role
from storage.model import AccountView

from .commands import Mention
from .i18n import format_date, format_money, t


@dataclass(frozen=True)
class Turn:
    """An inbound activity as the actions see it."""

    tenant_id: str
    user_id: str            # Entra object id (opaque), "" when Teams did not send one
    user_name: str
    conversation_id: str
    conversation_type: str  # "personal", "groupChat" or "channel"
    locale: str
    activity_id: str
    service_url: str
    text: str               # with the bot's own @mention removed
    mentions: tuple[Mention, ...] = ()
    value: Mapping[str, Any] | None = None
    received_at: datetime = datetime.min.replace(tzinfo=timezone.utc)
    files: tuple["SharedFile", ...] = ()


@dataclass(frozen=True)
class SharedFile:
    """A file someone dropped into the chat (Teams `file.download.info` attachment): its name and the
    pre-authorised URL Teams gives the bot to download it once."""

    name: str
    download_url: str
    file_type: str


@dataclass(frozen=True)
class Reply:
    text: str
    card: dict[str, Any] | None = None




@dataclass(frozen=True)
class Voice:
    """How the bot writes to someone: `language` ("en" or "da") for the catalog, `locale` (a tag such as "en-US"
    or "da-DK") for reading amounts and writing money and dates, `currency` the account's. It is the
    `cards.Texts` the card builders write with, in a turn (`Ctx`) and in a proactive alert alike."""

    language: str
    locale: str
    currency: str

    # cards.Texts
    def t(self, key: str, **params: Any) -> str:
        return t(key, self.language, **params)

    def money(self, minor: int) -> str:
        return format_money(minor, self.currency, self.locale)

    def date(self, moment: datetime | date) -> str:
        return format_date(moment, self.locale)


@dataclass(frozen=True)
class Ctx(Voice):
    """A turn's voice, with who asks and the role they have."""

    turn: Turn
    role: Role | None
    #: The account as the turn began (`Ledger.account_view`): what reading commands and cards show. After the
    #: turn changed something, read the ledger again instead.
    view: AccountView | None = None

    # shorthand for text replies
    def text(self, key: str, **params: Any) -> str:
        return self.t(key, **params)

    def say(self, key: str, **params: Any) -> Reply:
        return Reply(self.t(key, **params))
