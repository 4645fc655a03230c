-- The send functions plan their statements with sequential scans off (docs/adr/0029, amendment).
--
-- Every statement in them reads or writes rows by a unique key: the conversation by its id, the
-- sender's participation by (conversation, user), the departure by the account, a retried send
-- by (conversation, sender, client_id), the replayed message by its id. PL/pgSQL keeps a
-- statement's plan for the life of the connection, and from the sixth call that plan is a
-- generic one, costed on the tables' sizes when it was made. Made while the tables were small (a
-- new deployment, before any ANALYZE), the plans were sequential scans, and they stayed so
-- while the tables grew, until an ANALYZE invalidated them: each send then read every message
-- stored, twice. With this setting the plans these functions make are index scans whatever the
-- tables' sizes. The setting holds only inside the functions' calls (and the calls they make),
-- as `posts.create_post`'s does.
ALTER FUNCTION messaging.lock_for_participant(uuid, uuid) SET enable_seqscan = off;
ALTER FUNCTION messaging.append_message(uuid, uuid, uuid, text, text, jsonb, text)
    SET enable_seqscan = off;
ALTER FUNCTION messaging.send_message(uuid, uuid, uuid, text, text) SET enable_seqscan = off;
