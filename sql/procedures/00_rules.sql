-- Rules shared by several procedures. Internal helpers are prefixed pa_; only the sp_ functions
-- are the service's interface.
--
-- Errors: a rule violation raises SQLSTATE 'PA' || the gRPC code number it stands for
-- (PA003 INVALID_ARGUMENT, PA005 NOT_FOUND, PA006 ALREADY_EXISTS, PA007 PERMISSION_DENIED,
-- PA009 FAILED_PRECONDITION), MESSAGE a sentence fit for the caller, DETAIL the stable reason
-- and HINT a JSON object of the ids involved. Raising rolls the whole call back.

-- Helpers of earlier versions that nothing calls any more: they counted an activity's rows
-- and renumbered its waitlist, which no procedure does now. Dropped in the same transaction that
-- replaces their callers.
DROP FUNCTION IF EXISTS activity.pa_sync_counts(uuid);
DROP FUNCTION IF EXISTS activity.pa_registered_count(uuid);
DROP FUNCTION IF EXISTS activity.pa_renumber_waitlist(uuid);
DROP FUNCTION IF EXISTS activity.pa_is_co_organizer(uuid, uuid);

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

-- The scalar rules below are PL/pgSQL, not SQL functions: a SQL function whose body holds a
-- subquery is never inlined, and PostgreSQL 15 plans its body again in every statement that
-- calls it, while PL/pgSQL keeps its plans for the session. Measured on a join: 0.35 ms of
-- PostgreSQL CPU went to planning pa_can_see, pa_blocked and pa_friends on each call.

-- A block in either direction, for one pair.
CREATE OR REPLACE FUNCTION activity.pa_blocked(p_a uuid, p_b uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM activity.user_blocks
                   WHERE (blocker_user_id = p_a AND blocked_user_id = p_b)
                      OR (blocker_user_id = p_b AND blocked_user_id = p_a));
END $$;

CREATE OR REPLACE FUNCTION activity.pa_friends(p_a uuid, p_b uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM activity.friendships
                   WHERE user_id_1 = least(p_a, p_b) AND user_id_2 = greatest(p_a, p_b)
                     AND status = 'accepted');
END $$;

-- Active, or a temporary ban that has run out. (Plain expressions: inlined wherever used.)
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
-- Cheapest answers first: most activities are public, and then only a block is looked up.
CREATE OR REPLACE FUNCTION activity.pa_can_see(a activity.activities, p_user uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF a.activity_id IS NULL OR (a.status = 'draft' AND a.organizer_user_id <> p_user) THEN
        RETURN false;
    ELSIF a.organizer_user_id = p_user THEN
        RETURN true;
    ELSIF a.activity_type <> 'xxl' AND activity.pa_blocked(p_user, a.organizer_user_id) THEN
        RETURN false;
    ELSIF a.activity_privacy_level = 'public' THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM activity.participants p
                   WHERE p.activity_id = a.activity_id AND p.user_id = p_user)
        OR EXISTS (SELECT 1 FROM activity.waitlist_entries w
                   WHERE w.activity_id = a.activity_id AND w.user_id = p_user)
        OR EXISTS (SELECT 1 FROM activity.activity_invitations i
                   WHERE i.activity_id = a.activity_id AND i.user_id = p_user)
        OR (a.activity_privacy_level = 'friends_only'
            AND activity.pa_friends(p_user, a.organizer_user_id));
END $$;

-- The activity row, locked FOR NO KEY UPDATE for the rest of the transaction: every decision
-- about who takes part in it is made under this lock, one at a time. (NULLs for a missing one.)
--
-- Callers first queue on a transaction-level advisory lock of the activity. Row-lock waiters
-- all wake at each commit and chase the row's newest version (the counters change it on every
-- call), so the more callers wait on one activity, the slower it goes: measured with bare
-- asyncpg, 32 callers joining one activity made 451 joins/s where 4 made 831. The advisory
-- lock's queue hands over to one waiter at a time. The row lock stays the decision: platform
-- tools that write the row take only that, and wait for it like anyone else.
CREATE OR REPLACE FUNCTION activity.pa_lock_activity(p_activity_id uuid)
RETURNS activity.activities LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities;
BEGIN
    -- One statement for both locks: the advisory lock (class 'part') is its uncorrelated
    -- subquery, evaluated once before any row is read, so it is always taken before the row
    -- lock. (Two statements cost one more executor start and end.)
    SELECT * INTO a FROM activity.activities x
    WHERE x.activity_id = p_activity_id
      AND (SELECT pg_advisory_xact_lock(1885434484, uuid_hash(p_activity_id))) IS NOT NULL
    FOR NO KEY UPDATE;
    RETURN a;
