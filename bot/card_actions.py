"""What the bot does when a card button is pressed: one handler per verb of `cards.verbs`, plain async code.

Action.Execute and Action.Submit arrive here alike, as (verb, data). For every press, in this order:

1. the verb must be in the table (else a polite "this button is not supported");
2. the caller's role must allow the verb's capability (checked on every press, whatever the card showed);
3. a verb that changes something must carry a well-formed nonce: it becomes the idempotency key
   (`card:{nonce}`), so a double click, a Teams retry or a resubmitted old card changes nothing twice and gets
   the original answer;
4. every field is validated again on the server (types, signs, precision, bounds). Fields a verb does not
   read are ignored: clients add their own (Action.Submit sends every input of the card);
5. a settings form whose `basis` (digest of the settings it was prefilled with) no longer matches is answered
   "out of date" with a fresh form, instead of silently overwriting someone else's change.

Money in card data and inputs is a plain major-unit decimal string ("250", "12.50"), parsed with
`storage.money.to_minor`, never float.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import replace
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Awaitable, Callable, Mapping, Protocol

import cards
from cards.verbs import PERIODS, THRESHOLD_INPUTS, VERBS
from cards.elements import major_text
from storage import (AlertKind, AlertSettings, CurrencyLocked, InvalidAmount, InvalidCurrency, InvalidSettings,
                     Ledger, NotFound, RechargeSettings, Role, policy)
from storage.clock import Clock, utc_now
from storage.money import MAX_MAJOR_UNITS, precision, to_minor
from storage.policy import allows

from . import commands, reports
from .amounts import AmountError, parse_amount
from .context import Ctx, Reply
from .i18n import MESSAGES, denied_key, ledger_error_message, place_name

log = logging.getLogger(__name__)

_NONCE = re.compile(r"[A-Za-z0-9_-]{8,72}")  # card nonces, with a "-N" suffix on per-row buttons
_OBJECT_ID = re.compile(r"[^\s]{1,64}")
HISTORY_PAGE = 10


class CardInputError(Exception):
    """A field of a pressed card that cannot be used; `message` is already in the user's language."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def basis_of(state: Any) -> str:
    """Digest of the state a card was built from (compared when the card comes back): settings, or a list of
    subscriptions or grants (anything with `to_dict`), or plain JSON values."""
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"),
                           default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- administration: where alerts go, roles, currency -----------------------------------------------------------

