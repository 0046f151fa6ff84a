-- Waitlist entries are addressed by waitlist_id (a promotion or a leave deletes that row). The
-- predecessor's column had a default but allowed NULL and was no key, and rows with a NULL id
-- exist. migrate fills them and proves the column complete before this runs
-- (participation_grpc/migrate/preparations.py), so SET NOT NULL skips its scan; the key's
-- index is built concurrently beforehand. Where 0002 created the table, all of it is in place.
CREATE UNIQUE INDEX IF NOT EXISTS waitlist_entries_pkey ON activity.waitlist_entries (waitlist_id);
ALTER TABLE activity.waitlist_entries ALTER COLUMN waitlist_id SET NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'activity.waitlist_entries'::regclass
                   AND contype = 'p') THEN
        ALTER TABLE activity.waitlist_entries
            ADD CONSTRAINT waitlist_entries_pkey PRIMARY KEY USING INDEX waitlist_entries_pkey;
    END IF;
END $$;
