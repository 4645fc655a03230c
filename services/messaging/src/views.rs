//! What clients see of conversations and messages, in responses and in real-time events.

use crate::store::conversations::{ConversationRow, ParticipantRow};
use crate::store::messages::MessageRow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A message. A deleted one is a tombstone: `deleted: true`, `body: null`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// Strictly increasing, gapless, per conversation.
    pub seq: i64,
    pub sender_id: Uuid,
    /// `text`, or `system` for membership changes (see `event`).
    pub kind: String,
    pub body: Option<String>,
    /// For system messages: `{"type": "participant_added" | "participant_removed" | "participant_left", "user_id": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl From<MessageRow> for MessageView {
    fn from(m: MessageRow) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_id: m.sender_id,
            kind: m.kind,
            body: m.body,
            event: m.event,
            created_at: m.created_at,
            edited_at: m.edited_at,
            deleted: m.deleted_at.is_some(),
        }
    }
}

/// A participant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParticipantView {
    pub user_id: Uuid,
    pub joined_at: DateTime<Utc>,
}

/// A conversation as one participant sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    pub id: Uuid,
    /// `direct` or `group`.
    pub kind: String,
    pub title: Option<String>,
    pub owner_id: Option<Uuid>,
    pub participants: Vec<ParticipantView>,
    pub last_message: Option<MessageView>,
    /// Messages after your read marker.
    pub unread_count: i64,
    /// Your read marker.
    pub read_seq: i64,
    pub created_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
}

impl ConversationView {
    /// Assembles a view from its parts.
    pub fn new(
        row: ConversationRow,
        participants: &[ParticipantRow],
        last: Option<MessageRow>,
    ) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            title: row.title,
            owner_id: row.owner_id,
            participants: participants
                .iter()
                .filter(|p| p.conversation_id == row.id)
                .map(|p| ParticipantView {
                    user_id: p.user_id,
                    joined_at: p.joined_at,
                })
                .collect(),
            last_message: last.map(MessageView::from),
            unread_count: (row.last_seq - row.read_seq).max(0),
            read_seq: row.read_seq,
            created_at: row.created_at,
            last_message_at: row.last_message_at,
        }
    }
}

/// Badge totals.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnreadTotals {
    /// Conversations with unread messages.
    pub conversations: i64,
    /// Unread messages in all.
    pub messages: i64,
}

/// A message event for sockets.
pub fn message_event(kind: &str, message: &MessageView) -> serde_json::Value {
    serde_json::json!({"type": kind, "conversation_id": message.conversation_id, "message": message})
}
