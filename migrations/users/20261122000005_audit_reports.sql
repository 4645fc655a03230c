-- Events reported by other services (moderation in posts) carry the reporter's own id: a
-- report delivered twice is recorded once.
ALTER TABLE users.audit_log ADD COLUMN source_id text;
CREATE UNIQUE INDEX audit_log_source_idx ON users.audit_log (source_id) WHERE source_id IS NOT NULL;
