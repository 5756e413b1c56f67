"""Business errors of the ledger, all under one root.

Every error here is an expected outcome a user can be told about in plain words (the bot maps each class to a
polite, specific reply). Anything that is *not* a `LedgerError` is a crash: logged with an incident id, never
shown to the user. Errors carry data as attributes, so callers never need to parse `str(exc)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Approval


class LedgerError(Exception):
    """Root of every expected ledger failure. Raising one changes nothing in the store."""


class AccountNotFound(LedgerError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no account for tenant {tenant_id!r}")
        self.tenant_id = tenant_id


class InvalidAmount(LedgerError):
    """An amount that cannot be money here: not a number, not finite, not positive, too many decimals for
    the currency, or beyond the sanity bound. `reason` is a stable code the bot translates."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"invalid amount: {reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class InvalidUsage(LedgerError):
    """A usage row that cannot be recorded as it is (it comes from outside: Graph, a CSV export). `reason` is a
    stable code: `bad_usage_id` (empty, or in a namespace the ledger reserves), `bad_time` (not an aware
    datetime)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"invalid usage row: {reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


class InvalidCurrency(LedgerError):
    def __init__(self, code: str) -> None:
        super().__init__(f"not an ISO 4217 currency: {code!r}")
        self.code = code


class CurrencyMismatch(LedgerError):
    """Money in another currency than the account's. Never converted silently."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"account is in {expected}, amount is in {got}")
        self.expected = expected
        self.got = got


class CurrencyLocked(LedgerError):
    """The currency is fixed once the account has its first entry."""

    def __init__(self, currency: str) -> None:
        super().__init__(f"currency is already fixed to {currency}")
        self.currency = currency


class InsufficientFunds(LedgerError):
    """A manual debit that would take the balance below zero (usage may; people may not)."""

    def __init__(self, balance: int, requested: int) -> None:
        super().__init__(f"balance {balance} is less than {requested}")
        self.balance = balance
        self.requested = requested


class IdempotencyConflict(LedgerError):
    """The key was already used for a different operation or different arguments."""

    def __init__(self, key: str, operation: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for another {operation}")
        self.key = key
        self.operation = operation


class InvalidSettings(LedgerError):
    """Auto-recharge or alert settings that cannot work (for example a recharge amount of zero)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid settings: {reason}")
        self.reason = reason


class NotFound(LedgerError):
    """A named thing (alert, subscription, role grant) does not exist in this account."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"no {what} {ident!r}")
        self.what = what
        self.ident = ident


class ApprovalClosed(LedgerError):
    """The approval was already decided (approved or rejected); `approval` is it as it stands."""

    def __init__(self, approval: "Approval") -> None:
        super().__init__(f"approval {approval.approval_id} is already {approval.status.value}")
        self.approval = approval


class SelfApproval(LedgerError):
    """The admin who requested the funds may not decide their own request: it needs a second admin."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"approval {approval_id} must be decided by another admin than its requester")
        self.approval_id = approval_id


class LeaseLost(LedgerError):
    """An outbox alert is no longer leased to this worker (its lease expired and another claimed it)."""

    def __init__(self, alert_id: str, worker: str) -> None:
        super().__init__(f"alert {alert_id} is not leased to {worker}")
        self.alert_id = alert_id
        self.worker = worker


class StoreLocked(LedgerError):
    """Another live process holds this embedded store (TinyDB is single-process)."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"the store at {path} is in use by another process ({holder}); stop it, or hand work to it "
            "(for example through its admin endpoint), or use a PostgreSQL store for several processes"
        )
        self.path = path
        self.holder = holder


class StoreCorrupt(LedgerError):
    """The store on disk does not satisfy its invariants (reported by `verify()` or at open)."""
