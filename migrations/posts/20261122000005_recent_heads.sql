-- Authors by their newest post, newest first: the home feed walks the top of this index and keeps
-- the reader's followees, instead of looking up every followee's head (docs/adr/0016).
-- INCLUDE makes the walk index-only where the visibility map allows.
CREATE INDEX author_heads_recent_idx ON posts.author_heads (last_post_at DESC)
    INCLUDE (author_id, last_root_post_at);
