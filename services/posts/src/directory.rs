//! What the posts service knows about users, always asked of the users service and cached in
//! Redis where that keeps the feed's guarantees (docs/adr/0009-feed-caching.md):
//!
//! - Followee ids are cached with their ETag. When the version the users service published in
//!   Redis matches it, the list is current (users raises it before answering a follow,
//!   docs/adr/0017-published-graph-versions.md); otherwise it is revalidated with a conditional
//!   request (a 304 costs no list transfer). Either way a follow or unfollow that returned 204
//!   is in the very next feed read. When the users service is unreachable, the cached list is
//!   served and the response says so. Each process also holds the lists it read, checked the
//!   same way (docs/adr/0019-followees-in-process.md): a feed read then fetches only the version.
//! - Author summaries are cached for a short TTL: a renamed user may show the old name for that
//!   long, which touches neither guarantee. In front of Redis, each process keeps the ones it
//!   read for a tenth of that TTL (docs/adr/0018-authors-in-process.md): the authors of busy
//!   feeds are the same few hundred accounts read after read.
//!
//! Redis failures degrade to misses; they never fail a request on their own.

use crate::error::PostsError;
use common::graph_versions;
use common::metrics::Metrics;
use common::ratelimit::{Prefetch, Prefetched};
use common::redis::{deadpool_redis::redis, with_timeout};
use common::telemetry::CallContext;
use common::users_client::{Followees, UserSummary, UsersClient, UsersClientError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Followee ids, and whether they came from the cache because the users service did not answer.
#[derive(Debug)]
pub struct FolloweeSet {
    /// Sorted, so that the feed can search them (docs/adr/0028-heads-in-process.md).
    pub ids: Vec<Uuid>,
    pub stale: bool,
}

/// A followee list this process holds, not yet confirmed for the read at hand.
#[derive(Debug)]
pub struct HeldFollowees {
    etag: String,
    ids: Arc<[Uuid]>,
}

impl HeldFollowees {
    /// The ids, sorted.
    pub fn ids(&self) -> &[Uuid] {
        &self.ids
    }
}

/// Users as the posts service sees them.
#[derive(Clone)]
pub struct Directory {
    client: UsersClient,
    redis: common::redis::Pool,
    prefix: String,
    redis_timeout: Duration,
    author_ttl: Duration,
    followees_ttl: Duration,
    local: Arc<LocalAuthors>,
    local_followees: Arc<LocalFollowees>,
    metrics: Arc<Metrics>,
}

/// The most author summaries one process keeps (about 100 bytes each).
const LOCAL_AUTHORS_CAPACITY: usize = 50_000;

/// Author summaries held in this process, each until its deadline.
struct LocalAuthors {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (UserSummary, Instant)>>,
}

impl LocalAuthors {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Puts what it holds of `ids` into `found`; returns the ids it does not hold.
    fn lookup(&self, ids: &[Uuid], found: &mut HashMap<Uuid, UserSummary>) -> Vec<Uuid> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut missing = Vec::new();
        for id in ids {
            match entries.get(id) {
                Some((summary, until)) if *until > now => {
                    found.insert(*id, summary.clone());
                }
                _ => missing.push(*id),
            }
        }
        missing
    }

    /// Keeps `summaries` for the lifetime. When full, expired entries go first, and if that is
    /// not enough, all of them: the next reads refill it from Redis.
    fn keep<'a>(&self, summaries: impl IntoIterator<Item = &'a UserSummary>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let until = now + self.ttl;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for summary in summaries {
            if entries.len() >= LOCAL_AUTHORS_CAPACITY {
                entries.retain(|_, (_, deadline)| *deadline > now);
                if entries.len() >= LOCAL_AUTHORS_CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(summary.id, (summary.clone(), until));
        }
    }
}

/// The most followee ids one process keeps, over all readers (16 bytes each: 32 MB).
const LOCAL_FOLLOWEE_IDS_CAPACITY: usize = 2_000_000;

