//! `/v1/auth/*`: registration, sign-in, refresh rotation, logout, and service tokens.

use crate::audit::{self, Event, RequestMeta};
use crate::domain::{DisplayName, Email, Login, Password, Username};
use crate::error::{FieldErrors, UsersError};
use crate::routes::profiles::PrivateProfile;
use crate::startup::AppState;
use crate::store::{accounts, refresh_tokens};
use crate::{passwords, tokens};
use actix_web::{HttpRequest, HttpResponse, post, web};
use common::auth::Role;
use common::json::Json;
use common::problem::Problem;
use common::ratelimit::ip_subject;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// 3–30 characters of a-z, 0-9 and `_` (upper case is folded).
    #[schema(min_length = 3, max_length = 30, pattern = "^[A-Za-z0-9_]{3,30}$")]
    pub username: String,
    /// An email address, unique: at most 254 characters; a local part of 1–64, `@`, and two or
    /// more dot-separated labels, without whitespace or control characters. Surrounding
    /// whitespace is dropped.
    #[schema(
        max_length = 254,
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^@\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}@[^@.\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+(\.[^@.\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+)+[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub email: String,
    /// 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// 1–50 characters, not only whitespace, no control characters but line breaks; defaults
    /// to the username.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*$"
    )]
    pub display_name: Option<String>,
}

/// Credentials for sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Username or email: 1–254 characters, not only whitespace.
    #[schema(
        min_length = 1,
        max_length = 254,
        pattern = r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub login: String,
    /// The password: 1–128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
}

/// A refresh token, to rotate or revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The opaque refresh token of the last pair.
    pub refresh_token: String,
}

/// Client credentials of one of our services.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenBody {
    /// The service's name (`posts`, `messaging`).
    pub client_id: String,
    /// Its secret from configuration.
    pub client_secret: String,
}

/// An access token and the refresh token that replaces it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// RS256 JWT, valid for `expires_in` seconds.
    pub access_token: String,
    /// Opaque, single use; exchange it at `/v1/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A new account with its first token pair.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The account.
    pub user: PrivateProfile,
    /// RS256 JWT.
    pub access_token: String,
    /// Opaque refresh token.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A service token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceToken {
    /// RS256 JWT for the internal audience.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// The role column as the token claim.
pub fn role_of(column: &str) -> Role {
    match column {
        "admin" => Role::Admin,
        "moderator" => Role::Moderator,
        _ => Role::User,
    }
}

/// Signs an access token and stores a new refresh token of `family`.
async fn issue_pair(
    state: &AppState,
    conn: &mut PgConnection,
    account: Uuid,
    role: Role,
    family: Uuid,
) -> Result<TokenPair, UsersError> {
    let access = state.signer.access_token(account, role)?;
    let (refresh_token, hash) = tokens::new_refresh_token();
    let ttl = chrono::Duration::from_std(state.signer.settings().refresh_ttl)
        .map_err(anyhow::Error::from)?;
    refresh_tokens::insert(&mut *conn, account, family, &hash, chrono::Utc::now() + ttl).await?;
    Ok(TokenPair {
        access_token: access.token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: access.expires_in,
    })
}

/// Creates an account and signs it in.
#[utoipa::path(
    tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Account created", body = RegisterResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Username or email taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many sign-ups from this address", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/register")]
