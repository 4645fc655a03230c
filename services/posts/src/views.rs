//! What clients see of a post: the row, its author from the users service, and whether the
//! viewer likes it.

use crate::error::PostsError;
use crate::startup::AppState;
use crate::store::likes;
use crate::store::posts::PostRow;
use chrono::{DateTime, Utc};
use common::telemetry::CallContext;
use common::users_client::UserSummary;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;
use uuid::Uuid;

/// A post with its author.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostView {
    pub id: Uuid,
    pub author: UserSummary,
    pub text: String,
    pub reply_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub like_count: i64,
    pub reply_count: i64,
    /// Present when signed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liked_by_me: Option<bool>,
}

impl PostView {
    /// A view of `row` by `author`.
    pub fn new(row: PostRow, author: UserSummary, liked_by_me: Option<bool>) -> Self {
        Self {
            id: row.id,
            author,
            text: row.text,
            reply_to: row.reply_to,
            created_at: row.created_at,
            edited_at: row.edited_at,
            like_count: row.like_count,
            reply_count: row.reply_count,
            liked_by_me,
        }
    }
}

/// Views of `rows`, in order, as `viewer` sees them. Posts whose author no longer exists are
/// left out. Rows read with `viewer` as their reader already say whether they are liked; the
/// others are asked about in one query.
pub async fn render(
    state: &AppState,
    rows: Vec<PostRow>,
    viewer: Option<Uuid>,
    ctx: &CallContext,
) -> Result<Vec<PostView>, PostsError> {
    let author_ids: Vec<Uuid> = rows.iter().map(|r| r.author_id).collect();
    let unknown: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.liked_by_me.is_none())
        .map(|r| r.id)
        .collect();
    // Authors (Redis, else users) and the viewer's likes (PostgreSQL) are independent: asked at
    // once, the page waits for the slower of the two instead of both in turn.
    let liked = async {
        match viewer {
            Some(viewer) if !unknown.is_empty() => {
                let liked = likes::liked_among(&state.db, viewer, &unknown).await?;
                Ok::<_, PostsError>(liked.into_iter().collect::<HashSet<Uuid>>())
            }
            _ => Ok(HashSet::new()),
        }
    };
    let (authors, liked) = tokio::try_join!(state.directory.authors(&author_ids, ctx), liked)?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let author = authors.get(&row.author_id)?.clone();
            let liked_by_me = viewer.map(|_| row.liked_by_me.unwrap_or(liked.contains(&row.id)));
            Some(PostView::new(row, author, liked_by_me))
        })
        .collect())
}
