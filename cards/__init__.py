"""Adaptive Cards for the bot: pure functions from storage value types (and text through `Texts`) to plain
dicts, schema 1.5 plus Teams' `msteams` width and chart extensions. `cards.verbs.VERB_TABLE` is the one table of
the verbs their buttons send. This package imports only `storage`, the standard library and Babel, never `bot`.
"""

from .admin import currency_card, roles_card, subscriptions_card
from .alerts import alert_card, alert_reference
from .balance import STATUSES, Status, balance_card, balance_status
from .funds import (add_funds_confirm_card, add_funds_form, add_funds_receipt_card, approval_card,
                    approval_decided_card, approval_pending_card)
from .general import cancelled_card, help_card, notice_card, out_of_date_card, welcome_card
from .history import history_card
from .settings import alerts_form, alerts_saved_card, recharge_form, recharge_saved_card
from .texts import Texts
from .usage import usage_card
from .verbs import VERB_TABLE, VERBS, Verb

__all__ = [
    "STATUSES", "Status", "Texts", "VERBS", "VERB_TABLE", "Verb",
    "add_funds_confirm_card", "add_funds_form", "add_funds_receipt_card", "alert_card", "alert_reference", "alerts_form",
    "alerts_saved_card", "approval_card", "approval_decided_card", "approval_pending_card", "balance_card",
    "balance_status", "cancelled_card", "currency_card", "help_card", "history_card", "notice_card", "out_of_date_card",
    "recharge_form", "recharge_saved_card", "roles_card", "subscriptions_card", "usage_card", "welcome_card",
]
