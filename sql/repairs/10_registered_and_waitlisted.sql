-- A user registered and still queued (the predecessor's accept path left both): registered wins.
-- The queue entry goes, so one leave is enough and the queue holds only people waiting (the
-- others keep their places: positions have gaps). A correction of the record, not a change of
-- who takes part, so no event; reconcile then sets waitlist_count from the rows.
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM activity.waitlist_entries w
        USING activity.participants p
        WHERE p.activity_id = w.activity_id AND p.user_id = w.user_id
          AND p.participation_status = 'registered'
        RETURNING w.activity_id, w.user_id)
    SELECT 'registered and waitlisted at once: the waitlist entry removed',
           activity_id || '/' || user_id, true
    FROM gone ORDER BY 2
$$;
