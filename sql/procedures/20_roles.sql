-- Who runs an activity (contract 4.1, 4.4): the organizer is activities.organizer_user_id and
-- nothing else; a co-organizer is a registered participant with role co_organizer. The helpers
-- here are shared by attendance, invitations and the waitlist (files sort after this one).

CREATE OR REPLACE FUNCTION activity.pa_manages(a activity.activities, p_user uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN a.organizer_user_id = p_user
        OR EXISTS (SELECT 1 FROM activity.participants p
                   WHERE p.activity_id = a.activity_id AND p.user_id = p_user
                     AND p.role = 'co_organizer' AND p.participation_status = 'registered');
END $$;

-- Attendance, invitations and the waitlist are open to the organizer and co-organizers.
CREATE OR REPLACE FUNCTION activity.pa_require_manager(a activity.activities, p_user uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT activity.pa_manages(a, p_user) THEN
        PERFORM activity.pa_raise('PA007', 'NOT_AUTHORIZED',
                                  'Only the organizer and co-organizers may do this',
                                  jsonb_build_object('activity_id', a.activity_id));
    END IF;
END $$;

-- Roles are given and taken by the organizer alone.
CREATE OR REPLACE FUNCTION activity.pa_require_organizer(a activity.activities, p_user uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF a.organizer_user_id <> p_user THEN
        PERFORM activity.pa_raise('PA007', 'NOT_ORGANIZER', 'Only the organizer may change roles',
                                  jsonb_build_object('activity_id', a.activity_id));
    END IF;
END $$;

-- The role of a registered participant; NULL for anyone else (waitlisted, cancelled, absent).
CREATE OR REPLACE FUNCTION activity.pa_registered_role(p_activity_id uuid, p_user uuid)
RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT p.role::text FROM activity.participants p
            WHERE p.activity_id = p_activity_id AND p.user_id = p_user
              AND p.participation_status = 'registered');
END $$;

-- Roles change under the activity lock, like every other change to an activity's participants.
CREATE OR REPLACE FUNCTION activity.sp_promote_participant(p_activity_id uuid, p_user_id uuid,
                                                           p_acting_user_id uuid,
                                                           p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, user_id uuid, role text)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_activity_id, p_user_id);
    v_reply jsonb := activity.pa_replay(p_acting_user_id, p_request_id, 'PromoteParticipant',
                                        v_request);
    a activity.activities;
    ids jsonb := jsonb_build_object('activity_id', p_activity_id, 'user_id', p_user_id);
    v_role text;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(activity_id uuid, user_id uuid, role text);
        RETURN;
    END IF;
    a := activity.pa_lock_visible_activity(p_activity_id, p_acting_user_id);
    PERFORM activity.pa_require_organizer(a, p_acting_user_id);
    v_role := activity.pa_registered_role(p_activity_id, p_user_id);
    IF v_role = 'co_organizer' THEN
        PERFORM activity.pa_raise('PA006', 'ALREADY_CO_ORGANIZER',
                                  'The participant is already a co-organizer', ids);
    ELSIF v_role IS DISTINCT FROM 'member' THEN
        PERFORM activity.pa_raise('PA009', 'TARGET_NOT_MEMBER',
                                  'Only a registered member can become a co-organizer', ids);
    ELSIF activity.pa_blocked(p_user_id, a.organizer_user_id) THEN
        PERFORM activity.pa_raise('PA007', 'BLOCKED_USER',
                                  'A user blocked with the organizer cannot become a co-organizer',
                                  ids);
    END IF;
    PERFORM activity.pa_set_role(p_activity_id, p_user_id, 'co_organizer', p_acting_user_id);
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_acting_user_id, p_request_id, 'PromoteParticipant',
                                     v_request,
            jsonb_build_object('activity_id', p_activity_id, 'user_id', p_user_id,
                               'role', 'co_organizer'));
    END IF;
    RETURN QUERY SELECT p_activity_id, p_user_id, 'co_organizer'::text;
END $$;

CREATE OR REPLACE FUNCTION activity.sp_demote_participant(p_activity_id uuid, p_user_id uuid,
                                                          p_acting_user_id uuid,
                                                          p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, user_id uuid, role text)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_activity_id, p_user_id);
    v_reply jsonb := activity.pa_replay(p_acting_user_id, p_request_id, 'DemoteParticipant',
                                        v_request);
    a activity.activities;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(activity_id uuid, user_id uuid, role text);
        RETURN;
    END IF;
    a := activity.pa_lock_visible_activity(p_activity_id, p_acting_user_id);
    PERFORM activity.pa_require_organizer(a, p_acting_user_id);
    IF activity.pa_registered_role(p_activity_id, p_user_id) IS DISTINCT FROM 'co_organizer' THEN
        PERFORM activity.pa_raise('PA009', 'NOT_CO_ORGANIZER', 'The participant is not a co-organizer',
                                  jsonb_build_object('activity_id', p_activity_id,
                                                     'user_id', p_user_id));
    END IF;
    PERFORM activity.pa_set_role(p_activity_id, p_user_id, 'member', p_acting_user_id);
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_acting_user_id, p_request_id, 'DemoteParticipant', v_request,
            jsonb_build_object('activity_id', p_activity_id, 'user_id', p_user_id,
                               'role', 'member'));
    END IF;
    RETURN QUERY SELECT p_activity_id, p_user_id, 'member'::text;
END $$;
