-- Invitations (contract 4.5, 8). EXPIRED is derived: a pending invitation past expires_at is
-- expired whether or not its row says so yet. Rows are never reused: a re-invitation is a new
-- row, so the history of earlier ones stays as it was.

-- Every invitation as the API shows it (inlined by the planner, so filters reach the indexes),
-- with `item`, its Invitation message as JSON (00_rules.sql: pa_pb_*).
CREATE OR REPLACE FUNCTION activity.pa_invitations()
RETURNS TABLE (invitation_id uuid, activity_id uuid, user_id uuid, invited_by_user_id uuid,
               status text, invited_at timestamptz, item json)
LANGUAGE sql STABLE AS $$
    SELECT i.invitation_id, i.activity_id, i.user_id, i.invited_by_user_id, v.status,
           i.invited_at,
           json_build_object(
               'invitation_id', i.invitation_id, 'activity_id', i.activity_id,
               'activity_title', a.title,
               'activity_scheduled_at', activity.pa_pb_timestamp(a.scheduled_at),
               'user_id', i.user_id, 'username', u.username,
               'invited_by_user_id', i.invited_by_user_id, 'invited_by_username', b.username,
               'status', activity.pa_pb_enum('INVITATION_STATUS', v.status),
               'message', i.message, 'invited_at', activity.pa_pb_timestamp(i.invited_at),
               'expires_at', activity.pa_pb_timestamp(i.expires_at),
               'responded_at', activity.pa_pb_timestamp(i.responded_at))
    FROM activity.activity_invitations i
    CROSS JOIN LATERAL (SELECT CASE WHEN i.status = 'pending' AND i.expires_at <= now()
                                    THEN 'expired' ELSE i.status::text END AS status) v
    JOIN activity.activities a ON a.activity_id = i.activity_id
    LEFT JOIN activity.users u ON u.user_id = i.user_id
    LEFT JOIN activity.users b ON b.user_id = i.invited_by_user_id
$$;

-- SendInvitations' call-level checks after the activity is found: contract 8's order.
CREATE OR REPLACE FUNCTION activity.pa_check_inviting(a activity.activities, p_inviter uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb := jsonb_build_object('activity_id', a.activity_id);
BEGIN
    PERFORM activity.pa_require_manager(a, p_inviter);
    IF a.status <> 'published' THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_NOT_PUBLISHED',
                                  'Invitations need a published activity', ids);
    ELSIF a.scheduled_at <= now() THEN
        PERFORM activity.pa_raise('PA009', 'ACTIVITY_IN_PAST', 'The activity has already started', ids);
    ELSIF a.activity_privacy_level <> 'invite_only' THEN
        PERFORM activity.pa_raise('PA009', 'NOT_INVITE_ONLY',
                                  'Only invite-only activities take invitations', ids);
    END IF;
END $$;

