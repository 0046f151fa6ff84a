-- The waitlist view (contract 2, 4.3): organizer and co-organizers only, in queue order.

-- Users blocked with the caller are left out (their places still count in the positions shown).
-- Pages continue after the stored position, which never changes while an entry waits.
CREATE OR REPLACE FUNCTION activity.sp_get_waitlist(p_activity_id uuid, p_user_id uuid,
    p_page_size integer DEFAULT 50, p_after jsonb DEFAULT NULL)
RETURNS TABLE (total_size bigint, items jsonb, next_after jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a activity.activities := (SELECT x FROM activity.activities x WHERE x.activity_id = p_activity_id);
    v_size integer := activity.pa_page_size(p_page_size, 50);
BEGIN
    IF NOT activity.pa_can_see(a, p_user_id) THEN
        PERFORM activity.pa_raise('PA005', 'ACTIVITY_NOT_FOUND', 'Activity not found',
                                  jsonb_build_object('activity_id', p_activity_id));
    END IF;
    PERFORM activity.pa_require_manager(a, p_user_id);
    RETURN QUERY
    WITH ranked AS (
        SELECT w.*, (row_number() OVER (ORDER BY w.position))::integer AS shown
        FROM activity.waitlist_entries w WHERE w.activity_id = p_activity_id
    ), matching AS (
        SELECT w.user_id, u.username, u.first_name, u.main_photo_url AS profile_photo_url,
               w.shown AS position, w.created_at AS joined_at, w.position AS queued_seq
        FROM ranked w JOIN activity.users u ON u.user_id = w.user_id
        WHERE NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                          WHERE b.user_a = w.user_id AND b.user_b = p_user_id)
    )
    SELECT * FROM activity.pa_page((SELECT count(*) FROM matching),
        (SELECT jsonb_agg(to_jsonb(pg) ORDER BY pg.queued_seq) FROM (
            SELECT * FROM matching m
            WHERE p_after IS NULL OR m.queued_seq > (p_after->>'queued_seq')::bigint
            ORDER BY m.queued_seq LIMIT v_size + 1) pg),
        v_size, ARRAY['queued_seq'], ARRAY['queued_seq']);
END $$;
