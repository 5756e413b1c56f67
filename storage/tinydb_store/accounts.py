"""One account of the embedded store in memory: its views, logs and indexes, how it loads, how its files encode.

A `View` is everything current about an account at one commit, never changed once made (a change makes a new
view, copying only the tables that change). Each `StoredAccount` has two:

* `published`: what is committed and durable. Readers on any thread use only this one (and log documents up to
  its counts), so a read never waits for the writer and never sees an operation that is not committed yet.
* `work`: the writer thread's, which also holds what the operations of the batch being prepared did (the next
  operation of the batch must see them). At the end of a durable batch the writer publishes `work` with one
  assignment; if the batch cannot be made durable the store stops writing (backend.py), so a working view is
  never rolled back.

A `Batch` collects the file changes of the operations of one commit: log appends as they are made, and the hot
files (state, outbox, conversations, accounts) encoded once per batch from the final working views.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..engine import BookState
from ..errors import StoreCorrupt
from ..model import (Account, Alert, Approval, ConversationRef, Entry, RoleGrant, Subscription, iso, parse_iso)
from .files import Change, encode
from .index import KeyIndex, UsageWindow
from .layout import ACCOUNTS, DEFAULT_TABLE, ChunkCache, ChunkedLog, file_bytes, read_tables, table_bytes

ENTRY_CHUNK = 256
OP_CHUNK = 512
AUDIT_CHUNK = 256
ALERT_CHUNK = 128


@dataclass(frozen=True, slots=True)
class View:
    """An account as of one commit (see the module docstring). The mappings are never changed in place."""

    state: BookState
    roles: Mapping[str, RoleGrant]
    subscriptions: Mapping[str, Subscription]
    conversations: Mapping[str, ConversationRef]
    outbox: Mapping[str, Alert]  # alerts not delivered yet (pending and dead), in the order they were queued
    order: Mapping[str, int]  # outbox alert id -> creation number (ties in created_at are broken by it)
    approvals: Mapping[str, Approval]  # in the order they were requested
    watermarks: Mapping[str, datetime]  # usage source -> read completely up to
    op_count: int  # operation records
    archive_count: int  # delivered alerts archived
    #: The newest auto_recharge entry (None: there never was one); not known until looked up once in a store
    #: written before it was kept (`recharge_known`).
    last_recharge: Entry | None = None
    recharge_known: bool = True
    #: Usage entries recorded lately (None until the first `account_view` builds it) and how many of its items
    #: belong to this view.
    usage: UsageWindow | None = None
    usage_count: int = 0

    def account(self) -> Account:
        s = self.state
        return Account(s.tenant_id, s.currency, s.created_at, s.balance, s.entry_count)


def empty_view(state: BookState) -> View:
    return View(state, {}, {}, {}, {}, {}, {}, {}, 0, 0)


class StoredAccount:
    """An account's views, logs and indexes. Only the writer thread changes it; see the module docstring."""

    def __init__(self, root: Path, cache: ChunkCache, tenant_id: str, folder: str, view: View) -> None:
        self.tenant_id = tenant_id
        self.folder = folder
        self.published = view
        self.work = view
        self.entries = ChunkedLog(root, cache, f"{folder}/entries", ENTRY_CHUNK)
        self.ops = ChunkedLog(root, cache, f"{folder}/ops", OP_CHUNK)
        self.audit_log = ChunkedLog(root, cache, f"{folder}/audit", AUDIT_CHUNK)
        self.alert_log = ChunkedLog(root, cache, f"{folder}/alerts", ALERT_CHUNK)
        #: idempotency key -> operation record (writer only; built on the first mutation after open)
        self.keys: KeyIndex | None = None
        #: archived alert id -> archive seq (the writer adds, readers confirm against the published count)
        self.archived = KeyIndex()
        # the encoded documents of the hot files, in file order (writer only)
        self.conversation_docs: dict[str, bytes] = {}
        self.outbox_docs: dict[str, bytes] = {}
        self._tables: dict[str, tuple[object, bytes]] = {}  # state.json table -> (the mapping it encodes, bytes)

    @property
    def state_file(self) -> str:
        return f"{self.folder}/state.json"

    @property
    def outbox_file(self) -> str:
        return f"{self.folder}/outbox.json"

    @property
    def conversations_file(self) -> str:
        return f"{self.folder}/conversations.json"

    # --- encoding the hot files (writer, once per batch) -------------------------------------------------------
    def state_bytes(self) -> bytes:
        """state.json from the working view: the state itself, and tables re-encoded only when they changed."""
        w = self.work
        tables = {
            "state": table_bytes([encode(w.state.to_dict())]),
            "roles": self._table("roles", w.roles, lambda: [g.to_dict() for g in w.roles.values()]),
            "subscriptions": self._table("subscriptions", w.subscriptions,
                                         lambda: [s.to_dict() for s in w.subscriptions.values()]),
            "approvals": self._table("approvals", w.approvals, lambda: [a.to_dict() for a in w.approvals.values()]),
            "sync": self._table("sync", w.watermarks, lambda: [{"source": source, "until": iso(until)}
                                                               for source, until in w.watermarks.items()]),
        }
        if w.recharge_known:
            seq = w.last_recharge.seq if w.last_recharge is not None else 0
            tables["derived"] = table_bytes([encode({"last_recharge": seq})])
        return file_bytes(tables)

    def _table(self, name: str, source: object, docs: Callable[[], list[dict[str, Any]]]) -> bytes:
        hit = self._tables.get(name)
        if hit is not None and hit[0] is source:
            return hit[1]
        data = table_bytes([encode(doc) for doc in docs()])
        self._tables[name] = (source, data)
        return data

    def outbox_bytes(self) -> bytes:
        return file_bytes({DEFAULT_TABLE: table_bytes(list(self.outbox_docs.values()))})

    def conversations_bytes(self) -> bytes:
        return file_bytes({DEFAULT_TABLE: table_bytes(list(self.conversation_docs.values()))})

    # --- lookups (any thread, against a given view) ---------------------------------------------------------------
    def archived_alert(self, alert_id: str, view: View) -> Alert | None:
        """The delivered alert `alert_id` as archived up to `view`, if it is there."""
        for seq in self.archived.candidates(alert_id):
            if seq <= view.archive_count:
                doc = self.alert_log.get(seq)
                if doc is not None and doc["alert_id"] == alert_id:
                    return alert_from(doc)
        return None


