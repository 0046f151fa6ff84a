-- The predecessor's database as production has it, written from ../shared/predecessor.md: the
-- platform's tables with the predecessor's columns, constraints and triggers, its uuidv7() ids,
-- its 17 procedures with their own signatures, and functions and a view of other services in the
-- same schema. tests/predecessor.py loads it (pgcrypto first) and then the data its bugs left.

CREATE OR REPLACE FUNCTION public.uuidv7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ms bytea := substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3);
    rnd bytea := gen_random_bytes(10);
BEGIN
    rnd := set_byte(rnd, 0, (get_byte(rnd, 0) & 15) | 112);   -- version 7
    rnd := set_byte(rnd, 2, (get_byte(rnd, 2) & 63) | 128);   -- variant 10
    RETURN encode(ms || rnd, 'hex')::uuid;
END $$;

CREATE SCHEMA activity;

CREATE TYPE activity.subscription_level AS ENUM ('free', 'club', 'premium');
CREATE TYPE activity.user_status AS ENUM ('active', 'temporary_ban', 'banned');
CREATE TYPE activity.activity_type AS ENUM ('standard', 'xxl', 'womens_only', 'mens_only');
CREATE TYPE activity.activity_privacy_level AS ENUM ('public', 'friends_only', 'invite_only');
CREATE TYPE activity.activity_status AS ENUM ('draft', 'published', 'cancelled', 'completed');
CREATE TYPE activity.participant_role AS ENUM ('organizer', 'co_organizer', 'member');
CREATE TYPE activity.participation_status AS ENUM ('registered', 'waitlisted', 'declined', 'cancelled');
CREATE TYPE activity.attendance_status AS ENUM ('registered', 'attended', 'no_show');
CREATE TYPE activity.invitation_status AS ENUM ('pending', 'accepted', 'declined', 'expired');

CREATE FUNCTION activity.update_timestamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END $$;

CREATE TABLE activity.users (
    user_id                   uuid PRIMARY KEY DEFAULT public.uuidv7(),
    email                     text NOT NULL UNIQUE,
    username                  text NOT NULL UNIQUE,
    password_hash             text NOT NULL,
    first_name                text,
    last_name                 text,
    main_photo_url            text,
    profile_photo_urls        jsonb NOT NULL DEFAULT '[]',
    bio                       text,
    date_of_birth             date,
    gender                    varchar(20),
    subscription_level        activity.subscription_level NOT NULL DEFAULT 'free',
    subscription_expires_at   timestamptz,
    status                    activity.user_status NOT NULL DEFAULT 'active',
    ban_expires_at            timestamptz,
    ban_reason                text,
    is_captain                boolean NOT NULL DEFAULT false,
    captain_since             timestamptz,
    is_verified               boolean NOT NULL DEFAULT false,
    verification_count        integer NOT NULL DEFAULT 0,
    no_show_count             integer NOT NULL DEFAULT 0,
    activities_created_count  integer NOT NULL DEFAULT 0,
    activities_attended_count integer NOT NULL DEFAULT 0,
    is_active                 boolean NOT NULL DEFAULT true,
    last_seen_at              timestamptz,
    payload                   jsonb,
    hash_value                varchar(64),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE activity.activities (
    activity_id                uuid PRIMARY KEY DEFAULT public.uuidv7(),
    organizer_user_id          uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    category_id                uuid,
    title                      text NOT NULL,
    description                text NOT NULL,
    activity_type              activity.activity_type NOT NULL DEFAULT 'standard',
    activity_privacy_level     activity.activity_privacy_level NOT NULL DEFAULT 'public',
    status                     activity.activity_status NOT NULL DEFAULT 'published',
    scheduled_at               timestamptz NOT NULL,
    duration_minutes           integer,
    joinable_at_free           timestamptz,
    max_participants           integer NOT NULL,
    current_participants_count integer NOT NULL DEFAULT 0,
    waitlist_count             integer NOT NULL DEFAULT 0,
    location_name              text,
    city                       text,
    language                   varchar(5) DEFAULT 'en',
    external_chat_id           text,
    completed_at               timestamptz,
    cancelled_at               timestamptz,
    payload                    jsonb,
    hash_value                 varchar(64),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT check_participants_count
        CHECK (current_participants_count >= 0 AND current_participants_count <= max_participants),
    CONSTRAINT check_waitlist_count CHECK (waitlist_count >= 0),
    CONSTRAINT check_max_participants CHECK (max_participants > 0),
    CONSTRAINT check_scheduled_time CHECK (scheduled_at > created_at),
    CONSTRAINT check_joinable_time CHECK (joinable_at_free IS NULL OR joinable_at_free <= scheduled_at),
    CONSTRAINT check_duration CHECK (duration_minutes IS NULL OR duration_minutes > 0)
);

CREATE TABLE activity.user_blocks (
    blocker_user_id uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    blocked_user_id uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_user_id, blocked_user_id),
    CONSTRAINT check_not_self_block CHECK (blocker_user_id <> blocked_user_id)
);