/// Followee lists held in this process, each with the ETag it was served at. They need no
/// lifetime: a read trusts one only when its ETag matches the version users published, exactly
/// as it trusts the copy in Redis (docs/adr/0019-followees-in-process.md).
#[derive(Default)]
struct LocalFollowees {
    inner: Mutex<FolloweeLists>,
}

#[derive(Default)]
struct FolloweeLists {
    by_reader: HashMap<Uuid, (String, Arc<[Uuid]>)>,
    /// How many ids `by_reader` holds in all.
    ids: usize,
}

impl LocalFollowees {
    fn get(&self, user: Uuid) -> Option<(String, Arc<[Uuid]>)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_reader.get(&user).cloned()
    }

    /// Keeps `user`'s list. When the ids would exceed the capacity, every list is dropped: the
    /// next reads refill them from Redis.
    fn keep(&self, user: Uuid, etag: &str, ids: &[Uuid]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, old)) = inner.by_reader.remove(&user) {
            inner.ids -= old.len();
        }
        if ids.len() > LOCAL_FOLLOWEE_IDS_CAPACITY {
            return;
        }
        if inner.ids + ids.len() > LOCAL_FOLLOWEE_IDS_CAPACITY {
            *inner = FolloweeLists::default();
        }
        inner.ids += ids.len();
        inner
            .by_reader
            .insert(user, (etag.to_owned(), Arc::from(ids)));
    }
}

