-- The waitlist view (contract 2, 4.3): organizer and co-organizers only, in queue order.

-- Users blocked with the caller are left out (their places still count in the positions shown).
-- Pages continue after the stored position of their last entry, which never changes while it
-- waits. A page reads its own entries by the (activity_id, position) index; its first shown
-- place is 1 + the entries ahead of it, counted on that index (none for the first page).
-- total_size is the waitlist counter less the entries of users blocked with the caller.
CREATE OR REPLACE FUNCTION activity.sp_get_waitlist(p_activity_id uuid, p_user_id uuid,
    p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    a activity.activities := (SELECT x FROM activity.activities x WHERE x.activity_id = p_activity_id);
    v_size integer := activity.pa_page_size(p_page_size, 50);
    v_after integer := coalesce((p_after->>'position')::integer, 0);
    v_ahead integer := 0;
BEGIN
    IF NOT activity.pa_can_see(a, p_user_id) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    PERFORM activity.pa_require_manager(a, p_user_id);
    IF v_after > 0 THEN
        v_ahead := activity.pa_visible_position(p_activity_id, v_after + 1) - 1;
    END IF;
    SELECT coalesce(json_agg(pg.item ORDER BY pg.n) FILTER (WHERE pg.n <= v_size), '[]'),
           CASE WHEN count(*) > v_size THEN
               (array_agg(jsonb_build_object('position', pg.position))
                FILTER (WHERE pg.n = v_size))[1]
           END
    INTO items, next_after
    FROM (SELECT row_number() OVER (ORDER BY w.position) AS n, w.position,
                 (SELECT row_to_json(item) FROM (
                      SELECT w.user_id, u.username, u.first_name,
                             u.main_photo_url AS profile_photo_url, w.shown AS position,
                             activity.pa_pb_timestamp(w.created_at) AS joined_at
                      FROM activity.users u WHERE u.user_id = w.user_id) item) AS item
          FROM (SELECT w.*, v_ahead + row_number() OVER (ORDER BY w.position) AS shown
                FROM activity.waitlist_entries w
                WHERE w.activity_id = p_activity_id AND w.position > v_after) w
          WHERE NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b  -- OFFSET 0: probed per row
                            WHERE b.user_a = w.user_id AND b.user_b = p_user_id OFFSET 0)
          ORDER BY w.position
          LIMIT v_size + 1) pg;
    total_size := a.waitlist_count
                  - (SELECT count(*) FROM activity.waitlist_entries w
                     WHERE w.activity_id = p_activity_id
                       AND w.user_id IN (SELECT b.user_a FROM activity.pa_block_pairs b
                                         WHERE b.user_b = p_user_id));
END $$;
