-- Rules shared by several procedures. Internal helpers are prefixed pa_; only the sp_ functions
-- are the service's interface.
--
-- Errors: a rule violation raises SQLSTATE 'PA' || the gRPC code number it stands for
-- (PA003 INVALID_ARGUMENT, PA005 NOT_FOUND, PA006 ALREADY_EXISTS, PA007 PERMISSION_DENIED,
-- PA009 FAILED_PRECONDITION), MESSAGE a sentence fit for the caller, DETAIL the stable reason
-- and HINT a JSON object of the ids involved. Raising rolls the whole call back.

CREATE OR REPLACE FUNCTION activity.pa_raise(p_sqlstate text, p_reason text, p_message text,
                                             p_metadata jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_message, DETAIL = p_reason,
                          HINT = p_metadata::text;
END $$;

-- Blocks as pairs in both directions: (a, b) whenever a blocks b or b blocks a. Lists filter
-- rows with NOT EXISTS on this view, which the planner inlines and answers from user_blocks'
-- primary key in both directions; a boolean function with a subquery (pa_blocked) is never
-- inlined and would run once per listed row.
CREATE OR REPLACE VIEW activity.pa_block_pairs AS
    SELECT blocker_user_id AS user_a, blocked_user_id AS user_b FROM activity.user_blocks
    UNION ALL
    SELECT blocked_user_id, blocker_user_id FROM activity.user_blocks;

-- A block in either direction, for one pair.
CREATE OR REPLACE FUNCTION activity.pa_blocked(p_a uuid, p_b uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM activity.pa_block_pairs WHERE user_a = p_a AND user_b = p_b)
$$;

CREATE OR REPLACE FUNCTION activity.pa_friends(p_a uuid, p_b uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM activity.friendships
                   WHERE user_id_1 = least(p_a, p_b) AND user_id_2 = greatest(p_a, p_b)
                     AND status = 'accepted')
$$;

-- Active, or a temporary ban that has run out.
CREATE OR REPLACE FUNCTION activity.pa_eligible(u activity.users)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT u.status = 'active' OR (u.status = 'temporary_ban' AND u.ban_expires_at < now())
$$;

-- The subscription in force now: a paid level past its expiry counts as free.
CREATE OR REPLACE FUNCTION activity.pa_effective_subscription(u activity.users)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN u.subscription_level::text <> 'free' AND u.subscription_expires_at <= now()
                THEN 'free' ELSE u.subscription_level::text END
$$;

-- Contract 4.2: may p_user see activity a? Callers report false exactly like a missing activity.
CREATE OR REPLACE FUNCTION activity.pa_can_see(a activity.activities, p_user uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT a.activity_id IS NOT NULL
       AND (a.status <> 'draft' OR a.organizer_user_id = p_user)
       AND (a.activity_type = 'xxl' OR NOT activity.pa_blocked(p_user, a.organizer_user_id))
       AND (a.activity_privacy_level = 'public'
            OR a.organizer_user_id = p_user
            OR EXISTS (SELECT 1 FROM activity.participants p
                       WHERE p.activity_id = a.activity_id AND p.user_id = p_user)
            OR EXISTS (SELECT 1 FROM activity.waitlist_entries w
                       WHERE w.activity_id = a.activity_id AND w.user_id = p_user)
            OR EXISTS (SELECT 1 FROM activity.activity_invitations i
                       WHERE i.activity_id = a.activity_id AND i.user_id = p_user)
            OR (a.activity_privacy_level = 'friends_only'
                AND activity.pa_friends(p_user, a.organizer_user_id)))
$$;

-- The activity row, locked for the rest of the call (every seat decision is made under this
-- lock), or ACTIVITY_NOT_FOUND when it is missing or the caller may not see it.
CREATE OR REPLACE FUNCTION activity.pa_lock_visible_activity(p_activity_id uuid, p_user uuid)
RETURNS activity.activities LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities;
BEGIN
    SELECT * INTO a FROM activity.activities WHERE activity_id = p_activity_id FOR NO KEY UPDATE;
    IF NOT activity.pa_can_see(a, p_user) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    RETURN a;
END $$;

CREATE OR REPLACE FUNCTION activity.pa_registered_count(p_activity_id uuid)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT count(*)::int FROM activity.participants
    WHERE activity_id = p_activity_id AND participation_status = 'registered'
$$;

-- Counters are recomputed from the rows under the activity lock, so they are exact and repair
-- any drift left by earlier software.
CREATE OR REPLACE FUNCTION activity.pa_sync_counts(p_activity_id uuid)
RETURNS void LANGUAGE sql AS $$
    UPDATE activity.activities
    SET current_participants_count = activity.pa_registered_count(p_activity_id),
        waitlist_count = (SELECT count(*) FROM activity.waitlist_entries
                          WHERE activity_id = p_activity_id)
    WHERE activity_id = p_activity_id
$$;

-- Close the gaps: positions become 1..n in queue order (the unique constraint is deferred).
CREATE OR REPLACE FUNCTION activity.pa_renumber_waitlist(p_activity_id uuid)
RETURNS void LANGUAGE sql AS $$
    UPDATE activity.waitlist_entries w SET position = r.rn
    FROM (SELECT waitlist_id, row_number() OVER (ORDER BY position, created_at) AS rn
          FROM activity.waitlist_entries WHERE activity_id = p_activity_id) r
    WHERE w.waitlist_id = r.waitlist_id AND w.position <> r.rn
$$;

-- A registered member; a cancelled record from an earlier participation becomes current again.
-- Times of admission are clock_timestamp(): the moment the seat or place was decided under the
-- activity lock, so joined_at follows queue order even for calls that waited on the lock.
CREATE OR REPLACE FUNCTION activity.pa_register(p_activity_id uuid, p_user uuid)
RETURNS timestamptz LANGUAGE sql AS $$
    INSERT INTO activity.participants AS p
        (activity_id, user_id, role, participation_status, attendance_status, joined_at)
    VALUES (p_activity_id, p_user, 'member', 'registered', 'registered', clock_timestamp())
    ON CONFLICT (activity_id, user_id) DO UPDATE
    SET role = 'member', participation_status = 'registered', attendance_status = 'registered',
        joined_at = clock_timestamp(), left_at = NULL, cancelled_at = NULL, cancellation_reason = NULL,
        updated_at = now()
    RETURNING p.joined_at
$$;

-- Fill every free seat from the head of the waitlist. A waitlisted user who has become
-- ineligible (banned, or blocked with the organizer on a non-XXL activity) is dropped instead.
-- Call with the activity locked. Returns the promoted users in queue order.
CREATE OR REPLACE FUNCTION activity.pa_promote_waitlist(a activity.activities)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    v_free integer := a.max_participants - activity.pa_registered_count(a.activity_id);
    v_promoted uuid[] := '{}';
    e record;
BEGIN
    FOR e IN SELECT w.waitlist_id, w.user_id, u AS usr
             FROM activity.waitlist_entries w LEFT JOIN activity.users u USING (user_id)
             WHERE w.activity_id = a.activity_id ORDER BY w.position
    LOOP
        EXIT WHEN v_free <= 0;
        DELETE FROM activity.waitlist_entries WHERE waitlist_id = e.waitlist_id;
        CONTINUE WHEN (e.usr).user_id IS NULL OR NOT activity.pa_eligible(e.usr)
                   OR (a.activity_type <> 'xxl'
                       AND activity.pa_blocked(e.user_id, a.organizer_user_id));
        PERFORM activity.pa_register(a.activity_id, e.user_id);
        v_promoted := v_promoted || e.user_id;
        v_free := v_free - 1;
    END LOOP;
    PERFORM activity.pa_renumber_waitlist(a.activity_id);
    RETURN v_promoted;
END $$;

-- Contract 4.3's join checks, first failure wins. Shared by join and accept; accept passes
-- p_accepting = true: the invitation it accepts is the invitation, and only joining (not
-- accepting) ignores blocks on XXL activities (contract 4.1).
CREATE OR REPLACE FUNCTION activity.pa_check_join(a activity.activities, p_activity_id uuid,
                                                  p_user uuid, p_accepting boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u activity.users;
    ids jsonb := jsonb_build_object('activity_id', p_activity_id);
BEGIN
    IF a.activity_id IS NULL OR (a.status = 'draft' AND a.organizer_user_id <> p_user) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found', ids);
    ELSIF a.status <> 'published' THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_NOT_PUBLISHED',
                                  'The activity is not open for participation', ids);
    ELSIF a.scheduled_at <= now() THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_IN_PAST', 'The activity has already started', ids);
    END IF;
    SELECT * INTO u FROM activity.users WHERE user_id = p_user;
    IF u.user_id IS NULL THEN
        PERFORM activity.pa_raise('PA005', 'USER_NOT_FOUND', 'User not found',
                                  jsonb_build_object('user_id', p_user));
    ELSIF NOT activity.pa_eligible(u) THEN
        PERFORM activity.pa_raise('PA007', 'USER_BANNED', 'The user is banned',
                                  jsonb_build_object('user_id', p_user));
    ELSIF a.organizer_user_id = p_user THEN
        PERFORM activity.pa_raise('PA009', 'USER_IS_ORGANIZER',
                                  'The organizer already takes part in the activity', ids);
    ELSIF EXISTS (SELECT 1 FROM activity.participants
                  WHERE activity_id = p_activity_id AND user_id = p_user
                    AND participation_status = 'registered')
       OR EXISTS (SELECT 1 FROM activity.waitlist_entries
                  WHERE activity_id = p_activity_id AND user_id = p_user) THEN
        PERFORM activity.pa_raise('PA006', 'ALREADY_JOINED',
                                  'The user is already registered or waitlisted', ids);
    ELSIF (a.activity_type <> 'xxl' OR p_accepting)
          AND activity.pa_blocked(p_user, a.organizer_user_id) THEN
        PERFORM activity.pa_raise('PA007', 'BLOCKED_USER',
                                  'The user cannot join an activity of this organizer', ids);
    ELSIF a.activity_privacy_level = 'friends_only'
          AND NOT activity.pa_friends(p_user, a.organizer_user_id) THEN
        PERFORM activity.pa_raise('PA007', 'FRIENDS_ONLY',
                                  'Only friends of the organizer may join this activity', ids);
    ELSIF a.activity_privacy_level = 'invite_only' AND NOT p_accepting
          AND NOT EXISTS (SELECT 1 FROM activity.activity_invitations
                          WHERE activity_id = p_activity_id AND user_id = p_user
                            AND status = 'pending' AND expires_at > now()) THEN
        PERFORM activity.pa_raise('PA007', 'INVITE_ONLY',
                                  'This activity is open to invited users only', ids);
    ELSIF a.joinable_at_free IS NOT NULL AND now() < a.joinable_at_free
          AND activity.pa_effective_subscription(u) = 'free' THEN
        PERFORM activity.pa_raise('PA007', 'PREMIUM_ONLY_PERIOD',
                                  'Only club and premium members may join before '
                                  || to_char(a.joinable_at_free AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ids);
    END IF;
END $$;

-- Registers the user when a seat is free, otherwise appends them to the waitlist; marks their
-- pending invitation accepted either way. Call with the activity locked and checks passed.
CREATE OR REPLACE FUNCTION activity.pa_admit(a activity.activities, p_user uuid,
    OUT participation_status text, OUT role text, OUT waitlist_position integer,
    OUT joined_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    IF activity.pa_registered_count(a.activity_id) < a.max_participants THEN
        joined_at := activity.pa_register(a.activity_id, p_user);
        participation_status := 'registered';
        role := 'member';
        waitlist_position := 0;
    ELSE
        INSERT INTO activity.waitlist_entries AS w (activity_id, user_id, position, created_at)
        SELECT a.activity_id, p_user, coalesce(max(x.position), 0) + 1, clock_timestamp()
        FROM activity.waitlist_entries x WHERE x.activity_id = a.activity_id
        RETURNING w.position, w.created_at INTO waitlist_position, joined_at;
        participation_status := 'waitlisted';
    END IF;
    UPDATE activity.activity_invitations i SET status = 'accepted', responded_at = now()
    WHERE i.activity_id = a.activity_id AND i.user_id = p_user AND i.status = 'pending'
      AND i.expires_at > now();
    PERFORM activity.pa_sync_counts(a.activity_id);
END $$;

-- Shared by the list procedures: the opening of a keyset page. Sizes are validated by the
-- caller; this only guards direct calls from platform tools.
CREATE OR REPLACE FUNCTION activity.pa_page_size(p_page_size integer, p_default integer)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_page_size IS NULL OR p_page_size <= 0 THEN p_default
                ELSE least(p_page_size, 100) END
$$;

-- The tail every list shares. p_rows: the rows after the keyset position in page order, one
-- more than a page when more follow (LIMIT size + 1). Returns the page without the p_hidden
-- fields, and, when more follow, the p_key fields of its last row: where the next page starts.
CREATE OR REPLACE FUNCTION activity.pa_page(p_total bigint, p_rows jsonb, p_size integer,
                                            p_key text[], p_hidden text[] DEFAULT '{}')
RETURNS TABLE (total_size bigint, items jsonb, next_after jsonb)
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_total,
           coalesce((SELECT jsonb_agg(r.value - p_hidden ORDER BY r.n)
                     FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS r(value, n)
                     WHERE r.n <= p_size), '[]'::jsonb),
           CASE WHEN jsonb_array_length(coalesce(p_rows, '[]'::jsonb)) > p_size THEN
               (SELECT jsonb_object_agg(k, p_rows -> (p_size - 1) -> k) FROM unnest(p_key) AS k)
           END
$$;
