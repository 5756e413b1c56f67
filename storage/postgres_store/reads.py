"""The reads of a chat turn in one statement each (one round trip), including the account check.

A read of an account's rows used to be two statements: "does the account exist?" (`AccountNotFound`), then the
rows. `of_account` makes them one: the rows are joined laterally to the account's row, so an unknown tenant
gives no row at all and an account without rows gives one row whose `present` column is NULL.

`ACCOUNT_VIEW` answers `Ledger.account_view` from one snapshot: the account's columns, its settings and lots
soon to expire taken out of the state jsonb by the server (the state is not sent whole nor parsed), its roles,
its newest auto-recharge (index `entries_recharges`, migration 0003) and its usage in the burn window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ..errors import AccountNotFound
from ..forecast import call_time
from ..model import Account, AccountView, AlertSettings, Entry, EntryKind, Lot, RechargeSettings, Role, RoleGrant
from .rows import ENTRY_COLUMNS, as_entry, as_utc

Item = TypeVar("Item")


def of_account(inner: str, order: str) -> str:
    """One statement for the rows `inner` selects of the account `a.tenant_id` (`$1`), ordered by `order`
    (columns of `inner`'s output `x`). `inner` must select `true AS present` beside its columns."""
    return (f"SELECT x.* FROM accounts a LEFT JOIN LATERAL ({inner}) x ON true "
            f"WHERE a.tenant_id = $1 ORDER BY {order}")


def listed(rows: Sequence[Mapping[str, Any]], tenant_id: str, parse: Callable[[Mapping[str, Any]], Item]) -> list[Item]:
    """The items of an `of_account` result; `AccountNotFound` when it has no row."""
    if not rows:
        raise AccountNotFound(tenant_id)
    return [parse(r) for r in rows if r["present"]]


# --- account_view ---------------------------------------------------------------------------------------------------

_ENTRY_NAMES = [c.strip() for c in ENTRY_COLUMNS.split(",")]

#: $1 tenant, $2 the end of the expiry notice (now + expiring_within), $3 the start of the burn window, $4 now.
#: Usage counts by call time (`credits_call_time`); only entries recorded since the window's start can have a
#: call in it (a call is recorded after it happened), which the index `entries_usage_at` (migration 0004) finds
#: without walking the window's other entries. Call times the server does not decide (NULL: not in the form the
#: ledger writes) come back as `odd_*` for `call_time` to read.
ACCOUNT_VIEW = f"""
SELECT a.tenant_id, a.currency, a.created_at, a.balance, a.entry_count,
       a.state -> 'recharge' AS recharge, a.state -> 'alerts' AS alert_settings,
       (SELECT coalesce(jsonb_agg(l.lot ORDER BY l.position), '[]'::jsonb)
        FROM jsonb_array_elements(a.state -> 'lots') WITH ORDINALITY AS l(lot, position)
        WHERE (l.lot ->> 'remaining')::bigint > 0 AND (l.lot ->> 'expires_at')::timestamptz <= $2) AS expiring,
       g.user_ids, g.roles, g.granted_by, g.granted_at, g.display_names,
       w.used, w.odd_amounts, w.odd_times, w.odd_recorded,
       {", ".join(f"r.{c} AS recharge_{c}" for c in _ENTRY_NAMES)}
FROM accounts a
CROSS JOIN LATERAL (
    SELECT array_agg(x.user_id ORDER BY x.user_id) AS user_ids, array_agg(x.role ORDER BY x.user_id) AS roles,
           array_agg(x.granted_by ORDER BY x.user_id) AS granted_by,
           array_agg(x.granted_at ORDER BY x.user_id) AS granted_at,
           array_agg(x.display_name ORDER BY x.user_id) AS display_names
    FROM roles x WHERE x.tenant_id = a.tenant_id) g
CROSS JOIN LATERAL (
    SELECT coalesce(sum(-u.amount) FILTER (WHERE u.called BETWEEN $3 AND $4), 0)::bigint AS used,
           array_agg(u.amount) FILTER (WHERE u.called IS NULL) AS odd_amounts,
           array_agg(u.occurred) FILTER (WHERE u.called IS NULL) AS odd_times,
           array_agg(u.at) FILTER (WHERE u.called IS NULL) AS odd_recorded
    FROM (SELECT e.amount, e.at, e.details ->> 'occurred_at' AS occurred,
                 credits_call_time(e.details, e.at) AS called
          FROM entries e WHERE e.tenant_id = a.tenant_id AND e.kind = 'usage' AND e.at >= $3) u) w
LEFT JOIN LATERAL (
    SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.tenant_id = a.tenant_id AND e.kind = 'auto_recharge'
    ORDER BY e.seq DESC LIMIT 1) r ON true
WHERE a.tenant_id = $1
"""


def account_view(row: Mapping[str, Any] | None, tenant_id: str, start: datetime, now: datetime) -> AccountView:
    """The `AccountView` of an `ACCOUNT_VIEW` row (`start`, `now`: the burn window it was asked for);
    `AccountNotFound` for no row."""
    if row is None:
        raise AccountNotFound(tenant_id)
    account = Account(row["tenant_id"], row["currency"], as_utc(row["created_at"]), row["balance"],
                      row["entry_count"])
    last = as_entry({c: row[f"recharge_{c}"] for c in _ENTRY_NAMES}) if row["recharge_seq"] is not None else None
    expiring = tuple(Lot.from_dict(d) for d in row["expiring"])
    return AccountView(account, _grants(row), RechargeSettings.from_dict(row["recharge"]),
                       AlertSettings.from_dict(row["alert_settings"]), expiring, last,
                       row["used"] + _odd_usage(row, start, now))


def _grants(row: Mapping[str, Any]) -> tuple[RoleGrant, ...]:
    if row["user_ids"] is None:
        return ()
    return tuple(RoleGrant(user, Role(role), by, as_utc(at), name) for user, role, by, at, name in
                 zip(row["user_ids"], row["roles"], row["granted_by"], row["granted_at"], row["display_names"]))


def _odd_usage(row: Mapping[str, Any], start: datetime, now: datetime) -> int:
    """Usage in [start, now] among the entries whose call time the server left to `forecast.call_time`."""
    if row["odd_amounts"] is None:
        return 0
    used = 0
    for amount, occurred, recorded in zip(row["odd_amounts"], row["odd_times"], row["odd_recorded"]):
        usage = Entry(0, "", EntryKind.USAGE, amount, 0, "", "", as_utc(recorded), details={"occurred_at": occurred})
        if start <= call_time(usage) <= now:
            used -= amount
    return used
