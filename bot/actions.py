"""What the bot does for a chat command: plain async functions over our own types, no botbuilder.

A `Turn` is what the handler read from an activity; `Actions.handle_text` parses the text (`bot.commands`),
checks the caller's role for the capability the parsed form needs (deny by default), runs it against the
tenant's own account, and returns a `Reply`. Every mutation is keyed by the activity id, so a Teams retry of
the same message changes nothing and gets the same answer.

Errors: a `LedgerError` is an expected outcome and gets its own polite sentence; anything else is a crash,
logged with an incident id, and the user gets only that id (never the exception's text).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from storage import (AlertKind, AlertSettings, AlertStatus, ConversationRef, Ledger, LedgerError, NotFound,
                     RechargeSettings, Role)
from storage.clock import Clock, utc_now
from storage.policy import Capability, allows, effective_role

import cards

from . import commands, reports
from .card_actions import CardActions, Messenger
from .commands import Mention, ParseFailure
from .context import Ctx, Reply, Turn
from .notifier import removed_status
from .usage.service import UsageService
from .i18n import (denied_key, format_date, format_list, format_money_list, language_for,
                   ledger_error_message, place_name, resolve_locale, t)

log = logging.getLogger(__name__)

#: `alerts failed` lists at most this many dead alerts, newest first.
FAILED_SHOWN = 20
#: The last error of a dead alert is cut to this many characters.
ERROR_SHOWN = 200
#: Dead alerts counted for the hint under `alerts` (more are "more than" this).
FAILED_COUNTED = 100
#: Conversation references remembered per process as saved (about 1 kB each).
SAVED_REFERENCES_KEPT = 10_000


class MemberDirectory(Protocol):
    """Looks up the Entra object id of a conversation member (for `grant @user`)."""

    async def aad_object_id(self, service_url: str, conversation_id: str, member_id: str) -> str | None: ...


#: The card a typed command continues with (its bare form; `history` and `usage` with any arguments).
_COMMAND_CARDS: Mapping[str, str] = {
    "balance": "balance", "help": "help", "history": "history.page", "usage": "usage.show",
    "recharge": "recharge.open", "alerts": "alerts.open", "roles": "roles.open", "currency": "currency.open",
    "subscribe": "subscriptions.open", "whoami": "roles.open",
}


class Actions:
    def __init__(self, ledger: Ledger, *, bootstrap_admins: Sequence[str], default_currency: str,
                 fallback_locale: str, members: MemberDirectory | None = None, clock: Clock = utc_now,
                 approval_threshold: Decimal | None = None, messenger: Messenger | None = None,
                 usage: UsageService | None = None, download_session: Any = None) -> None:
        self._ledger = ledger
        self._usage_service = usage
        self._download_session = download_session
        self._bootstrap = tuple(bootstrap_admins)
        self._currency = default_currency
        self._fallback = fallback_locale
        self._members = members
        self._clock = clock
        self._handlers: Mapping[str, Callable[[Ctx, Mapping[str, Any]], Awaitable[Reply]]] = {
            "help": self._help, "balance": self._balance, "add": self._add, "recharge": self._recharge,
            "alerts": self._alerts, "history": self._history, "usage": self._usage, "forecast": self._forecast,
            "subscribe": self._subscribe, "unsubscribe": self._unsubscribe, "roles": self._roles,
            "grant": self._grant, "revoke": self._revoke, "whoami": self._whoami, "currency": self._currency_cmd,
            "sync": self._sync,
        }
        # (tenant, conversation) -> the reference this process last saved there: most turns come from a
        # conversation whose reference has not changed, and then cost no ledger call before the action
        self._saved_references: dict[tuple[str, str], dict[str, Any]] = {}
        self._cards = CardActions(ledger, clock=clock, approval_threshold=approval_threshold, messenger=messenger,
                                  bootstrap_admins=self._bootstrap)
        missing = {c.name for c in commands.COMMANDS} ^ set(self._handlers)
        if missing:
            raise RuntimeError(f"commands and handlers disagree: {sorted(missing)}")

    # --- entry points -----------------------------------------------------------------------------------------
    async def remember_conversation(self, turn: Turn, reference: Mapping[str, Any]) -> bool:
        """First contact opens the tenant's account (in the default currency, changeable before the first
        entry); every activity saves the conversation reference. True if the conversation is new."""
        key, saved = (turn.tenant_id, turn.conversation_id), dict(reference)
        if self._saved_references.get(key) == saved:
            return False   # this process saved exactly this reference already: nothing to open or write
        await self._ledger.open_account(turn.tenant_id, self._currency)
        new = await self._ledger.save_conversation(   # decided atomically: concurrent first turns welcome once
            ConversationRef(turn.conversation_id, turn.tenant_id, saved, self._clock()))
        if len(self._saved_references) >= SAVED_REFERENCES_KEPT:
            del self._saved_references[next(iter(self._saved_references))]   # the oldest first
        self._saved_references[key] = saved
        return new

    async def safely(self, action: Callable[[Turn], Awaitable[Reply]], turn: Turn) -> Reply:
        """Run an action; a crash becomes an incident id in the log and in the reply, nothing more."""
        try:
            return await action(turn)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: %s failed (tenant %s, activity %s)", incident,
                          getattr(action, "__name__", "action"), turn.tenant_id, turn.activity_id)
            return Reply(self.crash_text(turn.locale, incident))

    def crash_text(self, locale: str | None, incident: str) -> str:
        """What a user is told about a crash: only its incident id."""
        return t("error.crash", language_for(locale, self._fallback), incident=incident)

    def slow_down_text(self, locale: str | None, wait: timedelta) -> str:
        """The rate limit's answer: please wait, and how long (whole seconds up to two minutes, then minutes)."""
        language = language_for(locale, self._fallback)
        seconds = max(int(wait.total_seconds()), 1)
        if seconds < 120:
            amount = t("rate_limit.second_one" if seconds == 1 else "rate_limit.seconds", language, n=seconds)
        else:
            minutes = -(-seconds // 60)
            amount = t("rate_limit.minutes", language, n=minutes)
        return t("rate_limit.slow_down", language, wait=amount)

    def no_tenant_text(self, locale: str | None) -> str:
        return t("error.no_tenant", language_for(locale, self._fallback))

    async def welcome(self, turn: Turn) -> Reply:
        ctx = await self._context(turn)
        return Reply(ctx.text("welcome") + "\n\n" + commands.help_text(ctx.language, role=ctx.role),
                     cards.welcome_card(ctx))

    async def handle_text(self, turn: Turn) -> Reply:
        ctx = await self._context(turn)
        if turn.files and not turn.text.strip():
            return await self._import_files(ctx)
        parsed = commands.parse(turn.text, currency=ctx.currency, locale=ctx.locale, mentions=turn.mentions)
        if isinstance(parsed, ParseFailure):
            return ctx.say(parsed.message_key, **parsed.params)
        if parsed.capability is not None and not allows(ctx.role, parsed.capability):
            return ctx.say(denied_key(parsed.capability))
        try:
            reply = await self._handlers[parsed.command.name](ctx, parsed.args)
        except LedgerError as error:
            return Reply(ledger_error_message(error, ctx.language, currency=ctx.currency, locale=ctx.locale))
        return await self._with_card(ctx, parsed.command.name, parsed.args, reply)

    async def _with_card(self, ctx: Ctx, command: str, args: Mapping[str, Any], reply: Reply) -> Reply:
        """Reading commands also bring the card that continues from them (the balance card with its buttons,
        the settings forms for admins...), so everything typed can go on with a click. The text stays, for
        notifications and clients that show no cards."""
        if reply.card is not None:
            return reply
        verb = _COMMAND_CARDS.get(command) if not args or command in ("history", "usage") else None
        if verb is None:
            return reply
        data: dict[str, Any] = {"verb": verb}
        if command == "usage":
            data["period"] = args.get("period", commands.USAGE_DEFAULT)
        card = await self._cards.card_for(ctx, verb, data)
        return Reply(reply.text, card) if card is not None else reply

    async def handle_card(self, turn: Turn, verb: str, data: Mapping[str, Any]) -> Reply:
        """A card button (Action.Execute or Action.Submit): same checks as a command, see `bot.card_actions`."""
        ctx = await self._context(turn)
        try:
            return await self._cards.handle(ctx, verb, data)
        except LedgerError as error:
            return self._cards.refusal(ctx, ledger_error_message(error, ctx.language, currency=ctx.currency,
                                                                 locale=ctx.locale))

    async def _context(self, turn: Turn) -> Ctx:
        view = await self._ledger.account_view(turn.tenant_id, now=self._clock())
        account, grants = view.account, view.roles
        stored = next((g.role for g in grants if g.user_id == turn.user_id), None) if turn.user_id else None
        role = effective_role(stored, turn.user_id, account_has_admin=any(g.role is Role.ADMIN for g in grants),
                              bootstrap_admins=self._bootstrap)
        return Ctx(language=language_for(turn.locale, self._fallback),
                   locale=resolve_locale(turn.locale, self._fallback), currency=account.currency, turn=turn, role=role,
                   view=view)

    # --- commands ---------------------------------------------------------------------------------------------
    async def _help(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        return Reply(commands.help_text(ctx.language, role=ctx.role))

    async def _balance(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        view = ctx.view if ctx.view is not None else await self._ledger.account_view(ctx.turn.tenant_id,
                                                                                     now=self._clock())
        account, recharge = view.account, view.recharge
        lines = [ctx.text("balance.reply", balance=ctx.money(account.balance))]
        if account.balance < 0:
            lines.append(ctx.text("balance.below_zero"))
        lines.append(ctx.text("balance.recharge_on", amount=ctx.money(recharge.amount),
                              trigger=ctx.money(recharge.trigger)) if recharge.enabled
                     else ctx.text("balance.recharge_off"))
        soon = view.expiring
        if soon:
            lines.append(ctx.text("balance.expiring", amount=ctx.money(sum(l.remaining for l in soon)),
                                  date=format_date(min(l.last_day for l in soon), ctx.locale)))
        return Reply("\n\n".join(lines))

    def _recharge_lines(self, ctx: Ctx, r: RechargeSettings, headline: str) -> str:
        if not r.enabled and r.amount == 0:
            return ctx.text("recharge.not_set")
        lines = [ctx.text(headline, amount=ctx.money(r.amount), trigger=ctx.money(r.trigger))]
        lines.append(ctx.text("recharge.cap", cap=ctx.money(r.monthly_cap)) if r.monthly_cap is not None
                     else ctx.text("recharge.no_cap"))
        lines.append(ctx.text("recharge.breaker", max_per_day=r.max_per_day))
        return "\n\n".join(lines)

    async def _add(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        # the typed command is itself the confirmation: it acts at once (below the approval threshold)
        return await self._cards.add_or_request(ctx, args["amount"], args.get("memo", ""), key=ctx.turn.activity_id)

    async def _recharge(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        tenant = ctx.turn.tenant_id
        current = await self._ledger.recharge_settings(tenant)
        if not args:
            return Reply(self._recharge_lines(ctx, current, "recharge.on" if current.enabled else "recharge.off"))
        if "enabled" in args:
            if args["enabled"] and current.amount == 0:
                return ctx.say("recharge.not_set")
            wanted = replace(current, enabled=args["enabled"])
        else:
            wanted = replace(current, enabled=True, amount=args["amount"], trigger=args["trigger"],
                             monthly_cap=args.get("cap"))
        change = await self._ledger.set_recharge_settings(tenant, wanted, actor=ctx.turn.user_id,
                                                          key=ctx.turn.activity_id)
        saved = RechargeSettings.from_dict(change.value)
        if not saved.enabled:
            return ctx.say("recharge.disabled")
        return Reply(self._recharge_lines(ctx, saved, "recharge.enabled" if "enabled" in args else "recharge.saved"))

    async def _alerts(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        if args.get("failed"):
            return await self._alerts_failed(ctx)
        tenant = ctx.turn.tenant_id
        current = await self._ledger.alert_settings(tenant)
        lines: list[str] = []
        if "thresholds" in args:
            change = await self._ledger.set_alert_settings(
                tenant, replace(current, thresholds=tuple(args["thresholds"])), actor=ctx.turn.user_id,
                key=ctx.turn.activity_id)
            current = AlertSettings.from_dict(change.value)
            lines.append(ctx.text("alerts.saved", thresholds=format_money_list(current.thresholds, ctx.currency,
                                                                              ctx.locale))
                         if current.thresholds else ctx.text("alerts.cleared"))
        elif current.thresholds:
            lines.append(ctx.text("alerts.list", thresholds=format_money_list(current.thresholds, ctx.currency,
                                                                             ctx.locale)))
        else:
            lines.append(ctx.text("alerts.none"))
        all_subs = await self._ledger.subscriptions(tenant)
        names = await self._place_names(ctx, [s.conversation_id for s in all_subs])
        subs = [s for s in all_subs if s.enabled]
        if subs:
            places = [f"{names[s.conversation_id]} ({', '.join(ctx.text(f'alert_kind.{k.value}') for k in s.kinds)})"
                      for s in subs]
            lines.append(ctx.text("alerts.destinations", destinations="; ".join(places)))
        else:
            lines.append(ctx.text("alerts.no_destinations"))
        for sub in all_subs:
            if sub.enabled:
                continue
            here = "_here" if sub.conversation_id == ctx.turn.conversation_id else ""
            status = removed_status(sub.disabled_reason)
            reason = ctx.text("alerts.reason_removed", status=status) if status is not None else \
                _shorten(sub.disabled_reason, ERROR_SHOWN).rstrip(".")
            lines.append(ctx.text(f"alerts.disabled{here}", place=names[sub.conversation_id], reason=reason)
                         if reason else ctx.text(f"alerts.disabled{here}_plain", place=names[sub.conversation_id]))
        if "thresholds" not in args and allows(ctx.role, Capability.MANAGE_SUBSCRIPTIONS):
            dead = len(await self._ledger.alerts(tenant, status=AlertStatus.DEAD, limit=FAILED_COUNTED))
            if dead == 1:
                lines.append(ctx.text("alerts.failed_hint_one"))
            elif dead:
                lines.append(ctx.text("alerts.failed_hint",
                                      count=f"{dead}+" if dead >= FAILED_COUNTED else str(dead)))
        return Reply("\n\n".join(lines))

    async def _alerts_failed(self, ctx: Ctx) -> Reply:
        """The alerts given up on (dead), newest first: what, when, how many attempts, where they did not
        arrive and the last error."""
        dead = await self._ledger.alerts(ctx.turn.tenant_id, status=AlertStatus.DEAD, limit=FAILED_SHOWN + 1)
        if not dead:
            return ctx.say("alerts.failed_none")
        shown = dead[:FAILED_SHOWN]
        names = await self._place_names(ctx, [d for a in shown for d in a.pending_destinations])
        if len(dead) > FAILED_SHOWN:
            lines = [ctx.text("alerts.failed_header_more", count=FAILED_SHOWN)]
        elif len(dead) == 1:
            lines = [ctx.text("alerts.failed_header_one")]
        else:
            lines = [ctx.text("alerts.failed_header", count=len(dead))]
        for alert in shown:
            places = [names[d] for d in alert.pending_destinations]   # neither delivered nor skipped
            kind = ctx.text(f"alert_kind.{alert.kind.value}")
            line = ctx.text("alerts.failed_line", kind=kind[:1].upper() + kind[1:],
                            date=ctx.date(alert.created_at), attempts=alert.attempts,
                            places=format_list(places, ctx.locale) if places else ctx.text("label.none"))
            if alert.last_error.strip():
                line += " " + ctx.text("alerts.failed_error", error=_shorten(alert.last_error, ERROR_SHOWN))
            lines.append(f"- {line}")
        lines.append(ctx.text("alerts.failed_footer"))
        return Reply("\n\n".join(lines))

    async def _place_names(self, ctx: Ctx, conversation_ids: Sequence[str]) -> dict[str, str]:
        """Friendly names of conversations ("this conversation", "channel General", "Alex's personal chat"),
        from their saved references (the raw id when there is none)."""
        wanted = set(conversation_ids)
        if not wanted:
            return {}
        refs = {c.conversation_id: c.reference for c in await self._ledger.conversations(ctx.turn.tenant_id)
                if c.conversation_id in wanted}
        return {cid: place_name(cid, refs.get(cid), ctx.language, current=ctx.turn.conversation_id)
                for cid in wanted}

    async def _history(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        n = args.get("n", commands.HISTORY_DEFAULT)
        page = await self._ledger.history(ctx.turn.tenant_id, limit=n)
        if not page.items:
            return ctx.say("history.empty")
        lines = [ctx.text("history.line_memo" if e.memo else "history.line", date=format_date(e.at, ctx.locale),
                          kind=ctx.text(f"kind.{e.kind.value}"), amount=ctx.money(e.amount),
                          balance=ctx.money(e.balance_after), memo=e.memo)
                 for e in page.items]
        text = ctx.text("history.header", count=len(lines)) + "\n\n" + "\n\n".join(lines)
        if page.older is not None and n < commands.HISTORY_MAX:
            text += "\n\n" + ctx.text("history.more", n=min(n * 2, commands.HISTORY_MAX), max=commands.HISTORY_MAX)
        return Reply(text)

    async def _usage(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        period = args.get("period", commands.USAGE_DEFAULT)
        label = ctx.text(f"period.{period}")
        summary = await reports.usage_summary(self._ledger, ctx.turn.tenant_id, period, self._clock())
        if not summary.calls:
            return ctx.say("usage.none", period=label)
        lines = [ctx.text("usage.total", period=label, total=ctx.money(summary.total), count=summary.calls),
                 ctx.text("usage.by_type")]
        lines += [ctx.text("usage.line", name=name, amount=ctx.money(v)) for name, v in summary.by_type]
        lines.append(ctx.text("usage.by_user"))
        lines += [ctx.text("usage.line", name=name, amount=ctx.money(v)) for name, v in summary.by_user[:5]]
        return Reply("\n\n".join(lines))

    async def _forecast(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        f, recharge_amount = await reports.account_forecast(self._ledger, ctx.turn.tenant_id, self._clock())
        if f.daily_burn == 0:
            return ctx.say("forecast.no_usage", days=f.window_days)
        lines = [ctx.text("forecast.burn", daily=ctx.money(f.daily_burn), days=f.window_days)]
        if f.next_recharge_on is not None and recharge_amount is not None:
            lines.append(ctx.text("forecast.next_recharge", amount=ctx.money(recharge_amount),
                                  date=ctx.date(f.next_recharge_on)))
        elif f.zero_on is not None:
            lines.append(ctx.text("forecast.zero", date=ctx.date(f.zero_on)))
        return Reply("\n\n".join(lines))

    async def _sync(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        """Graph sync now, for this tenant; the outcome in words (a refusal explained so an admin can act)."""
        from .usage.graph import GraphPermissionError
        if self._usage_service is None or self._usage_service.graph is None:
            return ctx.say("sync.not_configured")
        try:
            [report] = await self._usage_service.sync(ctx.turn.tenant_id, actor=ctx.turn.user_id or None)
        except GraphPermissionError as error:   # something an administrator fixes: say what
            return ctx.say("sync.refused", advice=error.admin_message)
        except Exception:   # an outage beyond the retries, or a crash: what was read stays; never str(exc)
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: sync for tenant %s failed", incident, ctx.turn.tenant_id)
            return ctx.say("sync.failed", incident=incident)
        balance = report.balance if report.balance is not None else \
            (await self._ledger.get_account(ctx.turn.tenant_id)).balance
        lines = [ctx.text("sync.done", read=report.read, debited=report.debited, total=ctx.money(report.total),
                          skipped=report.skipped, rejected=report.rejected, balance=ctx.money(balance))]
        if report.recharges:
            lines.append(ctx.text("sync.recharges", count=report.recharges))
        if report.problems:
            lines.append(ctx.text("sync.problems", problems="; ".join(report.problems[:5])))
        return Reply("\n\n".join(lines))

    async def _import_files(self, ctx: Ctx) -> Reply:
        """An admin dropped the admin center's PSTN export into the chat: import it, answer with the summary."""
        from .usage.csv_export import ExportError
        from .usage.files import DownloadError, download, export_rows

        if not allows(ctx.role, Capability.MOVE_MONEY):
            return ctx.say(denied_key(Capability.MOVE_MONEY))
        if self._usage_service is None or self._download_session is None:
            return ctx.say("import.unavailable")
        lines = []
        for shared in ctx.turn.files:
            if shared.file_type not in ("csv", "zip") and not shared.name.lower().endswith((".csv", ".zip")):
                lines.append(ctx.text("import.not_an_export", name=shared.name))
                continue
            with tempfile.TemporaryDirectory(prefix="credits-import-") as tmp:
                path = Path(tmp) / ("export.zip" if shared.name.lower().endswith(".zip") else "export.csv")
                try:
                    await download(self._download_session, shared.download_url, path)
                    report = await self._usage_service.import_rows(ctx.turn.tenant_id, export_rows(path),
                                                                   source="csv", actor=ctx.turn.user_id or None)
                except (DownloadError, ExportError) as error:
                    lines.append(ctx.text("import.failed", name=shared.name, reason=str(error)))
                    continue
            lines.append(ctx.text("import.done", name=shared.name, read=report.read, debited=report.debited,
                                  total=ctx.money(report.total), skipped=report.skipped, rejected=report.rejected,
                                  balance=ctx.money(report.balance if report.balance is not None else
                                                    (await self._ledger.get_account(ctx.turn.tenant_id)).balance)))
            if report.recharges:
                lines.append(ctx.text("sync.recharges", count=report.recharges))
            if report.problems:
                lines.append(ctx.text("sync.problems", problems="; ".join(report.problems[:5])))
        return Reply("\n\n".join(lines))

    async def _subscribe(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        kinds = tuple(args.get("kinds") or tuple(AlertKind))
        await self._ledger.subscribe(ctx.turn.tenant_id, ctx.turn.conversation_id, kinds, actor=ctx.turn.user_id,
                                     key=ctx.turn.activity_id)
        names = [ctx.text(f"alert_kind.{k.value}") for k in AlertKind if k in kinds]
        return ctx.say("subscribe.done", kinds=format_list(names, ctx.locale))

    async def _unsubscribe(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        await self._ledger.unsubscribe(ctx.turn.tenant_id, ctx.turn.conversation_id, actor=ctx.turn.user_id,
                                       key=ctx.turn.activity_id)
        return ctx.say("unsubscribe.done")

    async def _roles(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        grants = await self._ledger.roles(ctx.turn.tenant_id)
        if not grants:
            return Reply(ctx.text("roles.none") + "\n\n" + ctx.text("roles.bootstrap"))
        lines = [ctx.text("roles.header")] + [ctx.text("roles.line", name=g.display_name or g.user_id,
                                                       role=ctx.text(f"role.{g.role.value}")) for g in grants]
        return Reply("\n\n".join(lines))

    async def _resolve(self, ctx: Ctx, user: Mention | str) -> tuple[str, str] | None:
        """(Entra object id, display name) of a mentioned or typed user; None when Teams can't tell us."""
        if isinstance(user, str):
            return user, user
        if user.aad_object_id:
            return user.aad_object_id, user.name
        if self._members is not None:
            found = await self._members.aad_object_id(ctx.turn.service_url, ctx.turn.conversation_id, user.user_id)
            if found:
                return found, user.name
        return None

    async def _grant(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        who = await self._resolve(ctx, args["user"])
        if who is None:
            return ctx.say("grant.no_object_id", name=args["user"].name)
        user_id, name = who
        await self._ledger.grant_role(ctx.turn.tenant_id, user_id, args["role"], actor=ctx.turn.user_id,
                                      key=ctx.turn.activity_id, display_name=name)
        return ctx.say("grant.done", name=name, role=ctx.text(f"role.{args['role'].value}"))

    async def _revoke(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        who = await self._resolve(ctx, args["user"])
        if who is None:
            return ctx.say("grant.no_object_id", name=args["user"].name)
        user_id, name = who
        try:
            await self._ledger.revoke_role(ctx.turn.tenant_id, user_id, actor=ctx.turn.user_id,
                                           key=ctx.turn.activity_id)
        except NotFound:
            return ctx.say("error.not_found.role", name=name)
        return ctx.say("revoke.done", name=name)

    async def _whoami(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        name, user_id = ctx.turn.user_name or "-", ctx.turn.user_id or "-"
        if ctx.role is None:
            return ctx.say("whoami.no_role", name=name, user_id=user_id)
        text = ctx.text("whoami.reply", name=name, user_id=user_id, role=ctx.text(f"role.{ctx.role.value}"))
        grants = await self._ledger.roles(ctx.turn.tenant_id)
        if not any(g.user_id == ctx.turn.user_id for g in grants):
            text += "\n\n" + ctx.text("whoami.bootstrap")
        return Reply(text)

    async def _currency_cmd(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        if "code" not in args:
            return ctx.say("currency.show", currency=ctx.currency)
        await self._ledger.set_currency(ctx.turn.tenant_id, args["code"], actor=ctx.turn.user_id,
                                        key=ctx.turn.activity_id)
        return ctx.say("currency.changed", currency=args["code"])


def _shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "\u2026"
