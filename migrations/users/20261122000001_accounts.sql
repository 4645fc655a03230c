-- Accounts: identity, credentials, profile and role. Counters of the follow graph live on the
-- row and are updated in the same transaction as the follow, so profiles read them exactly
-- without counting millions of rows.
CREATE TABLE users.accounts (
    id              uuid        NOT NULL,
    -- Stored lower-case: usernames are unique case-insensitively.
    username        text        NOT NULL,
    -- Stored normalised (trimmed, lower-case).
    email           text        NOT NULL,
    password_hash   text        NOT NULL,
    display_name    text        NOT NULL,
    bio             text        NOT NULL DEFAULT '',
    role            text        NOT NULL DEFAULT 'user',
    suspended_at    timestamptz,
    followers_count bigint      NOT NULL DEFAULT 0,
    following_count bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (id),
    CONSTRAINT accounts_username_key UNIQUE (username),
    CONSTRAINT accounts_email_key UNIQUE (email),
    CONSTRAINT accounts_username_format CHECK (username ~ '^[a-z0-9_]{3,30}$'),
    CONSTRAINT accounts_role_check CHECK (role IN ('user', 'moderator', 'admin')),
    CONSTRAINT accounts_counts_check CHECK (followers_count >= 0 AND following_count >= 0)
);

-- Refresh tokens are opaque; only a SHA-256 of each is stored. Tokens descending from one
-- login form a family: re-using a spent token revokes the whole family.
CREATE TABLE users.refresh_tokens (
    id          uuid        NOT NULL,
    family_id   uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    token_hash  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT refresh_tokens_account_fkey FOREIGN KEY (account_id)
        REFERENCES users.accounts (id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_family_idx ON users.refresh_tokens (family_id);
CREATE INDEX refresh_tokens_account_idx ON users.refresh_tokens (account_id);
