-- An accepted invitation (the pair's latest) whose user takes no part: no participants row and
-- no waitlist entry (the predecessor lost the participation). Nothing is made up for them:
-- a seat now might not be one the organizer would give. They are reported; the organizer can
-- invite them again, which the rules allow (0010).
CREATE OR REPLACE FUNCTION pg_temp.repair() RETURNS TABLE (kind text, id text, changed boolean)
LANGUAGE sql AS $$
    SELECT 'accepted invitations without a participation (the user can be invited again)',
           i.invitation_id::text, false
    FROM activity.activity_invitations i
    WHERE i.status = 'accepted'
      AND NOT EXISTS (SELECT 1 FROM activity.participants p
                      WHERE p.activity_id = i.activity_id AND p.user_id = i.user_id)
      AND NOT EXISTS (SELECT 1 FROM activity.waitlist_entries w
                      WHERE w.activity_id = i.activity_id AND w.user_id = i.user_id)
      AND NOT EXISTS (SELECT 1 FROM activity.activity_invitations j
                      WHERE j.activity_id = i.activity_id AND j.user_id = i.user_id
                        AND j.invited_at > i.invited_at)
    ORDER BY 2
$$;
