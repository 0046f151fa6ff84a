-- participants rows with status 'waitlisted'. This service keeps the queue in waitlist_entries
-- alone (contract 8: a waitlisted user has an entry and no registered row). A waitlisted row
-- without an entry was invisible to ListWaitlist and to a leave: it joins the end of its
-- activity's queue, in joined_at order, with joined_at as the time of queueing. Then every
-- waitlisted row goes; its entry holds the place (a row left behind would show the user as
-- waitlisted again after they left the queue). Corrections of the record, not changes of who
-- takes part: no events; reconcile then sets the counters from the rows.
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH missing AS (
        SELECT p.activity_id, p.user_id, p.joined_at,
               row_number() OVER (PARTITION BY p.activity_id ORDER BY p.joined_at, p.user_id) AS n
        FROM activity.participants p
        WHERE p.participation_status = 'waitlisted'
          AND NOT EXISTS (SELECT 1 FROM activity.waitlist_entries w
                          WHERE w.activity_id = p.activity_id AND w.user_id = p.user_id)),
    queued AS (
        INSERT INTO activity.waitlist_entries (activity_id, user_id, position, created_at)
        SELECT x.activity_id, x.user_id,
               coalesce((SELECT max(w.position) FROM activity.waitlist_entries w
                         WHERE w.activity_id = x.activity_id), 0) + x.n,
               x.joined_at
        FROM missing x ORDER BY x.activity_id, x.n
        RETURNING activity_id, user_id)
    SELECT 'waitlisted without a waitlist entry: queued at the end in joined_at order',
           q.activity_id || '/' || q.user_id, true
    FROM queued q ORDER BY 2;

    RETURN QUERY
    WITH gone AS (
        DELETE FROM activity.participants p WHERE p.participation_status = 'waitlisted'
        RETURNING p.activity_id, p.user_id)
    SELECT 'waitlisted participants rows: removed, the waitlist entry holds the place',
           g.activity_id || '/' || g.user_id, true
    FROM gone g ORDER BY 2;
END $$;
