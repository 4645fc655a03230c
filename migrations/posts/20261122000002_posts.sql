-- Posts. Authors are users-service ids: there is deliberately no foreign key across schemas.
-- Counters are kept on the row, updated in the same transaction as the like or reply, so reads
-- never count.
CREATE TABLE posts.posts (
    id          uuid        NOT NULL,
    author_id   uuid        NOT NULL,
    text        text        NOT NULL,
    reply_to    uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    edited_at   timestamptz,
    like_count  bigint      NOT NULL DEFAULT 0,
    reply_count bigint      NOT NULL DEFAULT 0,
    CONSTRAINT posts_pkey PRIMARY KEY (id),
    CONSTRAINT posts_reply_to_fkey FOREIGN KEY (reply_to) REFERENCES posts.posts (id) ON DELETE SET NULL,
    CONSTRAINT posts_text_length CHECK (char_length(text) BETWEEN 1 AND 500),
    CONSTRAINT posts_counts_check CHECK (like_count >= 0 AND reply_count >= 0)
);

-- Author timelines and the feed's per-author descent: newest first, with what the feed filters
-- on, so a page is read from the index in order.
CREATE INDEX posts_author_timeline_idx ON posts.posts (author_id, created_at DESC, id DESC) INCLUDE (reply_to);
-- Replies of a post, oldest first.
CREATE INDEX posts_replies_idx ON posts.posts (reply_to, created_at, id) WHERE reply_to IS NOT NULL;

-- The newest post time of each author (and of their newest top-level post): the feed prunes
-- followees whose newest post cannot reach the page. It may be later than the newest surviving
-- post after a deletion; the feed only needs it never to be earlier. See docs/adr/0008-home-feed.md.
CREATE TABLE posts.author_heads (
    author_id         uuid        NOT NULL,
    last_post_at      timestamptz NOT NULL,
    last_root_post_at timestamptz,
    CONSTRAINT author_heads_pkey PRIMARY KEY (author_id)
);

CREATE TABLE posts.likes (
    post_id    uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT likes_pkey PRIMARY KEY (post_id, user_id),
    CONSTRAINT likes_post_fkey FOREIGN KEY (post_id) REFERENCES posts.posts (id) ON DELETE CASCADE
);
CREATE INDEX likes_user_idx ON posts.likes (user_id, post_id);

-- Idempotency keys of POST /v1/posts: the response of the first successful request, replayed
-- for 24 hours to retries with the same key and body.
CREATE TABLE posts.idempotency_keys (
    user_id       uuid        NOT NULL,
    key           text        NOT NULL,
    request_hash  bytea       NOT NULL,
    response_body jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON posts.idempotency_keys (created_at);

-- Who removed whose post, and when: moderation is accountable.
CREATE TABLE posts.moderation_actions (
    id           uuid        NOT NULL,
    post_id      uuid        NOT NULL,
    author_id    uuid        NOT NULL,
    moderator_id uuid        NOT NULL,
    action       text        NOT NULL,
    post_text    text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT moderation_actions_pkey PRIMARY KEY (id),
    CONSTRAINT moderation_actions_action_check CHECK (action IN ('delete'))
);
