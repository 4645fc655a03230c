-- A counter bumped whenever something that decides whom an account may message, or be messaged
-- by, changes: its suspension, its deletion, a block it is on either end of. The messaging
-- service keeps contactability answers and trusts them while the versions the users service
-- publishes in Redis still match (docs/adr/0022).
ALTER TABLE users.accounts ADD COLUMN contact_version bigint NOT NULL DEFAULT 0;
