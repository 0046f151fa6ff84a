-- Every change of who takes part in an activity, one function per kind (contract 9's event
-- types name them). Whatever has to accompany such a change is written here and nowhere else:
-- the activity's counters, and the outbox row of its event (activity.pa_event), in the same
-- transaction: no change without its event, no event of a change that rolled back.
--
-- Each is called with the activity row locked FOR NO KEY UPDATE (the lock that decides seats
-- and queue order), after the caller's checks, and does a fixed amount of work whatever the
-- size of the activity: the counters are added to and subtracted from, never recounted, and
-- the waitlist is never renumbered. p_actor is who caused the change (NULL: the service itself).
-- Times of admission are clock_timestamp(): the moment the seat or place was decided under the
-- lock, so joined_at follows queue order even for calls that waited on the lock.
-- Helpers are called in assignments, never with PERFORM: PL/pgSQL evaluates an assignment's
-- function call as a simple expression, where PERFORM runs a whole SELECT through the executor
-- (measured in a loop: 0.5 us against 3 us a call).

-- The participants row of a seat: a new one, or an earlier record (cancelled, left over) made
-- current again. Not a change of its own: pa_register and pa_promote write it.
CREATE OR REPLACE FUNCTION activity.pa_seat_row(p_activity_id uuid, p_user uuid)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz := clock_timestamp();
BEGIN
    INSERT INTO activity.participants AS p
        (activity_id, user_id, role, participation_status, attendance_status, joined_at)
    VALUES (p_activity_id, p_user, 'member', 'registered', 'registered', v_at)
    ON CONFLICT (activity_id, user_id) DO UPDATE
    SET role = 'member', participation_status = 'registered', attendance_status = 'registered',
        joined_at = v_at, left_at = NULL, cancelled_at = NULL, cancellation_reason = NULL,
        updated_at = now();
    RETURN v_at;
END $$;

-- JOINED: a free seat taken by a join or an accepted invitation.
CREATE OR REPLACE FUNCTION activity.pa_register(p_activity_id uuid, p_user uuid, p_actor uuid)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_at timestamptz := activity.pa_seat_row(p_activity_id, p_user);
BEGIN
    UPDATE activity.activities a SET current_participants_count = a.current_participants_count + 1
    WHERE a.activity_id = p_activity_id;
    v_event := activity.pa_event(p_activity_id, 'joined', p_user, p_actor);
    RETURN v_at;
END $$;

