"""What one operation (or one group-committed batch of operations, `batch.Written`) on an account writes, in one
statement (one round trip): its new entries, operation records, audit records and alerts, and the account's new
state.

`PERSIST` is a data-modifying WITH: one multi-row INSERT per table (rows passed as one array per column and
zipped by `unnest`) and the UPDATE of the account. It is one statement, so the journal trigger
(`entries_continue_the_journal`, once per statement) sees the operation's entries together, the CHECKs and
foreign keys hold as with separate INSERTs, and the deferred check that the balance follows the journal still
runs at COMMIT. Alerts are inserted in the order they were raised (`ORDER BY` the position), so that their `n`
keeps the order of creation. An empty array inserts nothing.

asyncpg's array encoder takes a Python list inside a list for a sub-array, so the alerts' list columns travel as
one jsonb object per alert (`{"destinations": [...], "delivered": [...], "skipped": [...]}`).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..engine import BookState
from ..model import Alert, AuditRecord, Entry

PERSIST = """
WITH new_entries AS (
    INSERT INTO entries (tenant_id, seq, kind, amount, balance_after, actor, key, at, memo, reference, details)
    SELECT $1, e.* FROM unnest($2::integer[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[],
                               $8::timestamptz[], $9::text[], $10::text[], $11::jsonb[]) AS e
), new_ops AS (
    INSERT INTO ops (tenant_id, key, operation, fingerprint, result)
    SELECT $1, o.* FROM unnest($12::text[], $13::text[], $14::text[], $15::jsonb[]) AS o
), new_audit AS (
    INSERT INTO audit (tenant_id, seq, at, actor, action, key, details)
    SELECT $1, a.* FROM unnest($16::integer[], $17::timestamptz[], $18::text[], $19::text[], $20::text[],
                               $21::jsonb[]) AS a
), new_alerts AS (
    INSERT INTO alerts (alert_id, tenant_id, created_at, kind, key, payload, destinations, delivered, skipped,
                        status, attempts, next_attempt_at, lease_owner, lease_until, last_error)
    SELECT x.alert_id, $1, x.created_at, x.kind, x.key, x.payload,
           ARRAY(SELECT jsonb_array_elements_text(x.lists -> 'destinations')),
           ARRAY(SELECT jsonb_array_elements_text(x.lists -> 'delivered')),
           ARRAY(SELECT jsonb_array_elements_text(x.lists -> 'skipped')),
           x.status, x.attempts, x.next_attempt_at, x.lease_owner, x.lease_until, x.last_error
    FROM unnest($22::text[], $23::timestamptz[], $24::text[], $25::text[], $26::jsonb[], $27::jsonb[], $28::text[],
                $29::integer[], $30::timestamptz[], $31::text[], $32::timestamptz[], $33::text[])
         WITH ORDINALITY AS x(alert_id, created_at, kind, key, payload, lists, status, attempts, next_attempt_at,
                              lease_owner, lease_until, last_error, position)
    ORDER BY x.position
)
UPDATE accounts SET currency = $34, balance = $35, entry_count = $36, audit_count = $37, state = $38
WHERE tenant_id = $1
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (`width` columns, also when there is no row)."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def persist_args(tenant: str, entries: Sequence[Entry], ops: Sequence[tuple[str, str, str, dict[str, Any]]],
                 audit: Sequence[AuditRecord], alerts: Sequence[Alert], state: BookState) -> list[Any]:
    """The arguments of `PERSIST`: the account, its rows to insert (any of them may be empty; `ops` are (key,
    operation, fingerprint, result)), and the new state."""
    entry_rows = [(e.seq, e.kind.value, e.amount, e.balance_after, e.actor, e.key, e.at, e.memo, e.reference,
                   dict(e.details)) for e in entries]
    audit_rows = [(r.seq, r.at, r.actor, r.action, r.key, dict(r.details)) for r in audit]
    alert_rows = [(a.alert_id, a.created_at, a.kind.value, a.key, dict(a.payload),
                   {"destinations": list(a.destinations), "delivered": list(a.delivered),
                    "skipped": list(a.skipped)},
                   a.status.value, a.attempts, a.next_attempt_at, a.lease_owner, a.lease_until, a.last_error)
                  for a in alerts]
    return [tenant, *_columns(entry_rows, 10), *_columns(list(ops), 4), *_columns(audit_rows, 6),
            *_columns(alert_rows, 12), state.currency, state.balance, state.entry_count, state.audit_count,
            state.to_dict()]
