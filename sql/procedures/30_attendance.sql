-- Attendance and peer verification (contract 4.4). The changes themselves (pa_set_attendance,
-- pa_confirm) are in 05_changes.sql.

-- p_entries: [{"user_id": uuid, "status": "attended" | "no_show"}]. Users who are not registered
-- participants come back in failures (NOT_A_PARTICIPANT), in request order.
CREATE OR REPLACE FUNCTION activity.sp_mark_attendance(p_activity_id uuid, p_acting_user_id uuid,
                                                       p_entries jsonb DEFAULT '[]',
                                                       p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, updated_count integer, failures jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_activity_id, p_entries);
    v_reply jsonb := activity.pa_replay(p_acting_user_id, p_request_id, 'MarkAttendance',
                                        v_request);
    a activity.activities;
    v_updated integer := 0;
    v_failures jsonb := '[]';
    e record;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(activity_id uuid, updated_count integer, failures jsonb);
        RETURN;
    END IF;
    a := activity.pa_lock_visible_activity(p_activity_id, p_acting_user_id);
    PERFORM activity.pa_require_manager(a, p_acting_user_id);
    IF a.scheduled_at > now() THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_NOT_COMPLETED',
                                  'Attendance can be marked once the activity has started',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    -- The counters' rows are locked in one order, so calls on different activities that share
    -- users wait for each other instead of deadlocking.
    PERFORM 1 FROM activity.users u
    WHERE u.user_id IN (SELECT (x->>'user_id')::uuid FROM jsonb_array_elements(p_entries) x)
    ORDER BY u.user_id FOR NO KEY UPDATE;
    FOR e IN SELECT x.user_id, x.status FROM jsonb_to_recordset(p_entries) AS x(user_id uuid, status text)
    LOOP
        IF activity.pa_set_attendance(p_activity_id, e.user_id, e.status, p_acting_user_id) THEN
            v_updated := v_updated + 1;
        ELSE
            v_failures := v_failures
                          || jsonb_build_object('user_id', e.user_id, 'reason', 'NOT_A_PARTICIPANT');
        END IF;
    END LOOP;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_acting_user_id, p_request_id, 'MarkAttendance', v_request,
            jsonb_build_object('activity_id', p_activity_id, 'updated_count', v_updated,
                               'failures', v_failures));
    END IF;
    RETURN QUERY SELECT p_activity_id, v_updated, v_failures;
END $$;

CREATE OR REPLACE FUNCTION activity.pa_attended(p_activity_id uuid, p_user uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM activity.participants p
                   WHERE p.activity_id = p_activity_id AND p.user_id = p_user
                     AND p.participation_status = 'registered' AND p.attendance_status = 'attended');
END $$;

-- Confirmer and confirmed both exist, are not blocked with each other, and both attended.
CREATE OR REPLACE FUNCTION activity.pa_check_confirmation(p_activity_id uuid, p_confirmed uuid,
                                                          p_confirmer uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb := jsonb_build_object('activity_id', p_activity_id, 'user_id', p_confirmed);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM activity.users WHERE user_id = p_confirmer) THEN
        PERFORM activity.pa_raise('PA005', 'USER_NOT_FOUND', 'User not found',
                                  jsonb_build_object('user_id', p_confirmer));
    ELSIF NOT EXISTS (SELECT 1 FROM activity.users WHERE user_id = p_confirmed) THEN
        PERFORM activity.pa_raise('PA005', 'USER_NOT_FOUND', 'User not found', ids);
    ELSIF activity.pa_blocked(p_confirmer, p_confirmed) THEN
        PERFORM activity.pa_raise('PA007', 'BLOCKED_USER',
                                  'You cannot confirm the attendance of this user', ids);
    ELSIF NOT activity.pa_attended(p_activity_id, p_confirmer) THEN
        PERFORM activity.pa_raise('PA009', 'CONFIRMER_NOT_ATTENDED',
                                  'Only participants marked as attended can confirm others', ids);
    ELSIF NOT activity.pa_attended(p_activity_id, p_confirmed) THEN
        PERFORM activity.pa_raise('PA009', 'CONFIRMED_NOT_ATTENDED',
                                  'The user was not marked as attended', ids);
    ELSIF EXISTS (SELECT 1 FROM activity.attendance_confirmations c
                  WHERE c.activity_id = p_activity_id AND c.confirmed_user_id = p_confirmed
                    AND c.confirmer_user_id = p_confirmer) THEN
        PERFORM activity.pa_raise('PA006', 'ALREADY_CONFIRMED',
                                  'You have already confirmed this user for this activity', ids);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION activity.sp_confirm_attendance(p_activity_id uuid, p_user_id uuid,
                                                          p_acting_user_id uuid,
                                                          p_request_id uuid DEFAULT NULL)
