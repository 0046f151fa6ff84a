-- The waitlist keeps its order in `position` alone (contract 7): unique per activity, at least 1,
-- increasing in queue order, with gaps, never renumbered. A promotion or a leave rewrites no
-- other entry, so the queue_seq that 0004 added to keep page tokens stable while positions
-- shifted has no job left: positions no longer shift. The existing queues need nothing else:
-- 0002 left them at 1..n, which is such an order.
ALTER TABLE activity.waitlist_entries DROP COLUMN IF EXISTS queued_seq;

-- The gapless positions callers see (1..n per activity, in queue order), for platform tools.
CREATE OR REPLACE VIEW activity.waitlist_positions AS
    SELECT w.activity_id, w.user_id,
           (row_number() OVER (PARTITION BY w.activity_id ORDER BY w.position))::integer AS position,
           w.created_at
    FROM activity.waitlist_entries w;
