-- Idempotent writes (contract 10): the reply of a write call that carried a request_id, stored
-- by the procedure in the same transaction as the change. A retry with the same id is answered
-- from here and changes nothing; a call that failed rolled its row back with its change.
-- Rows older than 24 h are neither replayed nor kept (activity.pa_prune_request_replies).
--
-- Keyed by the caller first, not by the activity (the rule issue 7 set for this service's
-- tables, with its reason): a request id is its caller's name for one request, whatever that
-- request touches. Reusing it for another activity or another RPC must be found
-- (REQUEST_ID_REUSED), and the invitation RPCs name no activity at all, so every lookup is by
-- (caller, request id) and nothing else could come first. In a distributed PostgreSQL (Citus)
-- this table is distributed by user_id: a write with a request id then touches the activity's
-- shard and the caller's in one transaction, which Citus commits with two-phase commit.
--
-- rpc and request_md5 tell a replay from a reuse: the RPC's name, and the md5 of the procedure's
-- arguments other than the caller and the request id (a uuid holds the 16 bytes).
CREATE TABLE IF NOT EXISTS activity.request_replies (
    user_id     uuid NOT NULL,
    request_id  uuid NOT NULL,
    rpc         text NOT NULL,
    request_md5 uuid NOT NULL,
    reply       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, request_id)
);
-- Retention reads across callers, oldest first; on Citus each shard keeps this index for its
-- own rows, so it does not tie the table to any other distribution.
CREATE INDEX IF NOT EXISTS request_replies_created_at_idx
    ON activity.request_replies (created_at);