def load(root: Path, cache: ChunkCache, tenant_id: str, folder: str) -> StoredAccount:
    """An account as its files hold it (writer thread, at open: reading closed chunks from disk is fine here)."""
    tables = read_tables(root, f"{folder}/state.json")
    if not tables.get("state"):
        raise StoreCorrupt(f"account folder {folder} has no state")
    conversations = read_tables(root, f"{folder}/conversations.json").get(DEFAULT_TABLE, [])
    outbox_docs = read_tables(root, f"{folder}/outbox.json").get(DEFAULT_TABLE, [])
    view = View(
        BookState.from_dict(tables["state"][0]),
        roles={d["user_id"]: RoleGrant.from_dict(d) for d in tables.get("roles", [])},
        subscriptions={d["conversation_id"]: Subscription.from_dict(d) for d in tables.get("subscriptions", [])},
        conversations={d["conversation_id"]: ConversationRef.from_dict(d) for d in conversations},
        outbox={d["alert_id"]: alert_from(d) for d in outbox_docs},
        order={d["alert_id"]: d["n"] for d in outbox_docs},
        approvals={d["approval_id"]: Approval.from_dict(d) for d in tables.get("approvals", [])},
        watermarks={d["source"]: parse_iso(d["until"]) for d in tables.get("sync", [])},
        op_count=0, archive_count=0, recharge_known=False,
    )
    acct = StoredAccount(root, cache, tenant_id, folder, view)
    for log in (acct.entries, acct.ops, acct.audit_log, acct.alert_log):
        log.load()
    acct.conversation_docs = {d["conversation_id"]: encode(d) for d in conversations}
    acct.outbox_docs = {d["alert_id"]: encode(d) for d in outbox_docs}
    for doc in acct.alert_log.oldest_first(acct.alert_log.count):
        acct.archived.add(doc["alert_id"], doc["archive_seq"])
    derived = tables.get("derived")
    last_recharge: Entry | None = None
    if derived:
        seq = derived[0]["last_recharge"]
        last_recharge = Entry.from_dict(acct.entries.get(seq) or {}) if seq else None
    view = replace(view, op_count=acct.ops.count, archive_count=acct.alert_log.count,
                   last_recharge=last_recharge, recharge_known=bool(derived))
    acct.published = acct.work = view
    return acct


