//! The newest author heads of the service, held in each posts process, so that a first feed page
//! sends PostgreSQL only the followees that can be on it (docs/adr/0028-heads-in-process.md).
//!
//! A process holds the heads (`posts.author_heads`) of the `capacity` authors who posted last,
//! and an *edge*: every author it does not hold has its head at or before the edge. For a page
//! that starts above every followee's head (a first page), the `limit`-th latest head among the
//! followees is a floor: if it is above the edge, no followee the process does not hold can
//! have a post on the page, and only the held followees whose head reaches the floor need to be
//! read ([`crate::store::feed::above_floor`]). A head may be later than its author's newest
//! surviving post (a deletion); then fewer than `limit` posts reach the floor, the statement
//! says so, and the statements that look heads up in PostgreSQL answer instead.
//!
//! Heads only move forward. After its commit, every post is published on the Redis channel
//! `{prefix}posts:heads`, and every process, the writer's first, moves the author's head to it.
//! A process holds nothing while it is not subscribed. Once subscribed it loads the newest
//! heads from PostgreSQL, and it loads them again every `reload` to pick up what a failed
//! publish left out. Since heads only move forward, a load and the messages heard around it
//! merge by taking the later of the two, in whatever order they arrive.

use crate::store::feed::Plan;
use crate::store::posts::Position;
use crate::subscription::{self, Ready};
use chrono::{DateTime, Utc};
use common::metrics::Metrics;
use common::redis::{SUBSCRIPTION_HEARTBEAT, publish, subscribe};
use futures_util::StreamExt;
use sqlx::PgPool;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use uuid::Uuid;

/// How soon a load that failed is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// An author's head as this process knows it: never earlier than the one in PostgreSQL, once
/// the post that moved it was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub last_post_at: DateTime<Utc>,
    /// `None`: no root post. A reply heard from an author not held stands in with its own time,
    /// which is never earlier than the author's newest root post.
    pub last_root_post_at: Option<DateTime<Utc>>,
}

/// A post, as published on the channel: whose, when, and whether it was a root post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub author: Uuid,
    pub at: DateTime<Utc>,
    pub root: bool,
}

impl Posted {
    /// `<author> <microseconds since the epoch> <r|p>` (root or reply).
    fn encode(&self) -> String {
        let kind = if self.root { 'r' } else { 'p' };
        format!("{} {} {kind}", self.author, self.at.timestamp_micros())
    }

    fn decode(message: &str) -> Option<Self> {
        let mut parts = message.split_ascii_whitespace();
        let author = Uuid::parse_str(parts.next()?).ok()?;
        let at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let root = match parts.next()? {
            "r" => true,
            "p" => false,
            _ => return None,
        };
        parts.next().is_none().then_some(Self { author, at, root })
    }
}

#[derive(Default)]
struct Inner {
    /// Subscribed, and loaded at least once since: only then is what is held complete.
    usable: bool,
    /// The heads held, oldest first: `(last_post_at, author)` to `last_root_post_at`. A page is
    /// planned by walking it from the newest end, which reads memory in order.
    order: BTreeMap<(DateTime<Utc>, Uuid), Option<DateTime<Utc>>>,
    /// Each held author's `last_post_at`: where it is in `order`.
    at: HashMap<Uuid, DateTime<Utc>>,
    /// Every author not held has its head at or before this; `None` while every author is held.
    edge: Option<DateTime<Utc>>,
}

impl Inner {
    /// Moves `author`'s head to the later of what is held and `head`. A head that does not
    /// move costs two lookups: a reload finds most of them where they were.
    fn merge(&mut self, author: Uuid, head: Head) {
        let (last_post_at, last_root_post_at) = match self.at.get(&author) {
            Some(&held) => {
                let key = (held, author);
                let root = self.order.get(&key).copied().flatten();
                if held >= head.last_post_at && root >= head.last_root_post_at {
                    return;
                }
                self.order.remove(&key);
                (
                    held.max(head.last_post_at),
                    root.max(head.last_root_post_at),
                )
            }
            None => (head.last_post_at, head.last_root_post_at),
        };
        self.at.insert(author, last_post_at);
        self.order.insert((last_post_at, author), last_root_post_at);
    }

