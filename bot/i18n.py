"""What the bot says, in English and Danish, and how it writes money, dates and lists.

Pure: no I/O, no clock. Replies are chosen by the activity's locale (`language_for`); `resolve_locale` gives the
locale to read amounts in and to format money, dates and lists with, always agreeing with the reply language.
Messages are `str.format` templates keyed by stable ids (`MESSAGES`); both languages of a key have the same
placeholders (a test holds them to it), and values are passed already formatted (money via `format_money`).

Danish follows Microsoft's own terms where they exist: "Kommunikationskreditter" (Communications Credits),
"Indsæt flere penge" (Add funds), "Rediger indstillinger for opfyldning" (Edit recharge settings), "Når saldoen
er under" (When the balance is below), "Gem ændringer" (Save changes).
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Iterable, Literal, Mapping

from babel.dates import format_date as _babel_format_date
from babel.dates import format_datetime as _babel_format_datetime
from babel.lists import format_list as _babel_format_list
from babel.numbers import format_currency, format_decimal, get_currency_symbol

from storage import errors as ledger_errors
from storage.model import AlertKind
from storage.money import MAX_MAJOR_UNITS, precision, to_major
from storage.policy import MAX_RECHARGES_PER_DAY, MAX_THRESHOLDS, Capability

from .amounts import AmountError, babel_locale

Language = Literal["en", "da"]
#: The languages the bot replies in; the first is the default.
LANGUAGES: tuple[Language, ...] = ("en", "da")
#: The locale used for a language when neither the activity's nor the configured locale is in that language.
DEFAULT_LOCALES: Mapping[str, str] = MappingProxyType({"en": "en-US", "da": "da-DK"})


# --- language and locale ----------------------------------------------------------------------------------------

def _primary(locale: str | None) -> str:
    if not locale or not isinstance(locale, str):
        return ""
    return locale.strip().replace("_", "-").split("-", 1)[0].casefold()


def language_for(locale: str | None, fallback: str) -> Language:
    """The reply language for an activity's `locale` ("da", "da-DK", "da_DK" -> "da"); for anything else
    (another language, empty, None) the language of `fallback` (the configured `CREDITS_LOCALE`) if that is
    Danish, else English."""
    if _primary(locale) == "da":
        return "da"
    return "da" if _primary(fallback) == "da" else "en"


def resolve_locale(locale: str | None, fallback: str) -> str:
    """The locale to read amounts in and format money, dates and lists with: the activity's `locale` when it is
    in the reply language (`language_for`) and Babel knows it, else `fallback` on the same terms, else the
    language's default (`DEFAULT_LOCALES`). Returned as a tag such as "en-US" or "da-DK"."""
    language = language_for(locale, fallback)
    for candidate in (locale, fallback):
        if candidate and _primary(candidate) == language:
            try:
                return str(babel_locale(candidate)).replace("_", "-")
            except ValueError:
                continue
    return DEFAULT_LOCALES[language]


# --- formatting -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)   # pure, and Babel's pattern.apply costs about 50 µs a call
def format_money(minor: int, currency: str, locale: str) -> str:
    """Minor units as the locale writes money: "$1,250.50" (en-US, USD), "1.250,50\xa0kr." (da-DK, DKK; the
    locale's pattern puts a no-break space before the symbol), "¥1,250" (en-US, JPY), "DKK\xa01,250.50" (en-US,
    DKK). Exact: Decimal, never float."""
    loc = babel_locale(locale)
    text = format_currency(to_major(minor, currency), currency, locale=loc)
    return _currency_spacing(text, get_currency_symbol(currency, locale=loc))


def _currency_spacing(text: str, symbol: str) -> str:
    """CLDR's currency spacing, which Babel does not apply: a symbol that does not end (or start) with a symbol
    character, such as "DKK" or "kr.", is kept apart from the digits by a no-break space ("DKK\xa01,250.50",
    not "DKK1,250.50"); "$" and "€" stay attached."""
    at = text.find(symbol)
    if not symbol or at < 0:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and not _symbol_or_space(symbol[-1]):
        text = text[:end] + "\u00a0" + text[end:]
    if at > 0 and text[at - 1].isdigit() and not _symbol_or_space(symbol[0]):
        text = text[:at] + "\u00a0" + text[at:]
    return text