RETURNS TABLE (confirmation_id uuid, activity_id uuid, user_id uuid, verification_count integer)
LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb := jsonb_build_object('activity_id', p_activity_id, 'user_id', p_user_id);
    v_request jsonb := jsonb_build_array(p_activity_id, p_user_id);
    v_reply jsonb := activity.pa_replay(p_acting_user_id, p_request_id, 'ConfirmAttendance',
                                        v_request);
    r record;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply) AS x(confirmation_id uuid,
            activity_id uuid, user_id uuid, verification_count integer);
        RETURN;
    END IF;
    IF p_user_id = p_acting_user_id THEN
        PERFORM activity.pa_raise('PA003', 'SELF_CONFIRMATION', 'You cannot confirm yourself',
                                  ids || jsonb_build_object('field', 'user_id'));
    END IF;
    -- The activity lock, as for every change of an activity's participants: attendance cannot
    -- be re-marked under a confirmation, and the changes of one activity keep one order.
    IF (activity.pa_lock_visible_activity(p_activity_id, p_acting_user_id)).scheduled_at > now() THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_NOT_COMPLETED',
                                  'Attendance can be confirmed once the activity has started',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    PERFORM activity.pa_check_confirmation(p_activity_id, p_user_id, p_acting_user_id);
    r := activity.pa_confirm(p_activity_id, p_user_id, p_acting_user_id);
    IF r.confirmation_id IS NULL THEN
        PERFORM activity.pa_raise('PA006', 'ALREADY_CONFIRMED',
                                  'You have already confirmed this user for this activity', ids);
    END IF;
    confirmation_id := r.confirmation_id;
    activity_id := p_activity_id;
    user_id := p_user_id;
    verification_count := r.verification_count;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_acting_user_id, p_request_id, 'ConfirmAttendance', v_request,
            jsonb_build_object('confirmation_id', confirmation_id, 'activity_id', activity_id,
                               'user_id', user_id, 'verification_count', verification_count));
    END IF;
    RETURN NEXT;
END $$;

-- Activities the caller attended, each with the attended participants the caller has not
-- confirmed yet; never users blocked with the caller; activities with nobody left are left out.
-- Latest activity first. One user's attended activities: counted, as no counter covers them.
CREATE OR REPLACE FUNCTION activity.sp_get_pending_verifications(p_user_id uuid,
    p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_size integer := activity.pa_page_size(p_page_size, 20);
BEGIN
    WITH matching AS (
        SELECT a.activity_id, a.title, a.scheduled_at,
               json_agg(json_build_object('user_id', u.user_id, 'username', u.username,
                                          'first_name', u.first_name,
                                          'profile_photo_url', u.main_photo_url)
                        ORDER BY o.joined_at, o.user_id) AS participants_to_confirm
        FROM activity.participants me
        JOIN activity.activities a ON a.activity_id = me.activity_id
        JOIN activity.participants o ON o.activity_id = me.activity_id AND o.user_id <> me.user_id
        JOIN activity.users u ON u.user_id = o.user_id
        WHERE me.user_id = p_user_id AND me.participation_status = 'registered'
          AND me.attendance_status = 'attended'
          AND o.participation_status = 'registered' AND o.attendance_status = 'attended'
          AND NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                          WHERE b.user_a = o.user_id AND b.user_b = p_user_id)
          AND activity.pa_can_see(a, p_user_id)  -- what ConfirmAttendance would accept
          AND NOT EXISTS (SELECT 1 FROM activity.attendance_confirmations c
                          WHERE c.activity_id = me.activity_id AND c.confirmer_user_id = p_user_id
                            AND c.confirmed_user_id = o.user_id)
        GROUP BY a.activity_id
    ), page AS (
        SELECT m.*, row_number() OVER (ORDER BY m.scheduled_at DESC, m.activity_id DESC) AS n
        FROM matching m
        WHERE p_after IS NULL
           OR (m.scheduled_at, m.activity_id) < ((p_after->>'scheduled_at')::timestamptz,
                                                  (p_after->>'activity_id')::uuid)
        ORDER BY m.scheduled_at DESC, m.activity_id DESC LIMIT v_size + 1
    )
    SELECT (SELECT count(*) FROM matching),
           coalesce(json_agg(item ORDER BY pg.n) FILTER (WHERE pg.n <= v_size), '[]'),
           CASE WHEN count(*) > v_size THEN
               (array_agg(jsonb_build_object('scheduled_at', pg.scheduled_at,
                                             'activity_id', pg.activity_id))
                FILTER (WHERE pg.n = v_size))[1]
           END
    INTO total_size, items, next_after
    FROM page pg
    CROSS JOIN LATERAL (
        SELECT pg.activity_id, pg.title, activity.pa_pb_timestamp(pg.scheduled_at) AS scheduled_at,
               pg.participants_to_confirm) item;
END $$;