-- Why one user cannot be invited (contract 8's per-item order), or NULL when they can.
CREATE OR REPLACE FUNCTION activity.pa_invitation_refusal(a activity.activities, p_inviter uuid,
                                                          p_invitee uuid)
RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_invitee = p_inviter THEN
        RETURN 'CANNOT_INVITE_SELF';
    ELSIF NOT EXISTS (SELECT 1 FROM activity.users WHERE user_id = p_invitee) THEN
        RETURN 'USER_NOT_FOUND';
    ELSIF activity.pa_blocked(p_invitee, p_inviter)
          OR activity.pa_blocked(p_invitee, a.organizer_user_id) THEN
        RETURN 'BLOCKED';
    ELSIF activity.pa_holds_place(a, p_invitee) THEN
        RETURN 'ALREADY_PARTICIPANT';
    ELSIF EXISTS (SELECT 1 FROM activity.activity_invitations i
                  WHERE i.activity_id = a.activity_id AND i.user_id = p_invitee
                    AND i.status = 'pending' AND i.expires_at > now()) THEN
        RETURN 'ALREADY_INVITED';
    END IF;
    RETURN NULL;
END $$;

-- Invites each user in p_user_ids; refusals come back in failures, in request order. The
-- activity lock keeps two senders from both creating a pending invitation for the same user.
CREATE OR REPLACE FUNCTION activity.sp_send_invitations(p_activity_id uuid, p_acting_user_id uuid,
    p_user_ids uuid[] DEFAULT '{}', p_message text DEFAULT NULL,
    p_expires_in_hours integer DEFAULT NULL, p_request_id uuid DEFAULT NULL)
RETURNS TABLE (activity_id uuid, invitations json, failures jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_hours integer := coalesce(nullif(p_expires_in_hours, 0), 72);  -- contract 2's default
    v_request jsonb := jsonb_build_array(p_activity_id, p_user_ids, p_message, v_hours);
    v_reply jsonb := activity.pa_replay(p_acting_user_id, p_request_id, 'SendInvitations',
                                        v_request);
    a activity.activities;
    v_created uuid[] := '{}';
    v_failures jsonb := '[]';
    v_invitee uuid;
    v_reason text;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(activity_id uuid, invitations json, failures jsonb);
        RETURN;
    END IF;
    a := activity.pa_lock_visible_activity(p_activity_id, p_acting_user_id);
    PERFORM activity.pa_check_inviting(a, p_acting_user_id);
    FOREACH v_invitee IN ARRAY p_user_ids LOOP
        v_reason := activity.pa_invitation_refusal(a, p_acting_user_id, v_invitee);
        IF v_reason IS NULL THEN
            v_created := v_created || activity.pa_invite(p_activity_id, p_acting_user_id, v_invitee,
                                                         p_message, v_hours);
        ELSE
            v_failures := v_failures || jsonb_build_object('user_id', v_invitee, 'reason', v_reason);
        END IF;
    END LOOP;
    activity_id := p_activity_id;
    invitations := coalesce((SELECT json_agg(v.item ORDER BY array_position(v_created, v.invitation_id))
                             FROM activity.pa_invitations() v
                             WHERE v.invitation_id = ANY (v_created)), '[]');
    failures := v_failures;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_acting_user_id, p_request_id, 'SendInvitations', v_request,
            jsonb_build_object('activity_id', activity_id, 'invitations', invitations,
                               'failures', failures));
    END IF;
    RETURN NEXT;
END $$;

-- Sender, organizer and co-organizers manage an invitation.
CREATE OR REPLACE FUNCTION activity.pa_manages_invitation(i activity.activity_invitations,
                                                          p_user uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN i.invited_by_user_id = p_user
        OR activity.pa_manages((SELECT a FROM activity.activities a
                                WHERE a.activity_id = i.activity_id), p_user);
END $$;

-- Only a pending, unexpired invitation can be answered or cancelled.
CREATE OR REPLACE FUNCTION activity.pa_check_open(i activity.activity_invitations)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ids jsonb := jsonb_build_object('invitation_id', i.invitation_id, 'activity_id', i.activity_id);
BEGIN
    IF i.status = 'cancelled' THEN
        PERFORM activity.pa_raise('PA009', 'INVITATION_CANCELLED', 'The invitation was cancelled', ids);
    ELSIF i.status IN ('accepted', 'declined') THEN
        PERFORM activity.pa_raise('PA009', 'ALREADY_RESPONDED',
                                  'The invitation has already been answered', ids);
    ELSIF i.status = 'expired' OR i.expires_at <= now() THEN
        PERFORM activity.pa_raise('PA009', 'INVITATION_EXPIRED', 'The invitation has expired', ids);
    END IF;
END $$;

-- The invitation locked for p_user to act on: to answer as its invitee, or to cancel as its
-- sender, organizer or co-organizer. Invitations p_user neither received nor manages are
-- reported as missing (contract 4.5); the other side's action is NOT_AUTHORIZED. Only an open
-- (pending, unexpired) invitation is returned.
CREATE OR REPLACE FUNCTION activity.pa_lock_open_invitation(p_invitation_id uuid, p_user uuid,
                                                            p_as_invitee boolean)
RETURNS activity.activity_invitations LANGUAGE plpgsql AS $$
DECLARE
    i activity.activity_invitations;
    ids jsonb := jsonb_build_object('invitation_id', p_invitation_id);
    v_invitee boolean;
    v_manager boolean;
BEGIN
    SELECT * INTO i FROM activity.activity_invitations x WHERE x.invitation_id = p_invitation_id
    FOR UPDATE;
    v_invitee := coalesce(i.user_id = p_user, false);
    v_manager := i.invitation_id IS NOT NULL AND activity.pa_manages_invitation(i, p_user);
    IF NOT (v_invitee OR v_manager) THEN
        PERFORM activity.pa_raise('PA005', 'INVITATION_NOT_FOUND', 'Invitation not found', ids);
    ELSIF p_as_invitee AND NOT v_invitee THEN
        PERFORM activity.pa_raise('PA007', 'NOT_AUTHORIZED',
                                  'Only the invitee may answer an invitation', ids);
    ELSIF NOT p_as_invitee AND NOT v_manager THEN
        PERFORM activity.pa_raise('PA007', 'NOT_AUTHORIZED',
                                  'The invitee cannot cancel an invitation', ids);
    END IF;
    PERFORM activity.pa_check_open(i);
    RETURN i;
END $$;

-- The activity of an invitation, locked as every change of who takes part locks it; taken
-- before the invitation's own row, in the same order everywhere. NULL (nothing locked) for an
-- unknown invitation, which pa_lock_open_invitation then reports.
CREATE OR REPLACE FUNCTION activity.pa_lock_invitation_activity(p_invitation_id uuid)
RETURNS activity.activities LANGUAGE plpgsql AS $$
BEGIN
    RETURN activity.pa_lock_activity((SELECT i.activity_id FROM activity.activity_invitations i
                                      WHERE i.invitation_id = p_invitation_id));
END $$;

-- Every join check except the invitation requirement, then registered or waitlisted exactly as
-- a join, under the same activity lock.
CREATE OR REPLACE FUNCTION activity.sp_accept_invitation(p_invitation_id uuid, p_user_id uuid,
                                                         p_request_id uuid DEFAULT NULL)
RETURNS TABLE (invitation_id uuid, activity_id uuid, participation_status text,
               waitlist_position integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_invitation_id);
    v_reply jsonb := activity.pa_replay(p_user_id, p_request_id, 'AcceptInvitation', v_request);
    a activity.activities;
    i activity.activity_invitations;
    r record;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply) AS x(invitation_id uuid,
            activity_id uuid, participation_status text, waitlist_position integer);
        RETURN;
    END IF;
    a := activity.pa_lock_invitation_activity(p_invitation_id);
    i := activity.pa_lock_open_invitation(p_invitation_id, p_user_id, true);
    PERFORM activity.pa_check_join(a, i.activity_id, p_user_id, true);
    r := activity.pa_admit(a, p_user_id, p_invitation_id);
    invitation_id := p_invitation_id;
    activity_id := i.activity_id;
    participation_status := r.participation_status;
    waitlist_position := r.waitlist_position;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'AcceptInvitation', v_request,
            jsonb_build_object('invitation_id', invitation_id, 'activity_id', activity_id,
                               'participation_status', participation_status,
                               'waitlist_position', waitlist_position));
    END IF;
    RETURN NEXT;
