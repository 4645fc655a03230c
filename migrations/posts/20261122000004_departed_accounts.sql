-- Accounts the users service reported deleted. A token issued before the deletion stays valid
-- until it expires (15 minutes), so writes check this list: a departed account can no longer
-- post or like. Deleting an account and every write of that account serialize on a transaction
-- advisory lock keyed by the account (exclusive for the deletion, shared for writes), so no
-- post can slip in between the deletion's sweep and its commit.
CREATE TABLE posts.departed_accounts (
    account_id  uuid        PRIMARY KEY,
    departed_at timestamptz NOT NULL DEFAULT now()
);
