-- Security events, append-only: who did what, to whom, when, from where, in which request.
-- Rows outlive the accounts they name (no foreign keys): the record of a deleted account's
-- sign-ins and of its deletion is kept.
CREATE TABLE users.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    event       text        NOT NULL,
    -- Who acted (NULL when no one was signed in, as for a failed login).
    actor_id    uuid,
    -- Whom it concerned.
    subject_id  uuid,
    ip          inet,
    user_agent  text,
    request_id  text,
    detail      jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_event_check CHECK (event ~ '^[a-z_.]{1,64}$'),
    CONSTRAINT audit_log_user_agent_length CHECK (char_length(user_agent) <= 512),
    CONSTRAINT audit_log_request_id_length CHECK (char_length(request_id) <= 128)
);
CREATE INDEX audit_log_actor_idx ON users.audit_log (actor_id, id DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_log_subject_idx ON users.audit_log (subject_id, id DESC) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_log_event_idx ON users.audit_log (event, id DESC);

-- Append-only: the service's own role owns the table, so a privilege revoke would not bind it;
-- a trigger refuses every change to existing rows.
CREATE FUNCTION users.audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'users.audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON users.audit_log
    FOR EACH ROW EXECUTE FUNCTION users.audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON users.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION users.audit_log_is_append_only();

-- Events other services must learn about, written in the same transaction as the change that
-- causes them and delivered at least once by the outbox relay (see docs/adr/0013).
CREATE TABLE users.outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    -- The service to deliver to: 'posts' or 'messaging'.
    target          text        NOT NULL,
    event           text        NOT NULL,
    subject_id      uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Due for (another) attempt at this time; a relay claims a row by moving it forward.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (id),
    CONSTRAINT outbox_target_check CHECK (target IN ('posts', 'messaging')),
    CONSTRAINT outbox_event_check CHECK (event IN ('account_deleted'))
);
CREATE INDEX outbox_due_idx ON users.outbox (next_attempt_at) WHERE delivered_at IS NULL;
