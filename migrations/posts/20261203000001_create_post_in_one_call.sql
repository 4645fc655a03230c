-- A post's creation in one call (docs/adr/0033): the locks, then the departure and the key's
-- stored outcome, then the post and the key's outcome, each its own statement in one PL/pgSQL
-- function called outside any transaction, which commits it. Until now the service made these
-- six round trips: BEGIN, the locks, the lookups, the insert, the key's outcome, COMMIT.
--
-- Outcomes (`outcome`), with `body` the 201's JSON where there is one:
--   created               the post was written; `body` is its view, stored under the key if any;
--   replayed              the key's live outcome, for the same request; `body` is that outcome;
--   key_reused            the key's live outcome is for another request;
--   in_flight             another transaction holds the key;
--   departed              the users service has reported the account deleted;
--   reply_target_missing  `p_reply_to` names no post.
-- Nothing is written unless the outcome is `created`.
CREATE FUNCTION posts.create_post(
    p_id uuid, p_author uuid, p_author_view jsonb, p_text text, p_reply_to uuid,
    p_key text, p_request_hash bytea, p_retention_hours integer)
RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_hash bytea;
    v_body jsonb;
BEGIN
    -- The account's write lock, shared, as common::db::lock_account(.., AccountLock::Write)
    -- spells it: it waits only while a deletion of the account holds it (docs/adr/0013).
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_author::text, 11));
    IF p_key IS NOT NULL
       AND NOT pg_try_advisory_xact_lock(hashtextextended(p_author::text || ':' || p_key, 7)) THEN
        RETURN QUERY SELECT 'in_flight'::text, NULL::jsonb;
        RETURN;
    END IF;
    -- Every statement from here takes its snapshot after the locks were granted, so it sees a
    -- deletion, or a first request with the key, that committed while this one waited.
    IF EXISTS (SELECT 1 FROM posts.departed_accounts WHERE account_id = p_author) THEN
        RETURN QUERY SELECT 'departed'::text, NULL::jsonb;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT k.request_hash, k.response_body INTO v_hash, v_body
        FROM posts.idempotency_keys k
        WHERE k.user_id = p_author AND k.key = p_key
          AND k.created_at > now() - make_interval(hours => p_retention_hours);
        IF FOUND THEN
            IF v_hash = p_request_hash THEN
                RETURN QUERY SELECT 'replayed'::text, v_body;
            ELSE
                RETURN QUERY SELECT 'key_reused'::text, NULL::jsonb;
            END IF;
            RETURN;
        END IF;
    END IF;
    -- The parent is counted first; without one the post is not inserted. A root post has no
    -- root head to move: GREATEST ignores the NULL it brings. The view's fields are those of
    -- the service's PostView, which reads it back.
    WITH parent AS (
        UPDATE posts.posts SET reply_count = reply_count + 1 WHERE id = p_reply_to RETURNING id
    ),
    post AS (
        INSERT INTO posts.posts (id, author_id, text, reply_to, created_at)
        SELECT p_id, p_author, p_text, p_reply_to, clock_timestamp()
        WHERE p_reply_to IS NULL OR EXISTS (SELECT 1 FROM parent)
        RETURNING id, author_id, text, reply_to, created_at, edited_at, like_count, reply_count
    ),
    head AS (
        INSERT INTO posts.author_heads AS h (author_id, last_post_at, last_root_post_at)
        SELECT author_id, created_at, CASE WHEN reply_to IS NULL THEN created_at END FROM post
        ON CONFLICT (author_id) DO UPDATE SET
            last_post_at = GREATEST(h.last_post_at, EXCLUDED.last_post_at),
            last_root_post_at = GREATEST(h.last_root_post_at, EXCLUDED.last_root_post_at)
    )
    SELECT jsonb_build_object(
               'id', id, 'author', p_author_view, 'text', text, 'reply_to', reply_to,
               'created_at', created_at, 'edited_at', edited_at, 'like_count', like_count,
               'reply_count', reply_count, 'liked_by_me', false)
    INTO v_body
    FROM post;
    IF v_body IS NULL THEN
        RETURN QUERY SELECT 'reply_target_missing'::text, NULL::jsonb;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        -- Replaces an expired outcome of the same key.
        INSERT INTO posts.idempotency_keys (user_id, key, request_hash, response_body)
        VALUES (p_author, p_key, p_request_hash, v_body)
        ON CONFLICT (user_id, key) DO UPDATE SET
            request_hash = EXCLUDED.request_hash, response_body = EXCLUDED.response_body,
            created_at = now();
    END IF;
    RETURN QUERY SELECT 'created'::text, v_body;
END
$$;
