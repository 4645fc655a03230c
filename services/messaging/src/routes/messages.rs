//! `/v1/conversations/{id}/messages`: send (idempotently), page by seq, edit, delete.

use crate::domain::{self, MessageBody};
use crate::error::MessagingError;
use crate::routes::conversations::{check_contactable, participant_ids};
use crate::startup::AppState;
use crate::store::messages::Appended;
use crate::store::{conversations, messages};
use crate::views::{MessageView, message_event};
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use common::auth::AuthUser;
use common::json::Json;
use common::pagination::{DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, encode_cursor};
use common::problem::{FieldError, Problem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// 1–4,000 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub body: String,
    /// Your id for this send, 1–255 visible ASCII characters: resending with it returns the
    /// first message instead of a copy. Must equal the `Idempotency-Key` header if both are sent.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub client_id: Option<String>,
}

/// New text for a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// 1–4,000 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub body: String,
}

/// Query of the message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page. At most one of `cursor`, `before_seq` and
    /// `after_seq`.
    #[param(max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Newest first, strictly older than this seq.
    pub before_seq: Option<i64>,
    /// Oldest first, strictly newer than this seq: catch-up after a reconnect.
    pub after_seq: Option<i64>,
}

/// Where a message list continues.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
enum SeqPosition {
    #[serde(rename = "b")]
    Before(i64),
    #[serde(rename = "a")]
    After(i64),
}

