"""Adding funds: the form, the confirmation, the receipt, and the approval cards for amounts above the
approval threshold.

The flow: `add_funds.open` -> `add_funds_form` -> `add_funds.review` (the server validates amount and memo) ->
`add_funds_confirm_card` -> `add_funds.confirm` (moves money, keyed by the nonce) -> `add_funds_receipt_card`;
or, above the approval threshold, `approval_pending_card` for the requester and `approval_card` for the other
admins -> `add_funds.approve` / `add_funds.reject` -> `approval_decided_card`. The nonce minted for the form
travels through the review into the confirmation, so reviewing twice and confirming both still adds once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.model import Posting
from storage.money import max_minor

from .elements import MEMO_MAX_LENGTH, card, execute, facts, header, major_text, money_input, notice, text
from .texts import Texts


def amount_error(texts: Texts, currency: str) -> str:
    """The client-side error of an amount field: more than zero, at most the ledger's bound."""
    return texts.t("card.input.amount_error", max=texts.money(max_minor(currency)))


def add_funds_form(texts: Texts, *, currency: str, nonce: str, amount: int | None = None, memo: str = "",
                   error: str | None = None) -> dict[str, Any]:
    """Amount (major units, required) and an optional memo (at most `MEMO_MAX_LENGTH` characters). `amount`
    (minor units) and `memo` prefill it when the server sends the form back with `error`, the reason it
    refused what was typed."""
    body: list[dict[str, Any]] = [*header(texts, texts.t("label.add_funds"))]
    if error:
        body.append(notice(error, tone="attention"))
    body += [
        text(texts.t("card.add_funds.intro"), isSubtle=True),
        money_input("amount", label=texts.t("card.input.money_label", label=texts.t("card.fact.amount"),
                                            currency=currency),
                    currency=currency, value=amount, required=True, error=amount_error(texts, currency)),
        {"type": "Input.Text", "id": "memo", "label": texts.t("label.memo"), "value": memo, "isMultiline": True,
         "maxLength": MEMO_MAX_LENGTH, "placeholder": texts.t("card.add_funds.memo_placeholder"),
         "isRequired": False, "errorMessage": texts.t("card.input.memo_error", max=MEMO_MAX_LENGTH)},
    ]
    actions = [
        execute("add_funds.review", texts.t("card.button.continue"), nonce=nonce, style="positive",
                with_inputs=True),
        execute("cancel", texts.t("label.cancel"), data={"of": "add_funds"}),
    ]
    return card(texts, body, actions, summary=texts.t("label.add_funds"))


def add_funds_confirm_card(texts: Texts, *, currency: str, amount: int, memo: str, balance: int, nonce: str,
                           approval_threshold: int | None = None) -> dict[str, Any]:
    """"Add $250.00?" with the amount, memo, balance now and after; Confirm (carries the nonce, amount and memo:
    the nonce is the idempotency key, so an edited amount under the same nonce is a conflict, never a second
    add) / Cancel. When `approval_threshold` is given and the amount is above it, says that a second admin must
    approve."""
    needs_approval = approval_threshold is not None and amount > approval_threshold
    money = texts.money(amount)
    pairs = [(texts.t("card.fact.amount"), money)]
    if memo:
        pairs.append((texts.t("label.memo"), memo))
    pairs += [(texts.t("card.fact.balance_now"), texts.money(balance)),
              (texts.t("card.fact.balance_after"), texts.money(balance + amount))]
    body: list[dict[str, Any]] = [*header(texts, texts.t("card.add_funds.confirm_title", amount=money)),
                                  facts(pairs)]
    if needs_approval:
        assert approval_threshold is not None
        body.append(notice(texts.t("card.add_funds.approval_notice", threshold=texts.money(approval_threshold))))
    body.append(text(texts.t("card.add_funds.expiry_note"), isSubtle=True, size="Small"))
    confirm_title = texts.t("card.button.request_approval" if needs_approval else "card.button.confirm_add",
                            amount=money)
    actions = [
        execute("add_funds.confirm", confirm_title, nonce=nonce, style="positive",
                data={"amount": major_text(amount, currency), "memo": memo}),
        execute("cancel", texts.t("label.cancel"), data={"of": "add_funds"}),
    ]
    return card(texts, body, actions, summary=texts.t("card.add_funds.confirm_title", amount=money))


