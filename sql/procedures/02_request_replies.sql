-- Idempotent writes (contract 10; table: migration 0030). Every write procedure takes a trailing
-- p_request_id (NULL: none, so platform tools still call it with its ids alone). With one, its
-- first step is pa_replay, which answers the stored reply of an earlier call with that id, and
-- its last is pa_remember, which stores its own reply in the transaction of its change. A call
-- that fails stores nothing (its row rolls back with its change): its retry runs afresh.
-- p_request is the procedure's other arguments, as a JSON array: what "the same request" means.

-- How long a reply is replayed and kept: the one place that says 24 hours.
CREATE OR REPLACE FUNCTION activity.pa_replies_kept()
RETURNS interval LANGUAGE sql IMMUTABLE AS $$
    SELECT interval '24 hours'
$$;

-- The stored reply of p_caller's request p_request_id for p_rpc, or NULL: the call is new (or
-- carries no id) and runs. The request id is locked first (a transaction advisory lock, class
-- 'rqid'), so a concurrent duplicate waits here until the first call commits, and then finds
-- its reply, or fails, and then runs afresh. Taken before the activity lock in every procedure,
-- so the two never wait for each other in opposite orders. The same id with another RPC or
-- other arguments is REQUEST_ID_REUSED; a reply past the window is dropped and the call runs.
CREATE OR REPLACE FUNCTION activity.pa_replay(p_caller uuid, p_request_id uuid, p_rpc text,
                                              p_request jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r activity.request_replies;
BEGIN
    IF p_request_id IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(1920035172, uuid_hash(p_request_id) # uuid_hash(p_caller));
    SELECT * INTO r FROM activity.request_replies x
    WHERE x.user_id = p_caller AND x.request_id = p_request_id;
    IF r.user_id IS NULL THEN
        RETURN NULL;
    ELSIF r.created_at <= now() - activity.pa_replies_kept() THEN
        DELETE FROM activity.request_replies x
        WHERE x.user_id = p_caller AND x.request_id = p_request_id;
        RETURN NULL;
    ELSIF r.rpc <> p_rpc OR r.request_md5 <> md5(p_request::text)::uuid THEN
        PERFORM activity.pa_raise('PA003', 'REQUEST_ID_REUSED',
                                  'This request_id was already used for another request',
                                  jsonb_build_object('field', 'request_id',
                                                     'request_id', p_request_id));
    END IF;
    RETURN r.reply;
END $$;

-- Stores the reply of a call that carried a request id (pa_replay holds its lock). Callers
-- test for the id themselves, so a call without one does not even build its reply's JSON
-- (measured: 23 us a call, about 5 % of a join, for nothing).
CREATE OR REPLACE FUNCTION activity.pa_remember(p_caller uuid, p_request_id uuid, p_rpc text,
                                                p_request jsonb, p_reply jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO activity.request_replies (user_id, request_id, rpc, request_md5, reply)
    VALUES (p_caller, p_request_id, p_rpc, md5(p_request::text)::uuid, p_reply);
END $$;

-- Will p_caller's call of p_rpc with p_request_id be answered from a stored reply? The rate
-- limiter asks before the call runs, and does not charge it when so. The arguments are not
-- compared: a call that reuses the id for another request is refused (REQUEST_ID_REUSED)
-- without changing anything either. A call still running is not seen: its duplicate is charged.
-- (PL/pgSQL, like the rules in 00_rules.sql, so its plan is kept for the session.)
CREATE OR REPLACE FUNCTION activity.pa_is_replay(p_caller uuid, p_request_id uuid, p_rpc text)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM activity.request_replies x
                   WHERE x.user_id = p_caller AND x.request_id = p_request_id
                     AND x.rpc = p_rpc AND x.created_at > now() - activity.pa_replies_kept());
END $$;

-- Retention: deletes up to p_limit of the oldest replies past the window; returns how many.
-- Rows another pruner is deleting are skipped, so replicas pruning at once never queue.
CREATE OR REPLACE FUNCTION activity.pa_prune_request_replies(p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    DELETE FROM activity.request_replies r
    USING (SELECT x.user_id, x.request_id FROM activity.request_replies x
           WHERE x.created_at <= now() - activity.pa_replies_kept()
           ORDER BY x.created_at LIMIT p_limit
           FOR UPDATE SKIP LOCKED) old
    WHERE r.user_id = old.user_id AND r.request_id = old.request_id;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END $$;
