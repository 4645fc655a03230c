//! Messages: gapless per-conversation seqs, idempotent sends, edits and tombstones.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A message as stored.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub kind: String,
    pub body: Option<String>,
    pub event: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What [`append`] did.
#[derive(Debug)]
pub enum Appended {
    /// Stored with the next seq.
    Message(MessageRow),
    /// The sender has departed (docs/adr/0013): nothing was written.
    Departed,
    /// The sender already sent this `client_id` in this conversation: nothing was written. That
    /// first message.
    Replayed(MessageRow),
}

/// A row of `messaging.append_message`: the checks, then the message, if any.
struct AppendRow {
    present: bool,
    replayed: bool,
    id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    seq: Option<i64>,
    sender_id: Option<Uuid>,
    kind: Option<String>,
    body: Option<String>,
    event: Option<serde_json::Value>,
    created_at: Option<DateTime<Utc>>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

impl AppendRow {
    fn appended(self) -> Result<Appended, sqlx::Error> {
        if !self.present {
            return Ok(Appended::Departed);
        }
        // The caller holds the conversation's row lock, so the update finds it; a replayed id
        // names a row of the same snapshot.
        let (
            Some(id),
            Some(conversation_id),
            Some(seq),
            Some(sender_id),
            Some(kind),
            Some(created_at),
        ) = (
            self.id,
            self.conversation_id,
            self.seq,
            self.sender_id,
            self.kind,
            self.created_at,
        )
        else {
            return Err(sqlx::Error::RowNotFound);
        };
        let message = MessageRow {
            id,
            conversation_id,
            seq,
            sender_id,
            kind,
            body: self.body,
            event: self.event,
            created_at,
            edited_at: self.edited_at,
            deleted_at: self.deleted_at,
        };
        Ok(if self.replayed {
            Appended::Replayed(message)
        } else {
            Appended::Message(message)
        })
    }
}

/// Appends a message with the next seq, unless `sender` has departed or already sent
/// `client_id` here. The caller holds the sender's write lock and the conversation row's lock
/// (`conversations::lock_for_participant`, an earlier statement): so this statement's snapshot
/// sees a deletion or a send with the same `client_id` that committed while the caller waited,
/// seqs are gapless and strictly increasing, and the sender's read marker moves to their own
/// message.
#[tracing::instrument(skip_all, err)]
pub async fn append(
    conn: &mut PgConnection,
    conversation: Uuid,
    sender: Uuid,
    kind: &str,
    body: Option<&str>,
    event: Option<serde_json::Value>,
    client_id: Option<&str>,
) -> Result<Appended, sqlx::Error> {
    // One statement, one round trip while the locks are held: the checks, the seq, the message
    // and the sender's read marker together (`messaging.append_message`, docs/adr/0029).
    sqlx::query_as!(
        AppendRow,
        r#"SELECT present AS "present!", replayed AS "replayed!", id, conversation_id, seq,
                  sender_id, kind, body, event, created_at, edited_at, deleted_at
           FROM messaging.append_message($1, $2, $3, $4, $5, $6, $7)"#,
        Uuid::now_v7(),
        conversation,
        sender,
        kind,
        body,
        event,
        client_id,
    )
    .fetch_one(&mut *conn)
    .await?
    .appended()
}

/// Sends a text message as one transaction in one round trip (docs/adr/0029): takes the
/// locks of [`super::conversations::lock_for_participant`], then appends as [`append`] does, in
/// two statements of one call made outside any transaction, which commits it. `None` when
/// `sender` does not take part in `conversation`.
#[tracing::instrument(skip_all, err)]
pub async fn send(
    db: impl PgExecutor<'_>,
    conversation: Uuid,
    sender: Uuid,
    body: &str,
    client_id: Option<&str>,
) -> Result<Option<Appended>, sqlx::Error> {
    sqlx::query_as!(
        AppendRow,
        r#"SELECT present AS "present!", replayed AS "replayed!", id, conversation_id, seq,
                  sender_id, kind, body, event, created_at, edited_at, deleted_at
           FROM messaging.send_message($1, $2, $3, $4, $5)"#,
        Uuid::now_v7(),
        conversation,
        sender,
        body,
        client_id,
    )
    .fetch_optional(db)
    .await?
    .map(AppendRow::appended)
    .transpose()
}

/// Messages newest first strictly below `before_seq`, or oldest first strictly above
/// `after_seq` (catch-up after a reconnect).
#[tracing::instrument(skip_all, err)]
pub async fn page(
    db: impl PgExecutor<'_>,
    conversation: Uuid,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    match after_seq {
        Some(after) => {
            sqlx::query_as!(
                MessageRow,
                r#"SELECT id, conversation_id, seq, sender_id, kind, body, event, created_at, edited_at, deleted_at
                   FROM messaging.messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
                conversation,
                after,
                limit,
            )
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_as!(
                MessageRow,
                r#"SELECT id, conversation_id, seq, sender_id, kind, body, event, created_at, edited_at, deleted_at
                   FROM messaging.messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"#,
                conversation,
                before_seq.unwrap_or(i64::MAX),
                limit,
            )
            .fetch_all(db)
            .await
        }
    }
}

/// The newest message of each of `conversations`.
#[tracing::instrument(skip_all, err)]
pub async fn latest(
    db: impl PgExecutor<'_>,
    conversations: &[Uuid],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.kind, m.body, m.event, m.created_at, m.edited_at, m.deleted_at
           FROM messaging.conversations c
           JOIN messaging.messages m ON m.conversation_id = c.id AND m.seq = c.last_seq
           WHERE c.id = ANY($1)"#,
        conversations,
    )
    .fetch_all(db)
    .await
}

/// Replaces the body of `sender`'s live text message.
#[tracing::instrument(skip_all, err)]
pub async fn edit(
    db: impl PgExecutor<'_>,
    conversation: Uuid,
    id: Uuid,
    sender: Uuid,
    body: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"UPDATE messaging.messages SET body = $4, edited_at = clock_timestamp()
           WHERE id = $1 AND conversation_id = $2 AND sender_id = $3 AND kind = 'text' AND deleted_at IS NULL
           RETURNING id, conversation_id, seq, sender_id, kind, body, event, created_at, edited_at, deleted_at"#,
        id,
        conversation,
        sender,
        body,
    )
    .fetch_optional(db)
    .await
}

/// Turns `sender`'s text message into a tombstone (idempotent).
#[tracing::instrument(skip_all, err)]
pub async fn tombstone(
    db: impl PgExecutor<'_>,
    conversation: Uuid,
    id: Uuid,
    sender: Uuid,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"UPDATE messaging.messages SET body = NULL, deleted_at = COALESCE(deleted_at, clock_timestamp())
           WHERE id = $1 AND conversation_id = $2 AND sender_id = $3 AND kind = 'text'
           RETURNING id, conversation_id, seq, sender_id, kind, body, event, created_at, edited_at, deleted_at"#,
        id,
        conversation,
        sender,
    )
    .fetch_optional(db)
    .await
}

/// Tombstones every message `sender` sent: the seqs stay (conversations keep their order and
/// read positions), the content goes. Idempotent. Returns how many were tombstoned now.
#[tracing::instrument(skip_all, err)]
pub async fn tombstone_all_of(db: impl PgExecutor<'_>, sender: Uuid) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE messaging.messages
           SET body = NULL, deleted_at = now()
           WHERE sender_id = $1 AND kind = 'text' AND deleted_at IS NULL"#,
        sender
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