    /// Keeps the newest `capacity` heads once twice that many are held; the edge rises to the
    /// latest head let go.
    fn trim(&mut self, capacity: usize) {
        if self.at.len() <= capacity.saturating_mul(2) {
            return;
        }
        while self.at.len() > capacity {
            let Some(((last_post_at, author), _)) = self.order.pop_first() else {
                break;
            };
            self.at.remove(&author);
            self.edge = Some(self.edge.map_or(last_post_at, |e| e.max(last_post_at)));
        }
    }
}

/// The heads this process holds, and the subscription that keeps them current.
pub struct RecentHeads {
    capacity: usize,
    reload: Duration,
    channel: String,
    redis: common::redis::Pool,
    redis_timeout: Duration,
    metrics: Arc<Metrics>,
    inner: RwLock<Inner>,
}

impl RecentHeads {
    /// Holds the newest `capacity` heads (zero holds none), loaded again every `reload`; posts
    /// published on `{prefix}posts:heads`.
    pub fn new(
        capacity: usize,
        reload: Duration,
        prefix: &str,
        redis: common::redis::Pool,
        redis_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            capacity,
            // An interval cannot be zero.
            reload: reload.max(Duration::from_secs(1)),
            channel: format!("{prefix}posts:heads"),
            redis,
            redis_timeout,
            metrics,
            inner: RwLock::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which of `followees` and `always` can have a post among the newest `limit` strictly
    /// before `before`, and the floor none of the others reaches; `always` is read whatever its
    /// head. `None` when the heads held cannot tell: not usable yet, a followee's head at or
    /// after `before` (its newest post before it is unknown), fewer than `limit` of them held,
    /// or a floor not above the edge. `followees` sorted costs no copy.
    pub fn plan(
        &self,
        followees: &[Uuid],
        always: Uuid,
        before: Position,
        exclude_replies: bool,
        limit: usize,
    ) -> Option<Plan> {
        let plan = self.plan_from_held(followees, always, before, exclude_replies, limit);
        self.metrics.observe_cache("feed_heads", plan.is_some());
        plan
    }

    fn plan_from_held(
        &self,
        followees: &[Uuid],
        always: Uuid,
        before: Position,
        exclude_replies: bool,
        limit: usize,
    ) -> Option<Plan> {
        if limit == 0 {
            return None;
        }
        let sorted;
        let followees = if followees.is_sorted() {
            followees
        } else {
            sorted = {
                let mut copy = followees.to_vec();
                copy.sort_unstable();
                copy
            };
            &sorted
        };
        let inner = self.read();
        if !inner.usable {
            return None;
        }
        // Walk the heads from the newest, keeping the followees' bounds and the `limit` latest
        // of them, until no head left can reach the `limit`-th: a root head is never later than
        // the head, so the walk's order bounds both.
        let mut found: Vec<(DateTime<Utc>, Uuid)> = Vec::with_capacity(limit * 2);
        let mut latest: BinaryHeap<Reverse<DateTime<Utc>>> = BinaryHeap::with_capacity(limit + 1);
        let mut floor = None;
        for (&(last_post_at, author), &root) in inner.order.iter().rev() {
            if floor.is_some_and(|floor| last_post_at < floor) {
                break;
            }
            if author != always && followees.binary_search(&author).is_err() {
                continue;
            }
            let Some(bound) = (if exclude_replies {
                root
            } else {
                Some(last_post_at)
            }) else {
                continue;
            };
            // Its newest post before the page's start is unknown.
            if bound >= before.0 {
                return None;
            }
            found.push((bound, author));
            latest.push(Reverse(bound));
            if latest.len() > limit {
                latest.pop();
            }
            if latest.len() == limit {
                floor = latest.peek().map(|Reverse(bound)| *bound);
            }
        }
        let floor = floor?;
        if inner.edge.is_some_and(|edge| floor <= edge) {
            return None;
        }
        drop(inner);
        let mut chosen: Vec<Uuid> = found
            .iter()
            .filter(|(bound, _)| *bound >= floor)
            .map(|(_, author)| *author)
            .collect();
        chosen.push(always);
        chosen.sort_unstable();
        chosen.dedup();
        Some(Plan {
            authors: chosen,
            floor,
        })
    }

    /// Moves the author's head to a post this process committed, and tells every other process
    /// in a task of its own: call it after the commit; the answer need not wait for Redis, as
    /// pub/sub reaches the others after the author's answer either way (docs/adr/0028,
    /// amendment of session 22). A failed publish is logged and counted; the others catch up at
    /// their next load. A process that holds no heads still publishes: the others plan from
    /// what they hear, whatever this one's setting. The task's handle says when the others
    /// were told (or the publish failed).
    pub fn publish_detached(self: &Arc<Self>, posted: Posted) -> tokio::task::JoinHandle<()> {
        if self.capacity > 0 {
            self.heard(posted);
        }
        let heads = Arc::clone(self);
        tokio::spawn(async move { heads.tell_others(posted).await })
    }

    async fn tell_others(&self, posted: Posted) {
        if let Err(e) = publish(
            &self.redis,
            self.redis_timeout,
            &self.channel,
            &posted.encode(),
        )
        .await
        {
            self.metrics
                .redis_errors
                .with_label_values(&["post_heads"])
                .inc();
            tracing::warn!(error = %e, "publishing a post's head failed; other processes leave it out of first feed pages until their next load");
        }
    }

    fn heard(&self, posted: Posted) {
        let mut inner = self.write();
        // A reply moves only the head; from an author not held, it stands in for the root head
        // too, which it is never earlier than.
        let root = (posted.root || !inner.at.contains_key(&posted.author)).then_some(posted.at);
        inner.merge(
            posted.author,
            Head {
                last_post_at: posted.at,
                last_root_post_at: root,
            },
        );
        inner.trim(self.capacity);
    }

    /// Merges heads read from PostgreSQL, newest first, at most `capacity` of them: fewer
    /// means every author's head was read.
    fn loaded(&self, newest: Vec<(Uuid, Head)>) {
        let mut inner = self.write();
        inner.edge = (newest.len() >= self.capacity)
            .then(|| newest.last().map(|(_, head)| head.last_post_at))
            .flatten();
        for (author, head) in newest {
            inner.merge(author, head);
        }
        inner.trim(self.capacity);
        inner.usable = true;
    }

    fn set_unusable(&self) {
        let mut inner = self.write();
        *inner = Inner::default();
    }

    /// Loads the newest heads from PostgreSQL and merges them with what is held. The
    /// subscription does this once subscribed and every `reload` after; a test may call it to
    /// hold heads without one.
    pub async fn load(&self, db: &PgPool) -> anyhow::Result<()> {
        let newest = crate::store::feed::newest_heads(db, self.capacity as i64).await?;
        self.loaded(newest);
        Ok(())
    }

    /// Subscribes for as long as the process runs, reconnecting with backoff, loading the heads
    /// once subscribed and every `reload` after; nothing is held while it is not subscribed.
    /// Returns once the first attempt has loaded or failed, or after `wait`. Does nothing when
    /// no heads are held at all.
    pub async fn start(self: &Arc<Self>, redis_url: String, db: PgPool, wait: Duration) {
        if self.capacity == 0 {
            return;
        }
        let (heads, lost) = (Arc::clone(self), Arc::clone(self));
        subscription::keep(
            "post heads",
            "every feed page looks its heads up in PostgreSQL",
            wait,
            move |ready| {
                let (heads, redis_url, db) = (Arc::clone(&heads), redis_url.clone(), db.clone());
                async move { heads.subscribe_once(&redis_url, &db, &ready).await }
            },
            move || lost.set_unusable(),
        )
        .await;
    }

    /// Subscribes, loads, and applies what is heard (loading again every `reload`) until the
    /// subscription ends (`Ok`), or fails to subscribe.
    async fn subscribe_once(
        &self,
        redis_url: &str,
        db: &PgPool,
        ready: &Ready,
    ) -> anyhow::Result<()> {
        let mut messages = subscribe(redis_url, &self.channel, SUBSCRIPTION_HEARTBEAT).await?;
        tracing::info!(channel = %self.channel, "subscribed to post heads");
        // A load after the subscription: every post committed before it is in the load, every
        // one after is heard.
        let mut reload = tokio::time::interval(self.reload);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Ok(()) };
                    let posted = message
                        .get_payload::<String>()
                        .ok()
                        .as_deref()
                        .and_then(Posted::decode);
                    match posted {
                        Some(posted) => self.heard(posted),
                        // A post that may have moved a head went unread: load again now.
                        None => {
                            tracing::warn!("unreadable post head; loading the heads again");
                            reload.reset_immediately();
                        }
                    }
                }
                _ = reload.tick() => {
                    match self.load(db).await {
                        Ok(()) => ready.ready(),
                        // What is held stays usable if it was: it misses at most what a failed
                        // publish left out. The next attempt comes sooner than a reload.
                        Err(e) => {
                            tracing::warn!(error = %e, "loading the newest heads failed");
                            reload.reset_after(LOAD_RETRY.min(self.reload));
                        }
                    }
                }
            }
        }
    }
}