def _symbol_or_space(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "SZ"


def format_number_example(currency: str, locale: str) -> str:
    """1250.50 written as `locale` writes a plain amount of `currency` ("1,250.50", "1.250,50", JPY "1,250"):
    the example shown when an amount could not be read."""
    places = precision(currency)
    example = Decimal("1250.50").quantize(Decimal(1).scaleb(-places))
    pattern = "#,##0" + ("." + "0" * places if places else "")
    return format_decimal(example, format=pattern, locale=babel_locale(locale))


def format_date(dt: date | datetime, locale: str) -> str:
    """A date as the locale writes it in medium form ("Mar 5, 2026", "5. mar. 2026"). A `datetime` is shown on
    its own calendar day: convert it to the zone you mean first (the ledger stores UTC)."""
    return _babel_format_date(dt, format="medium", locale=babel_locale(locale))


def format_datetime(dt: datetime, locale: str, *, tz: tzinfo = timezone.utc) -> str:
    """A moment in short form in `tz` (UTC unless told): "3/5/26, 2:30\u202fPM", "05.03.2026 14.30"."""
    return _babel_format_datetime(dt, format="short", tzinfo=tz, locale=babel_locale(locale))


def format_list(items: Iterable[str], locale: str, *, style: Literal["standard", "or"] = "standard") -> str:
    """"a, b and c" / "a, b og c"; with `style="or"`: "a, b or c" / "a, b eller c"."""
    return _babel_format_list(list(items), style=style, locale=babel_locale(locale))


def format_money_list(amounts: Iterable[int], currency: str, locale: str) -> str:
    return format_list([format_money(a, currency, locale) for a in amounts], locale)


# --- the catalog ------------------------------------------------------------------------------------------------

_M: dict[str, dict[str, str]] = {
    # --- labels (Microsoft's Danish terms) ---
    "label.product": {"en": "Communications Credits", "da": "Kommunikationskreditter"},
    "label.add_funds": {"en": "Add funds", "da": "Indsæt flere penge"},
    "label.edit_recharge": {"en": "Edit recharge settings", "da": "Rediger indstillinger for opfyldning"},
    "label.auto_recharge": {"en": "Auto-recharge", "da": "Automatisk opfyldning"},
    "label.when_below": {"en": "When the balance is below", "da": "Når saldoen er under"},
    "label.recharge_amount": {"en": "Add this amount", "da": "Indsæt dette beløb"},
    "label.monthly_cap": {"en": "Monthly cap", "da": "Månedligt loft"},
    "label.save_changes": {"en": "Save changes", "da": "Gem ændringer"},
    "label.cancel": {"en": "Cancel", "da": "Annuller"},
    "label.balance": {"en": "Balance", "da": "Saldo"},
    "label.memo": {"en": "Note", "da": "Note"},
    "label.none": {"en": "none", "da": "ingen"},
    "label.disabled": {"en": "disabled", "da": "slået fra"},
    "label.this_conversation": {"en": "this conversation", "da": "denne samtale"},
    "place.channel": {"en": "channel {name}", "da": "kanalen {name}"},
    "place.a_channel": {"en": "a channel", "da": "en kanal"},
    "place.group_chat": {"en": "group chat {name}", "da": "gruppechatten {name}"},
    "place.a_group_chat": {"en": "a group chat", "da": "en gruppechat"},
    "place.personal": {"en": "{name}'s personal chat", "da": "den personlige chat med {name}"},
    "place.a_personal_chat": {"en": "a personal chat", "da": "en personlig chat"},

    # --- greeting and help ---
    "welcome": {
        "en": "Hi! I keep track of your organisation's Communications Credits: the balance, auto-recharge, "
              "usage and alerts. No alerts are sent anywhere yet: an admin types `subscribe` in the channel or "
              "chat that should get them (`subscribe low_balance recharged` for some kinds only), or in their "
              "personal chat with me to get them there. Type `help` to see what I can do.",
        "da": "Hej! Jeg holder styr på jeres Kommunikationskreditter: saldo, automatisk opfyldning, forbrug og "
              "advarsler. Der sendes ingen advarsler nogen steder endnu: en administrator skriver `subscribe` i "
              "den kanal eller chat, der skal have dem (`subscribe low_balance recharged` for kun nogle typer), "
              "eller i sin personlige chat med mig for at få dem dér. Skriv `hjælp` for at se, hvad jeg kan.",
    },
    "help.intro": {
        "en": "Here is what I can do with your Communications Credits:",
        "da": "Det her kan jeg gøre med jeres Kommunikationskreditter:",
    },
    "help.admins_can_do_more": {
        "en": "Admins of this account can also use: {commands}.",
        "da": "Administratorer af kontoen kan også bruge: {commands}.",
    },
    "help.no_role": {
        "en": "You don't have a role in this account yet. Ask an admin to grant you the reader role.",
        "da": "Du har endnu ingen rolle i denne konto. Bed en administrator om at give dig rollen som læser.",
    },
    "help.aliases": {"en": "also: {aliases}", "da": "også: {aliases}"},
    "help.help": {"en": "Show this list", "da": "Vis denne liste"},
    "help.balance": {
        "en": "Show the balance and whether auto-recharge is on",
        "da": "Vis saldoen, og om automatisk opfyldning er slået til",
    },
    "help.add": {"en": "Add funds, with an optional note", "da": "Indsæt flere penge med en valgfri note"},
    "help.recharge": {"en": "Show the auto-recharge settings", "da": "Vis indstillingerne for opfyldning"},
    "help.recharge_toggle": {
        "en": "Turn auto-recharge on or off",
        "da": "Slå automatisk opfyldning til eller fra",
    },
    "help.recharge_set": {
        "en": "Edit recharge settings: add an amount when the balance is below a trigger, with an optional "
              "monthly cap",
        "da": "Rediger indstillinger for opfyldning: indsæt et beløb, når saldoen er under en grænse, eventuelt "
              "med et månedligt loft",
    },
    "help.alerts": {
        "en": "Show the balances that trigger a low-balance alert, and where alerts go",
        "da": "Vis de saldoer, der udløser en advarsel om lav saldo, og hvor advarsler sendes hen",
    },
    "help.alerts_failed": {
        "en": "List the alerts that could not be delivered, and why",
        "da": "Vis de advarsler, der ikke kunne leveres, og hvorfor",
    },
    "help.alerts_set": {
        "en": "Set the low-balance alert thresholds (at most {max_thresholds}; `alerts off` removes them)",
        "da": "Angiv grænserne for advarsler om lav saldo (højst {max_thresholds}; `alerts off` fjerner dem)",
    },
    "help.history": {
        "en": "Show the latest entries ({default_history} unless you say, at most {max_history})",
        "da": "Vis de seneste posteringer ({default_history}, medmindre du angiver andet, højst {max_history})",
    },
    "help.usage": {
        "en": "Show usage in the last 7 or 30 days or this month (30 days unless you say)",
        "da": "Vis forbruget de seneste 7 eller 30 dage eller denne måned (30 dage, medmindre du angiver andet)",
    },
    "help.sync": {
        "en": "Read the latest calls from Microsoft Graph now (usage is also read on a schedule)",
        "da": "Hent de seneste opkald fra Microsoft Graph nu (forbruget hentes også efter en fast plan)",
    },
    "sync.not_configured": {
        "en": "Usage sync from Microsoft Graph is not set up for this bot. Its operator sets GRAPH_TENANT_ID, "
              "GRAPH_CLIENT_ID and GRAPH_CLIENT_SECRET (an app registration with the application permission "
              "CallRecords.Read.All and admin consent). Until then, usage comes from the admin center's "
              "export: `python -m bot import-usage FILE`.",
        "da": "Synkronisering af forbrug fra Microsoft Graph er ikke sat op for denne bot. Den, der driver den, "
              "sætter GRAPH_TENANT_ID, GRAPH_CLIENT_ID og GRAPH_CLIENT_SECRET (en app-registrering med "
              "applikationstilladelsen CallRecords.Read.All og administratorsamtykke). Indtil da kommer "
              "forbruget fra eksporten i Teams Administration: `python -m bot import-usage FIL`.",
    },
    "sync.refused": {
        "en": "Microsoft Graph refused to give me the call records. {advice}",
        "da": "Microsoft Graph ville ikke udlevere opkaldslisten. {advice}",
    },
    "sync.failed": {
        "en": "The sync from Microsoft Graph did not finish (incident {incident}). What was read before the "
              "problem is recorded; the next sync reads the rest.",
        "da": "Synkroniseringen fra Microsoft Graph blev ikke færdig (hændelse {incident}). Det, der blev læst "
              "før problemet, er registreret; næste synkronisering læser resten.",
    },
    "sync.done": {
        "en": "Synced usage from Microsoft Graph: {read} calls read, {debited} debited ({total}), {skipped} "
              "skipped, {rejected} rejected. Balance now: {balance}.",
        "da": "Forbrug hentet fra Microsoft Graph: {read} opkald læst, {debited} trukket ({total}), {skipped} "
              "sprunget over, {rejected} afvist. Saldo nu: {balance}.",
    },
    "sync.recharges": {
        "en": "Auto-recharges made: {count}. Alerts go to the subscribed conversations.",
        "da": "Automatiske opfyldninger: {count}. Advarsler går til de abonnerede samtaler.",
    },
    "import.done": {
        "en": "Imported {name}: {read} calls read, {debited} debited ({total}), {skipped} skipped, {rejected} "
              "rejected. Balance now: {balance}.",
        "da": "Importerede {name}: {read} opkald læst, {debited} trukket ({total}), {skipped} sprunget over, "
              "{rejected} afvist. Saldo nu: {balance}.",
    },
    "import.failed": {
        "en": "I could not import {name}: {reason}. Nothing was changed by it.",
        "da": "Jeg kunne ikke importere {name}: {reason}. Intet blev ændret af den.",
    },
    "import.not_an_export": {
        "en": "{name} is not a PSTN usage export: drop the .csv or .zip from the Teams admin center "
              "(Analytics & reports > PSTN usage).",
        "da": "{name} er ikke en eksport af PSTN-forbrug: slip .csv- eller .zip-filen fra Teams Administration "
              "(Analyse og rapporter > PSTN-forbrug).",
    },
    "import.unavailable": {
        "en": "I cannot import files here. Use `python -m bot import-usage FILE` on the bot's server.",
        "da": "Jeg kan ikke importere filer her. Brug `python -m bot import-usage FIL` på botens server.",
    },
    "sync.problems": {"en": "Rejected rows: {problems}", "da": "Afviste rækker: {problems}"},
    "help.forecast": {
        "en": "Estimate when the balance reaches the recharge trigger and zero",
        "da": "Anslå, hvornår saldoen når grænsen for opfyldning og nul",
    },
    "help.subscribe": {
        "en": "Send alerts to this conversation: all kinds, or the ones you name ({kinds})",
        "da": "Send advarsler til denne samtale: alle typer eller dem, du nævner ({kinds})",
    },
    "help.unsubscribe": {
        "en": "Stop sending alerts to this conversation",
        "da": "Stop med at sende advarsler til denne samtale",
    },
    "help.roles": {"en": "Show who has which role", "da": "Vis, hvem der har hvilken rolle"},
    "help.grant": {
        "en": "Give someone the admin or reader role (@mention them or give their Entra object id)",
        "da": "Giv nogen rollen som administrator eller læser (@nævn dem, eller angiv deres Entra-objekt-id)",
    },
    "help.revoke": {"en": "Take someone's role away", "da": "Fjern en persons rolle"},
    "help.whoami": {"en": "Show who you are to me and your role", "da": "Vis, hvem du er, og hvilken rolle du har"},
    "help.currency": {"en": "Show the account's currency", "da": "Vis kontoens valuta"},
    "help.currency_set": {
        "en": "Set the account's currency (only before its first entry)",
        "da": "Angiv kontoens valuta (kun før den første postering)",
    },

    # --- names of things ---
    "role.admin": {"en": "admin", "da": "administrator"},
    "role.reader": {"en": "reader", "da": "læser"},
    "role.none": {"en": "no role", "da": "ingen rolle"},
    "kind.funds_added": {"en": "Funds added", "da": "Penge indsat"},
    "kind.auto_recharge": {"en": "Auto-recharge", "da": "Automatisk opfyldning"},
    "kind.usage": {"en": "Usage", "da": "Forbrug"},
    "kind.adjustment": {"en": "Adjustment", "da": "Regulering"},
    "kind.expiry": {"en": "Expired credits", "da": "Udløbne kreditter"},
    "alert_kind.recharged": {"en": "auto-recharge made", "da": "automatisk opfyldning udført"},
    "alert_kind.recharge_blocked": {"en": "auto-recharge blocked", "da": "automatisk opfyldning blokeret"},
    "alert_kind.low_balance": {"en": "low balance", "da": "lav saldo"},
    "alert_kind.exhausted": {"en": "balance used up", "da": "saldoen er brugt op"},
    "alert_kind.expiring": {"en": "credits expiring", "da": "kreditter, der snart udløber"},
    "alert_kind.forecast": {"en": "balance running out (forecast)", "da": "saldoen slipper op (prognose)"},
    "period.7d": {"en": "in the last 7 days", "da": "de seneste 7 dage"},
    "period.30d": {"en": "in the last 30 days", "da": "de seneste 30 dage"},
    "period.month": {"en": "this month", "da": "denne måned"},

    # --- command replies ---
    "done.replayed": {
        "en": "That was already done, so nothing changed.",
        "da": "Det er allerede gjort, så intet er ændret.",
    },
    "balance.reply": {
        "en": "Communications Credits balance: {balance}",
        "da": "Saldo for Kommunikationskreditter: {balance}",
    },
    "balance.below_zero": {
        "en": "The balance is below zero: calls keep being recorded, and the next funds pay the deficit first.",
        "da": "Saldoen er under nul: opkald registreres stadig, og de næste penge dækker underskuddet først.",
    },
    "balance.recharge_on": {
        "en": "Auto-recharge is on: {amount} is added when the balance is below {trigger}.",
        "da": "Automatisk opfyldning er slået til: {amount} indsættes, når saldoen er under {trigger}.",
    },
    "balance.recharge_off": {"en": "Auto-recharge is off.", "da": "Automatisk opfyldning er slået fra."},
    "balance.expiring": {"en": "{amount} can be used until {date}.", "da": "{amount} kan bruges til og med {date}."},
    "add.done": {
        "en": "Added {amount}. The balance is now {balance}.",
        "da": "{amount} er indsat. Saldoen er nu {balance}.",
    },
    "add.replayed": {
        "en": "That was already done: {amount} was added, and nothing more. The balance is {balance}.",
        "da": "Det er allerede gjort: {amount} blev indsat, og ikke mere. Saldoen er {balance}.",
    },
    "add.needs_approval": {
        "en": "Adding {amount} is above {threshold}, so a second admin must approve it. I've asked the other "
              "admins.",
        "da": "At indsætte {amount} er over {threshold}, så en anden administrator skal godkende det. Jeg har "
              "spurgt de andre administratorer.",
    },
    "recharge.on": {
        "en": "Auto-recharge is on: {amount} is added when the balance is below {trigger}.",
        "da": "Automatisk opfyldning er slået til: {amount} indsættes, når saldoen er under {trigger}.",
    },
    "recharge.off": {
        "en": "Auto-recharge is off. When on, it adds {amount} when the balance is below {trigger}.",
        "da": "Automatisk opfyldning er slået fra. Når den er slået til, indsættes {amount}, når saldoen er "
              "under {trigger}.",
    },
    "recharge.not_set": {
        "en": "Auto-recharge is off and has no amount yet. Set one with `recharge <amount> below <trigger>`.",
        "da": "Automatisk opfyldning er slået fra og har endnu intet beløb. Angiv et med "
              "`recharge <beløb> below <grænse>`.",
    },
    "recharge.cap": {"en": "Monthly cap: {cap}.", "da": "Månedligt loft: {cap}."},
    "recharge.no_cap": {"en": "No monthly cap.", "da": "Intet månedligt loft."},
    "recharge.breaker": {
        "en": "At most {max_per_day} recharges in any 24 hours.",
        "da": "Højst {max_per_day} opfyldninger inden for 24 timer.",
    },
    "recharge.enabled": {
        "en": "Auto-recharge is now on: {amount} is added when the balance is below {trigger}.",
        "da": "Automatisk opfyldning er nu slået til: {amount} indsættes, når saldoen er under {trigger}.",
    },
    "recharge.disabled": {
        "en": "Auto-recharge is now off. Keep an eye on the balance: at zero, toll-free numbers stop answering.",
        "da": "Automatisk opfyldning er nu slået fra. Hold øje med saldoen: ved nul holder gratisnumre op med "
              "at svare.",
    },
    "recharge.saved": {
        "en": "Saved: {amount} is added when the balance is below {trigger}.",
        "da": "Gemt: {amount} indsættes, når saldoen er under {trigger}.",
    },
    "alerts.list": {
        "en": "Low-balance alerts when the balance falls below: {thresholds}.",
        "da": "Advarsler om lav saldo, når saldoen kommer under: {thresholds}.",
    },
    "alerts.none": {
        "en": "No low-balance alerts are set. Set some with `alerts <amount>, <amount>`.",
        "da": "Der er ingen advarsler om lav saldo. Angiv nogle med `alerts <beløb>; <beløb>`.",
    },
    "alerts.saved": {
        "en": "Saved. I'll send an alert when the balance falls below: {thresholds}.",
        "da": "Gemt. Jeg sender en advarsel, når saldoen kommer under: {thresholds}.",
    },
    "alerts.cleared": {
        "en": "Saved. There are no low-balance alerts now.",
        "da": "Gemt. Der er ingen advarsler om lav saldo nu.",
    },
    "alerts.destinations": {"en": "Alerts go to: {destinations}.", "da": "Advarsler sendes til: {destinations}."},
    "alerts.no_destinations": {
        "en": "No conversation gets alerts yet. Type `subscribe` in the chat or channel that should get them.",
        "da": "Ingen samtale får advarsler endnu. Skriv `subscribe` i den chat eller kanal, der skal have dem.",
    },
    "alerts.disabled": {
        "en": "Disabled: {place} — {reason}. An admin can type `subscribe` there again after adding the bot back.",
        "da": "Slået fra: {place} — {reason}. En administrator kan skrive `subscribe` dér igen, når boten er "
              "tilføjet igen.",
    },
    "alerts.reason_removed": {
        "en": "Teams answered {status}: the bot is no longer in this conversation",
        "da": "Teams svarede {status}: boten er ikke længere med i denne samtale",
    },
    "alerts.disabled_plain": {
        "en": "Disabled: {place}. An admin can type `subscribe` there again after adding the bot back.",
        "da": "Slået fra: {place}. En administrator kan skrive `subscribe` dér igen, når boten er tilføjet igen.",
    },
    "alerts.disabled_here": {
        "en": "Disabled: {place} — {reason}. An admin can type `subscribe` here to get alerts again.",
        "da": "Slået fra: {place} — {reason}. En administrator kan skrive `subscribe` her for at få advarsler "
              "igen.",
    },
    "alerts.disabled_here_plain": {
        "en": "Disabled: {place}. An admin can type `subscribe` here to get alerts again.",
        "da": "Slået fra: {place}. En administrator kan skrive `subscribe` her for at få advarsler igen.",
    },
    "alerts.failed_hint_one": {
        "en": "1 alert could not be delivered: type `alerts failed` to see why.",
        "da": "1 advarsel kunne ikke leveres: skriv `alerts failed` for at se hvorfor.",
    },
    "alerts.failed_hint": {
        "en": "{count} alerts could not be delivered: type `alerts failed` to see why.",
        "da": "{count} advarsler kunne ikke leveres: skriv `alerts failed` for at se hvorfor.",
    },
    "alerts.failed_none": {
        "en": "No alert has failed: every alert was delivered or is still being retried.",
        "da": "Ingen advarsel er slået fejl: alle advarsler er leveret eller bliver stadig forsøgt igen.",
    },
    "alerts.failed_header_one": {
        "en": "1 alert could not be delivered:",
        "da": "1 advarsel kunne ikke leveres:",
    },
    "alerts.failed_header": {
        "en": "{count} alerts could not be delivered (newest first):",
        "da": "{count} advarsler kunne ikke leveres (nyeste først):",
    },
    "alerts.failed_header_more": {
        "en": "More than {count} alerts could not be delivered; the {count} newest:",
        "da": "Mere end {count} advarsler kunne ikke leveres; de {count} nyeste:",
    },
    "alerts.failed_line": {
        "en": "{kind}, raised {date} (attempts: {attempts}). Not delivered to: {places}.",
        "da": "{kind}, opstået {date} (forsøg: {attempts}). Ikke leveret til: {places}.",
    },
    "alerts.failed_error": {"en": "Last error: {error}", "da": "Seneste fejl: {error}"},
    "alerts.failed_footer": {
        "en": "I no longer try to send these. If the bot was removed from a conversation, add it back and type "
              "`subscribe` there; new alerts are sent as usual.",
        "da": "Jeg prøver ikke længere at sende dem. Hvis boten er fjernet fra en samtale, så tilføj den igen, og "
              "skriv `subscribe` dér; nye advarsler sendes som normalt.",
    },
    "alerts.forecast_days": {
        "en": "Forecast alerts look {days} days ahead.",
        "da": "Advarsler fra prognosen kigger {days} dage frem.",
    },
    "history.header": {"en": "Latest entries ({count}):", "da": "Seneste posteringer ({count}):"},
    "history.empty": {"en": "There are no entries yet.", "da": "Der er ingen posteringer endnu."},
    "history.line": {
        "en": "{date}: {kind} {amount}, balance {balance}",
        "da": "{date}: {kind} {amount}, saldo {balance}",
    },
    "history.line_memo": {
        "en": "{date}: {kind} {amount}, balance {balance} ({memo})",
        "da": "{date}: {kind} {amount}, saldo {balance} ({memo})",
    },
    "history.more": {
        "en": "Type `history {n}` to see more (at most {max}).",
        "da": "Skriv `history {n}` for at se flere (højst {max}).",
    },
    "usage.total": {
        "en": "Usage {period}: {total}. Calls: {count}.",
        "da": "Forbrug {period}: {total}. Opkald: {count}.",
    },
    "usage.none": {"en": "No usage {period}.", "da": "Intet forbrug {period}."},
    "usage.by_type": {"en": "By call type:", "da": "Efter opkaldstype:"},
    "usage.by_user": {"en": "By user:", "da": "Efter bruger:"},
    "usage.line": {"en": "{name}: {amount}", "da": "{name}: {amount}"},
    "forecast.burn": {
        "en": "Average usage: {daily} a day over the last {days} days.",
        "da": "Gennemsnitligt forbrug: {daily} om dagen over de seneste {days} dage.",
    },
    "forecast.zero": {
        "en": "At that rate the balance reaches zero around {date}.",
        "da": "Med det forbrug når saldoen nul omkring {date}.",
    },
    "forecast.trigger": {
        "en": "It falls below the auto-recharge trigger ({trigger}) around {date}.",
        "da": "Den kommer under grænsen for automatisk opfyldning ({trigger}) omkring {date}.",
    },
    "forecast.next_recharge": {
        "en": "The next auto-recharge of {amount} is expected around {date}.",
        "da": "Den næste automatiske opfyldning på {amount} ventes omkring {date}.",
    },
    "forecast.no_usage": {
        "en": "There was no usage in the last {days} days, so there is nothing to forecast.",
        "da": "Der har ikke været noget forbrug de seneste {days} dage, så der er intet at lave en prognose ud "
              "fra.",
    },
    "subscribe.done": {
        "en": "This conversation will get these alerts: {kinds}.",
        "da": "Denne samtale får nu disse advarsler: {kinds}.",
    },
    "unsubscribe.done": {
        "en": "This conversation will no longer get alerts.",
        "da": "Denne samtale får ikke længere advarsler.",
    },
    "roles.header": {"en": "Roles in this account:", "da": "Roller i denne konto:"},
    "roles.line": {"en": "{name}: {role}", "da": "{name}: {role}"},
    "roles.none": {"en": "No roles have been granted yet.", "da": "Der er endnu ikke givet nogen roller."},
    "roles.bootstrap": {
        "en": "Until this account has an admin of its own, the admins named in the bot's configuration act as "
              "its admins.",
        "da": "Indtil kontoen har sin egen administrator, fungerer de administratorer, der er angivet i botens "
              "konfiguration, som dens administratorer.",
    },
    "grant.done": {"en": "{name} now has the {role} role.", "da": "{name} har nu rollen som {role}."},
    "grant.no_object_id": {
        "en": "I couldn't find the Entra object id of {name}. Ask them to send me a message once, or grant "
              "the role with their object id instead.",
        "da": "Jeg kunne ikke finde Entra-objekt-id'et for {name}. Bed dem om at skrive til mig én gang, eller "
              "giv rollen med deres objekt-id i stedet.",
    },
    "revoke.done": {
        "en": "{name} no longer has a role in this account.",
        "da": "{name} har ikke længere en rolle i denne konto.",
    },
    "whoami.reply": {
        "en": "You are {name} (Entra object id {user_id}). Your role in this account: {role}.",
        "da": "Du er {name} (Entra-objekt-id {user_id}). Din rolle i denne konto: {role}.",
    },
    "whoami.no_role": {
        "en": "You are {name} (Entra object id {user_id}). You have no role in this account; ask an admin to "
              "grant you one.",
        "da": "Du er {name} (Entra-objekt-id {user_id}). Du har ingen rolle i denne konto; bed en "
              "administrator om at give dig en.",
    },
    "whoami.bootstrap": {
        "en": "You are an admin through the bot's configuration until this account has an admin of its own.",
        "da": "Du er administrator via botens konfiguration, indtil kontoen har sin egen administrator.",
    },
    "currency.show": {"en": "This account uses {currency}.", "da": "Kontoen bruger {currency}."},
    "currency.changed": {
        "en": "The account's currency is now {currency}.",
        "da": "Kontoens valuta er nu {currency}.",
    },

    # --- reading commands ---
    "parse.unknown_command": {
        "en": "I don't know '{command}'. Type `help` to see everything I can do.",
        "da": "Jeg kender ikke »{command}«. Skriv `hjælp` for at se alt, hvad jeg kan.",
    },
    "parse.unknown_command_suggest": {
        "en": "I don't know '{command}'. Did you mean: {suggestions}? Type `help` to see everything I can do.",
        "da": "Jeg kender ikke »{command}«. Mente du: {suggestions}? Skriv `hjælp` for at se alt, hvad jeg kan.",
    },
    "parse.usage": {
        "en": "I didn't get that. Use {command} like this: `{usage}`",
        "da": "Det forstod jeg ikke. Brug {command} sådan her: `{usage}`",
    },
    "parse.history_count": {
        "en": "'{text}' is not a number of entries from 1 to {max}. Use it like this: `{usage}`",
        "da": "»{text}« er ikke et antal posteringer fra 1 til {max}. Brug det sådan her: `{usage}`",
    },
    "parse.invalid_currency": {
        "en": "'{code}' is not a currency code I can use. Give an ISO 4217 code such as USD, EUR or DKK.",
        "da": "»{code}« er ikke en valutakode, jeg kan bruge. Angiv en ISO 4217-kode som USD, EUR eller DKK.",
    },
    "parse.unknown_alert_kind": {
        "en": "I don't know the alert kind '{kind}'. The kinds are: {kinds}.",
        "da": "Jeg kender ikke advarselstypen »{kind}«. Typerne er: {kinds}.",
    },
    "parse.mention_not_found": {
        "en": "I couldn't tell who '{name}' is. @mention them, or give their Entra object id: `{usage}`",
        "da": "Jeg kunne ikke se, hvem »{name}« er. @nævn dem, eller angiv deres Entra-objekt-id: `{usage}`",
    },
    "parse.memo_too_long": {
        "en": "The note is too long: at most {max} characters, please.",
        "da": "Noten er for lang: højst {max} tegn, tak.",
    },

    # --- amounts typed by people (bot.amounts.AmountError reasons) ---
    "amount.empty": {"en": "Please give an amount, for example {example}.",
                     "da": "Angiv et beløb, for eksempel {example}."},
    "amount.not_a_number": {
        "en": "I can't read '{text}' as an amount. Write it like this: {example}.",
        "da": "Jeg kan ikke læse »{text}« som et beløb. Skriv det sådan her: {example}.",
    },
    "amount.negative": {
        "en": "The amount must be positive, and '{text}' is negative.",
        "da": "Beløbet skal være positivt, og »{text}« er negativt.",
    },
    "amount.zero": {"en": "The amount must be more than zero.", "da": "Beløbet skal være større end nul."},
    "amount.not_finite": {
        "en": "'{text}' is not an amount: it must be an ordinary number.",
        "da": "»{text}« er ikke et beløb: det skal være et almindeligt tal.",
    },
    "amount.too_precise": {
        "en": "'{text}' has more decimals than {currency} allows ({places}).",
        "da": "»{text}« har flere decimaler, end {currency} tillader ({places}).",
    },
    "amount.too_large": {
        "en": "'{text}' is more than the largest amount allowed at once ({max}).",
        "da": "»{text}« er mere end det største beløb, der er tilladt ad gangen ({max}).",
    },
    "amount.other_currency": {
        "en": "'{text}' is in {other}, but this account uses {currency}. Amounts are never converted: please give "
              "the amount in {currency}.",
        "da": "»{text}« er i {other}, men kontoen bruger {currency}. Beløb omregnes aldrig: angiv beløbet i "
              "{currency}.",
    },
    "amount.unicode_digits": {
        "en": "Please write amounts with the digits 0-9 only: no digits from other scripts, no superscripts and "
              "no text-direction marks.",
        "da": "Skriv beløb kun med cifrene 0-9: ingen cifre fra andre skriftsystemer, ingen hævede tal og ingen "
              "tegn for skriveretning.",
    },

    # --- ledger errors (storage.errors) ---
    "error.account_not_found": {
        "en": "There is no Communications Credits account for this organisation yet.",
        "da": "Der er endnu ingen konto med Kommunikationskreditter for denne organisation.",
    },
    "error.invalid_amount.not_a_number": {"en": "That amount is not a number.",
                                          "da": "Det beløb er ikke et tal."},
    "error.invalid_amount.not_finite": {"en": "That amount is not an ordinary number.",
                                        "da": "Det beløb er ikke et almindeligt tal."},
    "error.invalid_amount.negative": {"en": "The amount must not be negative.",
                                      "da": "Beløbet må ikke være negativt."},
    "error.invalid_amount.zero": {"en": "The amount must be more than zero.",
                                  "da": "Beløbet skal være større end nul."},
    "error.invalid_amount.too_precise": {
        "en": "That amount has more decimals than {currency} allows ({places}).",
        "da": "Det beløb har flere decimaler, end {currency} tillader ({places}).",
    },
    "error.invalid_amount.too_large": {
        "en": "That amount is more than the largest allowed at once ({max}).",
        "da": "Det beløb er mere end det største, der er tilladt ad gangen ({max}).",
    },
    "error.invalid_currency": {
        "en": "'{code}' is not a currency code I can use. Give an ISO 4217 code such as USD, EUR or DKK.",
        "da": "»{code}« er ikke en valutakode, jeg kan bruge. Angiv en ISO 4217-kode som USD, EUR eller DKK.",
    },
    "error.currency_mismatch": {
        "en": "This account uses {expected}, but the amount is in {got}. Amounts are never converted.",
        "da": "Kontoen bruger {expected}, men beløbet er i {got}. Beløb omregnes aldrig.",
    },
    "error.currency_locked": {
        "en": "The currency is {currency}, and it can't change once the account has its first entry.",
        "da": "Valutaen er {currency}, og den kan ikke ændres, når kontoen har sin første postering.",
    },
    "error.insufficient_funds": {
        "en": "The balance ({balance}) is less than {requested}, so nothing was taken.",
        "da": "Saldoen ({balance}) er mindre end {requested}, så intet er trukket.",
    },
    "error.idempotency_conflict": {
        "en": "This request was already used for a different change, so nothing was done. Please send the "
              "command again, or open a fresh form.",
        "da": "Denne anmodning er allerede brugt til en anden ændring, så intet er gjort. Send kommandoen igen, "
              "eller åbn en ny formular.",
    },
    "error.invalid_settings.enabled_not_bool": {
        "en": "Auto-recharge must be either on or off.",
        "da": "Automatisk opfyldning skal være enten slået til eller fra.",
    },
    "error.invalid_settings.amount_not_integer": {
        "en": "The recharge amount is not a valid amount.",
        "da": "Beløbet til opfyldning er ikke et gyldigt beløb.",
    },
    "error.invalid_settings.trigger_not_integer": {
        "en": "The balance that triggers a recharge is not a valid amount.",
        "da": "Den saldo, der udløser en opfyldning, er ikke et gyldigt beløb.",
    },
    "error.invalid_settings.monthly_cap_not_integer": {
        "en": "The monthly cap is not a valid amount.",
        "da": "Det månedlige loft er ikke et gyldigt beløb.",
    },
    "error.invalid_settings.max_per_day_not_integer": {
        "en": "The number of recharges allowed in 24 hours must be a whole number.",
        "da": "Antallet af opfyldninger, der er tilladt inden for 24 timer, skal være et helt tal.",
    },
    "error.invalid_settings.negative": {
        "en": "Amounts in the settings can't be negative.",
        "da": "Beløb i indstillingerne må ikke være negative.",
    },
    "error.invalid_settings.too_large": {
        "en": "An amount in the settings is too large.",
        "da": "Et beløb i indstillingerne er for stort.",
    },
    "error.invalid_settings.breaker_below_one": {
        "en": "At least one recharge in 24 hours must be allowed.",
        "da": "Mindst én opfyldning inden for 24 timer skal være tilladt.",
    },
    "error.invalid_settings.breaker_too_high": {
        "en": "At most {max_per_day} recharges in 24 hours can be allowed.",
        "da": "Der kan højst tillades {max_per_day} opfyldninger inden for 24 timer.",
    },
    "error.invalid_settings.amount_zero": {
        "en": "Auto-recharge can't be on without an amount to add. Set one first, for example "
              "`recharge <amount> below <trigger>`.",
        "da": "Automatisk opfyldning kan ikke slås til uden et beløb at indsætte. Angiv først et, for eksempel "
              "`recharge <beløb> below <grænse>`.",
    },
    "error.invalid_settings.cap_below_amount": {
        "en": "The monthly cap must be at least the recharge amount, or no recharge could ever happen.",
        "da": "Det månedlige loft skal være mindst beløbet til opfyldning, ellers kan der aldrig ske en "
              "opfyldning.",
    },
    "error.invalid_settings.threshold_not_integer": {
        "en": "Alert thresholds must be amounts.",
        "da": "Grænser for advarsler skal være beløb.",
    },
    "error.invalid_settings.threshold_not_positive": {
        "en": "Alert thresholds must be more than zero.",
        "da": "Grænser for advarsler skal være større end nul.",
    },
    "error.invalid_settings.too_many_thresholds": {
        "en": "At most {max_thresholds} alert thresholds can be set.",
        "da": "Der kan højst angives {max_thresholds} grænser for advarsler.",
    },
    "error.invalid_settings.forecast_days": {
        "en": "The forecast must look from 1 to 365 days ahead.",
        "da": "Prognosen skal kigge mellem 1 og 365 dage frem.",
    },
    "error.invalid_settings.unknown_kind": {
        "en": "That is not a kind of alert I know. The kinds are: {kinds}.",
        "da": "Det er ikke en advarselstype, jeg kender. Typerne er: {kinds}.",
    },
    "error.invalid_settings.no_kinds": {
        "en": "Name at least one kind of alert.",
        "da": "Nævn mindst én advarselstype.",
    },
    "error.invalid_settings.unknown_role": {
        "en": "The role must be admin or reader.",
        "da": "Rollen skal være administrator eller læser.",
    },
    "error.invalid_settings": {
        "en": "Those settings can't work, so nothing was saved.",
        "da": "De indstillinger kan ikke fungere, så intet er gemt.",
    },
    "error.not_found": {"en": "That doesn't exist (any more).", "da": "Det findes ikke (længere)."},
    "error.not_found.role": {
        "en": "{name} has no role in this account.",
        "da": "{name} har ingen rolle i denne konto.",
    },
    "error.not_found.subscription": {
        "en": "This conversation isn't subscribed to alerts.",
        "da": "Denne samtale abonnerer ikke på advarsler.",
    },
    "error.not_found.alert": {"en": "There is no such alert.", "da": "Den advarsel findes ikke."},
    "error.not_found.approval": {"en": "There is no such approval request.",
                                 "da": "Den anmodning om godkendelse findes ikke."},
    "error.approval_closed": {
        "en": "This request was already {status}, so nothing more was done.",
        "da": "Denne anmodning er allerede {status}, så der skete ikke mere.",
    },
    "error.self_approval": {
        "en": "You asked for these funds, so another admin has to approve them.",
        "da": "Du har selv bedt om beløbet, så en anden administrator skal godkende det.",
    },
    "approval.status.approved": {"en": "approved", "da": "godkendt"},
    "approval.status.rejected": {"en": "rejected", "da": "afvist"},
    "approval.status.pending": {"en": "pending", "da": "afventer"},
    "error.not_found.destination": {
        "en": "That alert isn't addressed to this conversation.",
        "da": "Den advarsel er ikke sendt til denne samtale.",
    },
    "error.not_found.tenant": {
        "en": "There is no Communications Credits account for this organisation yet.",
        "da": "Der er endnu ingen konto med Kommunikationskreditter for denne organisation.",
    },
    "error.ledger": {
        "en": "That couldn't be done, and nothing was changed.",
        "da": "Det kunne ikke lade sig gøre, og intet er ændret.",
    },
    "error.no_tenant": {
        "en": "I only work inside a Microsoft 365 organisation, and this conversation doesn't belong to one.",
        "da": "Jeg virker kun i en Microsoft 365-organisation, og denne samtale hører ikke til en.",
    },
    "error.rate_limited": {
        "en": "You're sending commands faster than I can keep up with. Please wait a moment and try again.",
        "da": "Du sender kommandoer hurtigere, end jeg kan følge med. Vent et øjeblik, og prøv igen.",
    },
    "error.unavailable": {
        "en": "The ledger is unavailable right now. Nothing was changed; please try again in a minute.",
        "da": "Regnskabet er ikke tilgængeligt lige nu. Intet er ændret; prøv igen om et minut.",
    },
    "rate_limit.slow_down": {
        "en": "You're sending commands faster than I can take them, so I'm ignoring them for a moment. Please "
              "wait {wait} and try again. Nothing was changed by the ones I ignored.",
        "da": "Du sender kommandoer hurtigere, end jeg kan tage imod dem, så jeg ignorerer dem et øjeblik. Vent "
              "{wait}, og prøv igen. De ignorerede kommandoer har ikke ændret noget.",
    },
    "rate_limit.second_one": {"en": "1 second", "da": "1 sekund"},
    "rate_limit.seconds": {"en": "{n} seconds", "da": "{n} sekunder"},
    "rate_limit.minutes": {"en": "{n} minutes", "da": "{n} minutter"},
    "error.crash": {
        "en": "Something went wrong on our side. Incident id: {incident}. Nothing was changed.",
        "da": "Noget gik galt hos os. Hændelses-id: {incident}. Intet er ændret.",
    },

    # --- permission denied, by the capability that was missing ---
    "denied.read": {
        "en": "Only admins and readers of this account can see that. Ask an admin to grant you the reader role.",
        "da": "Kun administratorer og læsere af kontoen kan se det. Bed en administrator om at give dig rollen "
              "som læser.",
    },
    "denied.move_money": {
        "en": "Only admins of this account can add funds. Ask an admin to grant you the admin role.",
        "da": "Kun administratorer af kontoen kan indsætte flere penge. Bed en administrator om at give dig "
              "rollen som administrator.",
    },
    "denied.change_settings": {
        "en": "Only admins of this account can change its settings. Ask an admin to grant you the admin role.",
        "da": "Kun administratorer af kontoen kan ændre dens indstillinger. Bed en administrator om at give dig "
              "rollen som administrator.",
    },
    "denied.manage_roles": {
        "en": "Only admins of this account can grant and revoke roles. Ask an admin to grant you the admin role.",
        "da": "Kun administratorer af kontoen kan give og fjerne roller. Bed en administrator om at give dig "
              "rollen som administrator.",
    },
    "denied.manage_subscriptions": {
        "en": "Only admins of this account can choose where alerts go. Ask an admin to grant you the admin role.",
        "da": "Kun administratorer af kontoen kan vælge, hvor advarsler sendes hen. Bed en administrator om at "
              "give dig rollen som administrator.",
    },

    # --- cards (cards/: Adaptive Cards; values come formatted, money via format_money) ---
    "card.fallback": {
        "en": "This message is a card. Open it in Microsoft Teams to see it.",
        "da": "Denne besked er et kort. Åbn den i Microsoft Teams for at se den.",
    },
    "card.unknown_button": {
        "en": "That button is no longer supported. Type `balance` for a fresh card.",
        "da": "Den knap understøttes ikke længere. Skriv `saldo` for at få et nyt kort.",
    },
    "card.tampered": {
        "en": "That card sent something I can't use, so nothing was changed. Please open a fresh card.",
        "da": "Kortet sendte noget, jeg ikke kan bruge, så intet blev ændret. Åbn venligst et nyt kort.",
    },
    "card.review_add": {
        "en": "Please confirm adding {amount}.",
        "da": "Bekræft venligst, at du vil indsætte {amount}.",
    },
    "card.approval_closed": {
        "en": "This approval is no longer open, so nothing was changed.",
        "da": "Denne godkendelse er ikke længere åben, så intet blev ændret.",
    },
    "card.alerts_saved_text": {
        "en": "The alert settings are saved.",
        "da": "Indstillingerne for advarsler er gemt.",
    },
    "card.roles.you": {"en": "You", "da": "Dig"},
    "card.roles.object_id": {"en": "Your Entra object id", "da": "Dit Entra-objekt-id"},
    "card.approval_unreachable": {
        "en": "No other admin has a personal chat with me yet, so I couldn't ask anyone. The request stays open "
              "until another admin approves it.",
        "da": "Ingen anden administrator har en personlig chat med mig endnu, så jeg kunne ikke spørge nogen. "
              "Anmodningen er åben, indtil en anden administrator godkender den.",
    },
    "card.approval_decided_text": {
        "en": "The request to add {amount} is {status}.",
        "da": "Anmodningen om at indsætte {amount} er {status}.",
    },
    "card.memo_too_long": {
        "en": "The note can be at most {max} characters.",
        "da": "Noten må højst være på {max} tegn.",
    },
    "card.out_of_date": {
        "en": "This card is out of date; here is the current one.",
        "da": "Dette kort er forældet; her er det aktuelle.",
    },
    "card.amount_on_date": {"en": "{amount} on {date}", "da": "{amount} den {date}"},
    "card.value.on": {"en": "On", "da": "Slået til"},
    "card.value.off": {"en": "Off", "da": "Slået fra"},
    "card.value.days": {"en": "{days} days", "da": "{days} dage"},
    "card.actor.system": {"en": "System", "da": "System"},
    "card.button.balance": {"en": "Show balance", "da": "Vis saldo"},
    "card.button.refresh": {"en": "Refresh", "da": "Opdater"},
    "card.button.recharge_settings": {"en": "Recharge settings", "da": "Indstillinger for opfyldning"},
    "card.button.alerts": {"en": "Alerts", "da": "Advarsler"},
    "card.button.edit_alerts": {"en": "Edit alerts", "da": "Rediger advarsler"},
    "card.button.history": {"en": "History", "da": "Historik"},
    "card.button.usage": {"en": "Usage", "da": "Forbrug"},
    "card.button.help": {"en": "Help", "da": "Hjælp"},
    "card.button.continue": {"en": "Continue", "da": "Fortsæt"},
    "card.button.confirm_add": {"en": "Add {amount}", "da": "Indsæt {amount}"},
    "card.button.request_approval": {"en": "Ask for approval of {amount}", "da": "Bed om godkendelse af {amount}"},
    "card.button.approve": {"en": "Approve", "da": "Godkend"},
    "card.button.reject": {"en": "Reject", "da": "Afvis"},
    "card.button.older": {"en": "Older", "da": "Ældre"},
    "card.button.newer": {"en": "Newer", "da": "Nyere"},
    "card.button.period_7d": {"en": "Last 7 days", "da": "Seneste 7 dage"},
    "card.button.period_30d": {"en": "Last 30 days", "da": "Seneste 30 dage"},
    "card.button.period_month": {"en": "This month", "da": "Denne måned"},
    "card.fact.amount": {"en": "Amount", "da": "Beløb"},
    "card.fact.balance_now": {"en": "Balance now", "da": "Saldo nu"},
    "card.fact.balance_after": {"en": "Balance after", "da": "Saldo bagefter"},
    "card.fact.added_by": {"en": "Added by", "da": "Indsat af"},
    "card.fact.requested_by": {"en": "Requested by", "da": "Anmodet af"},
    "card.fact.decided_by": {"en": "Decided by", "da": "Besluttet af"},
    "card.fact.when": {"en": "Date", "da": "Dato"},
    "card.fact.last_recharge": {"en": "Last recharge", "da": "Seneste opfyldning"},
    "card.fact.expiring": {"en": "Expiring within 30 days", "da": "Udløber inden for 30 dage"},
    "card.fact.expires": {"en": "Usable until", "da": "Kan bruges til og med"},
    "card.fact.amount_left": {"en": "Left to expire", "da": "Tilbage, der udløber"},
    "card.fact.recharges": {"en": "Recharges", "da": "Opfyldninger"},
    "card.fact.threshold": {"en": "Alert threshold", "da": "Grænse for advarsel"},
    "card.fact.daily_usage": {"en": "Average usage a day", "da": "Gennemsnitligt forbrug pr. dag"},
    "card.fact.days_left": {"en": "Days left", "da": "Dage tilbage"},
    "card.fact.forecast_days": {"en": "Forecast alerts look ahead", "da": "Advarsler fra prognosen kigger frem"},
    "card.fact.total": {"en": "Total", "da": "I alt"},
    "card.fact.calls": {"en": "Calls", "da": "Opkald"},
    "card.input.money_label": {"en": "{label} ({currency})", "da": "{label} ({currency})"},
    "card.input.amount_error": {
        "en": "Enter an amount of at most {max}, with digits and a decimal point only.",
        "da": "Angiv et beløb på højst {max}, kun med cifre og punktum som decimaltegn.",
    },
    "card.input.memo_error": {
        "en": "The note can be at most {max} characters.",
        "da": "Noten må højst være på {max} tegn.",
    },
    "card.status.ok": {"en": "OK", "da": "OK"},
    "card.status.below_trigger": {
        "en": "Below the auto-recharge trigger",
        "da": "Under grænsen for automatisk opfyldning",
    },
    "card.status.low": {"en": "Low balance", "da": "Lav saldo"},
    "card.status.exhausted": {
        "en": "Used up: toll-free numbers stop answering and dial-out fails",
        "da": "Brugt op: gratisnumre holder op med at svare, og opkald ud mislykkes",
    },
    "card.expiring.more": {"en": "{amount} more expires later", "da": "{amount} mere udløber senere"},
    "card.recharge.summary_on": {
        "en": "On: add {amount} when the balance is below {trigger}",
        "da": "Slået til: indsæt {amount}, når saldoen er under {trigger}",
    },
    "card.recharge.intro": {
        "en": "When the balance falls below the trigger, the amount is added, as many times as needed to get back "
              "to it. Each recharge is invoiced on its own.",
        "da": "Når saldoen kommer under grænsen, indsættes beløbet så mange gange, som der skal til for at nå op "
              "på grænsen igen. Hver opfyldning faktureres for sig.",
    },
    "card.recharge.toggle": {"en": "Turn on auto-recharge", "da": "Slå automatisk opfyldning til"},
    "card.recharge.cap_placeholder": {
        "en": "Leave empty for no monthly cap",
        "da": "Lad feltet stå tomt for intet månedligt loft",
    },
    "card.recharge.saved_title": {"en": "Recharge settings saved", "da": "Indstillinger for opfyldning er gemt"},
    "card.recharge.off_warning": {
        "en": "Auto-recharge is off. Keep an eye on the balance: at zero, toll-free numbers stop answering.",
        "da": "Automatisk opfyldning er slået fra. Hold øje med saldoen: ved nul holder gratisnumre op med at "
              "svare.",
    },
    "card.alerts.title": {"en": "Low-balance alerts", "da": "Advarsler om lav saldo"},
    "card.alerts.intro": {
        "en": "I send an alert when the balance falls below each of these amounts. Leave a field empty to remove "
              "it.",
        "da": "Jeg sender en advarsel, når saldoen kommer under hvert af disse beløb. Lad et felt stå tomt for at "
              "fjerne det.",
    },
    "card.alerts.threshold_label": {
        "en": "Alert {n}: when the balance is below ({currency})",
        "da": "Advarsel {n}: når saldoen er under ({currency})",
    },
    "card.alerts.forecast_days_label": {
        "en": "Forecast alert: warn when the balance is expected to run out within this many days",
        "da": "Advarsel fra prognosen: advar, når saldoen ventes at slippe op inden for så mange dage",
    },
    "card.alerts.forecast_days_error": {
        "en": "Enter a whole number of days from 1 to 365.",
        "da": "Angiv et helt antal dage fra 1 til 365.",
    },
    "card.alerts.saved_title": {"en": "Alert settings saved", "da": "Indstillinger for advarsler er gemt"},
    "card.alerts.below": {
        "en": "Alerts when the balance falls below:",
        "da": "Advarsler, når saldoen kommer under:",
    },
    "card.add_funds.intro": {
        "en": "The amount is added to the Communications Credits balance after you confirm it. Funds expire 12 "
              "months after they are added.",
        "da": "Beløbet indsættes på saldoen for Kommunikationskreditter, når du har bekræftet det. Penge udløber "
              "12 måneder efter, at de er indsat.",
    },
    "card.add_funds.memo_placeholder": {
        "en": "Optional, for example a purchase order number",
        "da": "Valgfri, for eksempel et indkøbsordrenummer",
    },
    "card.add_funds.confirm_title": {"en": "Add {amount}?", "da": "Indsæt {amount}?"},
    "card.add_funds.approval_notice": {
        "en": "This is above {threshold}, so a second admin must approve it before it is added.",
        "da": "Det er over {threshold}, så en anden administrator skal godkende det, før det indsættes.",
    },
    "card.add_funds.expiry_note": {
        "en": "Funds expire 12 months after they are added and are used oldest first.",
        "da": "Penge udløber 12 måneder efter, at de er indsat, og de ældste bruges først.",
    },
    "card.receipt.title": {"en": "{amount} added", "da": "{amount} er indsat"},
    "card.approval.title": {"en": "Approve adding {amount}?", "da": "Godkend at indsætte {amount}?"},
    "card.approval.intro": {
        "en": "Adding more than {threshold} needs a second admin's approval. Nothing is added until an admin "
              "approves.",
        "da": "At indsætte mere end {threshold} kræver godkendelse fra en anden administrator. Intet indsættes, "
              "før en administrator godkender.",
    },
    "card.approval.pending_title": {"en": "Waiting for approval", "da": "Afventer godkendelse"},
    "card.approval.approved_title": {"en": "Approved: {amount} added", "da": "Godkendt: {amount} er indsat"},
    "card.approval.rejected_title": {
        "en": "Rejected: {amount} was not added",
        "da": "Afvist: {amount} blev ikke indsat",
    },
    "card.history.title": {"en": "History", "da": "Historik"},
    "card.history.meta": {"en": "{date} · {name}", "da": "{date} · {name}"},
    "card.history.balance_after": {"en": "Balance {balance}", "da": "Saldo {balance}"},
    "card.usage.title": {"en": "Usage {period}", "da": "Forbrug {period}"},
    "card.usage.by_type": {"en": "By call type", "da": "Efter opkaldstype"},
    "card.usage.top_users": {"en": "Top users", "da": "Største forbrugere"},
    "card.usage.chart_x": {"en": "Call type", "da": "Opkaldstype"},
    "card.usage.chart_y": {"en": "Spend ({currency})", "da": "Forbrug ({currency})"},
    "card.usage.other": {"en": "Other", "da": "Andet"},
    "card.alert.raised": {"en": "Raised on {date} · reference {ref}", "da": "Udsendt den {date} · reference {ref}"},
    "card.alert.recharged.title": {
        "en": "Auto-recharge added {total}",
        "da": "Automatisk opfyldning indsatte {total}",
    },
    "card.alert.recharged.title_plain": {
        "en": "Auto-recharge added funds",
        "da": "Automatisk opfyldning indsatte penge",
    },
    "card.alert.recharged.text": {
        "en": "The balance fell below the trigger, so auto-recharge added funds. Each recharge is invoiced on its "
              "own.",
        "da": "Saldoen kom under grænsen, så automatisk opfyldning indsatte penge. Hver opfyldning faktureres for "
              "sig.",
    },
    "card.alert.recharge_blocked.title": {
        "en": "Auto-recharge was blocked",
        "da": "Automatisk opfyldning blev blokeret",
    },
    "card.alert.recharge_blocked.monthly_cap": {
        "en": "The balance is below the trigger, but another recharge would go over the monthly cap, so none was "
              "made. Raise the cap or add funds.",
        "da": "Saldoen er under grænsen, men en opfyldning mere ville gå over det månedlige loft, så der blev ikke "
              "foretaget nogen. Hæv loftet, eller indsæt flere penge.",
    },
    "card.alert.recharge_blocked.breaker": {
        "en": "The balance is below the trigger, but auto-recharge has reached its limit of recharges in 24 "
              "hours, so none was made. The limit stops a runaway loop of charges.",
        "da": "Saldoen er under grænsen, men automatisk opfyldning har nået grænsen for opfyldninger inden for 24 "
              "timer, så der blev ikke foretaget nogen. Grænsen stopper en løbsk række af betalinger.",
    },
    "card.alert.recharge_blocked.other": {
        "en": "The balance is below the trigger, but no recharge could be made.",
        "da": "Saldoen er under grænsen, men der kunne ikke foretages nogen opfyldning.",
    },
    "card.alert.low_balance.title": {"en": "Low balance: {balance}", "da": "Lav saldo: {balance}"},
    "card.alert.low_balance.text": {
        "en": "The Communications Credits balance fell below {threshold}.",
        "da": "Saldoen for Kommunikationskreditter er kommet under {threshold}.",
    },
    "card.alert.exhausted.title": {
        "en": "Communications Credits are used up",
        "da": "Kommunikationskreditterne er brugt op",
    },
    "card.alert.exhausted.text": {
        "en": "Toll-free numbers stop answering and dial-out fails until funds are added.",
        "da": "Gratisnumre holder op med at svare, og opkald ud mislykkes, indtil der indsættes flere penge.",
    },
    "card.alert.expiring.title_plain": {"en": "Credits expire soon", "da": "Kreditter udløber snart"},
    "card.alert.expiring.text": {
        "en": "Credits can be used until the end of the day (UTC) 12 months after the day they were added, "
              "oldest first. What is left of them then is lost.",
        "da": "Kreditter kan bruges til udgangen af dagen (UTC) 12 måneder efter den dag, de blev indsat, de "
              "ældste først. Det, der så er tilbage, går tabt.",
    },
    "card.alert.forecast.title": {
        "en": "The balance may run out around {date}",
        "da": "Saldoen slipper måske op omkring {date}",
    },
    "card.alert.forecast.title_plain": {"en": "The balance may run out soon", "da": "Saldoen slipper måske snart op"},
    "card.alert.forecast.text": {
        "en": "At the current rate of usage the balance reaches zero soon. Add funds or turn on auto-recharge.",
        "da": "Med det nuværende forbrug når saldoen snart nul. Indsæt flere penge, eller slå automatisk "
              "opfyldning til.",
    },
    "card.help.title": {"en": "What I can do", "da": "Det kan jeg"},
    "card.welcome.title": {
        "en": "Welcome to Communications Credits",
        "da": "Velkommen til Kommunikationskreditter",
    },
    "card.welcome.roles": {
        "en": "Admins add funds and change settings; readers see the balance, history, usage and forecast.",
        "da": "Administratorer indsætter penge og ændrer indstillinger; læsere ser saldo, historik, forbrug og "
              "prognose.",
    },
    "card.more": {"en": "… and {count} more", "da": "… og {count} mere"},
    "card.help.admin": {"en": "Admin", "da": "Administration"},
    "card.button.roles": {"en": "Roles", "da": "Roller"},
    "card.button.currency": {"en": "Currency", "da": "Valuta"},
    "card.button.subscriptions": {"en": "Where alerts go", "da": "Hvor advarsler sendes hen"},
    "card.subscriptions.title": {"en": "Where alerts go", "da": "Hvor advarsler sendes hen"},
    "card.subscriptions.intro": {
        "en": "These conversations get alerts. Choose below which alerts this conversation gets.",
        "da": "Disse samtaler får advarsler. Vælg nedenfor, hvilke advarsler denne samtale får.",
    },
    "card.subscriptions.none": {"en": "No conversation gets alerts yet.", "da": "Ingen samtale får advarsler endnu."},
    "card.subscriptions.disabled": {
        "en": "Disabled: {reason}. Alerts are not sent here until someone chooses them again.",
        "da": "Slået fra: {reason}. Der sendes ikke advarsler hertil, før nogen vælger dem igen.",
    },
    "card.subscriptions.disabled_plain": {
        "en": "Disabled. Alerts are not sent here until someone chooses them again.",
        "da": "Slået fra. Der sendes ikke advarsler hertil, før nogen vælger dem igen.",
    },
    "card.subscriptions.kinds_label": {
        "en": "Alerts for this conversation",
        "da": "Advarsler til denne samtale",
    },
    "card.subscriptions.kinds_error": {
        "en": "Choose at least one alert, or stop alerts here.",
        "da": "Vælg mindst én advarsel, eller stop advarsler her.",
    },
    "card.subscriptions.save": {"en": "Send these alerts here", "da": "Send disse advarsler hertil"},
    "card.subscriptions.stop": {"en": "Stop alerts here", "da": "Stop advarsler her"},
    "card.roles.title": {"en": "Roles", "da": "Roller"},
    "card.roles.revoke": {"en": "Revoke", "da": "Fjern"},
    "card.roles.grant_title": {"en": "Give someone a role", "da": "Giv nogen en rolle"},
    "card.roles.user_label": {"en": "Entra object id", "da": "Entra-objekt-id"},
    "card.roles.user_placeholder": {
        "en": "For example 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "da": "For eksempel 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    },
    "card.roles.user_error": {
        "en": "Enter the person's Entra object id (at most {max} characters).",
        "da": "Angiv personens Entra-objekt-id (højst {max} tegn).",
    },
    "card.roles.role_label": {"en": "Role", "da": "Rolle"},
    "card.roles.role_error": {"en": "Choose a role.", "da": "Vælg en rolle."},
    "card.roles.grant": {"en": "Grant", "da": "Giv rolle"},
    "card.currency.title": {"en": "Currency", "da": "Valuta"},
    "card.currency.current": {"en": "Account currency", "da": "Kontoens valuta"},
    "card.currency.intro": {
        "en": "Amounts are never converted. The currency can change only until the account has its first entry.",
        "da": "Beløb omregnes aldrig. Valutaen kan kun ændres, indtil kontoen har sin første postering.",
    },
    "card.currency.locked": {
        "en": "The currency is fixed: it can't change once the account has its first entry.",
        "da": "Valutaen ligger fast: den kan ikke ændres, når kontoen har sin første postering.",
    },
    "card.currency.code_label": {"en": "New currency", "da": "Ny valuta"},
    "card.currency.code_error": {"en": "Choose a currency.", "da": "Vælg en valuta."},
    "card.cancelled.title": {"en": "Cancelled", "da": "Annulleret"},
    "card.cancelled.text": {"en": "Nothing was changed.", "da": "Intet er ændret."},
}

#: key -> {"en": template, "da": template}. Read-only.
MESSAGES: Mapping[str, Mapping[str, str]] = MappingProxyType({k: MappingProxyType(v) for k, v in _M.items()})
del _M


def t(key: str, language: str, **params: Any) -> str:
    """The message `key` in `language` ("en" or "da"; anything else gives English), filled with `params`
    (extra params are ignored). `KeyError` for an unknown key or a missing placeholder: both are bugs."""
    templates = MESSAGES[key]
    return templates.get(language, templates["en"]).format(**params)


# --- places -----------------------------------------------------------------------------------------------------

def place_name(conversation_id: str, reference: Mapping[str, Any] | None, language: str, *,
               current: str | None = None) -> str:
    """How a conversation is named to people: "this conversation" when it is `current` (the one being typed
    in); else from its saved conversation reference (a serialized botbuilder ConversationReference): "channel
    General" / "a channel", "group chat Finance" / "a group chat", "Alex Wilber's personal chat" / "a personal
    chat"; its raw id only when there is no reference."""
    if current is not None and conversation_id == current:
        return t("label.this_conversation", language)
    if not isinstance(reference, Mapping):
        return conversation_id
    conversation = reference.get("conversation")
    conversation = conversation if isinstance(conversation, Mapping) else {}
    user = reference.get("user")
    user = user if isinstance(user, Mapping) else {}

    def clean(value: Any) -> str:
        return " ".join(value.split()) if isinstance(value, str) else ""

    name = clean(conversation.get("name"))
    scope = conversation.get("conversationType") or "personal"
    if scope == "channel":
        return t("place.channel", language, name=name) if name else t("place.a_channel", language)
    if scope == "groupChat":
        return t("place.group_chat", language, name=name) if name else t("place.a_group_chat", language)
    person = clean(user.get("name"))
    return t("place.personal", language, name=person) if person else t("place.a_personal_chat", language)


# --- errors to messages -----------------------------------------------------------------------------------------

def denied_key(capability: Capability) -> str:
    """The polite refusal for a user who lacks `capability` (say who can do it and how to get the role)."""
    return f"denied.{Capability(capability).value}"


def amount_failure(error: AmountError, *, text: str, currency: str, locale: str) -> tuple[str, dict[str, Any]]:
    """Message key and params for an amount that `bot.amounts` refused (`text` as the person typed it)."""
    params: dict[str, Any] = {
        "text": text.strip(),
        "currency": currency,
        "places": precision(currency),
        "max": format_money(int(MAX_MAJOR_UNITS.scaleb(precision(currency))), currency, locale),
        "other": error.detail if error.reason == "other_currency" else "",
        "example": format_number_example(currency, locale),
        "reason": error.reason,
    }
    key = f"amount.{error.reason}"
    return (key if key in MESSAGES else "amount.not_a_number"), params


def ledger_error_key(exc: ledger_errors.LedgerError, *, currency: str, locale: str,
                     names: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Message key and params for an expected ledger error. Money in the params is formatted in `currency`
    (the account's) for `locale`. `names` maps user ids to display names (for "X has no role"). Any other
    `LedgerError` gets the generic "error.ledger"."""
    e = ledger_errors
    places = precision(currency)
    params: dict[str, Any] = {
        "currency": currency, "places": places, "max_thresholds": MAX_THRESHOLDS,
        "max_per_day": MAX_RECHARGES_PER_DAY,
        "max": format_money(int(MAX_MAJOR_UNITS.scaleb(places)), currency, locale),
        "kinds": ", ".join(kind.value for kind in AlertKind),
    }
    if isinstance(exc, e.AccountNotFound):
        return "error.account_not_found", params
    if isinstance(exc, e.InvalidAmount):
        key = f"error.invalid_amount.{exc.reason}"
        return (key if key in MESSAGES else "error.invalid_amount.not_a_number"), params
    if isinstance(exc, e.InvalidCurrency):
        return "error.invalid_currency", {**params, "code": exc.code}
    if isinstance(exc, e.CurrencyMismatch):
        return "error.currency_mismatch", {**params, "expected": exc.expected, "got": exc.got}
    if isinstance(exc, e.CurrencyLocked):
        return "error.currency_locked", {**params, "currency": exc.currency}
    if isinstance(exc, e.InsufficientFunds):
        return "error.insufficient_funds", {**params, "balance": format_money(exc.balance, currency, locale),
                                            "requested": format_money(exc.requested, currency, locale)}
    if isinstance(exc, e.IdempotencyConflict):
        return "error.idempotency_conflict", {**params, "operation": exc.operation}
    if isinstance(exc, e.InvalidSettings):
        key = f"error.invalid_settings.{exc.reason}"
        return (key if key in MESSAGES else "error.invalid_settings"), params
    if isinstance(exc, e.ApprovalClosed):
        return "error.approval_closed", {**params, "status_value": exc.approval.status.value,
                                         "decided_by": exc.approval.decided_by}
    if isinstance(exc, e.SelfApproval):
        return "error.self_approval", {**params, "approval_id": exc.approval_id}
    if isinstance(exc, e.NotFound):
        key = f"error.not_found.{exc.what}"
        name = (names or {}).get(exc.ident, exc.ident)
        return (key if key in MESSAGES else "error.not_found"), {**params, "ident": exc.ident, "name": name}
    return "error.ledger", params


def ledger_error_message(exc: ledger_errors.LedgerError, language: str, *, currency: str, locale: str,
                         names: Mapping[str, str] | None = None) -> str:
    key, params = ledger_error_key(exc, currency=currency, locale=locale, names=names)
    if "status_value" in params:
        params["status"] = t(f"approval.status.{params['status_value']}", language)
    return t(key, language, **params)

