-- Joining, leaving, cancelling and the participation lists (contract 4.1-4.3, 4.6).

CREATE OR REPLACE FUNCTION activity.sp_join_activity(p_activity_id uuid, p_user_id uuid,
                                                     p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, user_id uuid, participation_status text, role text,
               waitlist_position integer, joined_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
    a activity.activities;
    r record;
BEGIN
    IF p_request_id IS NOT NULL THEN
        v_reply := activity.pa_replay(p_user_id, p_request_id, 'JoinActivity',
                                      jsonb_build_array(p_activity_id));
        IF v_reply IS NOT NULL THEN
            RETURN QUERY SELECT * FROM jsonb_to_record(v_reply) AS x(activity_id uuid,
                user_id uuid, participation_status text, role text, waitlist_position integer,
                joined_at timestamptz);
            RETURN;
        END IF;
    END IF;
    -- Every join of this activity queues here: capacity and positions are decided one at a
    -- time. The checks run under the lock too: on two shared cores, reads moved before it only
    -- competed for the CPU with the lock's holder (measured: no gain in hot joins per second).
    a := activity.pa_lock_activity(p_activity_id);
    r := activity.pa_admit(a, p_user_id, activity.pa_check_join(a, p_activity_id, p_user_id, false));
    activity_id := p_activity_id;
    user_id := p_user_id;
    participation_status := r.participation_status;
    role := r.role;
    waitlist_position := r.waitlist_position;
    joined_at := r.joined_at;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'JoinActivity',
            jsonb_build_array(p_activity_id),
            jsonb_build_object('activity_id', activity_id, 'user_id', user_id,
                               'participation_status', participation_status, 'role', role,
                               'waitlist_position', waitlist_position, 'joined_at', joined_at));
    END IF;
    RETURN NEXT;
END $$;

-- Leave and cancel share their opening: the activity locked, not the organizer's own. Whether
-- the caller holds a place is learnt by the change itself (pa_leave, pa_cancel), so this reads
-- nothing more, except for an activity that has started, where nothing changes and the answer
-- depends on it: ACTIVITY_IN_PAST to someone who holds a place or can see the activity,
-- ACTIVITY_NOT_FOUND to anyone else.
CREATE OR REPLACE FUNCTION activity.pa_lock_for_withdrawal(p_activity_id uuid, p_user uuid)
RETURNS activity.activities LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities := activity.pa_lock_activity(p_activity_id);
BEGIN
    IF a.activity_id IS NULL THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.organizer_user_id = p_user THEN
        PERFORM activity.pa_raise('PA009', 'IS_ORGANIZER',
                                  'The organizer cannot leave their own activity',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.scheduled_at <= now() THEN
        PERFORM activity.pa_refuse_absent(a, p_user, NOT activity.pa_holds_place(a, p_user));
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_IN_PAST', 'The activity has already started',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    RETURN a;
END $$;

-- Registered or waitlisted in the activity.
CREATE OR REPLACE FUNCTION activity.pa_holds_place(a activity.activities, p_user uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM activity.participants p
                   WHERE p.activity_id = a.activity_id AND p.user_id = p_user
                     AND p.participation_status = 'registered')
        OR EXISTS (SELECT 1 FROM activity.waitlist_entries w
                   WHERE w.activity_id = a.activity_id AND w.user_id = p_user);
END $$;

-- A caller who holds no place (p_absent) in an activity they cannot see is told it does not
-- exist: a participant can always get out, a stranger learns nothing.
CREATE OR REPLACE FUNCTION activity.pa_refuse_absent(a activity.activities, p_user uuid,
                                                     p_absent boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_absent AND NOT activity.pa_can_see(a, p_user) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', a.activity_id));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION activity.sp_leave_activity(p_activity_id uuid, p_user_id uuid,
                                                      p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, user_id uuid, left_at timestamptz, was_waitlisted boolean,
               promoted_user_ids uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
    a activity.activities;
    v_free integer;
BEGIN
    IF p_request_id IS NOT NULL THEN
        v_reply := activity.pa_replay(p_user_id, p_request_id, 'LeaveActivity',
                                      jsonb_build_array(p_activity_id));
        IF v_reply IS NOT NULL THEN
            RETURN QUERY SELECT * FROM jsonb_to_record(v_reply) AS x(activity_id uuid,
                user_id uuid, left_at timestamptz, was_waitlisted boolean,
                promoted_user_ids uuid[]);
            RETURN;
        END IF;
    END IF;
    a := activity.pa_lock_for_withdrawal(p_activity_id, p_user_id);
    activity_id := p_activity_id;
    user_id := p_user_id;
    left_at := now();
    promoted_user_ids := '{}';
    -- A seat first (the common case: one statement), else a place in the queue.
    v_free := activity.pa_leave(p_activity_id, p_user_id, p_user_id);
    was_waitlisted := v_free IS NULL;
    IF was_waitlisted THEN
        IF NOT activity.pa_leave_waitlist(p_activity_id, p_user_id, p_user_id) THEN
            PERFORM activity.pa_refuse_absent(a, p_user_id, true);
            PERFORM activity.pa_raise('PA009', 'NOT_PARTICIPANT', 'The user is not a participant',
                                      jsonb_build_object('activity_id', p_activity_id));
        END IF;
    ELSIF v_free > 0 AND a.waitlist_count > 0 THEN
        promoted_user_ids := activity.pa_fill_seats(a, v_free);
    END IF;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'LeaveActivity',
            jsonb_build_array(p_activity_id),
            jsonb_build_object('activity_id', activity_id, 'user_id', user_id, 'left_at', left_at,
                               'was_waitlisted', was_waitlisted,
                               'promoted_user_ids', promoted_user_ids));
    END IF;
    RETURN NEXT;
END $$;

CREATE OR REPLACE FUNCTION activity.sp_cancel_participation(p_activity_id uuid, p_user_id uuid,
                                                            p_reason text DEFAULT NULL,
                                                            p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, user_id uuid, participation_status text,
               cancelled_at timestamptz, promoted_user_ids uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_activity_id, p_reason);
    v_reply jsonb := activity.pa_replay(p_user_id, p_request_id, 'CancelParticipation', v_request);
    a activity.activities;
    v_free integer;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply) AS x(activity_id uuid, user_id uuid,
            participation_status text, cancelled_at timestamptz, promoted_user_ids uuid[]);
        RETURN;
    END IF;
    a := activity.pa_lock_for_withdrawal(p_activity_id, p_user_id);
    v_free := activity.pa_cancel(p_activity_id, p_user_id, p_reason, p_user_id);
    IF v_free IS NULL THEN
        PERFORM activity.pa_refuse_cancel(a, p_user_id);
    END IF;
    activity_id := p_activity_id;
    user_id := p_user_id;
    participation_status := 'cancelled';
    cancelled_at := now();
    promoted_user_ids := activity.pa_fill_seats(a, v_free);
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'CancelParticipation', v_request,
            jsonb_build_object('activity_id', activity_id, 'user_id', user_id,
                               'participation_status', participation_status,
                               'cancelled_at', cancelled_at,
                               'promoted_user_ids', promoted_user_ids));
    END IF;
    RETURN NEXT;
