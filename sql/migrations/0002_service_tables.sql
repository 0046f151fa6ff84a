-- This service's tables. In production they exist already (the predecessor created them), so
-- each is created when missing and then given what this service adds: columns with defaults,
-- indexes and constraints.

CREATE TABLE IF NOT EXISTS activity.participants (
    activity_id          uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id              uuid NOT NULL REFERENCES activity.users (user_id),
    role                 activity.participant_role NOT NULL DEFAULT 'member',
    participation_status activity.participation_status NOT NULL DEFAULT 'registered',
    attendance_status    activity.attendance_status NOT NULL DEFAULT 'registered',
    joined_at            timestamptz NOT NULL DEFAULT now(),
    left_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (activity_id, user_id)
);
ALTER TABLE activity.participants
    ADD COLUMN IF NOT EXISTS cancelled_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancellation_reason text;
-- A user's history (ListUserActivities) and "who is registered here" (every join and list).
CREATE INDEX IF NOT EXISTS participants_user_idx
    ON activity.participants (user_id, joined_at DESC);
CREATE INDEX IF NOT EXISTS participants_activity_status_idx
    ON activity.participants (activity_id, participation_status, role, joined_at);

CREATE TABLE IF NOT EXISTS activity.waitlist_entries (
    waitlist_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    activity_id uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES activity.users (user_id),
    position    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (activity_id, user_id)
);
-- Positions are 1..n without gaps; the predecessor left duplicates and holes, so renumber in
-- queue order before the constraint that keeps them apart from now on. Deferred, because
-- closing a gap shifts many rows in one statement.
UPDATE activity.waitlist_entries w
SET position = r.rn
FROM (SELECT waitlist_id,
             row_number() OVER (PARTITION BY activity_id ORDER BY position, created_at, waitlist_id) AS rn
      FROM activity.waitlist_entries) r
WHERE r.waitlist_id = w.waitlist_id AND w.position <> r.rn;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'waitlist_entries_position_unique'
                   AND conrelid = 'activity.waitlist_entries'::regclass) THEN
        ALTER TABLE activity.waitlist_entries
            ADD CONSTRAINT waitlist_entries_position_unique UNIQUE (activity_id, position)
            DEFERRABLE INITIALLY DEFERRED;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'waitlist_entries_position_positive'
                   AND conrelid = 'activity.waitlist_entries'::regclass) THEN
        ALTER TABLE activity.waitlist_entries
            ADD CONSTRAINT waitlist_entries_position_positive CHECK (position >= 1);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS waitlist_entries_user_idx ON activity.waitlist_entries (user_id);

CREATE TABLE IF NOT EXISTS activity.activity_invitations (
    invitation_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    activity_id        uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    user_id            uuid NOT NULL REFERENCES activity.users (user_id),
    invited_by_user_id uuid NOT NULL REFERENCES activity.users (user_id),
    status             activity.invitation_status NOT NULL DEFAULT 'pending',
    invited_at         timestamptz NOT NULL DEFAULT now(),
    responded_at       timestamptz,
    expires_at         timestamptz NOT NULL,
    message            text
);
CREATE INDEX IF NOT EXISTS activity_invitations_invitee_idx
    ON activity.activity_invitations (user_id, invited_at DESC);
CREATE INDEX IF NOT EXISTS activity_invitations_sender_idx
    ON activity.activity_invitations (invited_by_user_id, invited_at DESC);
CREATE INDEX IF NOT EXISTS activity_invitations_activity_user_idx
    ON activity.activity_invitations (activity_id, user_id);

CREATE TABLE IF NOT EXISTS activity.attendance_confirmations (
    confirmation_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    activity_id       uuid NOT NULL REFERENCES activity.activities (activity_id) ON DELETE CASCADE,
    confirmed_user_id uuid NOT NULL REFERENCES activity.users (user_id),
    confirmer_user_id uuid NOT NULL REFERENCES activity.users (user_id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (activity_id, confirmed_user_id, confirmer_user_id)
);
CREATE INDEX IF NOT EXISTS attendance_confirmations_confirmer_idx
    ON activity.attendance_confirmations (confirmer_user_id, activity_id);
