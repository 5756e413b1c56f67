"""The credits ledger: value types, errors, pure policy, the `Ledger` contract and its backends.

Imports neither `bot`, `cards` nor `botbuilder` (a test guards that)."""

from .clock import Clock, FakeClock, utc_now
from .errors import (AccountNotFound, ApprovalClosed, CurrencyLocked, CurrencyMismatch, IdempotencyConflict,
                     InsufficientFunds, InvalidUsage,
                     InvalidAmount, InvalidCurrency, InvalidSettings, LeaseLost, LedgerError, NotFound,
                     SelfApproval, StoreCorrupt, StoreLocked)
from .factory import open_ledger
from .ledger import DEFAULT_MAX_ATTEMPTS, Ledger
from .model import (Account, Alert, AlertKind, AlertSettings, AlertStatus, Approval, ApprovalDecision,
                    ApprovalStatus, AuditRecord, BatchResult, ConversationRef, Entry, EntryKind, Lot, Page, Posting, RechargeSettings, Role, RoleGrant,
                    RowOutcome, RowStatus, SettingsChange, Subscription, SYSTEM_ACTOR, UsageRecord, VerifyReport)

__all__ = [name for name in dir() if not name.startswith("_")]
