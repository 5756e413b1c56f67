"""Rows of the PostgreSQL store as the contract's value types (times in UTC, JSON as dicts)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from ..model import (Alert, AlertKind, AlertStatus, Approval, ApprovalStatus, AuditRecord, ConversationRef, Entry,
                     EntryKind, Role, RoleGrant, Subscription)

ALERT_COLUMNS = ("alert_id, tenant_id, kind, key, created_at, payload, destinations, delivered, skipped, status, "
                 "attempts, next_attempt_at, lease_owner, lease_until, last_error")
ENTRY_COLUMNS = "seq, tenant_id, kind, amount, balance_after, actor, key, at, memo, reference, details"
APPROVAL_COLUMNS = ("approval_id, tenant_id, amount, memo, requested_by, requested_at, status, decided_by, "
                    "decided_at, entry_seq")


def as_utc(value: datetime | None) -> datetime | None:
    """A time read from PostgreSQL, in UTC (the contract's values compare equal across backends)."""
    return value.astimezone(timezone.utc) if value is not None else None


def as_entry(r: Mapping[str, Any]) -> Entry:
    return Entry(r["seq"], r["tenant_id"], EntryKind(r["kind"]), r["amount"], r["balance_after"], r["actor"],
                 r["key"], as_utc(r["at"]), r["memo"], r["reference"], dict(r["details"] or {}))


def as_alert(r: Mapping[str, Any]) -> Alert:
    return Alert(r["alert_id"], r["tenant_id"], AlertKind(r["kind"]), r["key"], as_utc(r["created_at"]),
                 dict(r["payload"] or {}), tuple(r["destinations"]), tuple(r["delivered"]), tuple(r["skipped"]),
                 AlertStatus(r["status"]), r["attempts"], as_utc(r["next_attempt_at"]), r["lease_owner"],
                 as_utc(r["lease_until"]), r["last_error"])


def as_approval(r: Mapping[str, Any]) -> Approval:
    return Approval(r["approval_id"], r["tenant_id"], r["amount"], r["memo"], r["requested_by"],
                    as_utc(r["requested_at"]), ApprovalStatus(r["status"]), r["decided_by"], as_utc(r["decided_at"]),
                    r["entry_seq"])


def as_subscription(r: Mapping[str, Any]) -> Subscription:
    return Subscription(r["conversation_id"], tuple(AlertKind(k) for k in r["kinds"]), r["created_by"],
                        as_utc(r["created_at"]), r["enabled"], r["disabled_reason"])


def as_grant(r: Mapping[str, Any]) -> RoleGrant:
    return RoleGrant(r["user_id"], Role(r["role"]), r["granted_by"], as_utc(r["granted_at"]), r["display_name"])


def as_audit(r: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(r["seq"], r["tenant_id"], as_utc(r["at"]), r["actor"], r["action"], r["key"],
                       dict(r["details"] or {}))


def as_conversation(r: Mapping[str, Any]) -> ConversationRef:
    return ConversationRef(r["conversation_id"], r["tenant_id"], dict(r["reference"]), as_utc(r["updated_at"]))


