"""The chat commands: one table, a parser from text to a typed `Invocation`, and help generated from the table.

Pure: no I/O, no clock, no Bot Framework. The handler removes the bot's own @mention, calls `parse` with the
account's currency, the locale from `bot.i18n.resolve_locale` and the other @mentions of the activity, then
checks `Invocation.capability` (None: everyone may) against the user's role before doing anything.

Commands are matched case-insensitively, by English name or alias (Danish aliases such as "saldo"); help lists the
English names. Parsing refuses rather than guesses: a wrong form is a `ParseFailure` with a message key of
`bot.i18n.MESSAGES` and its params (unknown command with the closest names, the command's usage, or the reason an
amount was refused).
"""

from __future__ import annotations

import difflib
import html
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Literal, Mapping, Sequence

from storage.errors import InvalidCurrency
from storage.model import AlertKind, Role
from storage.money import normalize_currency
from storage.policy import MAX_THRESHOLDS, Capability

from .amounts import AmountError, babel_locale, currency_of, parse_amount, parse_positive_int
from .i18n import amount_failure, format_list, t

#: `history [n]`: default and largest n.
HISTORY_DEFAULT = 10
HISTORY_MAX = 50
#: `usage [period]`: the default period.
USAGE_DEFAULT = "30d"
#: Longest memo `add` accepts, in characters.
MAX_MEMO = 200
#: Longest piece of what someone typed that a refusal quotes back (a 200 kB message is not echoed whole: Teams
#: refuses replies of more than about 28 kB, so the answer would be lost).
ECHO_MAX = 60
#: Longest Entra object id typed as such (`grant <id> reader`); real ones are 36 characters.
MAX_OBJECT_ID = 64

Period = Literal["7d", "30d", "month"]


# --- the table --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Form:
    """One way to use a command: its usage line, the message key of its summary, the capability it needs."""

    usage: str
    summary: str
    capability: Capability | None


@dataclass(frozen=True, slots=True)
class Command:
    """A chat command. `usage`/`summary`/`capability` describe its main form; `more_forms` the others (which
    often need more: `recharge` reads, `recharge on` changes settings). `capability` None: anyone may use it.
    `summary` is a key of `bot.i18n.MESSAGES`."""

    name: str
    usage: str
    summary: str
    capability: Capability | None
    aliases: tuple[str, ...] = ()
    more_forms: tuple[Form, ...] = ()

    @property
    def forms(self) -> tuple[Form, ...]:
        return (Form(self.usage, self.summary, self.capability), *self.more_forms)


_READ = Capability.READ
_SETTINGS = Capability.CHANGE_SETTINGS

COMMANDS: tuple[Command, ...] = (
    Command("help", "help", "help.help", None, ("hjælp", "hjaelp", "?")),
    Command("balance", "balance", "help.balance", _READ, ("saldo",)),
    Command("add", "add <amount> [memo]", "help.add", Capability.MOVE_MONEY, ("indsæt", "indsaet")),
    Command("recharge", "recharge", "help.recharge", _READ, ("opfyldning",), (
        Form("recharge on|off", "help.recharge_toggle", _SETTINGS),
        Form("recharge <amount> below <trigger> [cap <amount>]", "help.recharge_set", _SETTINGS),
    )),
    Command("alerts", "alerts", "help.alerts", _READ, ("advarsler",), (
        Form("alerts <amount>[, <amount>...]", "help.alerts_set", _SETTINGS),
        Form("alerts failed", "help.alerts_failed", Capability.MANAGE_SUBSCRIPTIONS),
    )),
    Command("history", "history [n]", "help.history", _READ, ("historik",)),
    Command("usage", "usage [7d|30d|month]", "help.usage", _READ, ("forbrug",)),
    Command("forecast", "forecast", "help.forecast", _READ, ("prognose",)),
    Command("sync", "sync", "help.sync", Capability.MOVE_MONEY, ("synkroniser", "synk")),
    Command("subscribe", "subscribe [kinds]", "help.subscribe", Capability.MANAGE_SUBSCRIPTIONS, ("abonner",)),
    Command("unsubscribe", "unsubscribe", "help.unsubscribe", Capability.MANAGE_SUBSCRIPTIONS, ("afmeld",)),
    Command("roles", "roles", "help.roles", _READ, ("roller",)),
    Command("grant", "grant @user admin|reader", "help.grant", Capability.MANAGE_ROLES, ("tildel",)),
    Command("revoke", "revoke @user", "help.revoke", Capability.MANAGE_ROLES, ("fratag",)),
    Command("whoami", "whoami", "help.whoami", None, ("hvemerjeg",)),
    Command("currency", "currency", "help.currency", _READ, ("valuta",), (
        Form("currency <ISO 4217 code>", "help.currency_set", _SETTINGS),
    )),
)