fn client_id_of(req: &HttpRequest, body: &SendMessage) -> Result<Option<String>, MessagingError> {
    let header = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let validation = |e| MessagingError::Validation(vec![e]);
    let from_body = body
        .client_id
        .as_deref()
        .map(|c| domain::parse_client_id(c, "client_id"))
        .transpose()
        .map_err(validation)?;
    let from_header = header
        .as_deref()
        .map(|h| domain::parse_client_id(h, "Idempotency-Key"))
        .transpose()
        .map_err(validation)?;
    match (from_body, from_header) {
        (Some(a), Some(b)) if a != b => Err(MessagingError::Problem(Problem::conflicting(
            "client_id and the Idempotency-Key header name different sends",
            vec![FieldError::new(
                "client_id",
                "differs from the Idempotency-Key header",
            )],
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// The answer to a send whose `client_id` was used before: the first message.
fn replayed(first: messages::MessageRow) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("idempotent-replayed", "true"))
        .json(MessageView::from(first))
}

/// Sends a message. A `client_id` (or `Idempotency-Key`) already used by you in this
/// conversation returns the original message: a retried send never duplicates.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Same role as client_id")),
    request_body = SendMessage,
    responses(
        (status = 201, body = MessageView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Suspended, or the other person does not accept messages", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation of yours", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many messages", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/conversations/{id}/messages")]
pub async fn send(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    req: HttpRequest,
    body: Json<SendMessage>,
) -> Result<HttpResponse, MessagingError> {
    let text = MessageBody::parse(&body.body).map_err(|e| MessagingError::Validation(vec![e]))?;
    let client_id = client_id_of(&req, &body)?;
    // The conversation as the sender sees it, with who is in it and a message already sent
    // with this `client_id`: one round trip.
    let target = state
        .statements
        .run(async |db| conversations::send_target(db, *id, user.id, client_id.as_deref()).await)
        .await?
        .ok_or(MessagingError::NotFound)?;
    if let Some(first) = target.replayed {
        return Ok(replayed(first));
    }
    // Who may receive is the users service's knowledge: in a direct conversation, whether the
    // two may talk; in a group, whether the sender is suspended. An answer kept from an earlier
    // send holds while the contact versions it was read at are still the published ones, which
    // are read with the count (docs/adr/0022).
    let participants = target.participant_ids;
    let recipient = if target.kind == "direct" {
        participants.iter().copied().find(|p| *p != user.id)
    } else {
        None
    };
    // Retries (answered above) are free; a new message counts. Asked before any lock is taken.
    let keys = state.contacts.keys(user.id, recipient);
    let subject = user.id.to_string();
    let counted =
        state
            .limiter
            .enforce_and_read("message-send", state.message_send, &subject, &keys);
    let others: Vec<Uuid> = recipient.into_iter().collect();
    let ask_users = || check_contactable(&state, user.id, &others, &req);
    let versions = if keys.is_empty() {
        // Nothing kept for the pair: users is asked whatever Redis holds, so it is asked while
        // the quota is counted. A refused quota still answers 429, not what users said.
        state.contacts.observe_miss();
        let (counted, contactable) = tokio::join!(counted, ask_users());
        counted?;
        Some(contactable?)
    } else if state
        .contacts
        .allows(user.id, recipient, counted.await?.as_deref())
    {
        None
    } else {
        Some(ask_users().await?)
    };
    if let Some(versions) = versions {
        state.contacts.remember(user.id, recipient, &versions);
    }

    // Two statements in one call, which commits: the sender's write lock and the
    // conversation's row lock, then the append, whose own snapshot sees a deletion or a
    // concurrent retry of this send that committed while we waited (docs/adr/0011,
    // docs/adr/0013, docs/adr/0029).
    let appended = state
        .statements
        .run(async |db| messages::send(db, *id, user.id, text.as_str(), client_id.as_deref()).await)
        .await?;
    let message = match appended.ok_or(MessagingError::NotFound)? {
        Appended::Message(message) => message,
        Appended::Replayed(first) => return Ok(replayed(first)),
        Appended::Departed => return Err(MessagingError::Departed),
    };
    let view = MessageView::from(message);
    // Committed: the answer does not wait for Redis (docs/adr/0011, amendment of session 22).
    state
        .hub
        .publish_detached(participants, message_event("message.created", &view));
    Ok(HttpResponse::Created().json(view))
}

/// Messages, newest first (`before_seq`), or oldest first after `after_seq` for catch-up.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), MessagesQuery),
    responses(
        (status = 200, body = Page<MessageView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/conversations/{id}/messages")]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, MessagingError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(MessagingError::Validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )]));
    }
    let position = match (&query.cursor, query.before_seq, query.after_seq) {
        (Some(cursor), None, None) => decode_cursor::<SeqPosition>(cursor)?,
        (None, before, None) => SeqPosition::Before(before.unwrap_or(i64::MAX)),
        (None, None, Some(after)) => SeqPosition::After(after),
        _ => {
            let message = "give at most one of cursor, before_seq and after_seq";
            return Err(MessagingError::Problem(Problem::conflicting(
                message,
                vec![FieldError::new("cursor", message)],
            )));
        }
    };
    conversations::for_participant(&state.db, *id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    let (before, after) = match position {
        SeqPosition::Before(seq) => (Some(seq), None),
        SeqPosition::After(seq) => (None, Some(seq)),
    };
    let mut rows = messages::page(&state.db, *id, before, after, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(|last| {
        encode_cursor(&if after.is_some() {
            SeqPosition::After(last.seq)
        } else {
            SeqPosition::Before(last.seq)
        })
    });
    let items = rows.into_iter().map(MessageView::from).collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// Edits your own message.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path)),
    request_body = EditMessage,
    responses(
        (status = 200, body = MessageView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/v1/conversations/{id}/messages/{message_id}")]
pub async fn edit(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<EditMessage>,
) -> Result<HttpResponse, MessagingError> {
    let (id, message_id) = path.into_inner();
    let text = MessageBody::parse(&body.body).map_err(|e| MessagingError::Validation(vec![e]))?;
    conversations::for_participant(&state.db, id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    let row = messages::edit(&state.db, id, message_id, user.id, text.as_str())
        .await?
        .ok_or(MessagingError::NotFound)?;
    let view = MessageView::from(row);
    state
        .hub
        .publish(
            participant_ids(&state, id).await?,
            message_event("message.updated", &view),
        )
        .await;
    Ok(HttpResponse::Ok().json(view))
}

/// Deletes your own message, leaving a tombstone. Idempotent.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/conversations/{id}/messages/{message_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, MessagingError> {
    let (id, message_id) = path.into_inner();
    conversations::for_participant(&state.db, id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    let row = messages::tombstone(&state.db, id, message_id, user.id)
        .await?
        .ok_or(MessagingError::NotFound)?;
    let view = MessageView::from(row);
    state
        .hub
        .publish(
            participant_ids(&state, id).await?,
            message_event("message.deleted", &view),
        )
        .await;
    Ok(HttpResponse::NoContent().finish())
}