/// Cached followee list: the ETag, a newline, then 16 bytes per id, in order.
fn encode_followees(etag: &str, ids: &[Uuid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(etag.len() + 1 + ids.len() * 16);
    out.extend_from_slice(etag.as_bytes());
    out.push(b'\n');
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

fn decode_followees(bytes: &[u8]) -> Option<(String, Vec<Uuid>)> {
    let split = bytes.iter().position(|b| *b == b'\n')?;
    let etag = std::str::from_utf8(&bytes[..split]).ok()?.to_owned();
    let rest = &bytes[split + 1..];
    if !rest.len().is_multiple_of(16) {
        return None;
    }
    let mut ids = rest
        .chunks_exact(16)
        .map(|c| Uuid::from_slice(c).ok())
        .collect::<Option<Vec<_>>>()?;
    // Lists cached before they were kept sorted.
    if !ids.is_sorted() {
        ids.sort_unstable();
    }
    Some((etag, ids))
}

impl Directory {
    /// A directory over `client`, caching in `redis` under `prefix`.
    pub fn new(
        client: UsersClient,
        redis: common::redis::Pool,
        prefix: String,
        redis_timeout: Duration,
        author_ttl: Duration,
        followees_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            redis,
            prefix,
            redis_timeout,
            author_ttl,
            followees_ttl,
            local: Arc::new(LocalAuthors::new(author_ttl / 10)),
            local_followees: Arc::default(),
            metrics,
        }
    }

    fn followees_key(&self, user: Uuid) -> String {
        format!("{}posts:followees:{user}", self.prefix)
    }

    fn author_key(&self, user: Uuid) -> String {
        format!("{}posts:author:{user}", self.prefix)
    }

    fn version_key(&self, user: Uuid) -> String {
        graph_versions::key(&self.prefix, user)
    }

    /// The values of `keys`, in order; all misses when Redis fails.
    async fn redis_mget(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let op = async {
            let mut conn = self.redis.get().await?;
            let values: Vec<Option<Vec<u8>>> =
                redis::cmd("MGET").arg(keys).query_async(&mut *conn).await?;
            anyhow::Ok(values)
        };
        match with_timeout(self.redis_timeout, op).await {
            Ok(values) if values.len() == keys.len() => values,
            Ok(_) => vec![None; keys.len()],
            Err(e) => {
                self.metrics.redis_errors.with_label_values(&["mget"]).inc();
                tracing::warn!(error = %e, "redis read failed; treating as misses");
                vec![None; keys.len()]
            }
        }
    }

    async fn redis_set(&self, pairs: Vec<(String, Vec<u8>)>, ttl: Duration) {
        if pairs.is_empty() {
            return;
        }
        let op = async {
            let mut conn = self.redis.get().await?;
            let mut pipe = redis::pipe();
            for (key, value) in &pairs {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value.as_slice())
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .ignore();
            }
            pipe.query_async::<()>(&mut *conn).await?;
            anyhow::Ok(())
        };
        if let Err(e) = with_timeout(self.redis_timeout, op).await {
            self.metrics.redis_errors.with_label_values(&["set"]).inc();
            tracing::warn!(error = %e, "redis write failed; the cache is only colder");
        }
    }

    /// What the rate-limit middleware reads for the routes: the feed's published graph
    /// version, read with the request's count when that goes to Redis (ADR 0024), so that a
    /// feed whose followees this process holds makes one Redis round trip at most
    /// (docs/adr/0019-followees-in-process.md).
    pub fn prefetch(&self) -> Prefetch {
        let prefix = self.prefix.clone();
        Prefetch::new(move |path, user| match path {
            "/v1/feed" => vec![graph_versions::key(&prefix, user)],
            _ => Vec::new(),
        })
    }

    /// The followee list this process holds for `user`, if any: a feed may read its page from it
    /// while [`Self::confirm`] checks it (docs/adr/0031-feed-reads-while-confirming.md).
    pub fn held(&self, user: Uuid) -> Option<HeldFollowees> {
        let local = self.local_followees.get(user);
        self.metrics
            .observe_cache("followees_local", local.is_some());
        local.map(|(etag, ids)| HeldFollowees { etag, ids })
    }

    /// Whether `held` is current: its ETag is the version users published for `user`. The
    /// version comes from what the rate-limit middleware prefetched, else from Redis (one round
    /// trip). users raises it before it answers a change, so a follow answered 204 is seen here
    /// (docs/adr/0017-published-graph-versions.md).
    pub async fn confirm(
        &self,
        user: Uuid,
        held: &HeldFollowees,
        prefetched: Option<&Prefetched>,
    ) -> bool {
        let version_key = self.version_key(user);
        let prefetched = prefetched.and_then(|p| p.get(&version_key));
        self.metrics
            .observe_cache("followee_version_prefetched", prefetched.is_some());
        let published = match prefetched {
            Some(value) => value.map(<[u8]>::to_vec),
            None => self.redis_mget(&[version_key]).await.pop().flatten(),
        };
        self.metrics.observe_cache("followees", true);
        self.is_published(held, published.as_deref())
    }

    /// Whether `list` was read at `published`, the version users published (its raw value in
    /// Redis, `None` when missing or unreadable); counted as a hit or miss of that version.
    fn is_published(&self, list: &HeldFollowees, published: Option<&[u8]>) -> bool {
        let version = published.and_then(graph_versions::parse);
        let current = version.is_some_and(|v| list.etag == graph_versions::etag(v));
        self.metrics.observe_cache("followee_version", current);
        current
    }

    /// Every followee of a reader this process holds no list for, current as of this call
    /// when the users service answers: Redis's copy and the version users published, in one
    /// round trip, else users.
    pub async fn followees_not_held(
        &self,
        user: Uuid,
        ctx: &CallContext,
    ) -> Result<FolloweeSet, PostsError> {
        let mut values = self
            .redis_mget(&[self.followees_key(user), self.version_key(user)])
            .await
            .into_iter();
        let cached = values
            .next()
            .flatten()
            .as_deref()
            .and_then(decode_followees)
            .map(|(etag, ids)| HeldFollowees {
                etag,
                ids: Arc::from(ids),
            });
        let published = values.next().flatten();
        self.metrics.observe_cache("followees", cached.is_some());
        if let Some(copy) = &cached
            && self.is_published(copy, published.as_deref())
        {
            self.local_followees.keep(user, &copy.etag, &copy.ids);
            return Ok(FolloweeSet {
                ids: copy.ids.to_vec(),
                stale: false,
            });
        }
        self.revalidate(user, cached, ctx).await
    }

    /// Every followee of `user`, asked of users conditionally on `cached` (a copy that could not
    /// be confirmed) when there is one; that copy, marked stale, when users does not answer.
    pub async fn revalidate(
        &self,
        user: Uuid,
        cached: Option<HeldFollowees>,
        ctx: &CallContext,
    ) -> Result<FolloweeSet, PostsError> {
        let etag = cached.as_ref().map(|copy| copy.etag.as_str());
        match self.client.followee_ids(user, etag, ctx).await {
            Ok(Followees::Unchanged) => match cached {
                Some(copy) => {
                    self.local_followees.keep(user, &copy.etag, &copy.ids);
                    Ok(FolloweeSet {
                        ids: copy.ids.to_vec(),
                        stale: false,
                    })
                }
                None => Err(PostsError::Unexpected(anyhow::anyhow!(
                    "304 without a cached copy"
                ))),
            },
            Ok(Followees::Current { etag, mut ids }) => {
                ids.sort_unstable();
                self.redis_set(
                    vec![(self.followees_key(user), encode_followees(&etag, &ids))],
                    self.followees_ttl,
                )
                .await;
                self.local_followees.keep(user, &etag, &ids);
                Ok(FolloweeSet { ids, stale: false })
            }
            // The reader's account is gone: nobody to follow.
            Err(UsersClientError::NotFound) => Ok(FolloweeSet {
                ids: Vec::new(),
                stale: false,
            }),
            Err(UsersClientError::Unavailable(why)) => match cached {
                Some(copy) => {
                    tracing::warn!(%why, "users service unavailable; serving cached followees");
                    Ok(FolloweeSet {
                        ids: copy.ids.to_vec(),
                        stale: true,
                    })
                }
                None => Err(PostsError::UsersUnavailable(why)),
            },
            Err(other) => Err(other.into()),
        }
    }

    /// Summaries of the given authors that exist. Deleted accounts are absent, and their posts
    /// are not shown (docs/adr/0010-posts-of-departed-users.md).
    pub async fn authors(
        &self,
        ids: &[Uuid],
        ctx: &CallContext,
    ) -> Result<HashMap<Uuid, UserSummary>, PostsError> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut found = HashMap::with_capacity(unique.len());
        if unique.is_empty() {
            return Ok(found);
        }
        let not_local = self.local.lookup(&unique, &mut found);
        self.count("authors_local", found.len(), not_local.len());
        let mut missing = Vec::new();
        if !not_local.is_empty() {
            let keys: Vec<String> = not_local.iter().map(|id| self.author_key(*id)).collect();
            let cached = self.redis_mget(&keys).await;
            let mut from_redis = Vec::new();
            for (id, value) in not_local.iter().zip(cached) {
                match value.and_then(|v| serde_json::from_slice::<UserSummary>(&v).ok()) {
                    Some(summary) => from_redis.push(summary),
                    None => missing.push(*id),
                }
            }
            self.local.keep(&from_redis);
            found.extend(from_redis.into_iter().map(|s| (s.id, s)));
        }
        self.count("authors", found.len(), missing.len());
        if !missing.is_empty() {
            let fetched = self.client.profiles(&missing, ctx).await?;
            let pairs = fetched
                .iter()
                .filter_map(|s| {
                    serde_json::to_vec(s)
                        .ok()
                        .map(|json| (self.author_key(s.id), json))
                })
                .collect();
            self.redis_set(pairs, self.author_ttl).await;
            self.local.keep(&fetched);
            found.extend(fetched.into_iter().map(|s| (s.id, s)));
        }
        Ok(found)
    }

    fn count(&self, cache: &str, hits: usize, misses: usize) {
        for (result, n) in [("hit", hits), ("miss", misses)] {
            self.metrics
                .cache
                .with_label_values(&[cache, result])
                .inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str) -> UserSummary {
        UserSummary {
            id: Uuid::now_v7(),
            username: name.to_owned(),
            display_name: name.to_owned(),
        }
    }

    #[test]
    fn authors_held_in_process_expire_and_never_exceed_the_capacity() {
        let local = LocalAuthors::new(Duration::from_millis(50));
        let (a, b) = (summary("a"), summary("b"));
        local.keep([&a]);
        let mut found = HashMap::new();
        assert_eq!(local.lookup(&[a.id, b.id], &mut found), vec![b.id]);
        assert_eq!(found[&a.id].username, "a");

        std::thread::sleep(Duration::from_millis(60));
        let mut found = HashMap::new();
        assert_eq!(local.lookup(&[a.id], &mut found), vec![a.id], "expired");
        assert!(found.is_empty());

        let many: Vec<UserSummary> = (0..LOCAL_AUTHORS_CAPACITY + 10)
            .map(|i| summary(&format!("u{i}")))
            .collect();
        let local = LocalAuthors::new(Duration::from_secs(60));
        local.keep(&many);
        let held = local.entries.lock().unwrap().len();
        assert!(held <= LOCAL_AUTHORS_CAPACITY, "{held}");
        let mut found = HashMap::new();
        let last = many.last().unwrap().id;
        assert!(
            local.lookup(&[last], &mut found).is_empty(),
            "the newest is kept"
        );

        let off = LocalAuthors::new(Duration::ZERO);
        off.keep([&a]);
        assert_eq!(off.lookup(&[a.id], &mut HashMap::new()), vec![a.id]);
    }

    #[test]
    fn followee_lists_held_in_process_are_replaced_and_never_exceed_the_capacity() {
        let local = LocalFollowees::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(local.get(a).is_none());
        local.keep(a, "\"v1\"", &[b]);
        local.keep(a, "\"v2\"", &[]);
        let (etag, ids) = local.get(a).unwrap();
        assert_eq!((etag.as_str(), ids.len()), ("\"v2\"", 0));
        assert_eq!(
            local.inner.lock().unwrap().ids,
            0,
            "the old list is not counted"
        );

        let big = vec![Uuid::nil(); LOCAL_FOLLOWEE_IDS_CAPACITY / 2 + 1];
        local.keep(a, "\"v3\"", &big);
        local.keep(b, "\"v1\"", &big);
        assert!(local.get(a).is_none(), "dropped to make room");
        assert_eq!(local.get(b).unwrap().1.len(), big.len());
        assert_eq!(local.inner.lock().unwrap().ids, big.len());

        let huge = vec![Uuid::nil(); LOCAL_FOLLOWEE_IDS_CAPACITY + 1];
        local.keep(b, "\"v2\"", &huge);
        assert!(
            local.get(b).is_none(),
            "a list over the capacity is not held"
        );
        assert_eq!(local.inner.lock().unwrap().ids, 0);
    }

    #[test]
    fn cached_followee_lists_round_trip_and_garbage_is_a_miss() {
        let ids = vec![Uuid::now_v7(), Uuid::now_v7()];
        let bytes = encode_followees("\"v3\"", &ids);
        assert_eq!(decode_followees(&bytes), Some(("\"v3\"".to_owned(), ids)));
        assert_eq!(
            decode_followees(&encode_followees("\"v0\"", &[])),
            Some(("\"v0\"".to_owned(), vec![]))
        );
        assert_eq!(decode_followees(b"no newline"), None);
        assert_eq!(decode_followees(b"\"v1\"\nshort"), None);
        // A list cached in another order comes back sorted: the feed searches it.
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let decoded = decode_followees(&encode_followees("\"v4\"", &[b, a]));
        assert_eq!(decoded, Some(("\"v4\"".to_owned(), vec![a, b])));
    }
}