_BY_WORD: dict[str, Command] = {}
for _cmd in COMMANDS:
    for _word in (_cmd.name, *_cmd.aliases):
        assert _word.casefold() not in _BY_WORD, f"command word {_word!r} is used twice"
        _BY_WORD[_word.casefold()] = _cmd
del _cmd, _word


def command_names() -> tuple[str, ...]:
    """The English command names, in table order (for the Teams manifest's command list)."""
    return tuple(c.name for c in COMMANDS)


def find_command(word: str) -> Command | None:
    """The command named `word` (case-insensitive, aliases included), or None."""
    return _BY_WORD.get(unicodedata.normalize("NFC", word).casefold())


# --- what parsing gives ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Mention:
    """A user @mentioned in the activity: Teams id ("29:1abc..."), display name as shown in the text, and the
    Entra object id when the activity carries it (else the handler looks it up)."""

    user_id: str
    name: str
    aad_object_id: str | None = None


@dataclass(frozen=True)
class Invocation:
    """A parsed command: what the user must be allowed (`capability`, None for anyone) and typed `args`:

    add {"amount": int minor, "memo": str} | recharge {} / {"enabled": bool} / {"amount": int, "trigger": int,
    "cap": int | None} | alerts {} / {"thresholds": tuple[int, ...]} (empty tuple: `alerts off`) /
    {"failed": True} (`alerts failed`: the alerts given up on) |
    history {"n": int} | usage {"period": "7d" | "30d" | "month"} | subscribe {"kinds": tuple[AlertKind, ...]} |
    grant {"user": Mention | str, "role": Role} | revoke {"user": Mention | str} | currency {} / {"code": str} |
    the others {}. A `str` user is an Entra object id typed as such.
    """

    command: Command
    capability: Capability | None
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseFailure:
    """Text that is not a valid command: reply with `bot.i18n.t(message_key, language, **params)`. `command` is
    the command it was meant for, when that is known."""

    message_key: str
    params: dict[str, Any]
    command: Command | None = None


class _Fail(Exception):
    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


# --- text to tokens ----------------------------------------------------------------------------------------------

# A mention's name never holds another <at> tag: stopping there keeps this linear ("<at>" x 20,000 used to
# take 12 s of the event loop, each opening tag scanning to the end of the text)
_AT = re.compile(r"<at\b[^<>]*>((?:[^<]|<(?!/?at\b))*?)</at\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff"), " ")  # zero-width space, word joiner, BOM
_PLACEHOLDER = 0xF0000  # supplementary private use: never in the text the user meant
_OBJECT_ID = re.compile(r"(?=.*[0-9])[0-9A-Za-z][0-9A-Za-z._:-]{7,%d}" % (MAX_OBJECT_ID - 1))


