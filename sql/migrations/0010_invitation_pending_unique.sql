-- Re-inviting after a decline, an expiry or a cancellation writes a new row for the same pair:
-- rows are history and never reused (sql/procedures/40_invitations.sql). The predecessor allowed
-- one row per pair, ever (UNIQUE (activity_id, user_id), auto-named), so every re-invitation
-- failed on it. What the rules need instead is at most one pending invitation per pair; a
-- pending one past expires_at is recorded as expired before a new one is written (pa_invite).
-- migrate builds the index concurrently before this runs; the drop below is a catalog change.
CREATE UNIQUE INDEX IF NOT EXISTS activity_invitations_one_pending_idx
    ON activity.activity_invitations (activity_id, user_id) WHERE status = 'pending';

-- Whatever its name: a UNIQUE constraint on exactly (activity_id, user_id).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT con.conname FROM pg_constraint con
             WHERE con.conrelid = 'activity.activity_invitations'::regclass AND con.contype = 'u'
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                    WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey))
                   = ARRAY['activity_id', 'user_id']
    LOOP
        EXECUTE format('ALTER TABLE activity.activity_invitations DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
