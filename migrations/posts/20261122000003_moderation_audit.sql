-- Moderation actions are reported to the users service's audit log, at least once, by a relay
-- in this service: where the request came from is kept with the action, and whether (and when
-- next) the report is to be sent.
ALTER TABLE posts.moderation_actions
    ADD COLUMN ip              text,
    ADD COLUMN user_agent      text,
    ADD COLUMN request_id      text,
    ADD COLUMN reported_at     timestamptz,
    ADD COLUMN report_attempts integer     NOT NULL DEFAULT 0,
    ADD COLUMN next_report_at  timestamptz NOT NULL DEFAULT now();
-- Rows from before this migration are reported too.
CREATE INDEX moderation_actions_unreported_idx ON posts.moderation_actions (next_report_at)
    WHERE reported_at IS NULL;
