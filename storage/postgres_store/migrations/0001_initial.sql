-- The ledger schema (storage/ledger.py is the contract, storage/reference.py the shared conventions).
-- Times are written by the application's clock, never by now(): tests run on a fake clock.

CREATE TABLE accounts (
    tenant_id   text PRIMARY KEY CHECK (tenant_id <> ''),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL,
    balance     bigint NOT NULL DEFAULT 0,
    entry_count integer NOT NULL DEFAULT 0 CHECK (entry_count >= 0),
    audit_count integer NOT NULL DEFAULT 0 CHECK (audit_count >= 0),
    state       jsonb NOT NULL,                      -- storage.engine.BookState.to_dict()
    CHECK ((state->>'balance')::bigint = balance),
    CHECK ((state->>'entry_count')::integer = entry_count),
    CHECK (state->>'currency' = currency)
);

CREATE TABLE entries (
    tenant_id     text NOT NULL REFERENCES accounts (tenant_id),
    seq           integer NOT NULL CHECK (seq >= 1),
    kind          text NOT NULL CHECK (kind IN ('funds_added', 'auto_recharge', 'usage', 'adjustment', 'expiry')),
    amount        bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    actor         text NOT NULL,
    key           text NOT NULL CHECK (key <> ''),
    at            timestamptz NOT NULL,
    memo          text NOT NULL DEFAULT '',
    reference     text NOT NULL DEFAULT '',
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, key),
    -- credits are positive, usage and expiry negative; adjustments either way (never zero)
    CHECK (CASE kind WHEN 'funds_added' THEN amount > 0
                     WHEN 'auto_recharge' THEN amount > 0
                     WHEN 'usage' THEN amount < 0
                     WHEN 'expiry' THEN amount < 0
                     ELSE true END)
);
CREATE INDEX entries_at ON entries (tenant_id, at);

-- Idempotency records: one per caller's key (and per `expiry:{lot}`), scoped to the account.
CREATE TABLE ops (
    tenant_id   text NOT NULL REFERENCES accounts (tenant_id),
    key         text NOT NULL CHECK (key <> ''),
    operation   text NOT NULL,
    fingerprint text NOT NULL,
    result      jsonb NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE audit (
    tenant_id text NOT NULL REFERENCES accounts (tenant_id),
    seq       integer NOT NULL CHECK (seq >= 1),
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    key       text NOT NULL DEFAULT '',
    details   jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, seq)
);

-- The outbox. `n` is the global order of creation (ties in created_at are broken by it).
CREATE TABLE alerts (
    alert_id        text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES accounts (tenant_id),
    n               bigserial NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('recharged', 'recharge_blocked', 'low_balance', 'exhausted',
                                                  'expiring', 'forecast')),
    key             text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    destinations    text[] NOT NULL DEFAULT '{}',
    delivered       text[] NOT NULL DEFAULT '{}',
    skipped         text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    lease_owner     text,
    lease_until     timestamptz,
    last_error      text NOT NULL DEFAULT '',
    UNIQUE (tenant_id, key),
    CHECK (delivered <@ destinations AND skipped <@ destinations),
    CHECK (status = 'pending' OR (lease_owner IS NULL AND lease_until IS NULL)),
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);
CREATE INDEX alerts_due ON alerts (created_at, n) WHERE status = 'pending';
CREATE INDEX alerts_by_tenant ON alerts (tenant_id, created_at, n);

CREATE TABLE subscriptions (
    tenant_id       text NOT NULL REFERENCES accounts (tenant_id),
    conversation_id text NOT NULL,
    kinds           text[] NOT NULL CHECK (cardinality(kinds) > 0),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, conversation_id)
);

CREATE TABLE roles (
    tenant_id    text NOT NULL REFERENCES accounts (tenant_id),
    user_id      text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'reader')),
    granted_by   text NOT NULL,
    granted_at   timestamptz NOT NULL,
    display_name text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE approvals (
    tenant_id    text NOT NULL REFERENCES accounts (tenant_id),
    approval_id  text NOT NULL,
    n            bigserial NOT NULL UNIQUE,          -- order of request
    amount       bigint NOT NULL CHECK (amount > 0),
    memo         text NOT NULL DEFAULT '',
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by   text NOT NULL DEFAULT '',
    decided_at   timestamptz,
    entry_seq    integer,
    PRIMARY KEY (tenant_id, approval_id),
    CHECK ((status = 'approved') = (entry_seq IS NOT NULL)),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);

CREATE TABLE conversations (
    tenant_id       text NOT NULL REFERENCES accounts (tenant_id),
    conversation_id text NOT NULL,
    reference       jsonb NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

CREATE TABLE sync_watermarks (
    tenant_id text NOT NULL REFERENCES accounts (tenant_id),
    source    text NOT NULL,
    until     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, source)
);
