-- Conversations: direct (two people, at most one per pair) or group (owner, title).
CREATE TABLE messaging.conversations (
    id              uuid        NOT NULL,
    kind            text        NOT NULL,
    title           text,
    owner_id        uuid,
    -- "<smaller id>:<larger id>" for direct conversations: the unique index makes creating the
    -- same direct conversation twice, even concurrently, find the first.
    direct_key      text,
    -- The seq of the newest message; messages take the next one under this row's lock, so
    -- seqs are gapless and strictly increasing per conversation.
    last_seq        bigint      NOT NULL DEFAULT 0,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_pkey PRIMARY KEY (id),
    CONSTRAINT conversations_kind_check CHECK (kind IN ('direct', 'group')),
    CONSTRAINT conversations_direct_key_key UNIQUE (direct_key),
    CONSTRAINT conversations_shape_check CHECK (
        (kind = 'direct' AND direct_key IS NOT NULL AND owner_id IS NULL AND title IS NULL)
        OR (kind = 'group' AND direct_key IS NULL AND owner_id IS NOT NULL)),
    CONSTRAINT conversations_title_length CHECK (title IS NULL OR char_length(title) <= 100)
);

-- Who is in a conversation, and how far each has read.
CREATE TABLE messaging.participants (
    conversation_id uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    read_seq        bigint      NOT NULL DEFAULT 0,
    CONSTRAINT participants_pkey PRIMARY KEY (conversation_id, user_id),
    CONSTRAINT participants_conversation_fkey FOREIGN KEY (conversation_id)
        REFERENCES messaging.conversations (id) ON DELETE CASCADE
);
-- A user's conversations.
CREATE INDEX participants_user_idx ON messaging.participants (user_id, conversation_id);

CREATE TABLE messaging.messages (
    id              uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    seq             bigint      NOT NULL,
    sender_id       uuid        NOT NULL,
    -- 'text', or 'system' for membership changes (described by `event`).
    kind            text        NOT NULL DEFAULT 'text',
    -- NULL once deleted: a tombstone keeps the seq and drops the content.
    body            text,
    event           jsonb,
    -- The sender's own id for this send (client_id or Idempotency-Key): a retried send finds
    -- the first instead of sending twice.
    client_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz,
    CONSTRAINT messages_pkey PRIMARY KEY (id),
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),
    CONSTRAINT messages_client_id_key UNIQUE (conversation_id, sender_id, client_id),
    CONSTRAINT messages_conversation_fkey FOREIGN KEY (conversation_id)
        REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    CONSTRAINT messages_kind_check CHECK (kind IN ('text', 'system')),
    CONSTRAINT messages_body_length CHECK (body IS NULL OR char_length(body) BETWEEN 1 AND 4000)
);