class _Admin:
    """Handlers for the subscriptions, roles and currency cards (mixed into CardActions)."""

    _ledger: Ledger
    _nonce: Callable[[], str]

    async def _subs_card(self, ctx: Ctx, error: str | None = None) -> dict[str, Any]:
        subs = await self._ledger.subscriptions(ctx.turn.tenant_id)
        wanted = {s.conversation_id for s in subs}
        places = {c.conversation_id: place_name(c.conversation_id, c.reference, ctx.language)
                  for c in await self._ledger.conversations(ctx.turn.tenant_id) if c.conversation_id in wanted}
        return cards.subscriptions_card(ctx, conversation_id=ctx.turn.conversation_id, subscriptions=subs,
                                        nonce=self._nonce(), basis=basis_of(subs), error=error, places=places)

    async def _subs_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        return Reply(ctx.t("card.alerts.title"), await self._subs_card(ctx))

    async def _stale(self, ctx: Ctx, data: Mapping[str, Any], state: Any, fresh: dict[str, Any],
                     already_done: bool) -> Reply | None:
        """The out-of-date answer when the card's basis no longer matches and this press is not a resubmit of
        the change that made the state what it is (that one is replayed by the ledger)."""
        if data.get("basis") != basis_of(state) and not already_done:
            return Reply(ctx.t("card.out_of_date"), cards.out_of_date_card(ctx, fresh=fresh))
        return None

    async def _subs_save(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        raw = data.get("kinds")
        if not isinstance(raw, str):
            raise CardInputError(ctx.t("card.tampered"))
        try:
            kinds = tuple(AlertKind(k.strip()) for k in raw.split(",") if k.strip())
        except ValueError:
            raise CardInputError(ctx.t("card.tampered")) from None
        if not kinds:
            return Reply(ctx.t("card.tampered"), await self._subs_card(ctx, ctx.t("card.tampered")))
        subs = await self._ledger.subscriptions(ctx.turn.tenant_id)
        mine = next((x for x in subs if x.conversation_id == ctx.turn.conversation_id), None)
        done = mine is not None and mine.enabled and set(mine.kinds) == set(kinds)
        stale = await self._stale(ctx, data, subs, await self._subs_card(ctx), done)
        if stale:
            return stale
        await self._ledger.subscribe(ctx.turn.tenant_id, ctx.turn.conversation_id, kinds, actor=ctx.turn.user_id,
                                     key=f"card:{data['nonce']}")
        names = [ctx.t(f"alert_kind.{k.value}") for k in AlertKind if k in kinds]
        return Reply(ctx.t("subscribe.done", kinds=", ".join(names)), await self._subs_card(ctx))

    async def _subs_stop(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        subs = await self._ledger.subscriptions(ctx.turn.tenant_id)
        done = all(x.conversation_id != ctx.turn.conversation_id for x in subs)
        stale = await self._stale(ctx, data, subs, await self._subs_card(ctx), done)
        if stale:
            return stale
        try:
            await self._ledger.unsubscribe(ctx.turn.tenant_id, ctx.turn.conversation_id, actor=ctx.turn.user_id,
                                           key=f"card:{data['nonce']}")
        except NotFound:
            return Reply(ctx.t("error.not_found.subscription"), await self._subs_card(ctx))
        return Reply(ctx.t("unsubscribe.done"), await self._subs_card(ctx))

    async def _roles_card(self, ctx: Ctx, error: str | None = None) -> dict[str, Any]:
        grants = await self._ledger.roles(ctx.turn.tenant_id)
        role = ctx.t(f"role.{ctx.role.value}") if ctx.role else ctx.t("role.none")
        viewer = (ctx.turn.user_name or "-", ctx.turn.user_id or "-", role)
        return cards.roles_card(ctx, grants=grants, nonce=self._nonce(), basis=basis_of(grants), error=error,
                                bootstrap_note=not any(g.role is Role.ADMIN for g in grants), viewer=viewer)

    async def _roles_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        return Reply(ctx.t("roles.header"), await self._roles_card(ctx))

    async def _roles_grant(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        user, role = data.get("user"), data.get("role")
        if not isinstance(user, str) or not _OBJECT_ID.fullmatch(user.strip()) or role not in ("admin", "reader"):
            message = ctx.t("card.tampered")
            return Reply(message, await self._roles_card(ctx, message))
        user = user.strip()
        grants = await self._ledger.roles(ctx.turn.tenant_id)
        done = any(g.user_id == user and g.role.value == role for g in grants)
        stale = await self._stale(ctx, data, grants, await self._roles_card(ctx), done)
        if stale:
            return stale
        await self._ledger.grant_role(ctx.turn.tenant_id, user, Role(role), actor=ctx.turn.user_id,
                                      key=f"card:{data['nonce']}", display_name=user)
        return Reply(ctx.t("grant.done", name=user, role=ctx.t(f"role.{role}")), await self._roles_card(ctx))

    async def _roles_revoke(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        user = data.get("user_id")
        if not isinstance(user, str) or not _OBJECT_ID.fullmatch(user):
            raise CardInputError(ctx.t("card.tampered"))
        grants = await self._ledger.roles(ctx.turn.tenant_id)
        name = next((g.display_name or g.user_id for g in grants if g.user_id == user), user)
        done = all(g.user_id != user for g in grants)
        stale = await self._stale(ctx, data, grants, await self._roles_card(ctx), done)
        if stale:
            return stale
        try:
            await self._ledger.revoke_role(ctx.turn.tenant_id, user, actor=ctx.turn.user_id,
                                           key=f"card:{data['nonce']}")
        except NotFound:
            return Reply(ctx.t("error.not_found.role", name=name), await self._roles_card(ctx))
        return Reply(ctx.t("revoke.done", name=name), await self._roles_card(ctx))

    async def _currency_card(self, ctx: Ctx, error: str | None = None) -> dict[str, Any]:
        account = await self._ledger.get_account(ctx.turn.tenant_id)
        locked = account.entry_count > 0
        return cards.currency_card(ctx, currency=account.currency, locked=locked, nonce=self._nonce(),
                                   basis=basis_of([account.currency, locked]), error=error)

    async def _currency_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        return Reply(ctx.t("currency.show", currency=ctx.currency), await self._currency_card(ctx))

    async def _currency_save(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise CardInputError(ctx.t("card.tampered"))
        account = await self._ledger.get_account(ctx.turn.tenant_id)
        state = [account.currency, account.entry_count > 0]
        stale = await self._stale(ctx, data, state, await self._currency_card(ctx),
                                  account.currency == code.strip().upper())
        if stale:
            return stale
        try:
            await self._ledger.set_currency(ctx.turn.tenant_id, code, actor=ctx.turn.user_id,
                                            key=f"card:{data['nonce']}")
        except (InvalidCurrency, CurrencyLocked) as error:
            message = ledger_error_message(error, ctx.language, currency=ctx.currency, locale=ctx.locale)
            return Reply(message, await self._currency_card(ctx, message))
        return Reply(ctx.t("currency.changed", currency=code.strip().upper()), await self._currency_card(ctx))


class Messenger(Protocol):
    """Sends a card to a saved conversation (an approval card to another admin's personal chat)."""

    async def send_card(self, reference: Mapping[str, Any], card: dict[str, Any], text: str) -> None: ...


class CardActions(_Admin):
    def __init__(self, ledger: Ledger, *, clock: Clock = utc_now, nonces: Callable[[], str] = new_nonce,
                 approval_threshold: Decimal | None = None, messenger: Messenger | None = None,
                 bootstrap_admins: tuple[str, ...] = ()) -> None:
        self._ledger = ledger
        self._clock = clock
        self._nonce = nonces
        self._threshold = approval_threshold
        self._messenger = messenger
        self._bootstrap = bootstrap_admins
        self._handlers: Mapping[str, Callable[[Ctx, Mapping[str, Any]], Awaitable[Reply]]] = {
            "balance": self._balance, "add_funds.open": self._add_open, "add_funds.review": self._add_review,
            "add_funds.confirm": self._add_confirm, "add_funds.approve": self._decide,
            "add_funds.reject": self._decide, "recharge.open": self._recharge_open,
            "recharge.save": self._recharge_save, "alerts.open": self._alerts_open, "alerts.save": self._alerts_save,
            "history.page": self._history_page, "usage.show": self._usage_show, "help": self._help,
            "cancel": self._cancel,
            "subscriptions.open": self._subs_open, "subscriptions.save": self._subs_save,
            "subscriptions.stop": self._subs_stop, "roles.open": self._roles_open, "roles.grant": self._roles_grant,
            "roles.revoke": self._roles_revoke, "currency.open": self._currency_open,
            "currency.save": self._currency_save,
        }
        if set(self._handlers) != set(VERBS):
            raise RuntimeError(f"card verbs and handlers disagree: {sorted(set(self._handlers) ^ set(VERBS))}")

    @property
    def verbs(self) -> frozenset[str]:
        return frozenset(self._handlers)

    async def handle(self, ctx: Ctx, verb: str, data: Mapping[str, Any]) -> Reply:
        spec = VERBS.get(verb)
        if spec is None:
            return self.refusal(ctx, ctx.t("card.unknown_button"))
        if spec.capability is not None and not allows(ctx.role, spec.capability):
            return self.refusal(ctx, ctx.t(denied_key(spec.capability)))
        if spec.needs_nonce and not (isinstance(data.get("nonce"), str) and _NONCE.fullmatch(data["nonce"])):
            return self.refusal(ctx, ctx.t("card.tampered"))
        try:
            return await self._handlers[verb](ctx, data)
        except CardInputError as error:
            return self.refusal(ctx, error.message)

    async def card_for(self, ctx: Ctx, verb: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The card a verb opens, when the caller's role allows it (None otherwise: no card, no refusal)."""
        spec = VERBS[verb]
        if spec.capability is not None and not allows(ctx.role, spec.capability):
            return None
        return (await self._handlers[verb](ctx, data)).card

    def refusal(self, ctx: Ctx, message: str) -> Reply:
        """A refusal answered as a card (Action.Execute needs one) and as text (Action.Submit posts it)."""
        return Reply(message, cards.notice_card(ctx, message=message, tone="attention"))

    # --- reading ----------------------------------------------------------------------------------------------
    async def _balance(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        now = self._clock()
        view = ctx.view if ctx.view is not None else await self._ledger.account_view(ctx.turn.tenant_id, now=now)
        account, recharge, thresholds = view.account, view.recharge, view.alert_settings.thresholds
        f, amount = reports.view_forecast(view, now)
        line = None
        if f.next_recharge_on is not None and amount is not None:
            line = ctx.t("forecast.next_recharge", amount=ctx.money(amount), date=ctx.date(f.next_recharge_on))
        elif f.zero_on is not None:
            line = ctx.t("forecast.zero", date=ctx.date(f.zero_on))
        card = cards.balance_card(ctx, account=account, recharge=recharge,
                                  status=cards.balance_status(account.balance, recharge, thresholds),
                                  last_recharge=view.last_recharge, expiring=list(view.expiring), forecast_line=line)
        return Reply(ctx.t("balance.reply", balance=ctx.money(account.balance)), card)

    async def _history_page(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        before = _optional_int(ctx, data.get("before"))
        after = _optional_int(ctx, data.get("after"))
        if after is not None:
            before = after + HISTORY_PAGE + 1     # seqs have no gaps: the page just newer than `after`
        page = await self._ledger.history(ctx.turn.tenant_id, limit=HISTORY_PAGE, before=before)
        count = (await self._ledger.get_account(ctx.turn.tenant_id)).entry_count
        newest = page.items[0].seq if page.items else 0
        card = cards.history_card(ctx, entries=page.items, older=page.older, has_newer=newest < count)
        return Reply(ctx.t("history.header", count=len(page.items)), card)

    async def _usage_show(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        period = data.get("period", commands.USAGE_DEFAULT)
        if period not in PERIODS:
            raise CardInputError(ctx.t("card.tampered"))
        s = await reports.usage_summary(self._ledger, ctx.turn.tenant_id, period, self._clock())
        card = cards.usage_card(ctx, currency=ctx.currency, period=period, total=s.total, calls=s.calls,
                                by_type=s.by_type, by_user=s.by_user)
        return Reply(ctx.t("usage.total", period=ctx.t(f"period.{period}"), total=ctx.money(s.total), count=s.calls),
                     card)

    async def _help(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        rows = [(form.usage, ctx.t(form.summary, **commands.HELP_PARAMS))
                for c in commands.COMMANDS for form in c.forms]
        return Reply(commands.help_text(ctx.language, role=ctx.role), cards.help_card(ctx, commands=rows))

    async def _cancel(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        return Reply(ctx.t("card.cancelled.text"), cards.cancelled_card(ctx))

    # --- adding funds -----------------------------------------------------------------------------------------
    async def _add_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        return Reply(ctx.t("label.add_funds"), cards.add_funds_form(ctx, currency=ctx.currency, nonce=self._nonce()))

    async def _add_review(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        nonce, memo = data["nonce"], _memo(ctx, data.get("memo"))
        try:
            amount = _money(ctx, data.get("amount"))
        except CardInputError as error:
            return Reply(error.message, cards.add_funds_form(ctx, currency=ctx.currency, nonce=nonce, memo=memo,
                                                             error=error.message))
        balance = (await self._ledger.get_account(ctx.turn.tenant_id)).balance
        card = cards.add_funds_confirm_card(ctx, currency=ctx.currency, amount=amount, memo=memo,
                                            balance=balance, nonce=nonce)
        return Reply(ctx.t("card.review_add", amount=ctx.money(amount)), card)

    async def _add_confirm(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        amount, memo = _money(ctx, data.get("amount")), _memo(ctx, data.get("memo"))
        return await self.add_or_request(ctx, amount, memo, key=f"card:{data['nonce']}")

    def threshold_minor(self, currency: str) -> int | None:
        """The approval threshold in minor units of `currency` (None: no approvals needed)."""
        if self._threshold is None:
            return None
        return int((self._threshold.scaleb(precision(currency))).to_integral_value(rounding=ROUND_FLOOR))

    async def add_or_request(self, ctx: Ctx, amount: int, memo: str, *, key: str) -> Reply:
        """Add funds at once, or above the approval threshold ask the other admins to approve. Used by the
        card's Confirm and by the typed `add` command, which is itself the confirmation."""
        threshold = self.threshold_minor(ctx.currency)
        tenant = ctx.turn.tenant_id
        if threshold is None or amount <= threshold:
            posting = await self._ledger.add_funds(tenant, amount, actor=ctx.turn.user_id, key=key, memo=memo)
            card = cards.add_funds_receipt_card(ctx, posting=posting, added_by=ctx.turn.user_name or ctx.turn.user_id)
            text_key = "add.replayed" if posting.replayed else "add.done"
            return Reply(ctx.t(text_key, amount=ctx.money(posting.entry.amount), balance=ctx.money(posting.balance)),
                         card)
        try:
            await self._ledger.get_approval(tenant, policy.approval_id(tenant, key))
            fresh = False                       # a retry of the same request: the admins were asked already
        except NotFound:
            fresh = True
        approval = await self._ledger.request_approval(tenant, amount, actor=ctx.turn.user_id, key=key, memo=memo)
        text = ctx.t("add.needs_approval", amount=ctx.money(amount), threshold=ctx.money(threshold))
        if fresh:
            reached = await self._ask_admins(ctx, approval, threshold)
            if not reached:
                text += "\n\n" + ctx.t("card.approval_unreachable")
        return Reply(text, cards.approval_pending_card(ctx, amount=amount, memo=memo, threshold=threshold))

    async def _ask_admins(self, ctx: Ctx, approval: Any, threshold: int) -> int:
        """Send the approval card to every other admin's personal chat with the bot; returns how many."""
        if self._messenger is None:
            return 0
        tenant = ctx.turn.tenant_id
        grants = await self._ledger.roles(tenant)
        admins = {g.user_id for g in grants if g.role is Role.ADMIN} or set(self._bootstrap)
        admins.discard(ctx.turn.user_id)
        balance = (await self._ledger.get_account(tenant)).balance
        card = cards.approval_card(ctx, approval_id=approval.approval_id,
                                   requested_by=ctx.turn.user_name or ctx.turn.user_id,
                                   requested_at=approval.requested_at, amount=approval.amount, memo=approval.memo,
                                   balance=balance, threshold=threshold, nonce=self._nonce())
        text = ctx.t("card.approval.title", amount=ctx.money(approval.amount))
        sent = 0
        for ref in await self._ledger.conversations(tenant):
            conversation = ref.reference.get("conversation") or {}
            user = ref.reference.get("user") or {}
            if conversation.get("conversationType", "personal") == "personal" and user.get("aadObjectId") in admins:
                try:
                    await self._messenger.send_card(ref.reference, card, text)
                    sent += 1
                except Exception:
                    log.warning("approval %s: could not reach conversation %s", approval.approval_id,
                                ref.conversation_id, exc_info=True)
        return sent

    async def _decide(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        approval_id = data.get("approval")
        if not isinstance(approval_id, str) or not approval_id or len(approval_id) > 64:
            raise CardInputError(ctx.t("card.tampered"))
        approve = data.get("verb") == "add_funds.approve"
        decision = await self._ledger.decide_approval(ctx.turn.tenant_id, approval_id, approve=approve,
                                                      actor=ctx.turn.user_id, key=f"card:{data['nonce']}")
        a = decision.approval
        names = {g.user_id: g.display_name for g in await self._ledger.roles(ctx.turn.tenant_id) if g.display_name}
        card = cards.approval_decided_card(
            ctx, approved=approve, requested_by=names.get(a.requested_by, a.requested_by),
            decided_by=names.get(a.decided_by, ctx.turn.user_name or a.decided_by),
            decided_at=a.decided_at or self._clock(), amount=a.amount, memo=a.memo,
            balance=decision.posting.balance if decision.posting else None)
        status = ctx.t(f"approval.status.{a.status.value}")
        return Reply(ctx.t("card.approval_decided_text", amount=ctx.money(a.amount), status=status), card)

    # --- settings ---------------------------------------------------------------------------------------------
    async def _recharge_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        current = await self._ledger.recharge_settings(ctx.turn.tenant_id)
        return Reply(ctx.t("label.edit_recharge"), self._recharge_form(ctx, current))

    def _recharge_form(self, ctx: Ctx, settings: RechargeSettings, error: str | None = None) -> dict[str, Any]:
        return cards.recharge_form(ctx, currency=ctx.currency, settings=settings, nonce=self._nonce(),
                                   basis=basis_of(settings), error=error)

    async def _recharge_save(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        tenant = ctx.turn.tenant_id
        current = await self._ledger.recharge_settings(tenant)
        try:
            wanted = replace(current, enabled=_toggle(ctx, data.get("enabled")),
                             amount=_money(ctx, data.get("amount"), allow_zero=True),
                             trigger=_money(ctx, data.get("trigger"), allow_zero=True),
                             monthly_cap=_money(ctx, data.get("cap"), optional=True))
        except CardInputError as error:
            return Reply(error.message, self._recharge_form(ctx, current, error.message))
        if data.get("basis") != basis_of(current) and wanted != current:
            # someone changed the settings since this form was built (a resubmit of this very save finds its
            # own result as the current settings and is replayed below)
            return Reply(ctx.t("card.out_of_date"), cards.out_of_date_card(ctx, fresh=self._recharge_form(ctx, current)))
        try:
            change = await self._ledger.set_recharge_settings(tenant, wanted, actor=ctx.turn.user_id,
                                                              key=f"card:{data['nonce']}")
        except InvalidSettings as error:
            message = ledger_error_message(error, ctx.language, currency=ctx.currency, locale=ctx.locale)
            return Reply(message, self._recharge_form(ctx, current, message))
        saved = RechargeSettings.from_dict(change.value)
        return Reply(ctx.t("recharge.saved", amount=ctx.money(saved.amount), trigger=ctx.money(saved.trigger))
                     if saved.enabled else ctx.t("recharge.disabled"),
                     cards.recharge_saved_card(ctx, settings=saved, replayed=change.replayed))

    async def _alerts_open(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        current = await self._ledger.alert_settings(ctx.turn.tenant_id)
        return Reply(ctx.t("card.alerts.title"), self._alerts_form(ctx, current))

    def _alerts_form(self, ctx: Ctx, settings: AlertSettings, error: str | None = None) -> dict[str, Any]:
        return cards.alerts_form(ctx, currency=ctx.currency, settings=settings, nonce=self._nonce(),
                                 basis=basis_of(settings), error=error)

    async def _alerts_save(self, ctx: Ctx, data: Mapping[str, Any]) -> Reply:
        tenant = ctx.turn.tenant_id
        current = await self._ledger.alert_settings(tenant)
        try:
            values = [_money(ctx, data.get(name), optional=True) for name in THRESHOLD_INPUTS]
            days = _optional_int(ctx, data.get("forecast_days"))
            wanted = AlertSettings(tuple(v for v in values if v is not None),
                                   current.forecast_days if days is None else days)
        except CardInputError as error:
            return Reply(error.message, self._alerts_form(ctx, current, error.message))
        normalised = AlertSettings(tuple(sorted(set(wanted.thresholds), reverse=True)), wanted.forecast_days)
        if data.get("basis") != basis_of(current) and normalised != current:
            return Reply(ctx.t("card.out_of_date"), cards.out_of_date_card(ctx, fresh=self._alerts_form(ctx, current)))
        try:
            change = await self._ledger.set_alert_settings(tenant, wanted, actor=ctx.turn.user_id,
                                                           key=f"card:{data['nonce']}")
        except InvalidSettings as error:
            message = ledger_error_message(error, ctx.language, currency=ctx.currency, locale=ctx.locale)
            return Reply(message, self._alerts_form(ctx, current, message))
        saved = AlertSettings.from_dict(change.value)
        return Reply(ctx.t("card.alerts_saved_text"), cards.alerts_saved_card(ctx, settings=saved, replayed=change.replayed))


# --- field parsing (every value from a card is untrusted) ---------------------------------------------------------

def _money(ctx: Ctx, value: Any, *, allow_zero: bool = False, optional: bool = False) -> Any:
    """Major units from a card field to minor units of the account currency."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise CardInputError(_amount_message(ctx, "empty", ""))
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise CardInputError(ctx.t("card.tampered"))
    try:
        return to_minor(value.strip() if isinstance(value, str) else value, ctx.currency, allow_zero=allow_zero)
    except InvalidAmount as error:
        if isinstance(value, str) and error.reason in ("not_a_number", "too_precise"):
            # Input.Number sends plain decimals; a text field may hold what the person typed in their locale
            # ("12,50", "1.250,50 kr."): read it the way the typed `add` command would
            try:
                return parse_amount(value, currency=ctx.currency, locale=ctx.locale, allow_zero=allow_zero)
            except AmountError:
                pass
        raise CardInputError(_amount_message(ctx, error.reason, str(value)[:40])) from None


def _amount_message(ctx: Ctx, reason: str, text: str) -> str:
    key = f"amount.{reason}"
    if key not in MESSAGES:
        return ctx.t("card.tampered")
    return ctx.t(key, text=text, example=major_text(125050 * 10 ** precision(ctx.currency) // 100, ctx.currency),
                 currency=ctx.currency, places=precision(ctx.currency), max=f"{MAX_MAJOR_UNITS:,}")


def _memo(ctx: Ctx, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CardInputError(ctx.t("card.tampered"))
    memo = " ".join(value.split())
    if len(memo) > commands.MAX_MEMO:
        raise CardInputError(ctx.t("card.memo_too_long", max=commands.MAX_MEMO))
    return memo


def _toggle(ctx: Ctx, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise CardInputError(ctx.t("card.tampered"))


def _optional_int(ctx: Ctx, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CardInputError(ctx.t("card.tampered"))
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        number = int(value)
    else:
        raise CardInputError(ctx.t("card.tampered"))
    if not 0 < number < 10**12:
        raise CardInputError(ctx.t("card.tampered"))
    return number
