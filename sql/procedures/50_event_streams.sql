-- Participation events (contract 9): the reads of WatchActivity, retention, and the relay's
-- cursor. The writer, pa_event, is in 00_events.sql; tables: migration 0020.

-- May p_user watch activity a: sees it, and organizes or co-organizes it.
CREATE OR REPLACE FUNCTION activity.pa_may_watch(a activity.activities, p_user uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT activity.pa_can_see(a, p_user) AND activity.pa_manages(a, p_user)
$$;

-- The opening of WatchActivity: the caller may watch, and the sequence the stream continues
-- after (p_after_sequence, or the activity's last one when it is NULL: changes from now on).
CREATE OR REPLACE FUNCTION activity.sp_watch_activity(p_activity_id uuid, p_user_id uuid,
                                                      p_after_sequence bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    a activity.activities := (SELECT x FROM activity.activities x WHERE x.activity_id = p_activity_id);
    ids jsonb := jsonb_build_object('activity_id', p_activity_id);
    v_last bigint := coalesce((SELECT c.last_sequence FROM activity.participation_event_counters c
                               WHERE c.activity_id = p_activity_id), 0);
BEGIN
    IF NOT activity.pa_can_see(a, p_user_id) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found', ids);
    END IF;
    PERFORM activity.pa_require_manager(a, p_user_id);
    IF p_after_sequence IS NULL THEN
        RETURN v_last;
    ELSIF p_after_sequence < 0 OR p_after_sequence > v_last THEN
        PERFORM activity.pa_raise('PA003', 'INVALID_ARGUMENT',
            format('after_sequence: must be between 0 and %s, the activity''s last event', v_last),
            ids || jsonb_build_object('field', 'after_sequence'));
    ELSIF p_after_sequence < v_last AND NOT EXISTS (
            SELECT 1 FROM activity.participation_events e
            WHERE e.activity_id = p_activity_id AND e.sequence = p_after_sequence + 1) THEN
        PERFORM activity.pa_raise('PA009', 'EVENTS_EXPIRED',
            'Events after this sequence are past the retention; watch from now on instead', ids);
    END IF;
    RETURN p_after_sequence;
END $$;

-- Up to p_limit events after p_after_sequence, as ActivityEvent objects (the payload's keys are
-- the message's fields), leaving out those about users blocked with the caller; and the last
-- sequence read, which the stream continues after. Checks again that the caller may watch: a
-- stream that lost the right ends with NOT_AUTHORIZED. A gap before the first event read means
-- retention removed events the stream had not seen yet: EVENTS_EXPIRED, never a silent skip.
CREATE OR REPLACE FUNCTION activity.sp_get_activity_events(p_activity_id uuid, p_user_id uuid,
    p_after_sequence bigint, p_limit integer DEFAULT 100)
RETURNS TABLE (events jsonb, last_sequence bigint, read_count integer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ids jsonb := jsonb_build_object('activity_id', p_activity_id);
    v_events jsonb;
    v_first bigint;
    v_last bigint;
    v_count integer;
BEGIN
    IF NOT activity.pa_may_watch((SELECT x FROM activity.activities x
                                  WHERE x.activity_id = p_activity_id), p_user_id) THEN
        PERFORM activity.pa_raise('PA007', 'NOT_AUTHORIZED',
                                  'You may no longer watch this activity', ids);
    END IF;
    WITH page AS (
        SELECT e.* FROM activity.participation_events e
        WHERE e.activity_id = p_activity_id AND e.sequence > p_after_sequence
        ORDER BY e.sequence LIMIT p_limit
    )
    SELECT coalesce(jsonb_agg(
               jsonb_build_object('sequence', p.sequence, 'event_id', p.event_id,
                                  'event_type', p.event_type, 'activity_id', p.activity_id,
                                  'user_id', p.user_id, 'actor_user_id', p.actor_user_id,
                                  'occurred_at', p.occurred_at) || p.payload
               ORDER BY p.sequence)
               FILTER (WHERE NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                                         WHERE b.user_a = p.user_id AND b.user_b = p_user_id)),
               '[]'::jsonb),
           min(p.sequence), max(p.sequence), count(*)::int
    INTO v_events, v_first, v_last, v_count
    FROM page p;
    IF v_first > p_after_sequence + 1 THEN
        PERFORM activity.pa_raise('PA009', 'EVENTS_EXPIRED',
            'Events this stream had not seen yet are past the retention; watch again', ids);
    END IF;
    RETURN QUERY SELECT v_events, coalesce(v_last, p_after_sequence), v_count;
END $$;

-- Process p_listener_id watches these activities for p_seconds more (renewed every poll). A
-- lease it stops renewing runs out by itself: the poll never deletes one, since its list may
-- be older than a lease a stream has just taken. Leases that ran out a minute ago go.
CREATE OR REPLACE FUNCTION activity.pa_watch_leases(p_listener_id uuid, p_activity_ids uuid[],
                                                    p_seconds double precision)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM activity.participation_event_watchers w
    WHERE w.expires_at < now() - interval '1 minute';
    INSERT INTO activity.participation_event_watchers AS w (activity_id, listener_id, expires_at)
    SELECT a, p_listener_id, now() + make_interval(secs => p_seconds)
    FROM unnest(p_activity_ids) AS a
    ON CONFLICT (activity_id, listener_id) DO UPDATE SET expires_at = EXCLUDED.expires_at;
$$;

-- One more activity watched by p_listener_id, at once (a stream opening), without waiting for
-- the next poll.
CREATE OR REPLACE FUNCTION activity.pa_watch_lease(p_activity_id uuid, p_listener_id uuid,
                                                   p_seconds double precision)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO activity.participation_event_watchers AS w (activity_id, listener_id, expires_at)
    VALUES (p_activity_id, p_listener_id, now() + make_interval(secs => p_seconds))
    ON CONFLICT (activity_id, listener_id) DO UPDATE SET expires_at = EXCLUDED.expires_at;
$$;

-- The last sequence of each of p_activity_ids that has events: how a process that missed a
-- notification finds out which of its streams have something new.
CREATE OR REPLACE FUNCTION activity.pa_event_heads(p_activity_ids uuid[])
RETURNS TABLE (activity_ids uuid[], last_sequences bigint[])
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(c.activity_id), '{}'), coalesce(array_agg(c.last_sequence), '{}')
    FROM activity.participation_event_counters c WHERE c.activity_id = ANY (p_activity_ids)
$$;

-- Retention: deletes up to p_limit of the oldest events (by event_id) that occurred before
-- p_before; with p_relayed_only, only those the relay has passed. Returns how many went. Only
-- one caller at a time works (the others get 0), and each call is one short transaction.
CREATE OR REPLACE FUNCTION activity.pa_prune_events(p_before timestamptz, p_limit integer,
                                                    p_relayed_only boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r activity.participation_event_relay := (SELECT x FROM activity.participation_event_relay x);
    v_deleted integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7061727469636920) THEN
        RETURN 0;
    END IF;
    -- The oldest p_limit rows by id, filtered afterwards: the scan reads p_limit index entries
    -- whatever their age, so a run that finds nothing to prune costs next to nothing.
    DELETE FROM activity.participation_events e
    USING (SELECT x.activity_id, x.sequence, x.event_id, x.xact_id, x.occurred_at
           FROM activity.participation_events x ORDER BY x.event_id LIMIT p_limit) old
    WHERE e.activity_id = old.activity_id AND e.sequence = old.sequence
      AND old.occurred_at < p_before
      AND (NOT p_relayed_only
           OR (old.event_id <= coalesce(r.last_event_id, 0)
               AND NOT activity.pa_relay_pending(r, old.xact_id)));
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END $$;

-- Was transaction p_xact still running when the relay last looked (so its events may be missing
-- below the cursor)?
CREATE OR REPLACE FUNCTION activity.pa_relay_pending(r activity.participation_event_relay,
                                                     p_xact xid8)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT p_xact = ANY (r.pending_xact_ids) OR p_xact >= r.pending_from_xact_id
$$;

-- The relay's next batch, in event_id order (per activity that is sequence order): the events
-- of transactions that were still running at the last batch (they may commit ids below the
-- cursor), then up to p_limit after the cursor. Call it as the first statement of a
-- REPEATABLE READ transaction, and pa_relay_advance in the same one: both must see one snapshot.
CREATE OR REPLACE FUNCTION activity.pa_relay_batch(p_limit integer)
RETURNS TABLE (event_id bigint, activity_id uuid, sequence bigint, event_type text,
               user_id uuid, actor_user_id uuid, occurred_at timestamptz, payload jsonb,
               age_seconds double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r activity.participation_event_relay := (SELECT x FROM activity.participation_event_relay x);
BEGIN
    RETURN QUERY
    SELECT e.event_id, e.activity_id, e.sequence, e.event_type, e.user_id, e.actor_user_id,
           e.occurred_at, e.payload, extract(epoch FROM clock_timestamp() - e.occurred_at)::float8
    FROM (SELECT x.* FROM activity.participation_events x
          WHERE (x.xact_id = ANY (r.pending_xact_ids) OR x.xact_id >= r.pending_from_xact_id)
            AND x.event_id <= r.last_event_id
          UNION ALL
          (SELECT x.* FROM activity.participation_events x WHERE x.event_id > r.last_event_id
           ORDER BY x.event_id LIMIT p_limit)) e
    ORDER BY e.event_id;
END $$;

-- After the batch is in the stream: the cursor moves to p_last_event_id (the batch's highest),
-- and the transactions running in this snapshot become the ones to look at again, since only
-- they can still commit an event with an id at or below the cursor. Why: a transaction has its
-- xid before it draws an event_id (pa_event), and ids are drawn in increasing order; so an
-- event invisible now with an id below a visible one belongs to a transaction running now. The
-- snapshot names the running xids below its xmax; every xid from xmax on counts as running.
CREATE OR REPLACE FUNCTION activity.pa_relay_advance(p_last_event_id bigint)
RETURNS void LANGUAGE sql AS $$
    UPDATE activity.participation_event_relay
    SET last_event_id = greatest(last_event_id, p_last_event_id),
        pending_xact_ids = ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())),
        pending_from_xact_id = pg_snapshot_xmax(pg_current_snapshot()),
        updated_at = now()
$$;