CREATE TABLE activity.friendships (
    user_id_1    uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    user_id_2    uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    status       varchar(20) NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'accepted', 'blocked')),
    initiated_by uuid NOT NULL REFERENCES activity.users (user_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    accepted_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id_1, user_id_2),
    CONSTRAINT check_user_order CHECK (user_id_1 < user_id_2)
);

CREATE TABLE activity.participants (
    activity_id          uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id              uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    role                 activity.participant_role NOT NULL DEFAULT 'member',
    participation_status activity.participation_status NOT NULL DEFAULT 'registered',
    attendance_status    activity.attendance_status NOT NULL DEFAULT 'registered',
    joined_at            timestamptz NOT NULL DEFAULT now(),
    left_at              timestamptz,
    payload              jsonb,
    hash_value           varchar(64),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (activity_id, user_id)
);

-- No primary key: rows written with an explicit NULL id exist.
CREATE TABLE activity.waitlist_entries (
    waitlist_id uuid DEFAULT public.uuidv7(),
    activity_id uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    position    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    notified_at timestamptz,
    expires_at  timestamptz,
    updated_at  timestamptz,
    payload     jsonb,
    hash_value  varchar(64),
    UNIQUE (activity_id, user_id),
    CONSTRAINT check_position_positive CHECK (position > 0)
);

CREATE TABLE activity.activity_invitations (
    invitation_id      uuid PRIMARY KEY DEFAULT public.uuidv7(),
    activity_id        uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id            uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    invited_by_user_id uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    status             activity.invitation_status NOT NULL DEFAULT 'pending',
    invited_at         timestamptz NOT NULL DEFAULT now(),
    responded_at       timestamptz,
    expires_at         timestamptz,
    message            text,
    payload            jsonb,
    hash_value         varchar(64),
    created_at         timestamptz,
    updated_at         timestamptz,
    UNIQUE (activity_id, user_id),
    CONSTRAINT check_invitation_dates CHECK (expires_at IS NULL OR expires_at > invited_at)
);

