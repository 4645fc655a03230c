//! Lists of posts: replies (oldest first), an author's timeline and the home feed (newest
//! first), all keyset-paginated with the `common` cursor.

use crate::error::PostsError;
use crate::startup::AppState;
use crate::store::feed as feed_store;
use crate::store::posts::{self, Position, PostRow};
use crate::views::{self, PostView};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, TimeZone, Utc};
use common::auth::{AuthUser, MaybeAuthUser};
use common::pagination::{Page, PageQuery, PageRequest};
use common::problem::{FieldError, Problem};
use common::ratelimit::Prefetched;
use common::telemetry::call_context_of;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use uuid::Uuid;

/// The header set when the feed was built from a cached followee list because the users
/// service did not answer.
pub const STALE_HEADER: &str = "x-served-from-cache";

/// Query of newest-first post lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Leave replies out.
    pub exclude_replies: Option<bool>,
    /// Start at this point in time (RFC 3339): only posts strictly older. Cannot be combined
    /// with `cursor`.
    pub before: Option<DateTime<Utc>>,
}

impl ListQuery {
    fn page(&self) -> Result<PageRequest<PostPosition>, Problem> {
        PageQuery {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
        .parse()
    }
}

/// Where a list of posts stopped.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostPosition {
    t: DateTime<Utc>,
    id: Uuid,
}

/// Later than any post: where a newest-first list starts.
fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where a newest-first list continues: after the cursor, else before `before`, else the top.
fn start_of(request: &PageRequest<PostPosition>, before: Option<DateTime<Utc>>) -> Position {
    match (&request.after, before) {
        (Some(p), _) => (p.t, p.id),
        (None, Some(t)) => (t, Uuid::nil()),
        (None, None) => (far_future(), Uuid::max()),
    }
}

async fn page_of(
    state: &AppState,
    rows: Vec<PostRow>,
    request: &PageRequest<PostPosition>,
    viewer: Option<Uuid>,
    req: &HttpRequest,
) -> Result<Page<PostView>, PostsError> {
    // The cursor comes from the rows read, so posts left out of the view (departed authors)
    // neither shorten the walk nor repeat.
    let limit = request.limit as usize;
    let next_cursor = (rows.len() > limit)
        .then(|| rows.get(limit - 1))
        .flatten()
        .map(|r| {
            common::pagination::encode_cursor(&PostPosition {
                t: r.created_at,
                id: r.id,
            })
        });
    let mut rows = rows;
    rows.truncate(limit);
    let items = views::render(state, rows, viewer, &call_context_of(req)).await?;
    Ok(Page { items, next_cursor })
}

/// Replies to a post, oldest first.
#[utoipa::path(
    tag = "lists",
    params(("id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = Page<PostView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A token was sent and is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/posts/{id}/replies")]
