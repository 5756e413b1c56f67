"""Copying a whole store from one backend into another (`python -m bot copy-store SRC DST`), verified.

Each backend exports an account as plain JSON-safe data and imports such an export raw (no rule runs again):

    {"format": 1, "tenant_id": str,
     "state":         storage.engine.BookState.to_dict()
     "entries":       [Entry.to_dict(), ...]                  oldest first (seq 1, 2, ...)
     "ops":           [{"key", "operation", "fingerprint", "result"}, ...]   the idempotency records
     "alerts":        [{**Alert.to_dict(), "n": creation number}, ...]     oldest first: (created_at, n)
     "audit":         [AuditRecord.to_dict(), ...]            oldest first
     "subscriptions": [Subscription.to_dict(), ...]           by conversation id
     "roles":         [RoleGrant.to_dict(), ...]              by user id
     "approvals":     [Approval.to_dict(), ...]               in the order they were requested
     "conversations": [ConversationRef.to_dict(), ...]        by conversation id
     "watermarks":    {source: iso time}}

The neutral op record. `result` is what TinyDB and PostgreSQL both store (the same encoding in both): for a
money operation (add_funds, adjust, record_usage, expire_lot) the compact posting
{"e": [entry seqs], "b": balance, "a": [alert ids], "x": recharge_blocked}, which a replay resolves against
the entries; for decide_approval {"approval": Approval dict, "posting": compact posting or None}; for
request_approval the Approval dict; for a settings change SettingsChange.to_dict() ({"value": ...}).
The reference model keeps full `Posting.to_dict()`s: it converts with `compact_result` / `expand_result`.
TinyDB does not store the operation name (its record is {"seq", "k", "f", "r"}); its export infers the name
from the shape of the result (`infer_operation`): PostgreSQL keeps it in its `operation` column, the reference
model compares it on a replay. The fingerprint already covers the operation, so a replay never depends on it.

`n`, the alert's creation number, is numbered per account in TinyDB and across the store in PostgreSQL: it only
orders, so the check compares the order of the alerts, never the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .ledger import Ledger

FORMAT = 1

_MONEY_OPERATIONS = {"funds_added": "add_funds", "adjustment": "adjust", "usage": "record_usage",
                     "expiry": "expire_lot"}


def check_export(data: Mapping[str, Any]) -> str:
    """The tenant of an export this code can import, else `ValueError`."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ValueError(f"not an account export of format {FORMAT}")
    tenant = data.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("the export has no tenant id")
    return tenant


def infer_operation(key: str, result: Mapping[str, Any], entry_kinds: Mapping[int, str]) -> str:
    """The operation an idempotency record was written by, from its stored result (see the module docstring)."""
    if "e" in result and "b" in result:
        seqs = result["e"]
        kind = entry_kinds.get(seqs[0]) if seqs else None
        if kind in _MONEY_OPERATIONS:
            return _MONEY_OPERATIONS[kind]
        if key.startswith("expiry:"):
            return "expire_lot"
    elif "approval" in result and "posting" in result:
        return "decide_approval"
    elif "approval_id" in result and "requested_by" in result:
        return "request_approval"
    elif isinstance(result.get("value"), Mapping):
        value = result["value"]
        names = set(value)
        if names == {"currency"}:
            return "set_currency"
        if "max_per_day" in names and "trigger" in names:
            return "set_recharge_settings"
        if "thresholds" in names:
            return "set_alert_settings"
        if "kinds" in names:
            return "subscribe"
        if names == {"conversation_id"}:
            return "unsubscribe"
        if "granted_by" in names:
            return "grant_role"
        if names == {"user_id", "role"}:
            return "revoke_role"
    raise ValueError(f"cannot tell which operation wrote the record of key {key!r}")


def _compact_posting(posting: Mapping[str, Any]) -> dict[str, Any]:
    return {"e": [e["seq"] for e in posting["entries"]], "b": posting["balance"], "a": list(posting["alert_ids"]),
            "x": posting.get("recharge_blocked")}


