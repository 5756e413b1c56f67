-- The balance follows from the entries, enforced by the database itself: every entry continues its account's
-- journal (seq is the next number, balance_after the running sum), entries are never changed or deleted, and an
-- account's balance is the balance after its last entry (checked at commit, whatever the order of writes).

CREATE FUNCTION credits_entries_continue_the_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- once per statement (a usage batch is one COPY): one join over the new rows, not a call per row
    -- A correlated lookup by primary key per new row. EXECUTE plans it afresh each time: a plan cached by the
    -- session while the journal was still empty would scan the whole journal for every row (quadratic).
    EXECUTE 'SELECT n.tenant_id, n.seq, n.balance_after, n.amount, prev.previous
             FROM new_rows n,
                  LATERAL (SELECT CASE WHEN n.seq = 1 THEN 0
                                       ELSE (SELECT p.balance_after FROM entries p
                                             WHERE p.tenant_id = n.tenant_id AND p.seq = n.seq - 1) END
                           AS previous) prev
             WHERE n.balance_after IS DISTINCT FROM prev.previous + n.amount
             LIMIT 1' INTO bad;
    IF bad.seq IS NOT NULL THEN
        RAISE EXCEPTION 'entry % of account %: balance_after % does not follow entry % (%) plus %', bad.seq,
            bad.tenant_id, bad.balance_after, bad.seq - 1, bad.previous, bad.amount USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- Entries of one operation are inserted in seq order, so the previous entry is always there when a statement
-- ends; a statement-level trigger sees all of its rows at once.
CREATE TRIGGER entries_continue_the_journal AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION credits_entries_continue_the_journal();

CREATE FUNCTION credits_entries_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are never changed or deleted (account %)', OLD.tenant_id
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER entries_are_final BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION credits_entries_are_final();

CREATE FUNCTION credits_balance_follows_the_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    beyond boolean;
BEGIN
    IF NEW.entry_count = 0 THEN
        last := 0;
    ELSE
        EXECUTE 'SELECT balance_after FROM entries WHERE tenant_id = $1 AND seq = $2'   -- planned afresh
            INTO last USING NEW.tenant_id, NEW.entry_count;
        IF last IS NULL THEN
            RAISE EXCEPTION 'account % counts % entries but has no entry %', NEW.tenant_id, NEW.entry_count,
                NEW.entry_count USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.balance <> last THEN
        RAISE EXCEPTION 'account %: balance % is not the balance after its last entry (%)', NEW.tenant_id,
            NEW.balance, last USING ERRCODE = 'check_violation';
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM entries WHERE tenant_id = $1 AND seq > $2)'
        INTO beyond USING NEW.tenant_id, NEW.entry_count;
    IF beyond THEN
        RAISE EXCEPTION 'account % has entries beyond its count %', NEW.tenant_id, NEW.entry_count
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER accounts_balance_follows_the_journal AFTER INSERT OR UPDATE ON accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION credits_balance_follows_the_journal();