END $$;

CREATE OR REPLACE FUNCTION activity.sp_decline_invitation(p_invitation_id uuid, p_user_id uuid,
                                                          p_request_id uuid DEFAULT NULL)
RETURNS TABLE (invitation_id uuid, activity_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_invitation_id);
    v_reply jsonb := activity.pa_replay(p_user_id, p_request_id, 'DeclineInvitation', v_request);
    i activity.activity_invitations;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(invitation_id uuid, activity_id uuid);
        RETURN;
    END IF;
    PERFORM activity.pa_lock_invitation_activity(p_invitation_id);
    i := activity.pa_lock_open_invitation(p_invitation_id, p_user_id, true);
    PERFORM activity.pa_close_invitation(p_invitation_id, 'declined', p_user_id);
    invitation_id := p_invitation_id;
    activity_id := i.activity_id;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'DeclineInvitation', v_request,
            jsonb_build_object('invitation_id', invitation_id, 'activity_id', activity_id));
    END IF;
    RETURN NEXT;
END $$;

-- The sender, the organizer and co-organizers may cancel; the invitee may not; to anyone else
-- the invitation does not exist.
CREATE OR REPLACE FUNCTION activity.sp_cancel_invitation(p_invitation_id uuid, p_user_id uuid,
                                                         p_request_id uuid DEFAULT NULL)