END $$;

-- Why a caller who is not registered cannot cancel (contract 8): a waitlisted user leaves
-- instead, a cancelled one has cancelled already, anyone else takes no part (or, when they
-- cannot see the activity, it does not exist for them).
CREATE OR REPLACE FUNCTION activity.pa_refuse_cancel(a activity.activities, p_user uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb := jsonb_build_object('activity_id', a.activity_id);
BEGIN
    IF EXISTS (SELECT 1 FROM activity.waitlist_entries w
               WHERE w.activity_id = a.activity_id AND w.user_id = p_user) THEN
        PERFORM activity.pa_raise('PA009', 'NOT_PARTICIPANT',
                                  'A waitlisted user leaves the waitlist instead of cancelling', ids);
    END IF;
    PERFORM activity.pa_refuse_absent(a, p_user, true);
    IF EXISTS (SELECT 1 FROM activity.participants p
               WHERE p.activity_id = a.activity_id AND p.user_id = p_user
                 AND p.participation_status = 'cancelled') THEN
        PERFORM activity.pa_raise('PA009', 'ALREADY_CANCELLED',
                                  'The participation is already cancelled', ids);
    END IF;
    PERFORM activity.pa_raise('PA009', 'NOT_PARTICIPANT', 'The user is not a participant', ids);
END $$;

-- Registered (default) or cancelled participants: organizer, co-organizers, members; within a
-- role by joined_at, then user_id. Users blocked with the caller are left out.
--
-- A page reads its own rows only: one keyset range per role on participants_activity_status_idx
-- (activity, status, role, joined_at), each stopping after a page. total_size of registered
-- participants (all, or members) comes from the counters: registered rows =
-- current_participants_count + overbooking excess, less the organizer and co-organizers for
-- members, less the rows of users blocked with the caller. Cancelled participants and the
-- organizer or co-organizer filters have no counter: those are counted (an index range).
CREATE OR REPLACE FUNCTION activity.sp_list_participants(p_activity_id uuid, p_user_id uuid,
    p_participation_status text DEFAULT NULL, p_role text DEFAULT NULL,
    p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    a activity.activities := (SELECT x FROM activity.activities x WHERE x.activity_id = p_activity_id);
    v_size integer := activity.pa_page_size(p_page_size, 50);
    v_status activity.participation_status := coalesce(p_participation_status, 'registered');
    v_role activity.participant_role := p_role;
    v_rank integer := coalesce((p_after->>'rank')::integer, 0);
    v_joined timestamptz := coalesce((p_after->>'joined_at')::timestamptz, '-infinity');
    v_user uuid := coalesce((p_after->>'user_id')::uuid, '00000000-0000-0000-0000-000000000000');
BEGIN
    IF NOT activity.pa_can_see(a, p_user_id) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    SELECT coalesce(json_agg(pg.item ORDER BY pg.n) FILTER (WHERE pg.n <= v_size), '[]'),
           CASE WHEN count(*) > v_size THEN
               (array_agg(jsonb_build_object('rank', pg.rank, 'joined_at', pg.joined_at,
                                             'user_id', pg.user_id))
                FILTER (WHERE pg.n = v_size))[1]
           END
    INTO items, next_after
    FROM (SELECT row_number() OVER (ORDER BY r.rank, r.joined_at, r.user_id) AS n,
                 r.rank, r.joined_at, r.user_id,
                 (SELECT row_to_json(item) FROM (
                      SELECT r.user_id, u.username, u.first_name, u.last_name,
                             u.main_photo_url AS profile_photo_url,
                             activity.pa_pb_enum('PARTICIPANT_ROLE', r.role::text) AS role,
                             activity.pa_pb_enum('PARTICIPATION_STATUS',
                                                 r.participation_status::text) AS participation_status,
                             activity.pa_pb_enum('ATTENDANCE_STATUS', r.attendance_status::text)
                                 AS attendance_status,
                             activity.pa_pb_timestamp(r.joined_at) AS joined_at,
                             u.is_verified, u.verification_count
                      FROM activity.users u WHERE u.user_id = r.user_id) item) AS item
          FROM (SELECT k.rank, p.*
                FROM (VALUES (0, 'organizer'::activity.participant_role),
                             (1, 'co_organizer'::activity.participant_role),
                             (2, 'member'::activity.participant_role)) AS k(rank, role)
                CROSS JOIN LATERAL (
                    SELECT p.* FROM activity.participants p
                    WHERE p.activity_id = p_activity_id AND p.participation_status = v_status
                      AND p.role = k.role
                      -- within the rank of the last row, after it; in later ranks, from the start
                      AND (p.joined_at, p.user_id)
                          > (CASE WHEN k.rank = v_rank THEN v_joined ELSE '-infinity' END,
                             CASE WHEN k.rank = v_rank THEN v_user
                                  ELSE '00000000-0000-0000-0000-000000000000' END)
                      AND NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b  -- OFFSET 0: probed per row
                                      WHERE b.user_a = p.user_id AND b.user_b = p_user_id OFFSET 0)
                    ORDER BY p.joined_at, p.user_id
                    LIMIT v_size + 1) p
                WHERE k.rank >= v_rank AND (v_role IS NULL OR k.role = v_role)
                ORDER BY k.rank, p.joined_at, p.user_id
                LIMIT v_size + 1) r) pg;
    total_size := activity.pa_participants_total(a, p_user_id, v_status, v_role);
END $$;

-- total_size of ListParticipants (see above). Roles are matched with = ANY (an array), never
-- "p_role IS NULL OR role = p_role", so that one cached plan serves every filter with an index
-- range rather than a scan of the activity's registered rows.
CREATE OR REPLACE FUNCTION activity.pa_participants_total(a activity.activities, p_caller uuid,
    p_status activity.participation_status, p_role activity.participant_role)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_roles activity.participant_role[] := CASE WHEN p_role IS NULL
                                                THEN enum_range(NULL::activity.participant_role)
                                                ELSE ARRAY[p_role] END;
    v_blocked bigint := (SELECT count(*) FROM activity.participants p
                         WHERE p.activity_id = a.activity_id AND p.participation_status = p_status
                           AND p.role = ANY (v_roles)
                           AND p.user_id IN (SELECT b.user_a FROM activity.pa_block_pairs b
                                             WHERE b.user_b = p_caller));
BEGIN
    IF p_status <> 'registered' OR p_role IN ('organizer', 'co_organizer') THEN
        RETURN (SELECT count(*) FROM activity.participants p
                WHERE p.activity_id = a.activity_id AND p.participation_status = p_status
                  AND p.role = ANY (v_roles)) - v_blocked;
    END IF;
    RETURN a.current_participants_count
           + coalesce((SELECT o.excess FROM activity.activity_overbooking o
                       WHERE o.activity_id = a.activity_id), 0)
           - CASE WHEN p_role = 'member' THEN
                 (SELECT count(*) FROM activity.participants p
                  WHERE p.activity_id = a.activity_id AND p.participation_status = 'registered'
                    AND p.role IN ('organizer', 'co_organizer'))
             ELSE 0 END
           - v_blocked;
END $$;

-- A user's participations. Oneself: every participation, the waitlist included (a waitlist
-- place supersedes an older cancelled record of the same activity). Another user: registered
-- participations in activities the caller can see; a missing or blocked user is USER_NOT_FOUND.
-- UPCOMING is ordered by scheduled_at ascending, everything else descending. No counter
-- covers a user's participations: total_size counts them (one user's history, never an
-- activity's rows), and waitlist places are worked out for the page's rows only.
CREATE OR REPLACE FUNCTION activity.sp_get_user_activities(p_user_id uuid, p_caller_id uuid,
    p_filter text DEFAULT NULL, p_participation_status text DEFAULT NULL,
    p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_target uuid := coalesce(p_user_id, p_caller_id);
    v_self boolean := v_target = p_caller_id;
    v_size integer := activity.pa_page_size(p_page_size, 20);
    v_asc boolean := p_filter IS NOT DISTINCT FROM 'upcoming';
    v_after_s timestamptz := (p_after->>'scheduled_at')::timestamptz;
    v_after_a uuid := (p_after->>'activity_id')::uuid;
BEGIN
    IF NOT v_self AND (NOT EXISTS (SELECT 1 FROM activity.users WHERE user_id = v_target)
                       OR activity.pa_blocked(v_target, p_caller_id)) THEN
        PERFORM activity.pa_raise('PA005', 'USER_NOT_FOUND', 'User not found',
                                  jsonb_build_object('user_id', v_target));
    END IF;
    WITH mine AS (
        SELECT p.activity_id, p.role::text AS role, p.participation_status::text AS participation_status,
               p.attendance_status::text AS attendance_status, NULL::integer AS position, p.joined_at
        FROM activity.participants p
        WHERE p.user_id = v_target
          AND (v_self OR p.participation_status = 'registered')
          AND NOT EXISTS (SELECT 1 FROM activity.waitlist_entries w
                          WHERE w.activity_id = p.activity_id AND w.user_id = v_target)
        UNION ALL
        SELECT w.activity_id, NULL, 'waitlisted', NULL, w.position, w.created_at
        FROM activity.waitlist_entries w
        WHERE w.user_id = v_target AND v_self
    ), matching AS (
        SELECT a.activity_id, a.title, a.scheduled_at, a.location_name, a.city,
               a.organizer_user_id, a.current_participants_count, a.max_participants,
               a.activity_type, m.role, m.participation_status, m.attendance_status, m.position,
               m.joined_at
        FROM mine m
        JOIN activity.activities a ON a.activity_id = m.activity_id
        WHERE (v_self OR activity.pa_can_see(a, p_caller_id))
          AND (p_participation_status IS NULL OR m.participation_status = p_participation_status)
          AND CASE p_filter
                  WHEN 'upcoming' THEN a.scheduled_at > now()
                  WHEN 'past' THEN a.scheduled_at <= now()
                  WHEN 'organized' THEN a.organizer_user_id = v_target
                  WHEN 'attended' THEN m.attendance_status = 'attended'
                  ELSE true
              END
    ), page AS (
        SELECT m.*, row_number() OVER (
                   ORDER BY CASE WHEN v_asc THEN m.scheduled_at END ASC,
                            CASE WHEN v_asc THEN m.activity_id END ASC,
                            CASE WHEN NOT v_asc THEN m.scheduled_at END DESC,
                            CASE WHEN NOT v_asc THEN m.activity_id END DESC) AS n
        FROM matching m
        WHERE p_after IS NULL
           OR (v_asc AND (m.scheduled_at, m.activity_id) > (v_after_s, v_after_a))
           OR (NOT v_asc AND (m.scheduled_at, m.activity_id) < (v_after_s, v_after_a))
        ORDER BY n
        LIMIT v_size + 1
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
    LEFT JOIN activity.users o ON o.user_id = pg.organizer_user_id
    CROSS JOIN LATERAL (
        SELECT pg.activity_id, pg.title, activity.pa_pb_timestamp(pg.scheduled_at) AS scheduled_at,
               pg.location_name, pg.city, pg.organizer_user_id, o.username AS organizer_username,
               pg.current_participants_count, pg.max_participants,
               activity.pa_pb_enum('ACTIVITY_TYPE', pg.activity_type::text) AS activity_type,
               activity.pa_pb_enum('PARTICIPANT_ROLE', pg.role) AS role,
               activity.pa_pb_enum('PARTICIPATION_STATUS', pg.participation_status)
                   AS participation_status,
               activity.pa_pb_enum('ATTENDANCE_STATUS', pg.attendance_status) AS attendance_status,
               CASE WHEN pg.position IS NULL THEN 0
                    ELSE activity.pa_visible_position(pg.activity_id, pg.position)
               END AS waitlist_position,
               activity.pa_pb_timestamp(pg.joined_at) AS joined_at) item;
END $$;
