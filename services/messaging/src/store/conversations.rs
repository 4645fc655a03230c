//! Conversations, their participants and read markers.

use super::messages::MessageRow;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A conversation as one participant sees it.
#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: Uuid,
    pub kind: String,
    pub title: Option<String>,
    pub owner_id: Option<Uuid>,
    pub last_seq: i64,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub read_seq: i64,
}

/// A participant.
#[derive(Debug, Clone)]
pub struct ParticipantRow {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub joined_at: DateTime<Utc>,
}

/// Creates the direct conversation of a pair, or finds it. Returns its id and whether it was
/// created now. Concurrent creations of the same pair find one conversation.
#[tracing::instrument(skip_all, err)]
pub async fn create_direct(
    conn: &mut PgConnection,
    a: Uuid,
    b: Uuid,
    key: &str,
) -> Result<(Uuid, bool), sqlx::Error> {
    let created = sqlx::query_scalar!(
        r#"INSERT INTO messaging.conversations (id, kind, direct_key) VALUES ($1, 'direct', $2)
           ON CONFLICT (direct_key) DO NOTHING RETURNING id"#,
        Uuid::now_v7(),
        key,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match created {
        Some(id) => {
            add_participants(conn, id, &[a, b]).await?;
            Ok((id, true))
        }
        None => {
            let id = sqlx::query_scalar!(
                r#"SELECT id FROM messaging.conversations WHERE direct_key = $1"#,
                key
            )
            .fetch_one(&mut *conn)
            .await?;
            Ok((id, false))
        }
    }
}

/// Creates a group owned by `owner` with `others`.
#[tracing::instrument(skip_all, err)]
pub async fn create_group(
    conn: &mut PgConnection,
    owner: Uuid,
    others: &[Uuid],
    title: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let id = sqlx::query_scalar!(
        r#"INSERT INTO messaging.conversations (id, kind, title, owner_id) VALUES ($1, 'group', $2, $3) RETURNING id"#,
        Uuid::now_v7(),
        title,
        owner,
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut everyone = vec![owner];
    everyone.extend_from_slice(others);
    add_participants(conn, id, &everyone).await?;
    Ok(id)
}

/// Adds participants; returns those who were not in already.
#[tracing::instrument(skip_all, err)]
pub async fn add_participants(
    conn: &mut PgConnection,
    conversation: Uuid,
    users: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO messaging.participants (conversation_id, user_id)
           SELECT $1, u FROM unnest($2::uuid[]) u
           ON CONFLICT DO NOTHING RETURNING user_id"#,
        conversation,
        users,
    )
    .fetch_all(&mut *conn)
    .await
}

/// Removes a participant; false if they were not one. Hands ownership to the longest-standing
/// remaining participant when the owner leaves.
#[tracing::instrument(skip_all, err)]
pub async fn remove_participant(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query!(
        r#"DELETE FROM messaging.participants WHERE conversation_id = $1 AND user_id = $2"#,
        conversation,
        user,
    )
    .execute(&mut *conn)
    .await?;
    if removed.rows_affected() == 0 {
        return Ok(false);
    }
    // An owner who leaves hands the group to its longest-standing member. The last one out
    // leaves it as it was: nobody can reach it any more, and nothing in it is deleted.
    sqlx::query!(
        r#"UPDATE messaging.conversations c SET owner_id = COALESCE((
               SELECT p.user_id FROM messaging.participants p WHERE p.conversation_id = c.id
               ORDER BY p.joined_at, p.user_id LIMIT 1), c.owner_id)
           WHERE c.id = $1 AND c.owner_id = $2"#,
        conversation,
        user,
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The conversation as `user` sees it, if they take part.
#[tracing::instrument(skip_all, err)]
pub async fn for_participant(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.kind, c.title, c.owner_id, c.last_seq, c.last_message_at, c.created_at, p.read_seq
           FROM messaging.conversations c
           JOIN messaging.participants p ON p.conversation_id = c.id AND p.user_id = $2
           WHERE c.id = $1"#,
        id,
        user,
    )
    .fetch_optional(db)
    .await
}

/// Like [`for_participant`], for a write in `user`'s name: takes `user`'s account write lock
/// (shared, as `common::db::lock_account` spells it: docs/adr/0013) and then the conversation
/// row's lock, for the rest of the transaction, in one round trip. Messages then take seqs one at
/// a time. Whether `user` has departed is for the next statement to see ([`super::messages::append`]
/// checks it): this one's snapshot was taken before it waited for a deletion in flight.
#[tracing::instrument(skip_all, err)]
pub async fn lock_for_participant(
    conn: &mut PgConnection,
    id: Uuid,
    user: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    // The statement lives in the messaging schema, where `messages::send` runs it too
    // (docs/adr/0029).
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT id AS "id!", kind AS "kind!", title, owner_id, last_seq AS "last_seq!",
                  last_message_at AS "last_message_at!", created_at AS "created_at!",
                  read_seq AS "read_seq!"
           FROM messaging.lock_for_participant($1, $2)"#,
        id,
        user,
    )
    .fetch_optional(&mut *conn)
    .await
}

