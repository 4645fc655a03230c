//! `/v1/users/me`, `/v1/users/{id}`, `/v1/users/by-username/{username}`, `/v1/users?ids=`.

use crate::domain::{Bio, DisplayName, Username};
use crate::error::{FieldErrors, UsersError};
use crate::startup::AppState;
use crate::store::accounts::{self, AccountRow};
use crate::store::graph;
use actix_web::{HttpResponse, get, patch, web};
use chrono::{DateTime, Utc};
use common::auth::{AuthUser, MaybeAuthUser};
use common::json::Json;
use common::problem::{FieldError, Problem};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Most ids one batch request may name.
pub const MAX_BATCH: usize = 100;

/// The signed-in user's own account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PrivateProfile {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub bio: String,
    /// `user`, `moderator` or `admin`.
    pub role: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub created_at: DateTime<Utc>,
}

impl From<AccountRow> for PrivateProfile {
    fn from(a: AccountRow) -> Self {
        Self {
            id: a.id,
            username: a.username,
            email: a.email,
            display_name: a.display_name,
            bio: a.bio,
            role: a.role,
            followers_count: a.followers_count,
            following_count: a.following_count,
            created_at: a.created_at,
        }
    }
}

/// What anyone may see of an account. Never the email.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublicProfile {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    pub created_at: DateTime<Utc>,
    pub followers_count: i64,
    pub following_count: i64,
    /// Present when signed in: whether you follow this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followed_by_me: Option<bool>,
    /// Present when signed in: whether this account follows you.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows_me: Option<bool>,
}

impl From<AccountRow> for PublicProfile {
    fn from(a: AccountRow) -> Self {
        Self {
            id: a.id,
            username: a.username,
            display_name: a.display_name,
            bio: a.bio,
            created_at: a.created_at,
            followers_count: a.followers_count,
            following_count: a.following_count,
            followed_by_me: None,
            follows_me: None,
        }
    }
}

/// Several public profiles.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileList {
    pub items: Vec<PublicProfile>,
}

/// Distinguishes an absent field (`None`) from `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Profile changes: an absent field is left alone; `null` resets it (display name to the
/// username, bio to empty).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// 1–50 characters, not only whitespace, no control characters but line breaks; or null
    /// to reset to the username.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 50, pattern = r"^[^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*$")]
    pub display_name: Option<Option<String>>,
    /// At most 300 characters, no control characters but line breaks; or null to clear.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 300, pattern = r"^[^\u0000-\u0009\u000b-\u001f\u007f-\u009f]*$")]
    pub bio: Option<Option<String>>,
}

/// Query of the batch endpoint.
#[derive(Debug, Deserialize, IntoParams)]
pub struct BatchQuery {
    /// 1 to 100 account ids (hyphenated UUIDs), separated by commas without spaces.
    #[param(required = true, value_type = String, pattern = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(,[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}){0,99}$")]
    pub ids: Option<String>,
}

async fn with_relationship(
    state: &AppState,
    viewer: &MaybeAuthUser,
    account: AccountRow,
) -> Result<PublicProfile, UsersError> {
    let id = account.id;
    let mut profile = PublicProfile::from(account);
    if let Some(viewer) = &viewer.0 {
        let rel = graph::relationship(&state.db, viewer.id, id).await?;
        profile.followed_by_me = Some(rel.followed_by_me);
        profile.follows_me = Some(rel.follows_me);
    }
    Ok(profile)
}

