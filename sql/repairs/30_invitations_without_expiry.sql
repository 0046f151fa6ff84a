-- Invitations the predecessor wrote without expires_at never expired. Here every invitation
-- has an end (a pending one without it could never be matched as live or as expired, and a
-- re-invitation would then collide with it); an open-ended invitation lasts until the activity
-- starts, which is when it stops mattering. The platform's check wants expires_at > invited_at.
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE sql AS $$
    WITH dated AS (
        UPDATE activity.activity_invitations i
        SET expires_at = CASE WHEN a.scheduled_at > i.invited_at THEN a.scheduled_at
                              ELSE i.invited_at + interval '72 hours' END
        FROM activity.activities a
        WHERE a.activity_id = i.activity_id AND i.expires_at IS NULL
        RETURNING i.invitation_id)
    SELECT 'invitations without expires_at: expire when the activity starts', invitation_id::text, true
    FROM dated ORDER BY 2
$$;
