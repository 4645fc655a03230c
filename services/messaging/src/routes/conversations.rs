//! `/v1/conversations`, `/v1/conversations/{id}`, participants, read markers, `/v1/unread`.

use crate::domain::{self, MAX_PARTICIPANTS};
use crate::error::MessagingError;
use crate::startup::AppState;
use crate::store::conversations::{self, ConversationRow};
use crate::store::messages::Appended;
use crate::store::{accounts, messages};
use crate::views::{ConversationView, MessageView, UnreadTotals, message_event};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use common::auth::AuthUser;
use common::json::Json;
use common::pagination::{Page, PageQuery};
use common::problem::{FieldError, Problem};
use common::telemetry::call_context_of;
use common::users_client::UsersClientError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// A new conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// One other user for a direct conversation; 2 to 49 for a group. Your own id and
    /// repeated ids are ignored.
    #[schema(min_items = 1, max_items = 49)]
    pub participant_ids: Vec<Uuid>,
    /// Groups only; at most 100 characters, no control characters. Blank means none.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub title: Option<String>,
}

/// Users to add to a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddParticipants {
    /// 1 to 49 users.
    #[schema(min_items = 1, max_items = 49)]
    pub user_ids: Vec<Uuid>,
}

/// A read marker.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMarker {
    /// The seq of the newest message read; the marker never moves backward.
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "common::json::integer")]
    pub seq: i64,
}

/// The marker after a read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadState {
    pub read_seq: i64,
    pub unread_count: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityPosition {
    t: DateTime<Utc>,
    id: Uuid,
}

/// Views of `rows` with their participants and last messages (two queries for any number).
pub async fn views(
    state: &AppState,
    rows: Vec<ConversationRow>,
) -> Result<Vec<ConversationView>, MessagingError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let participants = conversations::participants(&state.db, &ids).await?;
    let mut latest = messages::latest(&state.db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let last = latest
                .iter()
                .position(|m| m.conversation_id == row.id)
                .map(|i| latest.swap_remove(i));
            ConversationView::new(row, &participants, last)
        })
        .collect())
}

async fn view_of(
    state: &AppState,
    id: Uuid,
    user: Uuid,
) -> Result<ConversationView, MessagingError> {
    let row = conversations::for_participant(&state.db, id, user)
        .await?
        .ok_or(MessagingError::NotFound)?;
    views(state, vec![row])
        .await?
        .pop()
        .ok_or(MessagingError::NotFound)
}

/// Everyone in a conversation now.
pub async fn participant_ids(state: &AppState, id: Uuid) -> Result<Vec<Uuid>, MessagingError> {
    Ok(conversations::participants(&state.db, &[id])
        .await?
        .into_iter()
        .map(|p| p.user_id)
        .collect())
}

/// The versions the answer was read at (docs/adr/0022) when `user` may message all of `others`.
/// Fails unless `user` may message all of `others`: not suspended, no unknown ids, nobody who
/// does not accept messages from them.
pub async fn check_contactable(
    state: &AppState,
    user: Uuid,
    others: &[Uuid],
    req: &HttpRequest,
) -> Result<HashMap<Uuid, i64>, MessagingError> {
    let answer = match state
        .users
        .contactability(user, others, &call_context_of(req))
        .await
    {
        // The sender's token outlived its account (tokens stay valid until they expire).
        Err(UsersClientError::NotFound) => {
            return Err(MessagingError::Departed);
        }
        answer => answer?,
    };
    if answer.suspended {
        return Err(MessagingError::Suspended);
    }
    if !answer.unknown.is_empty() {
        let errors = answer
            .unknown
            .iter()
            .map(|id| FieldError::new("participant_ids", format!("{id} is not a user")))
            .collect();
        return Err(MessagingError::Problem(
            Problem::unknown_reference("participant_ids", "no such user").with_errors(errors),
        ));
    }
    if !answer.unavailable.is_empty() {
        return Err(MessagingError::RecipientUnavailable(answer.unavailable));
    }
    Ok(answer.versions)
}