def _expand_posting(compact: Mapping[str, Any], entries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    return {"entries": [dict(entries[s]) for s in compact["e"]], "balance": compact["b"],
            "alert_ids": list(compact["a"]), "recharge_blocked": compact.get("x")}


def compact_result(operation: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """A reference-model result (full postings) in the neutral encoding (compact postings)."""
    if operation in _MONEY_OPERATIONS.values():
        return _compact_posting(result)
    if operation == "decide_approval":
        posting = result.get("posting")
        return {"approval": dict(result["approval"]),
                "posting": _compact_posting(posting) if posting is not None else None}
    return dict(result)


def expand_result(operation: str, result: Mapping[str, Any],
                  entries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The neutral encoding back into the reference model's (full postings, entries taken from `entries`)."""
    if operation in _MONEY_OPERATIONS.values():
        return _expand_posting(result, entries)
    if operation == "decide_approval":
        posting = result.get("posting")
        return {"approval": dict(result["approval"]),
                "posting": _expand_posting(posting, entries) if posting is not None else None}
    return dict(result)


def normalised(data: Mapping[str, Any]) -> dict[str, Any]:
    """An export with what may legitimately differ between two stores holding the same facts taken out: the
    alerts' creation numbers (their order stays: the list is oldest first) and the order of the op records."""
    out = dict(data)
    out["alerts"] = [{k: v for k, v in a.items() if k != "n"} for a in data.get("alerts", [])]
    out["ops"] = sorted((dict(o) for o in data.get("ops", [])), key=lambda o: o["key"])
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Which parts of two normalised exports differ (names only: no money or personal data in the report)."""
    found = []
    for part in sorted(set(a) | set(b)):
        if a.get(part) != b.get(part):
            left, right = a.get(part), b.get(part)
            if isinstance(left, list) and isinstance(right, list) and len(left) != len(right):
                found.append(f"{part}: {len(left)} in the source, {len(right)} in the copy")
            elif isinstance(left, list) and isinstance(right, list):
                first = next(i for i, (x, y) in enumerate(zip(left, right)) if x != y)
                found.append(f"{part}: item {first + 1} differs")
            else:
                found.append(f"{part} differs")
    return found


@dataclass
class CopyReport:
    accounts: int = 0
    entries: int = 0
    alerts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


Progress = Callable[[str, int, int], None]   # (tenant id, accounts done, accounts in all)


async def copy_store(src: Ledger, dst: Ledger, *, progress: Progress | None = None,
                     tenants: Sequence[str] | None = None) -> CopyReport:
    """Copy every account of `src` into `dst` (each in one atomic unit of `dst`), then check the copy: `dst`
    verifies, and each account exported again from `dst` equals its export from `src` (normalised). Raises
    `ValueError` when an account already exists in `dst` (nothing of that account is written)."""
    report = CopyReport()
    names = list(tenants) if tenants is not None else await src.tenants()
    exports: dict[str, dict[str, Any]] = {}
    for i, tenant in enumerate(names, start=1):
        data = await src.export_account(tenant)
        await dst.import_account(data)
        exports[tenant] = data
        report.accounts += 1
        report.entries += len(data["entries"])
        report.alerts += len(data["alerts"])
        if progress is not None:
            progress(tenant, i, len(names))
    verified = await dst.verify()
    report.problems.extend(f"verify: {p}" for p in verified.problems)
    copied = await dst.tenants()
    missing = sorted(set(names) - set(copied))
    if missing:
        report.problems.append(f"{len(missing)} accounts missing from the copy")
    for tenant in names:
        if tenant in missing:
            continue
        before = normalised(exports[tenant])
        after = normalised(await dst.export_account(tenant))
        report.problems.extend(f"{tenant}: {d}" for d in differences(before, after))
    return report
