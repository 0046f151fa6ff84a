-- Demo data for `participation-grpc dev` (make run): enough to try every RPC from grpcurl.
--
-- Idempotent and self-resetting: every load upserts the demo users and activities (fixed ids,
-- see README "Demo data"), moves their times relative to now() so future activities stay in the
-- future, and puts the demo activities' participants, waitlists, invitations and confirmations
-- back to the state below. Nothing outside these ids is touched.
--
-- Ids: users 10000000-0000-4000-8000-0000000000NN, activities a0000000-…-0000000000NN,
-- invitations e0000000-…-0000000000NN, confirmations c0000000-…-0000000000NN.
-- The rows written straight into the service's tables keep its invariants: waitlisted users
-- have a waitlist_entries row and no registered participants row, positions are 1..n, and the
-- counters equal the rows (the organizer's registered row counts as a seat).

BEGIN;
SELECT pg_advisory_xact_lock(7061727469636902);  -- two loads at once: one after the other

-- Users -----------------------------------------------------------------------------------------
CREATE TEMP TABLE demo_users ON COMMIT DROP AS
SELECT ('10000000-0000-4000-8000-0000000000' || n)::uuid AS user_id, username, first_name,
       last_name, level::activity.subscription_level AS subscription_level,
       CASE WHEN level <> 'free' THEN now() + interval '1 year' END AS subscription_expires_at,
       status::activity.user_status AS status, ban_expires_at, verified
FROM (VALUES
    ('01', 'demo',   'Dana',   'Demo',      'free',    'active',        NULL::timestamptz, false),
    ('02', 'olivia', 'Olivia', 'Organiser', 'club',    'active',        NULL, true),
    ('03', 'noah',   'Noah',   'Bakker',    'free',    'active',        NULL, true),
    ('04', 'emma',   'Emma',   'de Vries',  'free',    'active',        NULL, false),
    ('05', 'liam',   'Liam',   'Jansen',    'free',    'active',        NULL, false),
    ('06', 'sophia', 'Sophia', 'Visser',    'free',    'active',        NULL, false),
    ('07', 'lucas',  'Lucas',  'Smit',      'free',    'active',        NULL, false),
    ('08', 'mia',    'Mia',    'Meijer',    'free',    'active',        NULL, false),
    ('09', 'finn',   'Finn',   'de Boer',   'free',    'active',        NULL, false),
    ('10', 'zoe',    'Zoe',    'Mulder',    'free',    'active',        NULL, false),
    ('11', 'bruno',  'Bruno',  'Banned',    'free',    'banned',        NULL, false),
    ('12', 'petra',  'Petra',  'Premium',   'premium', 'active',        NULL, true),
    ('13', 'victor', 'Victor', 'Blocker',   'free',    'active',        NULL, false),
    ('14', 'tessa',  'Tessa',  'Timeout',   'free',    'temporary_ban', now() + interval '3 days', false)
) AS v(n, username, first_name, last_name, level, status, ban_expires_at, verified);

INSERT INTO activity.users AS u (user_id, email, username, password_hash, first_name, last_name,
    main_photo_url, subscription_level, subscription_expires_at, status, ban_expires_at,
    is_verified, verification_count, no_show_count, activities_attended_count)
SELECT user_id, username || '@demo.participation.example', username,
       'demo-account-cannot-log-in', first_name, last_name,
       'https://example.com/photos/' || username || '.jpg', subscription_level,
       subscription_expires_at, status, ban_expires_at, verified, 0, 0, 0
FROM demo_users
ON CONFLICT (user_id) DO UPDATE
SET email = EXCLUDED.email, username = EXCLUDED.username, password_hash = EXCLUDED.password_hash,
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    main_photo_url = EXCLUDED.main_photo_url, subscription_level = EXCLUDED.subscription_level,
    subscription_expires_at = EXCLUDED.subscription_expires_at, status = EXCLUDED.status,
    ban_expires_at = EXCLUDED.ban_expires_at, is_verified = EXCLUDED.is_verified,
    verification_count = 0, no_show_count = 0, activities_attended_count = 0, updated_at = now();

-- Victor blocks demo: his standard activities refuse demo (BLOCKED_USER), his XXL one does not.
DELETE FROM activity.user_blocks
WHERE blocker_user_id IN (SELECT user_id FROM demo_users)
  AND blocked_user_id IN (SELECT user_id FROM demo_users);
INSERT INTO activity.user_blocks (blocker_user_id, blocked_user_id, created_at)
VALUES ('10000000-0000-4000-8000-000000000013', '10000000-0000-4000-8000-000000000001',
        now() - interval '30 days');

-- Demo is an accepted friend of olivia and noah, and has a pending request with emma.
DELETE FROM activity.friendships
WHERE user_id_1 IN (SELECT user_id FROM demo_users) AND user_id_2 IN (SELECT user_id FROM demo_users);
INSERT INTO activity.friendships (user_id_1, user_id_2, status, initiated_by, created_at, accepted_at)
SELECT least(a, b), greatest(a, b), status::activity.friendship_status, a, now() - interval '60 days',
       CASE WHEN status = 'accepted' THEN now() - interval '59 days' END
FROM (VALUES
    ('10000000-0000-4000-8000-000000000001'::uuid, '10000000-0000-4000-8000-000000000002'::uuid, 'accepted'),
    ('10000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000003', 'accepted'),
    ('10000000-0000-4000-8000-000000000004', '10000000-0000-4000-8000-000000000001', 'pending'),
    ('10000000-0000-4000-8000-000000000005', '10000000-0000-4000-8000-000000000006', 'accepted')
) AS v(a, b, status);

-- Activities ------------------------------------------------------------------------------------
-- starts_in is relative to the current hour; created_at lies 14 days before the earlier of now
-- and scheduled_at, so the platform's CHECK (scheduled_at > created_at) always holds.
CREATE TEMP TABLE demo_activities ON COMMIT DROP AS
SELECT ('a0000000-0000-4000-8000-0000000000' || n)::uuid AS activity_id,
       ('10000000-0000-4000-8000-0000000000' || organizer)::uuid AS organizer_user_id,
       title, description, kind::activity.activity_type AS activity_type,
       privacy::activity.activity_privacy_level AS activity_privacy_level,
       status::activity.activity_status AS status,
       date_trunc('hour', now()) + starts_in AS scheduled_at, duration_minutes,
       date_trunc('hour', now()) + free_from AS joinable_at_free, max_participants,
       location_name, city,
       least(now(), date_trunc('hour', now()) + starts_in) - interval '14 days' AS created_at
FROM (VALUES
    ('01', '02', 'Sunday morning run', 'An easy 8 km loop, all paces welcome.',
     'standard', 'public', 'published', interval '3 days', 75, NULL::interval, 12, 'Vondelpark', 'Amsterdam'),
    ('02', '13', 'Summer street festival', 'Food trucks and live music; XXL, blocks do not apply.',
     'xxl', 'public', 'published', interval '12 days', 240, NULL, 200, 'Museumplein', 'Amsterdam'),
    ('03', '04', 'Women''s bouldering evening', 'Beginners get a short introduction.',
     'womens_only', 'public', 'published', interval '5 days', 120, NULL, 8, 'Boulderhal Oost', 'Amsterdam'),
    ('04', '05', 'Five-a-side football', 'Bring a light and a dark shirt.',
     'mens_only', 'public', 'published', interval '4 days', 90, NULL, 10, 'Sportpark Middenmeer', 'Amsterdam'),
    ('05', '02', 'Board games at Olivia''s', 'Friends only: Catan, Azul and snacks.',
     'standard', 'friends_only', 'published', interval '6 days', 180, NULL, 6, 'Olivia''s place', 'Amsterdam'),
    ('06', '05', 'Liam''s birthday drinks', 'Friends of Liam only.',
     'standard', 'friends_only', 'published', interval '9 days', 180, NULL, 15, 'Café de Jaren', 'Amsterdam'),
    ('07', '02', 'Rooftop dinner', 'Invited guests only; demo has a pending invitation.',
     'standard', 'invite_only', 'published', interval '8 days', 150, NULL, 6, 'Rooftop terrace', 'Rotterdam'),
    ('08', '01', 'Demo''s wine tasting', 'Organised by demo; invite-only.',
     'standard', 'invite_only', 'published', interval '10 days', 120, NULL, 8, 'Wijnbar Noord', 'Utrecht'),
    ('09', '01', 'Kayak weekend (draft)', 'Not published yet: only demo can see it.',
     'standard', 'public', 'draft', interval '30 days', 2880, NULL, 10, 'Biesbosch', 'Dordrecht'),
    ('10', '02', 'Salsa workshop (sold out)', 'Full: new joiners go to the waitlist.',
     'standard', 'public', 'published', interval '2 days', 90, NULL, 5, 'Dansschool Centrum', 'Amsterdam'),
    ('11', '01', 'Demo''s Saturday hike', 'Organised by demo; full, with a waitlist and a co-organiser.',
     'standard', 'public', 'published', interval '7 days', 240, NULL, 6, 'Veluwezoom', 'Arnhem'),
    ('12', '01', 'Demo''s morning yoga (started)', 'Started an hour ago: attendance can be marked.',
     'standard', 'public', 'published', interval '-1 hour', 120, NULL, 10, 'Westerpark', 'Amsterdam'),
    ('13', '02', 'Pub quiz night (last week)', 'Attendance marked: confirm each other.',
     'standard', 'public', 'published', interval '-7 days', 150, NULL, 10, 'De Kroeg', 'Amsterdam'),
    ('14', '02', 'Early-bird concert', 'Club and premium members only for the first week.',
     'standard', 'public', 'published', interval '14 days', 120, interval '7 days', 20, 'Paradiso', 'Amsterdam'),
    ('15', '13', 'Chess club', 'Victor''s club; victor blocks demo.',
     'standard', 'public', 'published', interval '3 days', 120, NULL, 10, 'Schaakcafé', 'Haarlem'),
    ('16', '06', 'Jazz brunch', 'Invited guests only; demo has a pending invitation.',
     'standard', 'invite_only', 'published', interval '11 days', 120, NULL, 10, 'Bimhuis', 'Amsterdam')
) AS v(n, organizer, title, description, kind, privacy, status, starts_in, duration_minutes,
       free_from, max_participants, location_name, city);

-- The old participation state goes first, so nothing below collides with an earlier load.
DELETE FROM activity.attendance_confirmations WHERE activity_id IN (SELECT activity_id FROM demo_activities);
DELETE FROM activity.activity_invitations WHERE activity_id IN (SELECT activity_id FROM demo_activities);
DELETE FROM activity.waitlist_entries WHERE activity_id IN (SELECT activity_id FROM demo_activities);
DELETE FROM activity.participants WHERE activity_id IN (SELECT activity_id FROM demo_activities);

INSERT INTO activity.activities AS a (activity_id, organizer_user_id, title, description,
    activity_type, activity_privacy_level, status, scheduled_at, duration_minutes, joinable_at_free,
    max_participants, current_participants_count, waitlist_count, location_name, city, created_at,
    updated_at)
SELECT activity_id, organizer_user_id, title, description, activity_type, activity_privacy_level,
       status, scheduled_at, duration_minutes, joinable_at_free, max_participants, 0, 0,
       location_name, city, created_at, now()
FROM demo_activities
ON CONFLICT (activity_id) DO UPDATE
SET organizer_user_id = EXCLUDED.organizer_user_id, title = EXCLUDED.title,
    description = EXCLUDED.description, activity_type = EXCLUDED.activity_type,
    activity_privacy_level = EXCLUDED.activity_privacy_level, status = EXCLUDED.status,
    scheduled_at = EXCLUDED.scheduled_at, duration_minutes = EXCLUDED.duration_minutes,
    joinable_at_free = EXCLUDED.joinable_at_free, max_participants = EXCLUDED.max_participants,
    current_participants_count = 0, waitlist_count = 0, location_name = EXCLUDED.location_name,
    city = EXCLUDED.city, created_at = EXCLUDED.created_at, updated_at = now();

-- Participants: the organizer first (role organizer, registered, a seat like any other), then
-- the others an hour apart in the order they joined.
INSERT INTO activity.participants (activity_id, user_id, role, participation_status,
    attendance_status, joined_at, created_at, updated_at)
SELECT a.activity_id, ('10000000-0000-4000-8000-0000000000' || v.u)::uuid,
       v.role::activity.participant_role, 'registered',
       v.attendance::activity.attendance_status,
       a.created_at + v.ord * interval '1 hour', a.created_at + v.ord * interval '1 hour', now()
FROM (VALUES
    -- Sunday morning run: 4 of 12 seats.
    ('01', '02', 'organizer', 'registered', 0), ('01', '03', 'member', 'registered', 1),
    ('01', '04', 'member', 'registered', 2), ('01', '06', 'member', 'registered', 3),
    -- Summer street festival (XXL, organised by victor).
    ('02', '13', 'organizer', 'registered', 0), ('02', '05', 'member', 'registered', 1),
    ('02', '08', 'member', 'registered', 2), ('02', '09', 'member', 'registered', 3),
    ('03', '04', 'organizer', 'registered', 0), ('03', '06', 'member', 'registered', 1),
    ('03', '08', 'member', 'registered', 2),
    ('04', '05', 'organizer', 'registered', 0), ('04', '03', 'member', 'registered', 1),
    ('04', '07', 'member', 'registered', 2), ('04', '09', 'member', 'registered', 3),
    ('05', '02', 'organizer', 'registered', 0), ('05', '03', 'member', 'registered', 1),
    ('06', '05', 'organizer', 'registered', 0), ('06', '06', 'member', 'registered', 1),
    ('07', '02', 'organizer', 'registered', 0), ('07', '04', 'member', 'registered', 1),
    ('08', '01', 'organizer', 'registered', 0), ('08', '03', 'member', 'registered', 1),
    ('09', '01', 'organizer', 'registered', 0),
    -- Salsa workshop: 5 of 5 seats, waitlist below.
    ('10', '02', 'organizer', 'registered', 0), ('10', '03', 'member', 'registered', 1),
    ('10', '04', 'member', 'registered', 2), ('10', '05', 'member', 'registered', 3),
    ('10', '06', 'member', 'registered', 4),
    -- Demo's Saturday hike: 6 of 6 seats, noah co-organises, waitlist below.
    ('11', '01', 'organizer', 'registered', 0), ('11', '03', 'co_organizer', 'registered', 1),
    ('11', '04', 'member', 'registered', 2), ('11', '05', 'member', 'registered', 3),
    ('11', '06', 'member', 'registered', 4), ('11', '07', 'member', 'registered', 5),
    -- Demo's morning yoga, started: nobody marked yet.
    ('12', '01', 'organizer', 'registered', 0), ('12', '03', 'member', 'registered', 1),
    ('12', '04', 'member', 'registered', 2), ('12', '05', 'member', 'registered', 3),
    -- Pub quiz, last week: marked (victor attended too, but he blocks demo; liam did not show).
    ('13', '02', 'organizer', 'attended', 0), ('13', '01', 'member', 'attended', 1),
    ('13', '03', 'member', 'attended', 2), ('13', '04', 'member', 'attended', 3),
    ('13', '06', 'member', 'attended', 4), ('13', '13', 'member', 'attended', 5),
    ('13', '05', 'member', 'no_show', 6),
    ('14', '02', 'organizer', 'registered', 0), ('14', '12', 'member', 'registered', 1),
    ('15', '13', 'organizer', 'registered', 0), ('15', '09', 'member', 'registered', 1),
    ('16', '06', 'organizer', 'registered', 0), ('16', '08', 'member', 'registered', 1)
) AS v(act, u, role, attendance, ord)
JOIN demo_activities a ON a.activity_id = ('a0000000-0000-4000-8000-0000000000' || v.act)::uuid;

-- Waitlists: positions 1..n, joined a day after the last seat was taken, in position order.
INSERT INTO activity.waitlist_entries (activity_id, user_id, position, created_at)
SELECT a.activity_id, ('10000000-0000-4000-8000-0000000000' || v.u)::uuid, v.position,
       a.created_at + interval '1 day' + v.position * interval '1 hour'
FROM (VALUES
    ('10', '07', 1), ('10', '08', 2), ('10', '09', 3),
    ('11', '08', 1), ('11', '10', 2)
) AS v(act, u, position)
JOIN demo_activities a ON a.activity_id = ('a0000000-0000-4000-8000-0000000000' || v.act)::uuid
ORDER BY v.act, v.position;  -- any column the service numbers at insert follows queue order

-- Counters equal the rows, as the service keeps them.
UPDATE activity.activities a
SET current_participants_count = (SELECT count(*) FROM activity.participants p
                                  WHERE p.activity_id = a.activity_id
                                    AND p.participation_status = 'registered'),
    waitlist_count = (SELECT count(*) FROM activity.waitlist_entries w
                      WHERE w.activity_id = a.activity_id)
WHERE a.activity_id IN (SELECT activity_id FROM demo_activities);

-- Invitations ----------------------------------------------------------------------------------
INSERT INTO activity.activity_invitations (invitation_id, activity_id, user_id,
    invited_by_user_id, status, invited_at, responded_at, expires_at, message)
SELECT ('e0000000-0000-4000-8000-0000000000' || v.n)::uuid,
       ('a0000000-0000-4000-8000-0000000000' || v.act)::uuid,
       ('10000000-0000-4000-8000-0000000000' || v.invitee)::uuid,
       ('10000000-0000-4000-8000-0000000000' || v.inviter)::uuid,
       v.status::activity.invitation_status, now() - v.sent_ago,
       now() - v.sent_ago + v.responded_after, now() - v.sent_ago + v.valid_for, v.message
FROM (VALUES
    -- To demo, pending: accept the rooftop dinner, decline the jazz brunch (or the other way).
    ('01', '07', '01', '02', 'pending', interval '1 day', NULL::interval, interval '72 hours',
     'Would love to have you at the rooftop dinner!'),
    ('02', '07', '03', '02', 'pending', interval '1 day', NULL, interval '72 hours', NULL),
    ('03', '16', '01', '06', 'pending', interval '2 hours', NULL, interval '72 hours',
     'Jazz and pancakes, join us?'),
    -- Sent by demo for the wine tasting: zoe pending (cancel it), mia declined, finn expired
    -- and lucas cancelled (all three may be invited again).
    ('04', '08', '10', '01', 'pending', interval '3 hours', NULL, interval '72 hours', 'Wine?'),
    ('05', '08', '08', '01', 'declined', interval '3 days', interval '1 day', interval '72 hours', NULL),
    ('06', '08', '09', '01', 'pending', interval '5 days', NULL, interval '72 hours', NULL),
    ('07', '08', '07', '01', 'cancelled', interval '4 days', interval '2 hours', interval '72 hours', NULL)
) AS v(n, act, invitee, inviter, status, sent_ago, responded_after, valid_for, message);

-- Confirmations of the pub quiz: demo already confirmed noah, emma confirmed demo.
INSERT INTO activity.attendance_confirmations (confirmation_id, activity_id, confirmed_user_id,
    confirmer_user_id, created_at)
SELECT ('c0000000-0000-4000-8000-0000000000' || v.n)::uuid,
       'a0000000-0000-4000-8000-000000000013',
       ('10000000-0000-4000-8000-0000000000' || v.confirmed)::uuid,
       ('10000000-0000-4000-8000-0000000000' || v.confirmer)::uuid, now() - interval '6 days'
FROM (VALUES ('01', '03', '01'), ('02', '01', '04')) AS v(n, confirmed, confirmer);

-- The users' counters follow the rows above.
UPDATE activity.users u
SET verification_count = (SELECT count(*) FROM activity.attendance_confirmations c
                          JOIN demo_activities a USING (activity_id)
                          WHERE c.confirmed_user_id = u.user_id),
    no_show_count = (SELECT count(*) FROM activity.participants p JOIN demo_activities a USING (activity_id)
                     WHERE p.user_id = u.user_id AND p.attendance_status = 'no_show'),
    activities_attended_count = (SELECT count(*) FROM activity.participants p
                                 JOIN demo_activities a USING (activity_id)
                                 WHERE p.user_id = u.user_id AND p.attendance_status = 'attended')
WHERE u.user_id IN (SELECT user_id FROM demo_users);

COMMIT;