/// Starts a conversation. With one other participant it is direct, and asking again returns
/// the existing one (200); with 2 to 49 it is a group you own.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    request_body = CreateConversation,
    responses(
        (status = 201, description = "Created", body = ConversationView),
        (status = 200, description = "The existing direct conversation", body = ConversationView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Suspended, or a participant does not accept messages", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/conversations")]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: Json<CreateConversation>,
) -> Result<HttpResponse, MessagingError> {
    let others = domain::parse_others(user.id, &body.participant_ids, "participant_ids")?;
    let title = domain::parse_title(body.title.as_deref())
        .map_err(|e| MessagingError::Validation(vec![e]))?;
    if others.len() == 1 && title.is_some() {
        return Err(MessagingError::Problem(Problem::conflicting(
            "only groups have a title",
            vec![FieldError::new("title", "only groups have a title")],
        )));
    }
    check_contactable(&state, user.id, &others, &req).await?;

    let mut tx = state.db.begin().await?;
    if !accounts::hold_for_write(&mut tx, user.id).await? {
        return Err(MessagingError::Departed);
    }
    let (id, created) = if let [other] = others[..] {
        conversations::create_direct(&mut tx, user.id, other, &domain::direct_key(user.id, other))
            .await?
    } else {
        (
            conversations::create_group(&mut tx, user.id, &others, title.as_deref()).await?,
            true,
        )
    };
    tx.commit().await?;
    let view = view_of(&state, id, user.id).await?;
    if created {
        let recipients = view.participants.iter().map(|p| p.user_id).collect();
        let event = json!({"type": "participants.changed", "conversation_id": id, "participants": view.participants});
        state.hub.publish(recipients, event).await;
        Ok(HttpResponse::Created().json(view))
    } else {
        Ok(HttpResponse::Ok().json(view))
    }
}

/// Your conversations, most recent activity first.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = Page<ConversationView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/conversations")]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, MessagingError> {
    let request = query.parse::<ActivityPosition>()?;
    let after = request.after.as_ref().map(|p| (p.t, p.id));
    let mut rows = conversations::list(&state.db, user.id, after, request.fetch_limit()).await?;
    let limit = request.limit as usize;
    let next_cursor = (rows.len() > limit)
        .then(|| rows.get(limit - 1))
        .flatten()
        .map(|r| {
            common::pagination::encode_cursor(&ActivityPosition {
                t: r.last_message_at,
                id: r.id,
            })
        });
    rows.truncate(limit);
    Ok(HttpResponse::Ok().json(Page {
        items: views(&state, rows).await?,
        next_cursor,
    }))
}

/// Badge totals: conversations with unread messages, and unread messages.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    responses(
        (status = 200, body = UnreadTotals),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/unread")]
pub async fn unread(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, MessagingError> {
    let (conversations, messages) = conversations::unread_totals(&state.db, user.id).await?;
    Ok(HttpResponse::Ok().json(UnreadTotals {
        conversations,
        messages,
    }))
}

/// One conversation you take part in.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ConversationView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/conversations/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, MessagingError> {
    Ok(HttpResponse::Ok().json(view_of(&state, *id, user.id).await?))
}

/// Appends a system message about a membership change, under the locks of
/// `conversations::lock_for_participant`.
async fn system_message(
    conn: &mut sqlx::PgConnection,
    conversation: Uuid,
    actor: Uuid,
    kind: &str,
    subject: Uuid,
) -> Result<MessageView, MessagingError> {
    let event = json!({"type": kind, "user_id": subject, "by": actor});
    match messages::append(conn, conversation, actor, "system", None, Some(event), None).await? {
        Appended::Message(message) | Appended::Replayed(message) => Ok(message.into()),
        Appended::Departed => Err(MessagingError::Departed),
    }
}

