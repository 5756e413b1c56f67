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
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from storage import (AlertKind, AlertSettings, ConversationRef, Ledger, LedgerError, NotFound,
                     RechargeSettings, Role)
from storage.clock import Clock, utc_now
from storage.policy import allows, effective_role

import cards

from . import commands, reports
from .card_actions import CardActions, Messenger
from .commands import Mention, ParseFailure
from .context import Ctx, Reply, Turn
from .i18n import (denied_key, format_date, format_list, format_money_list, language_for,
                   ledger_error_message, resolve_locale, t)

log = logging.getLogger(__name__)


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
                 approval_threshold: Decimal | None = None, messenger: Messenger | None = None) -> None:
        self._ledger = ledger
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
        }
        self._cards = CardActions(ledger, clock=clock, approval_threshold=approval_threshold, messenger=messenger,
                                  bootstrap_admins=self._bootstrap)
        missing = {c.name for c in commands.COMMANDS} ^ set(self._handlers)
        if missing:
            raise RuntimeError(f"commands and handlers disagree: {sorted(missing)}")

    # --- entry points -----------------------------------------------------------------------------------------
    async def remember_conversation(self, turn: Turn, reference: Mapping[str, Any]) -> bool:
        """First contact opens the tenant's account (in the default currency, changeable before the first
        entry); every activity saves the conversation reference. True if the conversation is new."""
        await self._ledger.open_account(turn.tenant_id, self._currency)
        known = await self._ledger.conversation(turn.tenant_id, turn.conversation_id)
        await self._ledger.save_conversation(ConversationRef(turn.conversation_id, turn.tenant_id, dict(reference),
                                                             self._clock()))
        return known is None

    async def safely(self, action: Callable[[Turn], Awaitable[Reply]], turn: Turn) -> Reply:
        """Run an action; a crash becomes an incident id in the log and in the reply, nothing more."""
        try:
            return await action(turn)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("incident %s: %s failed (tenant %s, activity %s)", incident,
                          getattr(action, "__name__", "action"), turn.tenant_id, turn.activity_id)
            return Reply(t("error.crash", language_for(turn.locale, self._fallback), incident=incident))

    def no_tenant_text(self, locale: str | None) -> str:
        return t("error.no_tenant", language_for(locale, self._fallback))

    async def welcome(self, turn: Turn) -> Reply:
        ctx = await self._context(turn)
        return Reply(ctx.text("welcome") + "\n\n" + commands.help_text(ctx.language, role=ctx.role),
                     cards.welcome_card(ctx))

    async def handle_text(self, turn: Turn) -> Reply:
        ctx = await self._context(turn)
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
        account = await self._ledger.get_account(turn.tenant_id)
        grants = await self._ledger.roles(turn.tenant_id)
        stored = next((g.role for g in grants if g.user_id == turn.user_id), None) if turn.user_id else None
        role = effective_role(stored, turn.user_id, account_has_admin=any(g.role is Role.ADMIN for g in grants),
                              bootstrap_admins=self._bootstrap)
        return Ctx(turn, language_for(turn.locale, self._fallback), resolve_locale(turn.locale, self._fallback),
                    account.currency, role)

    # --- commands ---------------------------------------------------------------------------------------------
    async def _help(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        return Reply(commands.help_text(ctx.language, role=ctx.role))

    async def _balance(self, ctx: Ctx, args: Mapping[str, Any]) -> Reply:
        tenant = ctx.turn.tenant_id
        account = await self._ledger.get_account(tenant)
        recharge = await self._ledger.recharge_settings(tenant)
        lines = [ctx.text("balance.reply", balance=ctx.money(account.balance))]
        if account.balance < 0:
            lines.append(ctx.text("balance.below_zero"))
        lines.append(ctx.text("balance.recharge_on", amount=ctx.money(recharge.amount),
                              trigger=ctx.money(recharge.trigger)) if recharge.enabled
                     else ctx.text("balance.recharge_off"))
        now = self._clock()
        soon = [lot for lot in await self._ledger.lots(tenant) if lot.expires_at <= now + timedelta(days=30)]
        if soon:
            lines.append(ctx.text("balance.expiring", amount=ctx.money(sum(l.remaining for l in soon)),
                                  date=format_date(min(l.expires_at for l in soon), ctx.locale)))
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
        subs = [s for s in await self._ledger.subscriptions(tenant) if s.enabled]
        if subs:
            places = [f"{self._place(ctx, s.conversation_id)} ({', '.join(ctx.text(f'alert_kind.{k.value}') for k in s.kinds)})"
                      for s in subs]
            lines.append(ctx.text("alerts.destinations", destinations="; ".join(places)))
        else:
            lines.append(ctx.text("alerts.no_destinations"))
        return Reply("\n\n".join(lines))

    def _place(self, ctx: Ctx, conversation_id: str) -> str:
        return ctx.text("label.this_conversation") if conversation_id == ctx.turn.conversation_id else conversation_id

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
