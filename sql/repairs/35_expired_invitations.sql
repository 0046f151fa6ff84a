-- Pending invitations past expires_at. The service already treats them as expired; the row
-- says so now too, for the platform's other readers of the table.
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE sql AS $$
    WITH expired AS (
        UPDATE activity.activity_invitations i SET status = 'expired'
        WHERE i.status = 'pending' AND i.expires_at <= now()
        RETURNING i.invitation_id)
    SELECT 'pending invitations past expires_at: recorded as expired', invitation_id::text, true
    FROM expired ORDER BY 2
$$;
