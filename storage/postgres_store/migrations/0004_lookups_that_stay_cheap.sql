-- Reads of a chat turn whose cost must not grow with the journal (issue #9): found when the turn benchmark got
-- slower round after round on a fresh database. Nothing here changes what is stored.

-- `account_view` sums the usage in the burn window: with only `entries_at` it walked every entry of the window,
-- funds and recharges included (a busy account adds thousands a month); this index holds usage entries alone.
-- Migrations run in one transaction, so this index is built while writes to `entries` wait. On a large journal,
-- build it beforehand without blocking writes, and the migration will find it:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS entries_usage_at ON entries (tenant_id, at) WHERE kind = 'usage';
CREATE INDEX IF NOT EXISTS entries_usage_at ON entries (tenant_id, at) WHERE kind = 'usage';

-- The idempotency lookup of `credits_lock_account` (migration 0003) as one primary-key probe per key. The
-- `key = ANY (op_keys)` form let the planner, when the session planned it on a small table (a new database, or
-- statistics not yet analyzed), keep a plan that reads all of the account's operation records and filters them:
-- a cost that grew with every operation until the next ANALYZE. A probe by the whole primary key has no such plan.
CREATE OR REPLACE FUNCTION credits_lock_account(tenant text, op_keys text[])
    RETURNS TABLE (account_state jsonb, known_keys text[], known_fingerprints text[], known_results jsonb[],
                   subscription_list jsonb)
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    wanted text;
    found_op ops%ROWTYPE;
BEGIN
    SELECT a.state INTO account_state FROM accounts a WHERE a.tenant_id = tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOREACH wanted IN ARRAY coalesce(op_keys, '{}') LOOP
        SELECT * INTO found_op FROM ops o WHERE o.tenant_id = tenant AND o.key = wanted;
        IF FOUND THEN
            known_keys := known_keys || found_op.key;
            known_fingerprints := known_fingerprints || found_op.fingerprint;
            known_results := known_results || found_op.result;
        END IF;
    END LOOP;
    SELECT coalesce(jsonb_agg(to_jsonb(s) - 'tenant_id' ORDER BY s.conversation_id), '[]'::jsonb)
        INTO subscription_list FROM subscriptions s WHERE s.tenant_id = tenant;
    RETURN NEXT;
END $$;