CREATE TABLE activity.attendance_confirmations (
    confirmation_id   uuid PRIMARY KEY DEFAULT public.uuidv7(),
    activity_id       uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    confirmed_user_id uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    confirmer_user_id uuid NOT NULL REFERENCES activity.users (user_id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (activity_id, confirmed_user_id, confirmer_user_id),
    CONSTRAINT check_not_self_confirm CHECK (confirmed_user_id <> confirmer_user_id)
);

CREATE INDEX idx_participants_user ON activity.participants (user_id);
CREATE INDEX idx_waitlist_activity_position ON activity.waitlist_entries (activity_id, position);
CREATE INDEX idx_invitations_user ON activity.activity_invitations (user_id, status);

CREATE TRIGGER trg_users_updated_at BEFORE UPDATE ON activity.users
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();
CREATE TRIGGER trg_activities_updated_at BEFORE UPDATE ON activity.activities
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();
CREATE TRIGGER trg_friendships_updated_at BEFORE UPDATE ON activity.friendships
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();
CREATE TRIGGER trg_participants_updated_at BEFORE UPDATE ON activity.participants
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();
CREATE TRIGGER trg_waitlist_entries_updated_at BEFORE UPDATE ON activity.waitlist_entries
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();
CREATE TRIGGER trg_activity_invitations_updated_at BEFORE UPDATE ON activity.activity_invitations
    FOR EACH ROW EXECUTE FUNCTION activity.update_timestamp();

-- The predecessor's 17 procedures: the same names, other signatures, every one answering
-- (..., success, error_code, error_message). Join and the participant list are written out as
-- it had them; the others only need their shape here, since migrate replaces them all.
CREATE FUNCTION activity.sp_join_activity(p_activity_id uuid, p_user_id uuid,
                                          p_subscription_level activity.subscription_level)
RETURNS TABLE (participation_status activity.participation_status, waitlist_position integer,
               success boolean, error_code varchar, error_message text)
LANGUAGE plpgsql AS $$
DECLARE
    a activity.activities;
BEGIN
    SELECT * INTO a FROM activity.activities WHERE activity_id = p_activity_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::activity.participation_status, NULL::integer, false,
                            'ACTIVITY_NOT_FOUND'::varchar, 'Activity not found'; RETURN;
    END IF;
    IF NOT (SELECT is_active FROM activity.users WHERE user_id = p_user_id) THEN
        RETURN QUERY SELECT NULL::activity.participation_status, NULL::integer, false,
                            'USER_INACTIVE'::varchar, 'User is not active'; RETURN;
    END IF;
    -- Its bug: the counter is read without a lock, so two joins can both take the last seat.
    IF a.current_participants_count < a.max_participants THEN
        INSERT INTO activity.participants (activity_id, user_id) VALUES (p_activity_id, p_user_id);
        UPDATE activity.activities SET current_participants_count = current_participants_count + 1
        WHERE activity_id = p_activity_id AND current_participants_count < max_participants;
        RETURN QUERY SELECT 'registered'::activity.participation_status, 0, true, NULL::varchar, NULL::text;
    ELSE
        INSERT INTO activity.waitlist_entries (activity_id, user_id, position)
        VALUES (p_activity_id, p_user_id, a.waitlist_count + 1);
        UPDATE activity.activities SET waitlist_count = waitlist_count + 1
        WHERE activity_id = p_activity_id;
        RETURN QUERY SELECT 'waitlisted'::activity.participation_status, a.waitlist_count + 1, true,
                            NULL::varchar, NULL::text;
    END IF;
END $$;

CREATE FUNCTION activity.sp_list_participants(p_activity_id uuid, p_requesting_user_id uuid,
    p_status activity.participation_status, p_role activity.participant_role,
    p_limit integer, p_offset integer)
RETURNS TABLE (user_id uuid, username text, role activity.participant_role,
               participation_status activity.participation_status, joined_at timestamptz,
               total_count bigint, success boolean, error_code varchar, error_message text)
LANGUAGE sql STABLE AS $$
    SELECT p.user_id, u.username, p.role, p.participation_status, p.joined_at,
           count(*) OVER (), true, NULL::varchar, NULL::text
    FROM activity.participants p JOIN activity.users u ON u.user_id = p.user_id
    WHERE p.activity_id = p_activity_id
      AND (p_status IS NULL OR p.participation_status = p_status)
      AND (p_role IS NULL OR p.role = p_role)
    ORDER BY p.joined_at LIMIT p_limit OFFSET p_offset
$$;

-- The same argument types as ours, another result: CREATE OR REPLACE alone cannot replace it.
CREATE FUNCTION activity.sp_leave_activity(p_activity_id uuid, p_user_id uuid)
RETURNS TABLE (success boolean, error_code varchar, error_message text)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM activity.participants WHERE activity_id = p_activity_id AND user_id = p_user_id;
    RETURN QUERY SELECT true, NULL::varchar, NULL::text;
END $$;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT * FROM (VALUES
        ('sp_cancel_participation', 'p_activity_id uuid, p_user_id uuid, p_reason text, p_notify boolean'),
        ('sp_get_user_activities', 'p_user_id uuid, p_requesting_user_id uuid, p_type text, p_limit integer, p_offset integer'),
        ('sp_promote_participant', 'p_activity_id uuid, p_organizer_id uuid, p_user_id uuid, p_note text'),
        ('sp_demote_participant', 'p_activity_id uuid, p_organizer_id uuid, p_user_id uuid, p_note text'),
        ('sp_mark_attendance', 'p_activity_id uuid, p_organizer_id uuid, p_updates jsonb, p_notify boolean'),
        ('sp_confirm_attendance', 'p_activity_id uuid, p_confirmer_id uuid, p_confirmed_id uuid, p_note text'),
        ('sp_get_pending_verifications', 'p_user_id uuid, p_limit integer, p_offset integer'),
        ('sp_send_invitations', 'p_activity_id uuid, p_inviter_id uuid, p_user_ids uuid[], p_message text, p_expires_hours integer, p_notify boolean'),
        ('sp_accept_invitation', 'p_invitation_id uuid, p_user_id uuid, p_subscription_level activity.subscription_level'),
        ('sp_decline_invitation', 'p_invitation_id uuid, p_user_id uuid, p_reason text'),
        ('sp_cancel_invitation', 'p_invitation_id uuid, p_user_id uuid, p_reason text'),
        ('sp_get_received_invitations', 'p_user_id uuid, p_status activity.invitation_status, p_limit integer, p_offset integer'),
        ('sp_get_sent_invitations', 'p_user_id uuid, p_activity_id uuid, p_status activity.invitation_status, p_limit integer, p_offset integer'),
        ('sp_get_waitlist', 'p_activity_id uuid, p_requesting_user_id uuid, p_limit integer, p_offset integer')
    ) AS v(name, args)
    LOOP
        EXECUTE format('CREATE FUNCTION activity.%I(%s) RETURNS TABLE (result jsonb, success boolean, '
                       'error_code varchar, error_message text) LANGUAGE sql AS '
                       '$body$ SELECT NULL::jsonb, true, NULL::varchar, NULL::text $body$',
                       f.name, f.args);
    END LOOP;
END $$;

-- Other services keep functions and views of their own in this schema; they must survive.
CREATE FUNCTION activity.sp_get_activity_participants(p_activity_id uuid)
RETURNS TABLE (user_id uuid, username text, role activity.participant_role,
               participation_status activity.participation_status, success boolean,
               error_code varchar, error_message text)
LANGUAGE sql STABLE AS $$
    SELECT p.user_id, u.username, p.role, p.participation_status, true, NULL::varchar, NULL::text
    FROM activity.participants p JOIN activity.users u ON u.user_id = p.user_id
    WHERE p.activity_id = p_activity_id ORDER BY p.joined_at
$$;

CREATE FUNCTION activity.sp_get_activity_summary(p_activity_id uuid)
RETURNS TABLE (title text, registered bigint, waiting bigint, success boolean,
               error_code varchar, error_message text)
LANGUAGE sql STABLE AS $$
    SELECT a.title,
           (SELECT count(*) FROM activity.participants p
            WHERE p.activity_id = a.activity_id AND p.participation_status = 'registered'),
           (SELECT count(*) FROM activity.waitlist_entries w WHERE w.activity_id = a.activity_id),
           true, NULL::varchar, NULL::text
    FROM activity.activities a WHERE a.activity_id = p_activity_id
$$;

-- The chat service joins users by calling the predecessor's procedure by name (PL/pgSQL records
-- no dependency on it).
CREATE FUNCTION activity.sp_join_from_chat(p_activity_id uuid, p_user_id uuid)
RETURNS TABLE (success boolean, error_code varchar, error_message text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT j.success, j.error_code, j.error_message
                 FROM activity.sp_join_activity(p_activity_id, p_user_id, 'free') j;
END $$;

CREATE VIEW activity.activity_roster AS
    SELECT p.activity_id, p.user_id, u.username, p.role, p.participation_status, p.joined_at
    FROM activity.participants p JOIN activity.users u ON u.user_id = p.user_id;