pub async fn replies(
    state: web::Data<AppState>,
    viewer: MaybeAuthUser,
    id: web::Path<Uuid>,
    query: web::Query<PageQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PostsError> {
    let request = query.parse::<PostPosition>()?;
    let after = request.after.as_ref().map(|p| (p.t, p.id));
    let rows = state
        .statements
        .run(async |db| {
            if posts::by_id(&mut *db, *id, None).await?.is_none() {
                return Ok(None);
            }
            posts::replies(db, *id, after, request.fetch_limit())
                .await
                .map(Some)
        })
        .await?
        .ok_or(PostsError::NotFound)?;
    let page = page_of(&state, rows, &request, viewer.0.map(|u| u.id), &req).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// An author's posts, newest first.
#[utoipa::path(
    tag = "lists",
    params(("id" = Uuid, Path), ListQuery),
    responses(
        (status = 200, body = Page<PostView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A token was sent and is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/{id}/posts")]
pub async fn timeline(
    state: web::Data<AppState>,
    viewer: MaybeAuthUser,
    id: web::Path<Uuid>,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PostsError> {
    let request = query.page()?;
    let known = state
        .directory
        .authors(&[*id], &call_context_of(&req))
        .await?;
    if !known.contains_key(&id) {
        return Err(PostsError::NotFound);
    }
    let before = start_of(&request, query.before);
    let exclude_replies = query.exclude_replies.unwrap_or(false);
    let viewer = viewer.0.map(|u| u.id);
    let rows = state
        .statements
        .run(async |db| {
            posts::timeline(
                db,
                *id,
                before,
                exclude_replies,
                request.fetch_limit(),
                viewer,
            )
            .await
        })
        .await?;
    let page = page_of(&state, rows, &request, viewer, &req).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Your home feed: your posts and those of everyone you follow, newest first.
#[utoipa::path(
    tag = "lists",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = Page<PostView>, headers(("x-served-from-cache" = String, description = "`followees` when the users service did not answer and a cached followee list was used"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The users service is unavailable and nothing is cached", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/feed")]
pub async fn feed(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PostsError> {
    let request = query.page()?;
    if query.cursor.is_some() && query.before.is_some() {
        return Err(PostsError::Problem(Problem::conflicting(
            "give at most one of cursor and before",
            vec![FieldError::new("before", "cannot be combined with cursor")],
        )));
    }
    let prefetched = req.extensions_mut().remove::<Prefetched>();
    let before = start_of(&request, query.before);
    let page = FeedPage {
        reader: user.id,
        before,
        exclude_replies: query.exclude_replies.unwrap_or(false),
        limit: request.fetch_limit(),
    };
    let ctx = call_context_of(&req);
    // With the reader's followees held, the page is read from them while they are confirmed:
    // the Redis and PostgreSQL round trips overlap (docs/adr/0031-feed-reads-while-confirming.md).
    // The rows read from a list that turns out not to be current are dropped, and the page is
    // read again from the current one.
    let held = state.directory.held(user.id);
    let confirmed = match &held {
        Some(list) => {
            let (current, rows) = tokio::join!(
                state.directory.confirm(user.id, list, prefetched.as_ref()),
                page.read(&state, list.ids()),
            );
            current.then_some(rows)
        }
        None => None,
    };
    let (rows, stale) = match confirmed {
        Some(rows) => (rows?, false),
        None => {
            let followees = match held {
                Some(list) => {
                    state
                        .directory
                        .revalidate(user.id, Some(list), &ctx)
                        .await?
                }
                None => state.directory.followees_not_held(user.id, &ctx).await?,
            };
            (page.read(&state, &followees.ids).await?, followees.stale)
        }
    };
    let page = page_of(&state, rows, &request, Some(user.id), &req).await?;
    let mut response = HttpResponse::Ok();
    if stale {
        response.insert_header((STALE_HEADER, "followees"));
    }
    Ok(response.json(page))
}

/// What a home feed page asks for, whoever its followees turn out to be.
struct FeedPage {
    reader: Uuid,
    before: Position,
    exclude_replies: bool,
    limit: i64,
}

impl FeedPage {
    /// The page's rows from `followees` (sorted) and the reader's own posts.
    async fn read(&self, state: &AppState, followees: &[Uuid]) -> Result<Vec<PostRow>, PostsError> {
        let plan = state.recent_heads.plan(
            followees,
            self.reader,
            self.before,
            self.exclude_replies,
            usize::try_from(self.limit).unwrap_or(0),
        );
        let mut authors = followees.to_vec();
        // The feed statements join on these ids, so they must be distinct. users never lists
        // the reader among their followees (a CHECK forbids self-follows); nothing here relies
        // on that.
        if !authors.contains(&self.reader) {
            authors.push(self.reader);
        }
        Ok(state
            .statements
            .run(async |db| {
                let plan = plan.as_ref();
                feed_store::page(
                    db,
                    &authors,
                    plan,
                    self.before,
                    self.exclude_replies,
                    self.limit,
                    self.reader,
                )
                .await
            })
            .await?)
    }
}
