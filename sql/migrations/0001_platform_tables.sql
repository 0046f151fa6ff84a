-- The platform's tables, created only where they are missing (development and tests). In
-- production the user, activity and social services own them and nothing here changes them.
CREATE SCHEMA IF NOT EXISTS activity;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('subscription_level',     ARRAY['free', 'club', 'premium']),
        ('user_status',            ARRAY['active', 'temporary_ban', 'banned']),
        ('activity_type',          ARRAY['standard', 'xxl', 'womens_only', 'mens_only']),
        ('activity_privacy_level', ARRAY['public', 'friends_only', 'invite_only']),
        ('activity_status',        ARRAY['draft', 'published', 'cancelled', 'completed']),
        ('friendship_status',      ARRAY['pending', 'accepted', 'blocked']),
        ('participant_role',       ARRAY['organizer', 'co_organizer', 'member']),
        ('participation_status',   ARRAY['registered', 'waitlisted', 'declined', 'cancelled']),
        ('attendance_status',      ARRAY['registered', 'attended', 'no_show']),
        ('invitation_status',      ARRAY['pending', 'accepted', 'declined', 'expired'])
    ) AS v(name, labels)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace
                       WHERE n.nspname = 'activity' AND ty.typname = t.name) THEN
            EXECUTE format('CREATE TYPE activity.%I AS ENUM (%s)', t.name,
                           (SELECT string_agg(quote_literal(l), ', ') FROM unnest(t.labels) l));
        END IF;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS activity.users (
    user_id                 uuid PRIMARY KEY,
    email                   text NOT NULL UNIQUE,
    username                text NOT NULL UNIQUE,
    password_hash           text NOT NULL,
    first_name              text,
    last_name               text,
    main_photo_url          text,
    subscription_level      activity.subscription_level NOT NULL DEFAULT 'free',
    subscription_expires_at timestamptz,
    status                  activity.user_status NOT NULL DEFAULT 'active',
    ban_expires_at          timestamptz,
    is_verified             boolean NOT NULL DEFAULT false,
    verification_count      integer NOT NULL DEFAULT 0,
    no_show_count           integer NOT NULL DEFAULT 0,
    activities_attended_count integer NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS activity.activities (
    activity_id                uuid PRIMARY KEY,
    organizer_user_id          uuid NOT NULL REFERENCES activity.users (user_id),
    title                      text NOT NULL,
    description                text,
    activity_type              activity.activity_type NOT NULL DEFAULT 'standard',
    activity_privacy_level     activity.activity_privacy_level NOT NULL DEFAULT 'public',
    status                     activity.activity_status NOT NULL DEFAULT 'draft',
    scheduled_at               timestamptz NOT NULL,
    duration_minutes           integer,
    joinable_at_free           timestamptz,
    max_participants           integer NOT NULL CHECK (max_participants > 0),
    current_participants_count integer NOT NULL DEFAULT 0,
    waitlist_count             integer NOT NULL DEFAULT 0,
    location_name              text,
    city                       text,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT activities_scheduled_after_created CHECK (scheduled_at > created_at),
    CONSTRAINT activities_participants_within_capacity
        CHECK (current_participants_count >= 0 AND current_participants_count <= max_participants)
);

CREATE TABLE IF NOT EXISTS activity.user_blocks (
    blocker_user_id uuid NOT NULL REFERENCES activity.users (user_id),
    blocked_user_id uuid NOT NULL REFERENCES activity.users (user_id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_user_id, blocked_user_id)
);

CREATE TABLE IF NOT EXISTS activity.friendships (
    user_id_1    uuid NOT NULL REFERENCES activity.users (user_id),
    user_id_2    uuid NOT NULL REFERENCES activity.users (user_id),
    status       activity.friendship_status NOT NULL DEFAULT 'pending',
    initiated_by uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    accepted_at  timestamptz,
    PRIMARY KEY (user_id_1, user_id_2),
    CONSTRAINT friendships_ordered_pair CHECK (user_id_1 < user_id_2)
);