END $$;

-- The activity locked (pa_lock_activity), or ACTIVITY_NOT_FOUND when it is missing or the
-- caller may not see it.
CREATE OR REPLACE FUNCTION activity.pa_lock_visible_activity(p_activity_id uuid, p_user uuid)
RETURNS activity.activities LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities := activity.pa_lock_activity(p_activity_id);
BEGIN
    IF NOT activity.pa_can_see(a, p_user) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    RETURN a;
END $$;

-- The place a waitlisted user is shown (contract 4.3): 1 + the entries queued before theirs.
CREATE OR REPLACE FUNCTION activity.pa_visible_position(p_activity_id uuid, p_position integer)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer + 1 FROM activity.waitlist_entries w
    WHERE w.activity_id = p_activity_id AND w.position < p_position
$$;

-- Contract 4.3's join checks, first failure wins. Shared by join and accept; accept passes
-- p_accepting = true: the invitation it accepts is the invitation, and only joining (not
-- accepting) ignores blocks on XXL activities (contract 4.1). Everything about the user is read
-- in one statement. Returns the caller's pending, unexpired invitation (NULL when none): the
-- join consumes it. (The ids of a refusal are put together only for that refusal.)
CREATE OR REPLACE FUNCTION activity.pa_check_join(a activity.activities, p_activity_id uuid,
                                                  p_user uuid, p_accepting boolean)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    IF a.activity_id IS NULL OR (a.status = 'draft' AND a.organizer_user_id <> p_user) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.status <> 'published' THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_NOT_PUBLISHED',
                                  'The activity is not open for participation',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.scheduled_at <= now() THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_IN_PAST', 'The activity has already started',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    SELECT u.user_id IS NOT NULL AS found, coalesce(activity.pa_eligible(u), false) AS eligible,
           activity.pa_effective_subscription(u) AS subscription,
           EXISTS (SELECT 1 FROM activity.participants p
                   WHERE p.activity_id = p_activity_id AND p.user_id = p_user
                     AND p.participation_status = 'registered')
           OR EXISTS (SELECT 1 FROM activity.waitlist_entries w
                      WHERE w.activity_id = p_activity_id AND w.user_id = p_user) AS joined,
           EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                   WHERE b.user_a = p_user AND b.user_b = a.organizer_user_id) AS blocked,
           (SELECT i.invitation_id FROM activity.activity_invitations i
            WHERE i.activity_id = p_activity_id AND i.user_id = p_user AND i.status = 'pending'
              AND i.expires_at > now()
            LIMIT 1) AS invitation_id
    INTO c
    FROM (SELECT) AS one LEFT JOIN activity.users u ON u.user_id = p_user;
    IF NOT c.found THEN
        PERFORM activity.pa_raise('PA005', 'USER_NOT_FOUND', 'User not found',
                                  jsonb_build_object('user_id', p_user));
    ELSIF NOT c.eligible THEN
        PERFORM activity.pa_raise('PA007', 'USER_BANNED', 'The user is banned',
                                  jsonb_build_object('user_id', p_user));
    ELSIF a.organizer_user_id = p_user THEN
        PERFORM activity.pa_raise('PA009', 'USER_IS_ORGANIZER',
                                  'The organizer already takes part in the activity',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF c.joined THEN
        PERFORM activity.pa_raise('PA006', 'ALREADY_JOINED',
                                  'The user is already registered or waitlisted',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF (a.activity_type <> 'xxl' OR p_accepting) AND c.blocked THEN
        PERFORM activity.pa_raise('PA007', 'BLOCKED_USER',
                                  'The user cannot join an activity of this organizer',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.activity_privacy_level = 'friends_only'
          AND NOT activity.pa_friends(p_user, a.organizer_user_id) THEN
        PERFORM activity.pa_raise('PA007', 'FRIENDS_ONLY',
                                  'Only friends of the organizer may join this activity',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.activity_privacy_level = 'invite_only' AND NOT p_accepting
          AND c.invitation_id IS NULL THEN
        PERFORM activity.pa_raise('PA007', 'INVITE_ONLY',
                                  'This activity is open to invited users only',
                                  jsonb_build_object('activity_id', p_activity_id));
    ELSIF a.joinable_at_free IS NOT NULL AND now() < a.joinable_at_free
          AND c.subscription = 'free' THEN
        PERFORM activity.pa_raise('PA007', 'PREMIUM_ONLY_PERIOD',
                                  'Only club and premium members may join before '
                                  || to_char(a.joinable_at_free AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    RETURN c.invitation_id;
END $$;

-- Registers the user when a seat is free, otherwise appends them to the waitlist. The pending
-- invitation the join consumes (p_invitation) is marked accepted first. Call with the activity
-- locked (a as read under the lock) and the checks passed. The counter is the capacity
-- decision: it is exact, so no row is counted here.
CREATE OR REPLACE FUNCTION activity.pa_admit(a activity.activities, p_user uuid,
    p_invitation uuid, OUT participation_status text, OUT role text,
    OUT waitlist_position integer, OUT joined_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_invitation IS NOT NULL THEN
        PERFORM activity.pa_close_invitation(p_invitation, 'accepted', p_user);
    END IF;
    IF a.current_participants_count < a.max_participants THEN
        joined_at := activity.pa_register(a.activity_id, p_user, p_user);
        participation_status := 'registered';
        role := 'member';
        waitlist_position := 0;
    ELSE
        SELECT e.waitlist_position, e.joined_at INTO waitlist_position, joined_at
        FROM activity.pa_enqueue(a.activity_id, p_user, p_user) e;
        participation_status := 'waitlisted';
    END IF;
END $$;

-- Page sizes (contract 2), decided here only: 0 or NULL is the list's default (each list
-- names it once, where it calls this), above 100 is 100. Python only refuses negative sizes.
CREATE OR REPLACE FUNCTION activity.pa_page_size(p_page_size integer, p_default integer)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_page_size IS NULL OR p_page_size <= 0 THEN p_default
                ELSE least(p_page_size, 100) END
$$;

-- List procedures run with plan_cache_mode = force_generic_plan: PL/pgSQL keeps planning a
-- statement afresh on every call while a plan made for the call's values looks cheaper than
-- the generic one, which the page queries always do (measured: the ListWaitlist page was
-- planned on each of 300 calls, 0.29 ms of PostgreSQL CPU each time, for 0.33 ms of running
-- it). Their statements are written for one plan that fits every call, whatever the page
-- size: keyset bounds as row comparisons, filters as = ANY (array) rather than "p IS NULL OR
-- column = p", and what is looked up per row of the page (the user, a block) in correlated
-- subqueries (a block check as NOT EXISTS (... OFFSET 0), which PostgreSQL keeps per row),
-- so that no generic plan can turn them into a hash join over a whole table (the generic
-- ListWaitlist plan did: a sequential scan of users, 3 ms a page).
--
-- Lists end the same way: the rows after the keyset position in page order, numbered n, one
-- more than a page when more follow (LIMIT size + 1). items is the page (n <= size), and
-- next_after, when more follow, the keyset key of its last row (n = size): where the next page
-- starts (the service seals it into the page token).
--
-- List items and bulk results are built as the JSON of their protobuf messages (field names,
-- enum value names, timestamps as {seconds, nanos}), so the service hands each decoded object
-- straight to the message's constructor instead of converting it field by field. They are
-- `json`, not `jsonb`: text put together once, where jsonb would build and then print a tree
-- (measured on a page of 50 participants: 420 us of PostgreSQL CPU against 670 us).
-- Enum value names are the enum's prefix and the database label in capitals (buf's STANDARD
-- naming): pa_pb_enum('PARTICIPANT_ROLE', 'co_organizer') = 'PARTICIPANT_ROLE_CO_ORGANIZER'.
CREATE OR REPLACE FUNCTION activity.pa_pb_enum(p_enum text, p_label text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT p_enum || '_' || upper(p_label)
$$;

-- STABLE, as extract() on a timestamptz is: a function declared IMMUTABLE over a STABLE one is
-- never inlined, and ran as a function call per timestamp (102 per pair of list pages).
CREATE OR REPLACE FUNCTION activity.pa_pb_timestamp(t timestamptz)
RETURNS json LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t IS NOT NULL THEN
               json_build_object('seconds', floor(extract(epoch FROM t))::bigint,
                                 'nanos', (extract(microseconds FROM t)::bigint % 1000000) * 1000)
           END
$$;
