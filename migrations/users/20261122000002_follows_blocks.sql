-- The follow graph. The primary key serves "does A follow B" and the followee-id list of a
-- reader (the feed's input); the two ordered indexes serve the newest-first listings.
CREATE TABLE users.follows (
    follower_id uuid        NOT NULL,
    followee_id uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT follows_pkey PRIMARY KEY (follower_id, followee_id),
    CONSTRAINT follows_not_self CHECK (follower_id <> followee_id),
    CONSTRAINT follows_follower_fkey FOREIGN KEY (follower_id)
        REFERENCES users.accounts (id) ON DELETE CASCADE,
    CONSTRAINT follows_followee_fkey FOREIGN KEY (followee_id)
        REFERENCES users.accounts (id) ON DELETE CASCADE
);
CREATE INDEX follows_following_listing_idx ON users.follows (follower_id, created_at DESC, followee_id DESC);
CREATE INDEX follows_followers_listing_idx ON users.follows (followee_id, created_at DESC, follower_id DESC);

-- Blocks are directed; either direction forbids a follow (and, in messaging, a conversation).
CREATE TABLE users.blocks (
    blocker_id uuid        NOT NULL,
    blocked_id uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT blocks_pkey PRIMARY KEY (blocker_id, blocked_id),
    CONSTRAINT blocks_not_self CHECK (blocker_id <> blocked_id),
    CONSTRAINT blocks_blocker_fkey FOREIGN KEY (blocker_id)
        REFERENCES users.accounts (id) ON DELETE CASCADE,
    CONSTRAINT blocks_blocked_fkey FOREIGN KEY (blocked_id)
        REFERENCES users.accounts (id) ON DELETE CASCADE
);
CREATE INDEX blocks_blocked_idx ON users.blocks (blocked_id);
