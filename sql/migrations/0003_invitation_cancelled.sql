-- CancelInvitation records CANCELLED. Its own migration: a new enum label cannot be used in the
-- transaction that adds it.
ALTER TYPE activity.invitation_status ADD VALUE IF NOT EXISTS 'cancelled';