def add_funds_receipt_card(texts: Texts, *, posting: Posting, added_by: str) -> dict[str, Any]:
    """After adding (by the form, the `add` command or an approval): amount, memo, balance after, who, when;
    says so when this was a replay ("already done, nothing more"). `added_by`: display name of the actor."""
    entry = posting.entry
    money = texts.money(entry.amount)
    body: list[dict[str, Any]] = [
        *header(texts, texts.t("card.receipt.title", amount=money), color="good"),
    ]
    if posting.replayed:
        body.append(notice(texts.t("done.replayed"), tone="accent"))
    pairs = [(texts.t("card.fact.amount"), money)]
    if entry.memo:
        pairs.append((texts.t("label.memo"), entry.memo))
    pairs += [(texts.t("card.fact.balance_after"), texts.money(posting.balance)),
              (texts.t("card.fact.added_by"), added_by),
              (texts.t("card.fact.when"), texts.date(entry.at))]
    body.append(facts(pairs))
    actions = [execute("balance", texts.t("card.button.balance")),
               execute("history.page", texts.t("card.button.history"))]
    return card(texts, body, actions, summary=texts.t("add.done", amount=money,
                                                      balance=texts.money(posting.balance)))


def approval_card(texts: Texts, *, approval_id: str, requested_by: str, requested_at: datetime, amount: int,
                  memo: str, balance: int, threshold: int, nonce: str) -> dict[str, Any]:
    """Sent to the other admins: who asks to add how much, why, and the balance now and after. Approve / Reject
    both carry the approval id and the nonce (the key of the add that Approve makes)."""
    money = texts.money(amount)
    pairs = [(texts.t("card.fact.requested_by"), requested_by),
             (texts.t("card.fact.when"), texts.date(requested_at)),
             (texts.t("card.fact.amount"), money)]
    if memo:
        pairs.append((texts.t("label.memo"), memo))
    pairs += [(texts.t("card.fact.balance_now"), texts.money(balance)),
              (texts.t("card.fact.balance_after"), texts.money(balance + amount))]
    body = [*header(texts, texts.t("card.approval.title", amount=money)),
            text(texts.t("card.approval.intro", threshold=texts.money(threshold))),
            facts(pairs)]
    data = {"approval": approval_id}
    actions = [execute("add_funds.approve", texts.t("card.button.approve"), nonce=nonce, data=data,
                       style="positive"),
               execute("add_funds.reject", texts.t("card.button.reject"), nonce=nonce, data=data,
                       style="destructive")]
    return card(texts, body, actions, summary=texts.t("card.approval.title", amount=money))


def approval_pending_card(texts: Texts, *, amount: int, memo: str, threshold: int) -> dict[str, Any]:
    """The requester's confirmation turns into this: nothing is added until another admin approves."""
    money = texts.money(amount)
    pairs = [(texts.t("card.fact.amount"), money)]
    if memo:
        pairs.append((texts.t("label.memo"), memo))
    body = [*header(texts, texts.t("card.approval.pending_title")),
            text(texts.t("add.needs_approval", amount=money, threshold=texts.money(threshold))),
            facts(pairs)]
    return card(texts, body, [execute("balance", texts.t("card.button.balance"))],
                summary=texts.t("card.approval.pending_title"))


def approval_decided_card(texts: Texts, *, approved: bool, requested_by: str, decided_by: str,
                          decided_at: datetime, amount: int, memo: str,
                          balance: int | None = None) -> dict[str, Any]:
    """The approval card after a decision (for the approvers; also what a second press on an old approval card
    shows). `balance`: the balance after the add, when approved."""
    money = texts.money(amount)
    title = texts.t("card.approval.approved_title" if approved else "card.approval.rejected_title", amount=money)
    pairs = [(texts.t("card.fact.requested_by"), requested_by),
             (texts.t("card.fact.amount"), money)]
    if memo:
        pairs.append((texts.t("label.memo"), memo))
    pairs += [(texts.t("card.fact.decided_by"), decided_by), (texts.t("card.fact.when"), texts.date(decided_at))]
    if approved and balance is not None:
        pairs.append((texts.t("card.fact.balance_after"), texts.money(balance)))
    body = [*header(texts, title, color="good" if approved else "attention"), facts(pairs)]
    return card(texts, body, [execute("balance", texts.t("card.button.balance"))], summary=title)
