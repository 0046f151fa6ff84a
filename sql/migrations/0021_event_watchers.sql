-- Which activities some process is watching, so that only their events NOTIFY (pa_event).
-- A notifying commit takes a cluster-wide lock that it holds through its WAL flush, so
-- notifying on every write cut join+leave throughput of 16 callers on 16 activities to 0.29x
-- (bench/events.py, private PostgreSQL 18); writes nobody watches now skip it.
-- One row per activity and listening process (its EventListener's id), kept alive by that
-- process every poll; a process that dies leaves rows that simply expire.
CREATE TABLE IF NOT EXISTS activity.participation_event_watchers (
    activity_id uuid NOT NULL,
    listener_id uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (activity_id, listener_id)
);
