-- `posts.create_post` plans its statements with sequential scans off (docs/adr/0033, amendment).
--
-- Every statement in the function reads or writes rows by a unique key: the departure by the
-- account, the key's stored outcome by (author, key), the parent by its id. PL/pgSQL keeps a
-- statement's plan for the life of the connection, and from the sixth call that plan is a
-- generic one, costed on the table's size when it was made. Made while `idempotency_keys` was
-- empty or nearly so (a new deployment, a table the purge emptied and vacuum then measured, the
-- benchmark's reset), the key's lookup was a sequential scan, and it stayed one while the
-- table grew, until an ANALYZE invalidated it: each keyed post then read every stored key. With
-- this setting the plans the function makes are index scans whatever the table's size.
-- The setting holds only inside the function's calls.
ALTER FUNCTION posts.create_post(uuid, uuid, jsonb, text, uuid, text, bytea, integer)
    SET enable_seqscan = off;
