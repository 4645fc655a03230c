//! `GET /v1/stream`: the WebSocket of real-time events.
//!
//! Authentication, in order: the `Authorization: Bearer` header; the sub-protocol pair a
//! browser can send (`new WebSocket(url, ["bearer", token])`, answered with protocol `bearer`);
//! the `access_token` query parameter. The socket closes when the token expires, when the client
//! stops answering pings, when it floods us, when it falls too far behind (it then catches up
//! with `GET /v1/conversations/{id}/messages?after_seq=`), or when its account is deleted (a
//! deleted account's token, valid until it expires, opens no socket).

use crate::config::StreamSettings;
use crate::error::MessagingError;
use crate::realtime::{Ending, Hub, Receiver};
use crate::startup::AppState;
use crate::store::accounts;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use common::auth::{TokenVerifier, bearer_token};
use common::problem::Problem;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::IntoParams;
use uuid::Uuid;

/// Browser-friendly authentication.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The access token, for clients that can set neither a header nor a sub-protocol.
    pub access_token: Option<String>,
}

fn token_of(req: &HttpRequest, query: &StreamQuery) -> Result<String, Problem> {
    if let Some(token) = bearer_token(req).map_err(Problem::from)? {
        return Ok(token.to_owned());
    }
    let protocols = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let offered: Vec<&str> = protocols.split(',').map(str::trim).collect();
    if let Some(i) = offered
        .iter()
        .position(|p| p.eq_ignore_ascii_case("bearer"))
        && let Some(token) = offered.get(i + 1)
    {
        return Ok((*token).to_owned());
    }
    query
        .access_token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Problem::unauthenticated("a bearer access token is required"))
}

/// Opens the event stream. Events are JSON objects with a `type`: `message.created`,
/// `message.updated`, `message.deleted`, `conversation.read`, `participants.changed`.
#[utoipa::path(
    tag = "stream",
    params(StreamQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token, or the account was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stream")]
pub async fn stream(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    verifier: web::Data<TokenVerifier>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let token = token_of(&req, &query)?;
    let user = common::auth::authenticate_user(&verifier, &token).await?;
    let (response, session, messages) = actix_ws::handle_with_protocols(&req, body, &["bearer"])
        .map_err(|e| Problem::bad_request("websocket_handshake_required", e.to_string()))?;
    let messages = messages.max_frame_size(state.stream.max_frame_bytes);
    let (socket, queue) = state.hub.register(user.id);
    // Registered first, then checked: a deletion that commits after the check finds the socket
    // registered when its closing arrives, so it is closed either way.
    let refusal = match accounts::is_departed(&state.db, user.id).await {
        Ok(false) => None,
        Ok(true) => Some(MessagingError::Departed),
        Err(e) => Some(MessagingError::from(e)),
    };
    if let Some(refusal) = refusal {
        state.hub.unregister(user.id, socket);
        return Err(refusal.into());
    }
    let expires_in = Duration::from_secs(
        u64::try_from(user.expires_at - chrono::Utc::now().timestamp()).unwrap_or(0),
    );
    let socket = Socket {
        hub: Arc::clone(&state.hub),
        user: user.id,
        id: socket,
        settings: state.stream.clone(),
    };
    actix_web::rt::spawn(socket.run(session, messages, queue, expires_in));
    Ok(response)
}

struct Socket {
    hub: Arc<Hub>,
    user: Uuid,
    id: u64,
    settings: StreamSettings,
}

fn reason(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}

impl Socket {
    async fn run(
        self,
        mut session: Session,
        mut messages: MessageStream,
        mut queue: Receiver,
        expires_in: Duration,
    ) {
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut last_seen = Instant::now();
        let (mut window, mut received) = (Instant::now(), 0u32);
        tracing::debug!(user_id = %self.user, socket = self.id, "socket open");
        let close = loop {
            tokio::select! {
                incoming = messages.recv() => match incoming {
                    Some(Ok(Message::Ping(bytes))) => {
                        last_seen = Instant::now();
                        if session.pong(&bytes).await.is_err() { break None; }
                    }
                    Some(Ok(Message::Pong(_))) => last_seen = Instant::now(),
                    Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Continuation(_))) => {
                        last_seen = Instant::now();
                        if window.elapsed() > Duration::from_secs(60) {
                            (window, received) = (Instant::now(), 0);
                        }
                        received += 1;
                        if received > self.settings.max_client_messages_per_min {
                            break reason(CloseCode::Policy, "too many messages");
                        }
                    }
                    Some(Ok(Message::Close(why))) => break why,
                    Some(Ok(Message::Nop)) => {}
                    Some(Err(e)) => break reason(CloseCode::Size, &format!("protocol error: {e}")),
                    None => break None,
                },
                event = queue.recv() => match event {
                    Ok(text) => if session.text(&*text).await.is_err() { break None; },
                    Err(Ending::SlowConsumer) => break reason(CloseCode::Again, "slow consumer: reconnect and catch up with after_seq"),
                    Err(Ending::AccountDeleted) => break reason(CloseCode::Policy, "account deleted"),
                },
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > self.settings.client_timeout {
                        break reason(CloseCode::Away, "no answer to pings");
                    }
                    if session.ping(b"").await.is_err() { break None; }
                }
                _ = &mut expiry => break reason(CloseCode::Policy, "token expired"),
            }
        };
        self.hub.unregister(self.user, self.id);
        tracing::debug!(user_id = %self.user, socket = self.id, ?close, "socket closed");
        let _closed = session.close(close).await;
    }
}
