-- Accounts the users service reported deleted. A token issued before the deletion stays valid
-- until it expires (15 minutes), so sends and new conversations check this list. The deletion
-- and every write of that account serialize on a transaction advisory lock keyed by the
-- account (exclusive for the deletion, shared for writes): no message escapes the tombstoning.
CREATE TABLE messaging.departed_accounts (
    account_id  uuid        PRIMARY KEY,
    departed_at timestamptz NOT NULL DEFAULT now()
);