@dataclass(frozen=True, eq=False)
class _Text:
    at_names: tuple[str, ...]        # names inside <at>...</at>, by placeholder index
    mentions: tuple[Mention, ...]
    currency: str
    locale: str

    def mention_index(self, token: str) -> int | None:
        if len(token) == 1 and 0 <= ord(token) - _PLACEHOLDER < len(self.at_names):
            return ord(token) - _PLACEHOLDER
        return None

    def mention_named(self, name: str) -> Mention | None:
        return self.by_name.get(name.strip().lstrip("@").strip().casefold())

    @cached_property
    def by_name(self) -> Mapping[str, Mention]:
        """Mentions by case-folded name; the first of a name wins."""
        found: dict[str, Mention] = {}
        for mention in self.mentions:
            found.setdefault(mention.name.strip().casefold(), mention)
        return found

    def restore(self, tokens: Sequence[str]) -> str:
        """Tokens back to text, each <at> placeholder as the name it stood for."""
        return " ".join(self.at_names[i] if (i := self.mention_index(tok)) is not None else tok for tok in tokens)


def normalize_text(text: str) -> str:
    """What `parse` reads: NFC (digits of other scripts stay as they are), Teams HTML residue removed ("&nbsp;",
    "<p>"), every kind of whitespace one ASCII space, trimmed. <at> mentions keep their names."""
    flat, names = _prepare(text)
    return _Text(names, (), "", "").restore(flat.split(" ")) if flat else ""


def _prepare(text: str) -> tuple[str, tuple[str, ...]]:
    """Normalised text with each <at>Name</at> replaced by one placeholder character, and the names."""
    if not isinstance(text, str):
        text = ""
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        names.append(" ".join(html.unescape(_TAG.sub(" ", match[1])).translate(_INVISIBLE).split()))
        return f" {chr(_PLACEHOLDER + len(names) - 1)} "

    text = _AT.sub(placeholder, unicodedata.normalize("NFC", text))
    text = html.unescape(_TAG.sub(" ", text)).translate(_INVISIBLE)
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split()), tuple(names)


# --- parse --------------------------------------------------------------------------------------------------------

def parse(text: str, *, currency: str, locale: str, mentions: Sequence[Mention] = ()) -> Invocation | ParseFailure:
    """Read a chat message (the bot's own @mention already removed) as a command. Empty text is `help`.
    `currency` is the account's; `locale` says how amounts are written (use `bot.i18n.resolve_locale`);
    `mentions` are the activity's other @mentioned users (their names appear in the text as <at>Name</at>)."""
    currency = normalize_currency(currency)
    locale = str(babel_locale(locale)).replace("_", "-")
    flat, at_names = _prepare(text)
    tokens = flat.split(" ") if flat else []
    ctx = _Text(at_names, tuple(mentions), currency, locale)
    start = 0
    while start < len(tokens) and (i := ctx.mention_index(tokens[start])) is not None \
            and ctx.mention_named(at_names[i]) is None:
        start += 1  # a leading @mention of someone not passed in: the bot's own, left in the text
    tokens = tokens[start:]
    if not tokens:
        return Invocation(COMMANDS[0], COMMANDS[0].capability, {})
    word = tokens[0]
    command = find_command(word[1:] if word.startswith("/") and len(word) > 1 else word)
    if command is None:
        return _unknown(ctx.restore([word]), locale)
    try:
        capability, args = _PARSERS[command.name](ctx, tokens[1:])
    except _Fail as fail:
        params = {"command": command.name, "usage": command.usage, **fail.params}
        return ParseFailure(fail.key, params, command)
    return Invocation(command, capability, args)


def _unknown(word: str, locale: str) -> ParseFailure:
    candidates = difflib.get_close_matches(word.casefold(), list(_BY_WORD), n=10, cutoff=0.6)
    suggestions: list[str] = []
    for candidate in candidates:
        name = _BY_WORD[candidate].name
        if name not in suggestions:
            suggestions.append(name)
    suggestions = suggestions[:3]
    params: dict[str, Any] = {"command": echo(word), "suggestion_list": tuple(suggestions),
                              "suggestions": format_list(suggestions, locale, style="or") if suggestions else ""}
    return ParseFailure("parse.unknown_command_suggest" if suggestions else "parse.unknown_command", params)


Parsed = tuple[Capability | None, dict[str, Any]]


def echo(text: str) -> str:
    """What someone typed, to quote in a refusal: cut to `ECHO_MAX` characters with an ellipsis."""
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX - 1] + "\u2026"


