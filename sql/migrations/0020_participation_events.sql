-- The transactional outbox (contract 9): every change of who takes part is also a row here,
-- written by the procedure that makes the change, in the same transaction.
--
-- sequence: 1, 2, 3, ... per activity, drawn from the activity's row in
-- participation_event_counters, in the transaction that writes the event and under the activity
-- row lock that every event-writing path holds (FOR NO KEY UPDATE): gapless, in the order the
-- decisions were made, and a rolled-back change uses no number (its counter update rolls back).
-- event_id: unique across activities, drawn at insert (not at commit), so ids of one activity
-- increase with its sequence but ids of different activities may commit out of order.
-- xact_id: the writing transaction, which the relay uses to find events of transactions that
-- were still running when it last looked (sql/procedures/05_events.sql).
-- No foreign key to activities: deleting an activity does not wait on its history, and
-- retention removes the rows in time.
CREATE TABLE IF NOT EXISTS activity.participation_events (
    activity_id   uuid NOT NULL,
    sequence      bigint NOT NULL CHECK (sequence >= 1),
    event_id      bigint GENERATED ALWAYS AS IDENTITY,
    event_type    text NOT NULL CHECK (event_type IN (
                      'joined', 'waitlisted', 'promoted', 'left', 'left_waitlist', 'cancelled',
                      'dropped_from_waitlist', 'role_changed', 'attendance_marked',
                      'attendance_confirmed', 'invited', 'invitation_accepted',
                      'invitation_declined', 'invitation_cancelled')),
    user_id       uuid NOT NULL,
    actor_user_id uuid,
    payload       jsonb NOT NULL DEFAULT '{}',
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    xact_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (activity_id, sequence)
);
-- The two indexes that are not per activity serve the relay and retention, which read across
-- activities in id order; watchers only use the primary key.
CREATE UNIQUE INDEX IF NOT EXISTS participation_events_event_id_key
    ON activity.participation_events (event_id);
CREATE INDEX IF NOT EXISTS participation_events_xact_idx
    ON activity.participation_events (xact_id);

-- The last sequence drawn per activity. A row of its own, so that retention can delete any old
-- event without the numbering starting over.
CREATE TABLE IF NOT EXISTS activity.participation_event_counters (
    activity_id   uuid PRIMARY KEY,
    last_sequence bigint NOT NULL
);

-- The relay's cursor (one row): every event with event_id <= last_event_id has been appended to
-- the Redis stream, except events of transactions that were still running when the relay last
-- looked, which may commit ids below last_event_id later: those in pending_xact_ids, and any
-- from pending_from_xact_id on (a snapshot lists running xids only below its xmax).
CREATE TABLE IF NOT EXISTS activity.participation_event_relay (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_event_id        bigint NOT NULL DEFAULT 0,
    pending_xact_ids     xid8[] NOT NULL DEFAULT '{}',
    pending_from_xact_id xid8 NOT NULL DEFAULT '0',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
INSERT INTO activity.participation_event_relay DEFAULT VALUES ON CONFLICT DO NOTHING;