pub async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    meta: RequestMeta,
    body: Json<RegisterBody>,
) -> Result<HttpResponse, UsersError> {
    let ip = ip_subject(&request, &state.limiter);
    state
        .limiter
        .enforce("signup-ip", state.limits.signup_ip, &ip)
        .await?;
    let body = body.into_inner();
    let mut errors = FieldErrors::default();
    let username = errors.check(Username::parse(&body.username));
    let email = errors.check(Email::parse(&body.email));
    let password = errors.check(Password::parse(&body.password));
    let display_name = body
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose();
    let display_name = errors.check(display_name);
    errors.finish()?;
    let (Some(username), Some(email), Some(password), Some(display_name)) =
        (username, email, password, display_name)
    else {
        return Err(anyhow::anyhow!("field checks passed without values").into());
    };
    let display_name = display_name.unwrap_or_else(|| DisplayName::from_username(&username));
    let hash = passwords::hash(password.expose().to_owned()).await?;

    let mut tx = state.db.begin().await?;
    let account = accounts::insert(&mut *tx, &username, &email, &hash, &display_name).await?;
    let pair = issue_pair(&state, &mut tx, account.id, Role::User, Uuid::now_v7()).await?;
    audit::record(
        &meta,
        &mut *tx,
        Event::Registered,
        Some(account.id),
        Some(account.id),
        json!({"username": account.username}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user_id = %account.id, "account registered");
    Ok(HttpResponse::Created().json(RegisterResponse {
        user: PrivateProfile::from(account),
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: pair.token_type,
        expires_in: pair.expires_in,
    }))
}

/// Signs in with a username or email and a password.
#[utoipa::path(
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 401, description = "Wrong login or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account suspended", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address or at this account", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    meta: RequestMeta,
    body: Json<LoginBody>,
) -> Result<HttpResponse, UsersError> {
    let mut errors = FieldErrors::default();
    let login = errors.check(Login::parse(&body.login));
    let password = errors.check(Password::offered(&body.password));
    errors.finish()?;
    let (Some(login), Some(password)) = (login, password) else {
        return Err(anyhow::anyhow!("field checks passed without values").into());
    };
    let ip = ip_subject(&request, &state.limiter);
    let limiter = &state.limiter;
    limiter
        .enforce("login-ip", state.limits.login_ip, &ip)
        .await?;
    limiter
        .enforce("login-account", state.limits.login_account, login.as_str())
        .await?;
    let found = accounts::credentials(&state.db, login.as_str()).await?;
    // An unknown login still pays for one hash check, so timing does not tell which logins exist.
    let hash = found
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |c| c.password_hash.clone());
    let matches = passwords::verify(password.expose().to_owned(), hash).await?;
    let account = match found {
        Some(account) if matches && !account.suspended => account,
        other => {
            let reason = match &other {
                Some(_) if matches => "suspended",
                Some(_) => "wrong_password",
                None => "unknown_login",
            };
            let subject = other.as_ref().map(|a| a.id);
            let detail = json!({"login": login.as_str(), "reason": reason});
            audit::record(&meta, &state.db, Event::LoginFailed, None, subject, detail).await?;
            return Err(if reason == "suspended" {
                UsersError::Suspended
            } else {
                UsersError::InvalidCredentials
            });
        }
    };
    let mut tx = state.db.begin().await?;
    let pair = issue_pair(
        &state,
        &mut tx,
        account.id,
        role_of(&account.role),
        Uuid::now_v7(),
    )
    .await?;
    let detail = json!({});
    audit::record(
        &meta,
        &mut *tx,
        Event::LoginSucceeded,
        Some(account.id),
        Some(account.id),
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(pair))
}

/// Exchanges a refresh token for a new pair. Each refresh token works once; presenting a
/// spent one revokes every token descending from the same sign-in.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new pair", body = TokenPair),
        (status = 401, description = "Unknown, expired, revoked or re-used token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account suspended", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    meta: RequestMeta,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, UsersError> {
    let hash = tokens::hash_refresh_token(&body.refresh_token);
    let mut tx = state.db.begin().await?;
    let Some(spent) = refresh_tokens::spend(&mut *tx, &hash).await? else {
        if let Some(known) = refresh_tokens::find(&mut *tx, &hash).await?
            && known.used
        {
            refresh_tokens::revoke_family(&mut *tx, known.family_id).await?;
            let detail = json!({"family_id": known.family_id});
            let subject = Some(known.account_id);
            audit::record(
                &meta,
                &mut *tx,
                Event::RefreshTokenReused,
                None,
                subject,
                detail,
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(family_id = %known.family_id, "refresh token re-used: family revoked");
        }
        return Err(UsersError::InvalidRefreshToken);
    };
    let status = accounts::status(&mut *tx, spent.account_id)
        .await?
        .ok_or(UsersError::InvalidRefreshToken)?;
    if status.suspended {
        refresh_tokens::revoke_family(&mut *tx, spent.family_id).await?;
        tx.commit().await?;
        return Err(UsersError::Suspended);
    }
    let pair = issue_pair(
        &state,
        &mut tx,
        spent.account_id,
        role_of(&status.role),
        spent.family_id,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(pair))
}

/// Revokes a refresh token and every token of its sign-in. Unknown tokens are accepted too,
/// so the answer says nothing about which tokens exist.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "Signed out"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    meta: RequestMeta,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, UsersError> {
    let hash = tokens::hash_refresh_token(&body.refresh_token);
    if let Some(known) = refresh_tokens::find(&state.db, &hash).await? {
        let mut tx = state.db.begin().await?;
        refresh_tokens::revoke_family(&mut *tx, known.family_id).await?;
        let (who, detail) = (
            Some(known.account_id),
            json!({"family_id": known.family_id}),
        );
        audit::record(&meta, &mut *tx, Event::LoggedOut, who, who, detail).await?;
        tx.commit().await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Issues a short-lived service token to one of our services presenting its client secret.
/// See docs/adr/0006-service-credentials.md.
#[utoipa::path(
    tag = "auth",
    request_body = ServiceTokenBody,
    responses(
        (status = 200, description = "A service token", body = ServiceToken),
        (status = 401, description = "Unknown client or wrong secret", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/service-token")]
pub async fn service_token(
    state: web::Data<AppState>,
    body: Json<ServiceTokenBody>,
) -> Result<HttpResponse, UsersError> {
    let known = state.service_clients.get(&body.client_id);
    let ok =
        known.is_some_and(|secret| tokens::constant_time_eq(secret.expose(), &body.client_secret));
    if !ok {
        return Err(UsersError::InvalidCredentials);
    }
    let token = state.signer.service_token(&body.client_id)?;
    Ok(HttpResponse::Ok().json(ServiceToken {
        access_token: token.token,
        token_type: "Bearer".into(),
        expires_in: token.expires_in,
    }))
}