def load_accounts(root: Path) -> list[tuple[str, str]]:
    """(tenant id, folder) of every account, in the order they were opened."""
    return [(d["tenant_id"], d["folder"]) for d in read_tables(root, ACCOUNTS).get(DEFAULT_TABLE, [])]


def accounts_bytes(accounts: Iterable[StoredAccount]) -> bytes:
    return file_bytes({DEFAULT_TABLE: table_bytes([encode({"tenant_id": a.tenant_id, "folder": a.folder})
                                                   for a in accounts])})


def alert_from(doc: Mapping[str, Any]) -> Alert:
    """An alert from its stored document (which also carries our bookkeeping: `n`, `archive_seq`)."""
    return Alert.from_dict({k: v for k, v in doc.items() if k not in ("n", "archive_seq")})


@dataclass
class Batch:
    """The file changes of one commit, and the accounts whose working views it will publish."""

    touched: dict[str, StoredAccount] = field(default_factory=dict)
    #: tenant -> hot files to rewrite at the end: "state", "outbox", "conversations"
    hot: dict[str, set[str]] = field(default_factory=dict)
    accounts_file: bool = False  # accounts.json (a new account)
    alerts: bool = False  # a pending alert was queued: wake the notifier once the batch is durable
    _appends: dict[str, list[Any]] = field(default_factory=dict)  # rel -> [offset, [data...], replaces, flush]

    def touch(self, acct: StoredAccount, *files: str) -> None:
        self.touched[acct.tenant_id] = acct
        self.hot.setdefault(acct.tenant_id, set()).update(files)

    def add(self, changes: Iterable[Change]) -> None:
        """Log changes, merged per file: appends of one batch to one chunk follow each other."""
        for change in changes:
            have = self._appends.get(change.rel)
            if have is None:
                self._appends[change.rel] = [change.offset, [change.data], change.replaces, change.flush]
                continue
            offset, parts, _, _ = have
            assert change.offset == (offset or 0) + sum(map(len, parts)), "appends out of order"
            parts.append(change.data)
            have[3] = have[3] or change.flush

    def changes(self, accounts: Iterable[StoredAccount]) -> list[Change]:
        """Everything to commit: the logs' appends, then the hot files of the touched accounts as they are now."""
        out = [Change(rel, offset, b"".join(parts), replaces, flush)
               for rel, (offset, parts, replaces, flush) in self._appends.items()]
        for acct in self.touched.values():
            files = self.hot.get(acct.tenant_id, set())
            if "state" in files:
                out.append(Change(acct.state_file, None, acct.state_bytes()))
            if "outbox" in files:
                out.append(Change(acct.outbox_file, None, acct.outbox_bytes()))
            if "conversations" in files:
                out.append(Change(acct.conversations_file, None, acct.conversations_bytes()))
        if self.accounts_file:
            out.append(Change(ACCOUNTS, None, accounts_bytes(accounts)))
        return out