def _usage(form: str | None = None) -> _Fail:
    return _Fail("parse.usage", **({"usage": form} if form else {}))


def _no_args(capability: Capability | None) -> Callable[[_Text, list[str]], Parsed]:
    def parse_none(ctx: _Text, args: list[str]) -> Parsed:
        if args:
            raise _usage()
        return capability, {}
    return parse_none


def _parse_help(ctx: _Text, args: list[str]) -> Parsed:
    return None, {}


def _amount(ctx: _Text, tokens: Sequence[str], *, allow_zero: bool = False) -> int:
    text = ctx.restore(tokens)
    try:
        return parse_amount(text, currency=ctx.currency, locale=ctx.locale, allow_zero=allow_zero)
    except AmountError as error:
        key, params = amount_failure(error, text=echo(text), currency=ctx.currency, locale=ctx.locale)
        raise _Fail(key, **params) from None


def _is_currency_word(ctx: _Text, token: str) -> bool:
    """A token that is only a currency ("USD", "$", "kr."), which belongs to the number beside it. Another
    currency's code counts only in capitals, so that a memo may start with "all" or "top"."""
    if any("0" <= ch <= "9" for ch in token) or ctx.mention_index(token) is not None:
        return False
    return currency_of(token, currency=ctx.currency, locale=ctx.locale, strict_codes=True) is not None


def _amount_groups(ctx: _Text, tokens: Sequence[str], *, limit: int | None = None) -> tuple[list[list[str]], int]:
    """Split tokens into amounts, keeping a currency word with its number ("250 USD", "kr. 250"). Returns the
    groups and how many tokens they used (at most `limit` groups)."""
    groups: list[list[str]] = []
    i = 0
    while i < len(tokens) and (limit is None or len(groups) < limit):
        if _is_currency_word(ctx, tokens[i]) and i + 1 < len(tokens):
            groups.append([tokens[i], tokens[i + 1]])
            i += 2
            continue
        group = [tokens[i]]
        i += 1
        if i < len(tokens) and _is_currency_word(ctx, tokens[i]):
            group.append(tokens[i])
            i += 1
        groups.append(group)
    return groups, i