/// Your own account.
#[utoipa::path(
    tag = "profiles",
    security(("bearer" = [])),
    responses(
        (status = 200, body = PrivateProfile),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/me")]
pub async fn me(state: web::Data<AppState>, user: AuthUser) -> Result<HttpResponse, UsersError> {
    let account = accounts::by_id(&state.db, user.id)
        .await?
        .ok_or(UsersError::NotFound)?;
    Ok(HttpResponse::Ok().json(PrivateProfile::from(account)))
}

/// Changes your display name or bio.
#[utoipa::path(
    tag = "profiles",
    security(("bearer" = [])),
    request_body = ProfilePatch,
    responses(
        (status = 200, body = PrivateProfile),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/v1/users/me")]
pub async fn update_me(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<ProfilePatch>,
) -> Result<HttpResponse, UsersError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::default();
    let display_name: Option<Option<DisplayName>> = match body.display_name {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => errors.check(DisplayName::parse(&raw)).map(Some),
    };
    let bio = match body.bio {
        None => None,
        Some(None) => Some(Bio::empty()),
        Some(Some(raw)) => errors.check(Bio::parse(&raw)),
    };
    errors.finish()?;
    // A null display name resets it to the username, which only the row knows.
    let display_name = match display_name {
        Some(None) => {
            let account = accounts::by_id(&state.db, user.id)
                .await?
                .ok_or(UsersError::NotFound)?;
            let username =
                Username::parse(&account.username).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            Some(DisplayName::from_username(&username))
        }
        Some(Some(name)) => Some(name),
        None => None,
    };
    let account = accounts::update_profile(&state.db, user.id, display_name.as_ref(), bio.as_ref())
        .await?
        .ok_or(UsersError::NotFound)?;
    Ok(HttpResponse::Ok().json(PrivateProfile::from(account)))
}

/// A public profile by id.
#[utoipa::path(
    tag = "profiles",
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, body = PublicProfile),
        (status = 401, description = "A token was sent and is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/{id}")]
pub async fn by_id(
    state: web::Data<AppState>,
    viewer: MaybeAuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    let account = accounts::by_id(&state.db, *id)
        .await?
        .ok_or(UsersError::NotFound)?;
    Ok(HttpResponse::Ok().json(with_relationship(&state, &viewer, account).await?))
}

/// A public profile by username (case-insensitive).
#[utoipa::path(
    tag = "profiles",
    params(("username" = String, Path)),
    responses(
        (status = 200, body = PublicProfile),
        (status = 401, description = "A token was sent and is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/by-username/{username}")]
pub async fn by_username(
    state: web::Data<AppState>,
    viewer: MaybeAuthUser,
    username: web::Path<String>,
) -> Result<HttpResponse, UsersError> {
    let username = Username::parse(&username).map_err(|_| UsersError::NotFound)?;
    let account = accounts::by_username(&state.db, username.as_str())
        .await?
        .ok_or(UsersError::NotFound)?;
    Ok(HttpResponse::Ok().json(with_relationship(&state, &viewer, account).await?))
}

fn parse_ids(raw: Option<&str>) -> Result<Vec<Uuid>, UsersError> {
    let invalid = |message: &str| UsersError::Validation(vec![FieldError::new("ids", message)]);
    let raw = raw
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("at least one id is required"))?;
    let parts: Vec<&str> = raw.split(',').collect();
    if parts.len() > MAX_BATCH {
        return Err(invalid("at most 100 ids"));
    }
    // Only the hyphenated form, as the OpenAPI pattern says: `Uuid::parse_str` would also
    // take the simple, braced and URN forms.
    let mut ids = parts
        .iter()
        .map(|p| {
            (p.len() == 36)
                .then(|| Uuid::parse_str(p).ok())
                .flatten()
                .ok_or_else(|| invalid("every id must be a hyphenated UUID"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Public profiles of up to 100 accounts; unknown ids are left out. Other services hydrate
/// authors with this.
#[utoipa::path(
    tag = "profiles",
    params(BatchQuery),
    responses(
        (status = 200, body = ProfileList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing, malformed or too many ids", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users")]
pub async fn batch(
    state: web::Data<AppState>,
    query: web::Query<BatchQuery>,
) -> Result<HttpResponse, UsersError> {
    let ids = parse_ids(query.ids.as_deref())?;
    let items = state
        .statements
        .run(async |db| accounts::by_ids(db, &ids).await)
        .await?
        .into_iter()
        .map(PublicProfile::from)
        .collect();
    Ok(HttpResponse::Ok().json(ProfileList { items }))
}