-- WAITLISTED: appended after the last entry. The counter is exact, so the new last place is
-- the waitlist counter itself; the position stored is one more than the largest (an index
-- probe), leaving the gaps of earlier departures where they are.
CREATE OR REPLACE FUNCTION activity.pa_enqueue(p_activity_id uuid, p_user uuid, p_actor uuid,
    OUT waitlist_position integer, OUT joined_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    joined_at := clock_timestamp();
    INSERT INTO activity.waitlist_entries (activity_id, user_id, position, created_at)
    SELECT p_activity_id, p_user, coalesce(max(w.position), 0) + 1, joined_at
    FROM activity.waitlist_entries w WHERE w.activity_id = p_activity_id;
    UPDATE activity.activities a SET waitlist_count = a.waitlist_count + 1
    WHERE a.activity_id = p_activity_id
    RETURNING a.waitlist_count INTO waitlist_position;
    v_event := activity.pa_event(p_activity_id, 'waitlisted', p_user, p_actor,
                                 jsonb_build_object('waitlist_position', waitlist_position));
END $$;

-- LEFT_WAITLIST: false when the user was not waiting.
CREATE OR REPLACE FUNCTION activity.pa_leave_waitlist(p_activity_id uuid, p_user uuid,
                                                      p_actor uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    DELETE FROM activity.waitlist_entries w
    WHERE w.activity_id = p_activity_id AND w.user_id = p_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE activity.activities a SET waitlist_count = greatest(a.waitlist_count - 1, 0)
    WHERE a.activity_id = p_activity_id;
    v_event := activity.pa_event(p_activity_id, 'left_waitlist', p_user, p_actor);
    RETURN true;
END $$;

-- PROMOTED: from the waitlist into a free seat.
CREATE OR REPLACE FUNCTION activity.pa_promote(p_activity_id uuid, p_user uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_at timestamptz;
BEGIN
    DELETE FROM activity.waitlist_entries w
    WHERE w.activity_id = p_activity_id AND w.user_id = p_user;
    v_at := activity.pa_seat_row(p_activity_id, p_user);
    UPDATE activity.activities a
    SET current_participants_count = a.current_participants_count + 1,
        waitlist_count = greatest(a.waitlist_count - 1, 0)
    WHERE a.activity_id = p_activity_id;
    v_event := activity.pa_event(p_activity_id, 'promoted', p_user, NULL);
END $$;

-- DROPPED_FROM_WAITLIST: a waitlisted user who became ineligible, met at the head of the queue.
CREATE OR REPLACE FUNCTION activity.pa_drop_from_waitlist(p_activity_id uuid, p_user uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    DELETE FROM activity.waitlist_entries w
    WHERE w.activity_id = p_activity_id AND w.user_id = p_user;
    UPDATE activity.activities a SET waitlist_count = greatest(a.waitlist_count - 1, 0)
    WHERE a.activity_id = p_activity_id;
    v_event := activity.pa_event(p_activity_id, 'dropped_from_waitlist', p_user, NULL);
END $$;

-- A registered participant is gone (left or cancelled): their seat frees, except where the
-- activity is overbooked (contract 8), where the excess shrinks and no seat frees. One
-- statement either way. Returns the seats now free.
CREATE OR REPLACE FUNCTION activity.pa_release_seat(p_activity_id uuid)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_free integer;
BEGIN
    WITH gone AS (
        DELETE FROM activity.activity_overbooking o
        WHERE o.activity_id = p_activity_id AND o.excess = 1 RETURNING 1
    ), shrunk AS (
        UPDATE activity.activity_overbooking o SET excess = o.excess - 1
        WHERE o.activity_id = p_activity_id AND o.excess > 1 RETURNING 1
    )
    UPDATE activity.activities a
    SET current_participants_count = greatest(a.current_participants_count - 1, 0)
    WHERE a.activity_id = p_activity_id
      AND NOT EXISTS (SELECT FROM gone) AND NOT EXISTS (SELECT FROM shrunk)
    RETURNING a.max_participants - a.current_participants_count INTO v_free;
    RETURN coalesce(v_free, 0);
END $$;

-- LEFT: a registered participant leaves. Returns the seats now free; NULL when the user was
-- not registered.
CREATE OR REPLACE FUNCTION activity.pa_leave(p_activity_id uuid, p_user uuid, p_actor uuid)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    DELETE FROM activity.participants p
    WHERE p.activity_id = p_activity_id AND p.user_id = p_user
      AND p.participation_status = 'registered';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_event := activity.pa_event(p_activity_id, 'left', p_user, p_actor);
    RETURN activity.pa_release_seat(p_activity_id);
END $$;

-- CANCELLED: a registered participant cancels; the record stays with its reason and time.
-- Returns the seats now free; NULL when the user was not registered.
CREATE OR REPLACE FUNCTION activity.pa_cancel(p_activity_id uuid, p_user uuid, p_reason text,
                                              p_actor uuid)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    UPDATE activity.participants p
    SET participation_status = 'cancelled', cancelled_at = now(), left_at = now(),
        cancellation_reason = nullif(p_reason, ''), updated_at = now()
    WHERE p.activity_id = p_activity_id AND p.user_id = p_user
      AND p.participation_status = 'registered';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_event := activity.pa_event(p_activity_id, 'cancelled', p_user, p_actor);
    RETURN activity.pa_release_seat(p_activity_id);
END $$;

-- Fills p_free seats from the head of the waitlist (a as read under the lock, before the
-- change that freed them). A waitlisted user who has become ineligible (banned, or blocked
-- with the organizer on a non-XXL activity) is dropped instead. Each turn reads the one entry
-- at the head (an index probe on (activity_id, position)), so promoting k users costs O(k)
-- whatever the length of the queue. Returns the promoted users in queue order.
CREATE OR REPLACE FUNCTION activity.pa_fill_seats(a activity.activities, p_free integer)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    v_promoted uuid[] := '{}';
    v_waiting integer := a.waitlist_count;
    e record;
BEGIN
    WHILE p_free > 0 AND v_waiting > 0 LOOP
        SELECT w.user_id,
               coalesce(activity.pa_eligible(u), false)
               AND (a.activity_type = 'xxl'
                    OR NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                                   WHERE b.user_a = w.user_id
                                     AND b.user_b = a.organizer_user_id)) AS eligible
        INTO e
        FROM activity.waitlist_entries w LEFT JOIN activity.users u ON u.user_id = w.user_id
        WHERE w.activity_id = a.activity_id
        ORDER BY w.position
        LIMIT 1;
        EXIT WHEN NOT FOUND;
        IF e.eligible THEN
            PERFORM activity.pa_promote(a.activity_id, e.user_id);
            v_promoted := v_promoted || e.user_id;
            p_free := p_free - 1;
        ELSE
            PERFORM activity.pa_drop_from_waitlist(a.activity_id, e.user_id);
        END IF;
        v_waiting := v_waiting - 1;
    END LOOP;
    RETURN v_promoted;
END $$;

-- ROLE_CHANGED.
CREATE OR REPLACE FUNCTION activity.pa_set_role(p_activity_id uuid, p_user uuid, p_role text,
                                                p_actor uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    UPDATE activity.participants p
    SET role = p_role::activity.participant_role, updated_at = now()
    WHERE p.activity_id = p_activity_id AND p.user_id = p_user;
    v_event := activity.pa_event(p_activity_id, 'role_changed', p_user, p_actor,
                                 jsonb_build_object('role', p_role));
END $$;

-- ATTENDANCE_MARKED: one entry of MarkAttendance; false when the user is not a registered
-- participant. users.no_show_count and users.activities_attended_count follow transitions:
-- entering NO_SHOW (ATTENDED) adds one, leaving it gives it back, and marking the same status
-- again changes nothing, so neither counter is ever counted twice.
CREATE OR REPLACE FUNCTION activity.pa_set_attendance(p_activity_id uuid, p_user uuid,
                                                      p_status text, p_actor uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_old text;
BEGIN
    SELECT p.attendance_status::text INTO v_old FROM activity.participants p
    WHERE p.activity_id = p_activity_id AND p.user_id = p_user
      AND p.participation_status = 'registered';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_old IS DISTINCT FROM p_status THEN
        UPDATE activity.participants p
        SET attendance_status = p_status::activity.attendance_status, updated_at = now()
        WHERE p.activity_id = p_activity_id AND p.user_id = p_user;
        UPDATE activity.users u
        SET no_show_count = greatest(u.no_show_count + (p_status = 'no_show')::int
                                     - (v_old = 'no_show')::int, 0),
            activities_attended_count = greatest(u.activities_attended_count
                                                 + (p_status = 'attended')::int
                                                 - (v_old = 'attended')::int, 0),
            updated_at = now()
        WHERE u.user_id = p_user;
        v_event := activity.pa_event(p_activity_id, 'attendance_marked', p_user, p_actor,
                                     jsonb_build_object('attendance_status', p_status));
    END IF;
    RETURN true;
END $$;

-- ATTENDANCE_CONFIRMED: p_confirmer vouches that p_confirmed attended. The unique triple
-- settles two identical confirmations racing past the checks: NULL when one already exists.
-- Returns the confirmation's id and the confirmed user's new total.
CREATE OR REPLACE FUNCTION activity.pa_confirm(p_activity_id uuid, p_confirmed uuid,
    p_confirmer uuid, OUT confirmation_id uuid, OUT verification_count integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
BEGIN
    INSERT INTO activity.attendance_confirmations AS c
        (activity_id, confirmed_user_id, confirmer_user_id)
    VALUES (p_activity_id, p_confirmed, p_confirmer)
    ON CONFLICT DO NOTHING
    RETURNING c.confirmation_id INTO confirmation_id;
    IF confirmation_id IS NULL THEN
        RETURN;
    END IF;
    UPDATE activity.users u SET verification_count = u.verification_count + 1, updated_at = now()
    WHERE u.user_id = p_confirmed
    RETURNING u.verification_count INTO verification_count;
    v_event := activity.pa_event(p_activity_id, 'attendance_confirmed', p_confirmed, p_confirmer);
END $$;

-- INVITED: a new pending invitation. An earlier one that ran out is recorded as expired first,
-- so a pair has at most one pending row.
CREATE OR REPLACE FUNCTION activity.pa_invite(p_activity_id uuid, p_inviter uuid, p_invitee uuid,
                                              p_message text, p_expires_in_hours integer)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_id uuid;
BEGIN
    UPDATE activity.activity_invitations i SET status = 'expired'
    WHERE i.activity_id = p_activity_id AND i.user_id = p_invitee AND i.status = 'pending'
      AND i.expires_at <= now();
    INSERT INTO activity.activity_invitations AS i
        (activity_id, user_id, invited_by_user_id, status, invited_at, expires_at, message)
    VALUES (p_activity_id, p_invitee, p_inviter, 'pending', now(),
            now() + make_interval(hours => p_expires_in_hours), nullif(p_message, ''))
    RETURNING i.invitation_id INTO v_id;
    v_event := activity.pa_event(p_activity_id, 'invited', p_invitee, p_inviter,
                                 jsonb_build_object('invitation_id', v_id));
    RETURN v_id;
END $$;

-- INVITATION_ACCEPTED, INVITATION_DECLINED, INVITATION_CANCELLED: p_status is accepted,
-- declined or cancelled. An accepted invitation is closed before the seat or place it gives.
CREATE OR REPLACE FUNCTION activity.pa_close_invitation(p_invitation_id uuid, p_status text,
                                                        p_actor uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint;
    v_activity_id uuid;
    v_invitee uuid;
BEGIN
    UPDATE activity.activity_invitations i
    SET status = p_status::activity.invitation_status, responded_at = now()
    WHERE i.invitation_id = p_invitation_id
    RETURNING i.activity_id, i.user_id INTO v_activity_id, v_invitee;
    v_event := activity.pa_event(v_activity_id, 'invitation_' || p_status, v_invitee, p_actor,
                                 jsonb_build_object('invitation_id', p_invitation_id));
END $$;
