-- A send's transaction in one round trip (docs/adr/0029-a-send-in-one-round-trip.md).
--
-- The two statements a message's append needs keep their own snapshots: the locks first, then
-- the append, which must see a deletion of the sender or a retry of the same send that
-- committed while this one waited for the locks (docs/adr/0011). Each statement of a VOLATILE
-- PL/pgSQL function takes a fresh snapshot under READ COMMITTED, as separate statements from the
-- client do, so `send_message` runs both in one call, and one call in autocommit is a whole
-- transaction: `BEGIN` and `COMMIT` stop being round trips of their own.
--
-- The locks and the append live here once. Membership changes run them inside their own
-- transactions (they write participants in between), sends through `send_message`.
-- PL/pgSQL keeps each statement's plan for the session, as the service's prepared statements
-- did; a SQL-language function would plan its statement again on every call.

-- The sender's shared write lock (a deletion takes it exclusively, docs/adr/0013) and the
-- conversation's row lock, and the conversation as `p_user` sees it. No row unless `p_user`
-- takes part in it.
CREATE FUNCTION messaging.lock_for_participant(p_conversation uuid, p_user uuid)
RETURNS TABLE (id uuid, kind text, title text, owner_id uuid, last_seq bigint,
               last_message_at timestamptz, created_at timestamptz, read_seq bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH writer AS MATERIALIZED (
        SELECT pg_advisory_xact_lock_shared(hashtextextended(p_user::text, 11))
    )
    SELECT c.id, c.kind, c.title, c.owner_id, c.last_seq, c.last_message_at, c.created_at,
           p.read_seq
    FROM writer
    CROSS JOIN messaging.conversations c
    JOIN messaging.participants p ON p.conversation_id = c.id AND p.user_id = p_user
    WHERE c.id = p_conversation
    FOR UPDATE OF c;
END
$$;

-- Appends a message with the next seq, unless the sender has departed or already sent
-- `p_client_id` here; the caller holds the locks above, taken in an earlier statement. One
-- row: whether the sender is present, whether this was a replay, and the new message or the
-- first one sent with that `p_client_id` (no message when the sender departed).
CREATE FUNCTION messaging.append_message(
    p_id uuid, p_conversation uuid, p_sender uuid, p_kind text, p_body text, p_event jsonb,
    p_client_id text)
RETURNS TABLE (present boolean, replayed boolean, id uuid, conversation_id uuid, seq bigint,
               sender_id uuid, kind text, body text, event jsonb, created_at timestamptz,
               edited_at timestamptz, deleted_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH gate AS MATERIALIZED (
        SELECT NOT EXISTS (SELECT 1 FROM messaging.departed_accounts
                           WHERE account_id = p_sender) AS present,
               (SELECT m.id FROM messaging.messages m
                WHERE m.conversation_id = p_conversation AND m.sender_id = p_sender
                  AND m.client_id = p_client_id) AS replayed
    ),
    next AS (
        UPDATE messaging.conversations c
        SET last_seq = c.last_seq + 1, last_message_at = clock_timestamp()
        FROM gate
        WHERE c.id = p_conversation AND gate.present AND gate.replayed IS NULL
        RETURNING c.last_seq
    ),
    message AS (
        INSERT INTO messaging.messages
            (id, conversation_id, seq, sender_id, kind, body, event, client_id, created_at)
        SELECT p_id, p_conversation, next.last_seq, p_sender, p_kind, p_body, p_event,
               p_client_id, clock_timestamp()
        FROM next
        RETURNING messages.id, messages.conversation_id, messages.seq, messages.sender_id,
                  messages.kind, messages.body, messages.event, messages.created_at,
                  messages.edited_at, messages.deleted_at
    ),
    marker AS (
        UPDATE messaging.participants p SET read_seq = GREATEST(p.read_seq, next.last_seq)
        FROM next
        WHERE p.conversation_id = p_conversation AND p.user_id = p_sender
    )
    SELECT gate.present, gate.replayed IS NOT NULL,
           m.id, m.conversation_id, m.seq, m.sender_id, m.kind, m.body, m.event,
           m.created_at, m.edited_at, m.deleted_at
    FROM gate
    LEFT JOIN (
        SELECT * FROM message
        UNION ALL
        SELECT r.id, r.conversation_id, r.seq, r.sender_id, r.kind, r.body, r.event,
               r.created_at, r.edited_at, r.deleted_at
        FROM messaging.messages r
        WHERE r.id = (SELECT replayed FROM gate)
    ) m ON true;
END
$$;

-- A text message's whole send: the locks, then the append, each its own statement. No row
-- when `p_sender` does not take part in the conversation; otherwise `append_message`'s row.
CREATE FUNCTION messaging.send_message(
    p_id uuid, p_conversation uuid, p_sender uuid, p_body text, p_client_id text)
RETURNS TABLE (present boolean, replayed boolean, id uuid, conversation_id uuid, seq bigint,
               sender_id uuid, kind text, body text, event jsonb, created_at timestamptz,
               edited_at timestamptz, deleted_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM FROM messaging.lock_for_participant(p_conversation, p_sender);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT * FROM messaging.append_message(p_id, p_conversation, p_sender, 'text', p_body,
                                           NULL, p_client_id);
END
$$;
