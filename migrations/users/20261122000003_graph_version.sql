-- A counter bumped whenever an account's followee set changes. It is the ETag of
-- GET /v1/users/{id}/following/ids, so the posts service can keep the list cached and still see
-- every follow and unfollow on the very next feed read (a conditional request answered 304).
ALTER TABLE users.accounts ADD COLUMN graph_version bigint NOT NULL DEFAULT 0;
