-- Participation events (contract 9): the one writer every change goes through. It sorts first so
-- that helpers in any language can call it; the reads, retention and the relay are in
-- 50_event_streams.sql. Tables: migration 0020.

-- Appends one event of p_activity_id and wakes the processes watching it. Call it from the helper that makes
-- the change, with the activity row locked (FOR NO KEY UPDATE): the lock orders the events of an
-- activity, and the counter row keeps the numbering gapless. Returns the event's sequence.
-- The counter is updated first, so the transaction has its id (xact_id) before the event draws
-- its event_id: the relay's cursor relies on that order.
CREATE OR REPLACE FUNCTION activity.pa_event(p_activity_id uuid, p_event_type text,
    p_user_id uuid, p_actor_user_id uuid, p_payload jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_sequence bigint;
BEGIN
    INSERT INTO activity.participation_event_counters AS c (activity_id, last_sequence)
    VALUES (p_activity_id, 1)
    ON CONFLICT (activity_id) DO UPDATE SET last_sequence = c.last_sequence + 1
    RETURNING c.last_sequence INTO v_sequence;
    INSERT INTO activity.participation_events
        (activity_id, sequence, event_type, user_id, actor_user_id, payload)
    VALUES (p_activity_id, v_sequence, p_event_type, p_user_id, p_actor_user_id, p_payload);
    -- Only activities a process watches (0021 says why). Delivered at commit, once per
    -- activity and transaction however many events it wrote; a rollback notifies nobody.
    IF EXISTS (SELECT 1 FROM activity.participation_event_watchers w
               WHERE w.activity_id = p_activity_id AND w.expires_at > now()) THEN
        PERFORM pg_notify('participation_events', p_activity_id::text);
    END IF;
    RETURN v_sequence;
END $$;
