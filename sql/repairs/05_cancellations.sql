-- Cancellations the predecessor recorded: the reason in payload->>'cancel_reason', the time only
-- in updated_at. The service keeps both on the participation record (cancellation_reason,
-- cancelled_at, left_at), where CancelParticipation writes them; the reason leaves the payload,
-- so there is one place for it. A row this service cancelled always has cancelled_at, so it is
-- never touched again, and an old reason is never copied onto a newer cancellation. This runs
-- first: updated_at is the only time there is, and any UPDATE of the row resets it (the
-- predecessor's trigger). Tables this service created have no payload column: PL/pgSQL plans
-- a statement only when it runs, so the branch for the other kind of table is never planned.
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text := 'cancellations from the predecessor: reason and time moved to the participation record';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'activity.participants'::regclass
               AND attname = 'payload' AND atttypid = 'jsonb'::regtype AND NOT attisdropped) THEN
        RETURN QUERY
        WITH moved AS (
            UPDATE activity.participants p
            SET cancellation_reason = coalesce(p.cancellation_reason,
                                               nullif(btrim(p.payload->>'cancel_reason'), '')),
                cancelled_at = p.updated_at,
                left_at = coalesce(p.left_at, p.updated_at),
                payload = CASE WHEN p.payload ? 'cancel_reason'
                               THEN nullif(p.payload - 'cancel_reason', '{}'::jsonb)
                               ELSE p.payload END
            WHERE p.participation_status = 'cancelled' AND p.cancelled_at IS NULL
            RETURNING p.activity_id, p.user_id)
        SELECT v_kind, m.activity_id || '/' || m.user_id, true FROM moved m ORDER BY 2;
    ELSE
        RETURN QUERY
        WITH moved AS (
            UPDATE activity.participants p
            SET cancelled_at = p.updated_at, left_at = coalesce(p.left_at, p.updated_at)
            WHERE p.participation_status = 'cancelled' AND p.cancelled_at IS NULL
            RETURNING p.activity_id, p.user_id)
        SELECT v_kind, m.activity_id || '/' || m.user_id, true FROM moved m ORDER BY 2;
    END IF;
END $$;
