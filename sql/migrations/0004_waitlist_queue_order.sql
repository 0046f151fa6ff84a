-- ListWaitlist pages need a key that stays put while an entry waits: positions shift down each
-- time someone ahead leaves or is promoted, so a page token holding a position would skip a
-- row. Entries are only ever appended, under the activity lock, so a number drawn from a
-- sequence at insert time follows queue order for good.
CREATE SEQUENCE IF NOT EXISTS activity.waitlist_entries_queue_seq;
ALTER TABLE activity.waitlist_entries ADD COLUMN IF NOT EXISTS queued_seq bigint;
UPDATE activity.waitlist_entries w
SET queued_seq = r.rn
FROM (SELECT waitlist_id, row_number() OVER (ORDER BY activity_id, position, created_at, waitlist_id) AS rn
      FROM activity.waitlist_entries) r
WHERE r.waitlist_id = w.waitlist_id AND w.queued_seq IS NULL;
SELECT setval('activity.waitlist_entries_queue_seq',
              coalesce((SELECT max(queued_seq) FROM activity.waitlist_entries), 0) + 1, false);
ALTER TABLE activity.waitlist_entries
    ALTER COLUMN queued_seq SET DEFAULT nextval('activity.waitlist_entries_queue_seq'),
    ALTER COLUMN queued_seq SET NOT NULL;
ALTER SEQUENCE activity.waitlist_entries_queue_seq OWNED BY activity.waitlist_entries.queued_seq;
CREATE INDEX IF NOT EXISTS waitlist_entries_queue_idx
    ON activity.waitlist_entries (activity_id, queued_seq);
