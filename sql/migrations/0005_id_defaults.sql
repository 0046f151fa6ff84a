-- The procedures insert invitations, waitlist entries and confirmations without naming their
-- ids. Tables created by 0002 have defaults; a predecessor's may not, so a uuid id column
-- without a default gets gen_random_uuid(). Columns of another type, or with a default of their
-- own, are left as they are.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = 'activity' AND data_type = 'uuid' AND column_default IS NULL
               AND (table_name, column_name) IN (('activity_invitations', 'invitation_id'),
                                                 ('waitlist_entries', 'waitlist_id'),
                                                 ('attendance_confirmations', 'confirmation_id'))
    LOOP
        EXECUTE format('ALTER TABLE activity.%I ALTER COLUMN %I SET DEFAULT gen_random_uuid()',
                       c.table_name, c.column_name);
    END LOOP;
END $$;
