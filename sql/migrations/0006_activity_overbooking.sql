-- Activities left overbooked by earlier software: more registered participants than
-- max_participants. The platform's check keeps current_participants_count within
-- max_participants, so the seats beyond it are recorded here (contract 8): registered rows =
-- current_participants_count + excess. Only overbooked activities have a row; a leave or cancel
-- there shrinks the excess (the row goes at 0) and frees no seat. `reconcile` fills it in.
CREATE TABLE IF NOT EXISTS activity.activity_overbooking (
    activity_id uuid PRIMARY KEY REFERENCES activity.activities ON DELETE CASCADE,
    excess      integer NOT NULL CHECK (excess > 0)
);

