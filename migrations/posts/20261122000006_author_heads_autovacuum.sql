-- Every post moves its author's head, and because `last_post_at` is indexed the update is never
-- HOT: a new tuple and a new entry in author_heads_recent_idx each time. The feed's walk over
-- that index (docs/adr/0016) is index-only only where the visibility map says the page is
-- all-visible, and otherwise visits the heap for every head it passes, dead ones included.
-- The default trigger (20 % of the table) would let a table of 200,000 authors collect 40,000
-- dead heads first; vacuum this small, hot table after every 2,000 changes instead.
ALTER TABLE posts.author_heads SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000
);