/// The rules of planning and merging; the statements and what crosses processes are tested
/// against PostgreSQL and through the API.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn heads(capacity: usize) -> Arc<RecentHeads> {
        Arc::new(RecentHeads::new(
            capacity,
            Duration::from_secs(30),
            "t:",
            test_support::redis::unreachable_pool(),
            Duration::from_millis(50),
            Arc::new(Metrics::new().unwrap()),
        ))
    }

    fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minute)
    }

    fn head(minute: i64) -> Head {
        Head {
            last_post_at: t(minute),
            last_root_post_at: Some(t(minute)),
        }
    }

    const TOP: Position = (DateTime::<Utc>::MAX_UTC, Uuid::max());

    #[test]
    fn nothing_is_planned_before_the_first_load() {
        let heads = heads(10);
        let a = Uuid::now_v7();
        heads.heard(Posted {
            author: a,
            at: t(1),
            root: true,
        });
        assert_eq!(heads.plan(&[a], a, TOP, false, 1), None);
        heads.loaded(vec![]);
        assert!(heads.plan(&[a], a, TOP, false, 1).is_some());
        heads.set_unusable();
        assert_eq!(heads.plan(&[a], a, TOP, false, 1), None);
    }

    #[test]
    fn the_floor_is_the_limit_th_head_and_only_authors_reaching_it_are_read() {
        let heads = heads(100);
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
        let reader = Uuid::now_v7();
        heads.loaded(
            ids.iter()
                .zip([50, 40, 40, 30, 20, 10])
                .map(|(id, minute)| (*id, head(minute)))
                .collect(),
        );
        let plan = heads.plan(&ids, reader, TOP, false, 2).unwrap();
        assert_eq!(plan.floor, t(40));
        // Both authors at the floor are read, and the reader always is.
        let mut expected = vec![ids[0], ids[1], ids[2], reader];
        expected.sort_unstable();
        assert_eq!(plan.authors, expected);
        // Not enough followees held for the limit: the heads cannot tell.
        assert_eq!(heads.plan(&ids[..2], reader, TOP, false, 3), None);
    }

    #[test]
    fn a_page_below_a_followees_head_is_left_to_postgresql() {
        let heads = heads(100);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        heads.loaded(vec![(a, head(50)), (b, head(10))]);
        assert_eq!(heads.plan(&[a, b], a, (t(50), Uuid::nil()), false, 1), None);
        let plan = heads.plan(&[a, b], a, (t(51), Uuid::nil()), false, 1);
        assert_eq!(plan.map(|p| p.floor), Some(t(50)));
    }

    #[test]
    fn a_floor_at_or_below_the_edge_is_not_trusted() {
        let heads = heads(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        // A full load: authors not loaded have heads at or before the last one loaded.
        heads.loaded(vec![(a, head(50)), (b, head(30))]);
        assert_eq!(heads.plan(&[a, b, c], a, TOP, false, 2), None);
        assert_eq!(
            heads.plan(&[a, b, c], a, TOP, false, 1).map(|p| p.floor),
            Some(t(50))
        );
    }

    #[test]
    fn replies_move_only_the_head_and_excluding_them_uses_the_root_head() {
        let heads = heads(100);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        heads.loaded(vec![
            (a, head(20)),
            (
                b,
                Head {
                    last_post_at: t(10),
                    last_root_post_at: None,
                },
            ),
        ]);
        heads.heard(Posted {
            author: a,
            at: t(60),
            root: false,
        });
        heads.heard(Posted {
            author: b,
            at: t(5),
            root: true,
        });
        let plan = |exclude| heads.plan(&[a, b], a, TOP, exclude, 2).map(|p| p.floor);
        assert_eq!(plan(false), Some(t(10)));
        assert_eq!(plan(true), Some(t(5)));
        // A reply by an author not held stands in for the root head too: never too early.
        let c = Uuid::now_v7();
        heads.heard(Posted {
            author: c,
            at: t(70),
            root: false,
        });
        assert_eq!(
            heads.plan(&[c], c, TOP, true, 1).map(|p| p.floor),
            Some(t(70))
        );
    }

    #[test]
    fn a_load_never_moves_a_head_back_and_letting_heads_go_raises_the_edge() {
        let heads = heads(2);
        let (a, b, c, d, e) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        heads.loaded(vec![(a, head(50)), (b, head(40))]);
        heads.heard(Posted {
            author: a,
            at: t(90),
            root: true,
        });
        // A load that read `a` before its post was committed.
        heads.loaded(vec![(a, head(50)), (b, head(40))]);
        assert_eq!(
            heads.plan(&[a], a, TOP, false, 1).map(|p| p.floor),
            Some(t(90))
        );
        // Three newcomers make five heads held, over twice the capacity: the newest two stay,
        // and the edge rises to the latest let go (`e`, minute 91).
        for (author, minute) in [(c, 100), (d, 95), (e, 91)] {
            heads.heard(Posted {
                author,
                at: t(minute),
                root: true,
            });
        }
        assert_eq!(heads.read().at.len(), 2);
        assert_eq!(heads.read().order.len(), 2);
        assert_eq!(heads.read().edge, Some(t(91)));
        assert_eq!(
            heads.plan(&[c, d], c, TOP, false, 2).map(|p| p.floor),
            Some(t(95))
        );
        assert_eq!(heads.plan(&[a, c], c, TOP, false, 2), None);
    }

    #[test]
    fn messages_round_trip_and_anything_else_is_refused() {
        let posted = Posted {
            author: Uuid::now_v7(),
            at: Utc::now(),
            root: false,
        };
        let decoded = Posted::decode(&posted.encode()).unwrap();
        assert_eq!(decoded.author, posted.author);
        assert_eq!(decoded.at.timestamp_micros(), posted.at.timestamp_micros());
        assert!(!decoded.root);
        for bad in [
            "",
            "x 1 r",
            &format!("{} 1 q", posted.author),
            &format!("{} 1 r extra", posted.author),
        ] {
            assert_eq!(Posted::decode(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_process_that_holds_no_heads_still_publishes_its_posts() {
        let heads = heads(0);
        let failed = || {
            heads
                .metrics
                .redis_errors
                .with_label_values(&["post_heads"])
                .get()
        };
        assert_eq!(failed(), 0);
        heads
            .publish_detached(Posted {
                author: Uuid::now_v7(),
                at: t(5),
                root: true,
            })
            .await
            .unwrap();
        // Redis is unreachable here: the publish was tried.
        assert_eq!(failed(), 1);
        assert!(heads.read().at.is_empty());
    }

    #[tokio::test]
    async fn a_failed_publish_still_moves_the_head_here() {
        let heads = heads(10);
        heads.loaded(vec![]);
        let a = Uuid::now_v7();
        // Moved before the publish is even tried, and whatever becomes of it.
        let publishing = heads.publish_detached(Posted {
            author: a,
            at: t(5),
            root: true,
        });
        assert_eq!(
            heads.plan(&[a], a, TOP, false, 1).map(|p| p.floor),
            Some(t(5))
        );
        publishing.await.unwrap();
        assert_eq!(
            heads.plan(&[a], a, TOP, false, 1).map(|p| p.floor),
            Some(t(5))
        );
    }
}