def _parse_add(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        raise _usage()
    groups, used = _amount_groups(ctx, args, limit=1)
    amount = _amount(ctx, groups[0])
    memo = ctx.restore(args[used:])
    if len(memo) > MAX_MEMO:
        raise _Fail("parse.memo_too_long", max=MAX_MEMO)
    return Capability.MOVE_MONEY, {"amount": amount, "memo": memo}


_ON = frozenset({"on", "til", "enable", "enabled"})
_OFF = frozenset({"off", "fra", "disable", "disabled"})
_BELOW = frozenset({"below", "under"})
_CAP = frozenset({"cap", "loft"})
_CLEAR = frozenset({"off", "none", "clear", "fra", "ingen"})
_FAILED = frozenset({"failed", "fejlede"})


def _parse_recharge(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        return _READ, {}
    words = [a.casefold() for a in args]
    if len(args) == 1 and words[0] in _ON | _OFF:
        return _SETTINGS, {"enabled": words[0] in _ON}
    set_form = COMMANDS_BY_NAME["recharge"].more_forms[1].usage
    below = next((i for i, w in enumerate(words) if w in _BELOW), None)
    if below is None:
        raise _usage(set_form)
    cap_at = next((i for i, w in enumerate(words) if w in _CAP and i > below), None)
    amount_tokens = args[:below]
    trigger_tokens = args[below + 1:cap_at] if cap_at is not None else args[below + 1:]
    cap_tokens = args[cap_at + 1:] if cap_at is not None else None
    if not amount_tokens or not trigger_tokens or cap_tokens == []:
        raise _usage(set_form)
    amount = _amount(ctx, amount_tokens)
    trigger = _amount(ctx, trigger_tokens, allow_zero=True)
    cap = _amount(ctx, cap_tokens) if cap_tokens is not None else None
    return _SETTINGS, {"amount": amount, "trigger": trigger, "cap": cap}


def _parse_alerts(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        return _READ, {}
    if len(args) == 1 and args[0].casefold() in _CLEAR:
        return _SETTINGS, {"thresholds": ()}
    if args[0].casefold() in _FAILED:  # a word, never an amount
        if len(args) > 1:
            raise _usage(COMMANDS_BY_NAME["alerts"].more_forms[1].usage)
        return Capability.MANAGE_SUBSCRIPTIONS, {"failed": True}
    thresholds: list[int] = []
    # Amounts are separated by ";", by "," followed by a space, or by spaces: "500, 100", "500; 100", "500 100".
    # A comma with no space is part of the number ("1,250" in en-US, "100,50" in da-DK).
    for part in re.split(r";|,(?= )|,$", " ".join(args)):
        tokens = part.split()
        groups, _ = _amount_groups(ctx, tokens)
        thresholds.extend(_amount(ctx, group) for group in groups)
    if not thresholds:
        raise _usage(COMMANDS_BY_NAME["alerts"].more_forms[0].usage)
    return _SETTINGS, {"thresholds": tuple(thresholds)}


def _parse_history(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        return _READ, {"n": HISTORY_DEFAULT}
    text = " ".join(args)
    try:
        n = parse_positive_int(text, max_value=HISTORY_MAX) if len(args) == 1 else None
    except AmountError:
        n = None
    if n is None:
        raise _Fail("parse.history_count", text=echo(text), max=HISTORY_MAX)
    return _READ, {"n": n}


_PERIODS: Mapping[str, Period] = {
    "7d": "7d", "7": "7d", "7days": "7d", "7dage": "7d", "week": "7d", "uge": "7d",
    "30d": "30d", "30": "30d", "30days": "30d", "30dage": "30d",
    "month": "month", "måned": "month", "maaned": "month",
}


def _parse_usage(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        return _READ, {"period": USAGE_DEFAULT}
    period = _PERIODS.get("".join(args).casefold())
    if period is None:
        raise _usage()
    return _READ, {"period": period}


_ALL_KINDS = frozenset({"all", "alle"})


def _parse_subscribe(ctx: _Text, args: list[str]) -> Parsed:
    wanted: set[AlertKind] = set()
    for word in re.split(r"[,;\s]+", " ".join(args)):
        if not word:
            continue
        value = word.casefold().replace("-", "_")
        if value in _ALL_KINDS:
            wanted.update(AlertKind)
            continue
        try:
            wanted.add(AlertKind(value))
        except ValueError:
            raise _Fail("parse.unknown_alert_kind", kind=echo(word),
                        kinds=", ".join(k.value for k in AlertKind)) from None
    kinds = tuple(k for k in AlertKind if k in wanted) if wanted else tuple(AlertKind)
    return Capability.MANAGE_SUBSCRIPTIONS, {"kinds": kinds}


_ROLES: Mapping[str, Role] = {"admin": Role.ADMIN, "administrator": Role.ADMIN,
                              "reader": Role.READER, "læser": Role.READER, "laeser": Role.READER}


def _user(ctx: _Text, tokens: Sequence[str]) -> Mention | str:
    """The person a grant or revoke is about: an @mention, or an Entra object id typed as such."""
    if not tokens:
        raise _usage()
    if len(tokens) == 1 and (i := ctx.mention_index(tokens[0])) is not None:
        mention = ctx.mention_named(ctx.at_names[i])
        if mention is None and len(ctx.mentions) == 1:
            mention = ctx.mentions[0]
        if mention is None:
            raise _Fail("parse.mention_not_found", name=echo(ctx.at_names[i]))
        return mention
    typed = ctx.restore(tokens)
    mention = ctx.mention_named(typed)
    if mention is not None:
        return mention
    if len(tokens) == 1 and _OBJECT_ID.fullmatch(typed):
        return typed
    raise _Fail("parse.mention_not_found", name=echo(typed.lstrip("@")))


def _parse_grant(ctx: _Text, args: list[str]) -> Parsed:
    if len(args) < 2:
        raise _usage()
    if args[-1].casefold() in _ROLES:
        role, who = _ROLES[args[-1].casefold()], args[:-1]
    elif args[0].casefold() in _ROLES:  # "grant admin @Jane"
        role, who = _ROLES[args[0].casefold()], args[1:]
    else:
        raise _usage()
    return Capability.MANAGE_ROLES, {"user": _user(ctx, who), "role": role}


def _parse_revoke(ctx: _Text, args: list[str]) -> Parsed:
    return Capability.MANAGE_ROLES, {"user": _user(ctx, args)}


def _parse_currency(ctx: _Text, args: list[str]) -> Parsed:
    if not args:
        return _READ, {}
    if len(args) != 1:
        raise _usage(COMMANDS_BY_NAME["currency"].more_forms[0].usage)
    try:
        code = normalize_currency(args[0])
    except InvalidCurrency:
        raise _Fail("parse.invalid_currency", code=echo(args[0])) from None
    return _SETTINGS, {"code": code}


COMMANDS_BY_NAME: Mapping[str, Command] = {c.name: c for c in COMMANDS}

_PARSERS: Mapping[str, Callable[[_Text, list[str]], Parsed]] = {
    "help": _parse_help,
    "balance": _no_args(_READ),
    "add": _parse_add,
    "recharge": _parse_recharge,
    "alerts": _parse_alerts,
    "history": _parse_history,
    "usage": _parse_usage,
    "forecast": _no_args(_READ),
    "sync": _no_args(Capability.MOVE_MONEY),
    "subscribe": _parse_subscribe,
    "unsubscribe": _no_args(Capability.MANAGE_SUBSCRIPTIONS),
    "roles": _no_args(_READ),
    "grant": _parse_grant,
    "revoke": _parse_revoke,
    "whoami": _no_args(None),
    "currency": _parse_currency,
}
assert set(_PARSERS) == set(COMMANDS_BY_NAME), "every command in the table needs a parser"


# --- help ---------------------------------------------------------------------------------------------------------

#: The params every summary is formatted with (summaries use some of them).
HELP_PARAMS: Mapping[str, Any] = {"kinds": ", ".join(k.value for k in AlertKind), "max_history": HISTORY_MAX,
                                  "default_history": HISTORY_DEFAULT, "max_thresholds": MAX_THRESHOLDS}


def _reader_may(form: Form) -> bool:
    return form.capability is None or form.capability is Capability.READ


def _shown_aliases(command: Command) -> list[str]:
    """Aliases worth showing: words, without the ASCII spellings of Danish ones ("hjaelp" for "hjælp")."""
    ascii_forms = {a.replace("æ", "ae").replace("ø", "oe").replace("å", "aa") for a in command.aliases
                   if not a.isascii()}
    return [a for a in command.aliases if a.isalpha() and a not in ascii_forms]


def help_text(language: str, *, role: Role | None, commands: Sequence[Command] = COMMANDS) -> str:
    """Help generated from the table: each form's usage and translated summary. Admins see every form; readers
    and people without a role see the forms anyone or a reader may use, then which commands admins also have
    (and, without a role, how to get one)."""
    params = HELP_PARAMS
    lines = [t("help.intro", language), ""]
    admin_only: list[str] = []
    for command in commands:
        shown = [f for f in command.forms if role is Role.ADMIN or _reader_may(f)]
        if len(shown) < len(command.forms):
            admin_only.append(command.name)
        for index, form in enumerate(shown):
            aka = ""
            if index == 0 and language == "da" and (aliases := _shown_aliases(command)):
                aka = f" ({t('help.aliases', language, aliases=', '.join(aliases))})"
            lines.append(f"- `{form.usage}`{aka}: {t(form.summary, language, **params)}")
    if role is not Role.ADMIN and admin_only:
        lines += ["", t("help.admins_can_do_more", language, commands=", ".join(admin_only))]
    if role is None:
        lines += ["", t("help.no_role", language)]
    return "\n".join(lines)
