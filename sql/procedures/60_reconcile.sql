-- Repair of drift left by other writers (earlier software, platform tools writing rows
-- directly). The procedures never count an activity's rows: they trust the counters, which
-- they keep exact. This is the one place that counts, and it runs outside every call:
-- `participation-grpc reconcile`, and `migrate` after the procedures.
--
-- An activity is right when current_participants_count = least(registered rows,
-- max_participants), activity_overbooking.excess = the registered rows beyond max_participants
-- (no row when none), waitlist_count = its waitlist entries, and, before it starts, no seat is
-- free while someone waits.

-- Activities that look wrong, from one snapshot without locks (each is checked again under its
-- lock by pa_reconcile_activity).
CREATE OR REPLACE FUNCTION activity.pa_reconcile_candidates()
RETURNS TABLE (activity_id uuid) LANGUAGE sql STABLE AS $$
    SELECT a.activity_id
    FROM activity.activities a
    LEFT JOIN (SELECT p.activity_id, count(*)::integer AS n FROM activity.participants p
               WHERE p.participation_status = 'registered' GROUP BY p.activity_id) r
           ON r.activity_id = a.activity_id
    LEFT JOIN (SELECT w.activity_id, count(*)::integer AS n FROM activity.waitlist_entries w
               GROUP BY w.activity_id) q
           ON q.activity_id = a.activity_id
    LEFT JOIN activity.activity_overbooking o ON o.activity_id = a.activity_id
    WHERE a.current_participants_count <> least(coalesce(r.n, 0), a.max_participants)
       OR coalesce(o.excess, 0) <> greatest(coalesce(r.n, 0) - a.max_participants, 0)
       OR a.waitlist_count <> coalesce(q.n, 0)
       OR (coalesce(r.n, 0) < a.max_participants AND q.n > 0 AND a.scheduled_at > now())
    ORDER BY a.activity_id
$$;

-- One activity, recounted and repaired under its row lock. One row per fix: kind is
-- current_participants_count, overbooking_excess or waitlist_count (before and after are the
-- values), or seats_filled (free seats given to the head of the waitlist as a leave would,
-- ineligible users dropped; before and after are the registered rows).
CREATE OR REPLACE FUNCTION activity.pa_reconcile_activity(p_activity_id uuid)
RETURNS TABLE (activity_id uuid, kind text, before integer, after integer)
LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities;
    v_registered integer;
    v_waiting integer;
    v_excess integer;
    v_promoted uuid[];
BEGIN
    a := activity.pa_lock_activity(p_activity_id);
    IF a.activity_id IS NULL THEN
        RETURN;
    END IF;
    activity_id := p_activity_id;
    SELECT count(*) INTO v_registered FROM activity.participants p
    WHERE p.activity_id = p_activity_id AND p.participation_status = 'registered';
    SELECT count(*) INTO v_waiting FROM activity.waitlist_entries w
    WHERE w.activity_id = p_activity_id;
    v_excess := coalesce((SELECT o.excess FROM activity.activity_overbooking o
                          WHERE o.activity_id = p_activity_id), 0);
    IF a.current_participants_count <> least(v_registered, a.max_participants) THEN
        kind := 'current_participants_count';
        before := a.current_participants_count;
        after := least(v_registered, a.max_participants);
        RETURN NEXT;
    END IF;
    IF v_excess <> greatest(v_registered - a.max_participants, 0) THEN
        kind := 'overbooking_excess';
        before := v_excess;
        after := greatest(v_registered - a.max_participants, 0);
        RETURN NEXT;
        DELETE FROM activity.activity_overbooking o WHERE o.activity_id = p_activity_id;
        INSERT INTO activity.activity_overbooking (activity_id, excess)
        SELECT p_activity_id, after WHERE after > 0;
    END IF;
    IF a.waitlist_count <> v_waiting THEN
        kind := 'waitlist_count';
        before := a.waitlist_count;
        after := v_waiting;
        RETURN NEXT;
    END IF;
    IF (a.current_participants_count, a.waitlist_count)
       IS DISTINCT FROM (least(v_registered, a.max_participants), v_waiting) THEN
        a.current_participants_count := least(v_registered, a.max_participants);
        a.waitlist_count := v_waiting;
        UPDATE activity.activities x
        SET current_participants_count = a.current_participants_count,
            waitlist_count = a.waitlist_count
        WHERE x.activity_id = p_activity_id;
    END IF;
    IF a.scheduled_at > now() AND v_registered < a.max_participants THEN
        v_promoted := activity.pa_fill_seats(a, a.max_participants - v_registered);
        IF cardinality(v_promoted) > 0 THEN
            kind := 'seats_filled';
            before := v_registered;
            after := v_registered + cardinality(v_promoted);
            RETURN NEXT;
        END IF;
    END IF;
END $$;

-- Every activity at once, in one transaction (locks held until it commits). The command line
-- runs pa_reconcile_activity per activity instead, each in its own short transaction.
CREATE OR REPLACE FUNCTION activity.pa_reconcile()
RETURNS TABLE (activity_id uuid, kind text, before integer, after integer)
LANGUAGE sql AS $$
    SELECT f.* FROM activity.pa_reconcile_candidates() c
    CROSS JOIN LATERAL activity.pa_reconcile_activity(c.activity_id) f
$$;
