-- Fewer round trips per chat turn (issue #9): what one statement needs to answer a turn's reads and to start a
-- money operation. Nothing here changes what is stored.

-- The newest auto-recharge of an account (`account_view`'s `last_recharge`) without walking its journal: most
-- entries are usage, recharges are few.
CREATE INDEX entries_recharges ON entries (tenant_id, seq) WHERE kind = 'auto_recharge';

-- When the call of a usage entry happened, as storage.forecast.call_time reads it (`details->>'occurred_at'`,
-- else the entry's time `at`), decided here for the form the ledger writes (`iso()`:
-- 'YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM', a real date): `at` when there is no such string, the string's time when
-- it has that form, and NULL for any other string, which the application reads itself (Python's fromisoformat
-- accepts more forms than this decides, and a cast of a malformed string would fail the whole query).
-- The CASE arms are evaluated in order: the casts run only on strings the pattern accepted.
CREATE FUNCTION credits_call_time(details jsonb, at timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN jsonb_typeof(details -> 'occurred_at') IS DISTINCT FROM 'string' THEN at
    WHEN details ->> 'occurred_at' !~ ('^(?!0000|0001|9999)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
                                       'T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{6})?'
                                       '[+-]([01][0-9]|2[0-3]):[0-5][0-9]$') THEN NULL
    WHEN substr(details ->> 'occurred_at', 9, 2)::integer
         > extract(day FROM make_date(substr(details ->> 'occurred_at', 1, 4)::integer,
                                      substr(details ->> 'occurred_at', 6, 2)::integer, 1)
                            + interval '1 month - 1 day')::integer THEN NULL   -- 30 February
    ELSE (details ->> 'occurred_at')::timestamptz
END $$;

-- The first statement of a transaction on one account: lock the account's row, then read under the lock what
-- the operation needs: its state, the operation records of `op_keys` (the idempotency lookup), and its
-- subscriptions (the destinations of the alerts it may raise). No row for an unknown tenant.
-- A function, so that this is one round trip and yet the reads come *after* the lock: in READ COMMITTED each
-- statement of a VOLATILE function takes a fresh snapshot, so they see what the previous holder of the lock
-- committed (one SELECT joining the locked row to `ops` would read `ops` as of before its wait for the lock,
-- and miss the operation record of a concurrent call with the same key).
CREATE FUNCTION credits_lock_account(tenant text, op_keys text[])
    RETURNS TABLE (account_state jsonb, known_keys text[], known_fingerprints text[], known_results jsonb[],
                   subscription_list jsonb)
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT a.state INTO account_state FROM accounts a WHERE a.tenant_id = tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT array_agg(o.key), array_agg(o.fingerprint), array_agg(o.result)
        INTO known_keys, known_fingerprints, known_results
        FROM ops o WHERE o.tenant_id = tenant AND o.key = ANY (op_keys);
    SELECT coalesce(jsonb_agg(to_jsonb(s) - 'tenant_id' ORDER BY s.conversation_id), '[]'::jsonb)
        INTO subscription_list FROM subscriptions s WHERE s.tenant_id = tenant;
    RETURN NEXT;
END $$;