RETURNS TABLE (invitation_id uuid, activity_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_request jsonb := jsonb_build_array(p_invitation_id);
    v_reply jsonb := activity.pa_replay(p_user_id, p_request_id, 'CancelInvitation', v_request);
    i activity.activity_invitations;
BEGIN
    IF v_reply IS NOT NULL THEN
        RETURN QUERY SELECT * FROM jsonb_to_record(v_reply)
                                   AS x(invitation_id uuid, activity_id uuid);
        RETURN;
    END IF;
    PERFORM activity.pa_lock_invitation_activity(p_invitation_id);
    i := activity.pa_lock_open_invitation(p_invitation_id, p_user_id, false);
    PERFORM activity.pa_close_invitation(p_invitation_id, 'cancelled', p_user_id);
    invitation_id := p_invitation_id;
    activity_id := i.activity_id;
    IF p_request_id IS NOT NULL THEN
        PERFORM activity.pa_remember(p_user_id, p_request_id, 'CancelInvitation', v_request,
            jsonb_build_object('invitation_id', invitation_id, 'activity_id', activity_id));
    END IF;
    RETURN NEXT;
END $$;

-- One page of invitations received by p_invitee or sent by p_sender (the other one NULL),
-- newest first. Invitations between users blocked with each other are left out, and so are
-- those to activities the invitee can no longer see (contract 4.2: a draft again, or a block
-- with the organizer). One user's invitations: counted, as no counter covers them.
CREATE OR REPLACE FUNCTION activity.pa_invitation_page(p_invitee uuid, p_sender uuid,
    p_activity_id uuid, p_status text, p_page_size integer, p_after jsonb,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    WITH matching AS (
        SELECT v.* FROM activity.pa_invitations() v
        WHERE (p_invitee IS NULL OR v.user_id = p_invitee)
          AND (p_sender IS NULL OR v.invited_by_user_id = p_sender)
          AND (p_activity_id IS NULL OR v.activity_id = p_activity_id)
          AND (p_status IS NULL OR v.status = p_status)
          AND NOT EXISTS (SELECT 1 FROM activity.pa_block_pairs b
                          WHERE b.user_a = v.user_id AND b.user_b = v.invited_by_user_id)
          AND (p_invitee IS NULL
               OR activity.pa_can_see((SELECT a FROM activity.activities a
                                       WHERE a.activity_id = v.activity_id), p_invitee))
    ), page AS (
        SELECT m.*, row_number() OVER (ORDER BY m.invited_at DESC, m.invitation_id DESC) AS n
        FROM matching m
        WHERE p_after IS NULL
           OR (m.invited_at, m.invitation_id) < ((p_after->>'invited_at')::timestamptz,
                                                  (p_after->>'invitation_id')::uuid)
        ORDER BY m.invited_at DESC, m.invitation_id DESC LIMIT p_page_size + 1
    )
    SELECT (SELECT count(*) FROM matching),
           coalesce(json_agg(pg.item ORDER BY pg.n) FILTER (WHERE pg.n <= p_page_size), '[]'),
           CASE WHEN count(*) > p_page_size THEN
               (array_agg(jsonb_build_object('invited_at', pg.invited_at,
                                             'invitation_id', pg.invitation_id))
                FILTER (WHERE pg.n = p_page_size))[1]
           END
    INTO total_size, items, next_after
    FROM page pg;
END $$;

-- Invitations addressed to the caller, CANCELLED and EXPIRED ones included unless filtered.
CREATE OR REPLACE FUNCTION activity.sp_get_received_invitations(p_user_id uuid,
    p_status text DEFAULT NULL, p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE sql STABLE AS $$
    SELECT * FROM activity.pa_invitation_page(p_user_id, NULL, NULL, p_status,
                                              activity.pa_page_size(p_page_size, 20), p_after)
$$;

CREATE OR REPLACE FUNCTION activity.sp_get_sent_invitations(p_user_id uuid,
    p_activity_id uuid DEFAULT NULL, p_status text DEFAULT NULL,
    p_page_size integer DEFAULT NULL, p_after jsonb DEFAULT NULL,
    OUT total_size bigint, OUT items json, OUT next_after jsonb)
LANGUAGE sql STABLE AS $$
    SELECT * FROM activity.pa_invitation_page(NULL, p_user_id, p_activity_id, p_status,
                                              activity.pa_page_size(p_page_size, 20), p_after)
$$;
