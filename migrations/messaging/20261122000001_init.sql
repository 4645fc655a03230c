-- The messaging schema starts empty; its tables arrive with the messaging feature. This migration
-- exists so that the service's migration history table is created at start-up.
SELECT 1;