/// `user`'s conversations, most recent activity first, after `after`.
#[tracing::instrument(skip_all, err)]
pub async fn list(
    db: impl PgExecutor<'_>,
    user: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.kind, c.title, c.owner_id, c.last_seq, c.last_message_at, c.created_at, p.read_seq
           FROM messaging.participants p
           JOIN messaging.conversations c ON c.id = p.conversation_id
           WHERE p.user_id = $1
             AND ($2::timestamptz IS NULL OR (c.last_message_at, c.id) < ($2, $3::uuid))
           ORDER BY c.last_message_at DESC, c.id DESC
           LIMIT $4"#,
        user,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// What a send needs before it takes any lock, in one round trip.
#[derive(Debug, Clone)]
pub struct SendTarget {
    pub kind: String,
    /// Everyone in the conversation, the sender included, in joining order.
    pub participant_ids: Vec<Uuid>,
    /// The message the sender already sent here with the send's `client_id`, if any.
    pub replayed: Option<MessageRow>,
}

/// The kind and participants of conversation `id`, and the message `user` already sent there
/// with `client_id`; `None` unless `user` takes part in it.
#[tracing::instrument(skip_all, err)]
pub async fn send_target(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user: Uuid,
    client_id: Option<&str>,
) -> Result<Option<SendTarget>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.kind,
                  ARRAY(SELECT q.user_id FROM messaging.participants q
                        WHERE q.conversation_id = c.id ORDER BY q.joined_at, q.user_id) AS "participant_ids!",
                  m.id AS "replay_id?", m.seq AS "replay_seq?", m.kind AS "replay_kind?",
                  m.body AS replay_body, m.event AS replay_event,
                  m.created_at AS "replay_created_at?", m.edited_at AS replay_edited_at,
                  m.deleted_at AS replay_deleted_at
           FROM messaging.conversations c
           JOIN messaging.participants p ON p.conversation_id = c.id AND p.user_id = $2
           LEFT JOIN messaging.messages m
                  ON m.conversation_id = c.id AND m.sender_id = $2 AND m.client_id = $3
           WHERE c.id = $1"#,
        id,
        user,
        client_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| {
        let replayed = match (
            row.replay_id,
            row.replay_seq,
            row.replay_kind,
            row.replay_created_at,
        ) {
            (Some(message), Some(seq), Some(kind), Some(created_at)) => Some(MessageRow {
                id: message,
                conversation_id: id,
                seq,
                sender_id: user,
                kind,
                body: row.replay_body,
                event: row.replay_event,
                created_at,
                edited_at: row.replay_edited_at,
                deleted_at: row.replay_deleted_at,
            }),
            _ => None,
        };
        SendTarget {
            kind: row.kind,
            participant_ids: row.participant_ids,
            replayed,
        }
    }))
}

/// The participants of several conversations.
#[tracing::instrument(skip_all, err)]
pub async fn participants(
    db: impl PgExecutor<'_>,
    conversations: &[Uuid],
) -> Result<Vec<ParticipantRow>, sqlx::Error> {
    sqlx::query_as!(
        ParticipantRow,
        r#"SELECT conversation_id, user_id, joined_at FROM messaging.participants
           WHERE conversation_id = ANY($1) ORDER BY joined_at, user_id"#,
        conversations,
    )
    .fetch_all(db)
    .await
}

/// Moves `user`'s read marker forward to `seq` (never backward, never past the last message).
/// Returns the marker after the move, whether it moved, and the conversation's last seq.
#[tracing::instrument(skip_all, err)]
pub async fn mark_read(
    db: impl PgExecutor<'_>,
    conversation: Uuid,
    user: Uuid,
    seq: i64,
) -> Result<Option<(i64, bool, i64)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH target AS (
               SELECT LEAST($3, c.last_seq) AS seq, c.last_seq FROM messaging.conversations c WHERE c.id = $1
           ), before AS (
               SELECT read_seq FROM messaging.participants WHERE conversation_id = $1 AND user_id = $2
           )
           UPDATE messaging.participants p SET read_seq = GREATEST(p.read_seq, target.seq)
           FROM target, before
           WHERE p.conversation_id = $1 AND p.user_id = $2
           RETURNING p.read_seq, p.read_seq > before.read_seq AS "moved!", target.last_seq AS "last_seq!""#,
        conversation,
        user,
        seq,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.read_seq, r.moved, r.last_seq)))
}

/// Badge totals: conversations with unread messages, and unread messages.
#[tracing::instrument(skip_all, err)]
pub async fn unread_totals(db: impl PgExecutor<'_>, user: Uuid) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE c.last_seq > p.read_seq) AS "conversations!",
                  COALESCE(sum(c.last_seq - p.read_seq), 0)::bigint AS "messages!"
           FROM messaging.participants p JOIN messaging.conversations c ON c.id = p.conversation_id
           WHERE p.user_id = $1"#,
        user,
    )
    .fetch_one(db)
    .await?;
    Ok((row.conversations, row.messages))
}