/// Adds people to a group you own.
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = AddParticipants,
    responses(
        (status = 200, body = ConversationView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner, suspended, or someone does not accept messages", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ids, too many people, or a direct conversation", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/conversations/{id}/participants")]
pub async fn add_participants(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    req: HttpRequest,
    body: Json<AddParticipants>,
) -> Result<HttpResponse, MessagingError> {
    let conversation = conversations::for_participant(&state.db, *id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    if conversation.kind != "group" {
        return Err(MessagingError::NotAGroup);
    }
    if conversation.owner_id != Some(user.id) {
        return Err(MessagingError::NotOwner);
    }
    let newcomers = domain::parse_others(user.id, &body.user_ids, "user_ids")?;
    check_contactable(&state, user.id, &newcomers, &req).await?;

    let mut tx = state.db.begin().await?;
    conversations::lock_for_participant(&mut tx, *id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    let current = conversations::participants(&mut *tx, &[*id]).await?.len();
    let added = conversations::add_participants(&mut tx, *id, &newcomers).await?;
    if current + added.len() > MAX_PARTICIPANTS {
        return Err(MessagingError::Problem(
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "group_full", "Group full")
                .with_detail("a group has at most 50 people")
                .with_errors(vec![FieldError::new(
                    "user_ids",
                    "a group has at most 50 people",
                )]),
        ));
    }
    let mut notes = Vec::new();
    for newcomer in &added {
        notes.push(system_message(&mut tx, *id, user.id, "participant_added", *newcomer).await?);
    }
    tx.commit().await?;

    let view = view_of(&state, *id, user.id).await?;
    let recipients: Vec<Uuid> = view.participants.iter().map(|p| p.user_id).collect();
    for note in &notes {
        state
            .hub
            .publish(recipients.clone(), message_event("message.created", note))
            .await;
    }
    if !added.is_empty() {
        let event = json!({"type": "participants.changed", "conversation_id": *id, "participants": view.participants, "added": added});
        state.hub.publish(recipients, event).await;
    }
    Ok(HttpResponse::Ok().json(view))
}

/// Removes someone from a group (the owner), or leaves it (anyone).
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation of yours, or no such participant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A direct conversation", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/conversations/{id}/participants/{user_id}")]
pub async fn remove_participant(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, MessagingError> {
    let (id, target) = path.into_inner();
    let mut tx = state.db.begin().await?;
    let conversation = conversations::lock_for_participant(&mut tx, id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    if conversation.kind != "group" {
        return Err(MessagingError::NotAGroup);
    }
    let leaving = target == user.id;
    if !leaving && conversation.owner_id != Some(user.id) {
        return Err(MessagingError::NotOwner);
    }
    if !conversations::remove_participant(&mut tx, id, target).await? {
        return Err(MessagingError::NotFound);
    }
    let kind = if leaving {
        "participant_left"
    } else {
        "participant_removed"
    };
    let note = system_message(&mut tx, id, user.id, kind, target).await?;
    tx.commit().await?;

    let mut recipients = participant_ids(&state, id).await?;
    state
        .hub
        .publish(recipients.clone(), message_event("message.created", &note))
        .await;
    let participants = conversations::participants(&state.db, &[id]).await?;
    let remaining: Vec<_> = participants
        .iter()
        .map(|p| json!({"user_id": p.user_id, "joined_at": p.joined_at}))
        .collect();
    recipients.push(target);
    let event = json!({"type": "participants.changed", "conversation_id": id, "participants": remaining, "removed": [target]});
    state.hub.publish(recipients, event).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Moves your read marker forward (never backward; never past the last message).
#[utoipa::path(
    tag = "conversations",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = ReadMarker,
    responses(
        (status = 200, body = ReadState),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/conversations/{id}/read")]
pub async fn mark_read(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: Json<ReadMarker>,
) -> Result<HttpResponse, MessagingError> {
    if body.seq < 0 {
        return Err(MessagingError::Validation(vec![FieldError::new(
            "seq",
            "must not be negative",
        )]));
    }
    let (read_seq, moved, last_seq) = conversations::mark_read(&state.db, *id, user.id, body.seq)
        .await?
        .ok_or(MessagingError::NotFound)?;
    if moved {
        let others: Vec<Uuid> = participant_ids(&state, *id)
            .await?
            .into_iter()
            .filter(|p| *p != user.id)
            .collect();
        let event = json!({"type": "conversation.read", "conversation_id": *id, "user_id": user.id, "seq": read_seq});
        state.hub.publish(others, event).await;
    }
    Ok(HttpResponse::Ok().json(ReadState {
        read_seq,
        unread_count: (last_seq - read_seq).max(0),
    }))
}
