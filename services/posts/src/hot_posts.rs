//! Posts as readers who are not signed in see them, kept in each process until any process
//! changes them (docs/adr/0027-posts-in-process.md).
//!
//! A single post is the page a shared link opens: many readers, most of them not signed in, and
//! for all of those the page is the same row. Each process keeps the rows it read for them.
//! Every change to a row (an edit, a like taken or given, a reply counted or uncounted, a
//! deletion, an account's departure) is published after its commit on one Redis channel, and
//! every process, the writer's first, drops the rows it hears about.
//!
//! Two rules keep a kept row from outliving a change: a process keeps nothing while it is not
//! subscribed (and drops everything when its subscription ends), and a read during which the
//! process heard of any change keeps nothing. A row kept was therefore read after every change
//! the process heard before keeping it, and every later change drops it. A change whose publish
//! failed is heard only by the process that made it: elsewhere its post may be served as it was
//! for up to `POST_CACHE_TTL_SECS`, the bound every row is kept for.

use crate::store::posts::PostRow;
use crate::subscription::{self, Ready};
use common::metrics::Metrics;
use common::redis::{SUBSCRIPTION_HEARTBEAT, publish, subscribe};
use futures_util::StreamExt;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most rows one process keeps (a post is at most 500 characters: a few hundred bytes each).
const CAPACITY: usize = 50_000;

/// A change to the rows of posts, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This post's row changed (its text or a count) or is gone.
    Post(Uuid),
    /// This post is gone, and its replies no longer name it (`reply_to` is set to NULL).
    Deleted(Uuid),
    /// Any row may have changed: an account's posts and likes were deleted.
    All,
}

impl Change {
    /// One message for `changes`: space-separated `<id>`, `-<id>` (deleted) or `*`.
    fn encode(changes: &[Change]) -> String {
        let tokens: Vec<String> = changes
            .iter()
            .map(|change| match change {
                Change::Post(id) => id.to_string(),
                Change::Deleted(id) => format!("-{id}"),
                Change::All => "*".to_owned(),
            })
            .collect();
        tokens.join(" ")
    }

    /// The changes a message names. A token that is not understood stands for everything: a
    /// publisher of a newer version must not leave rows here stale.
    fn decode(message: &str) -> Vec<Change> {
        message
            .split_ascii_whitespace()
            .map(|token| match token.strip_prefix('-') {
                Some(id) => Uuid::parse_str(id).map_or(Change::All, Change::Deleted),
                None => Uuid::parse_str(token).map_or(Change::All, Change::Post),
            })
            .collect()
    }
}

/// What a read that found nothing kept hands back with the row it then read from PostgreSQL:
/// which changes this process had heard of when the read began (`None`: it was not
/// subscribed).
#[derive(Debug)]
pub struct Ticket(Option<u64>);

/// The rows of this process, and the subscription that keeps them current.
pub struct HotPosts {
    ttl: Duration,
    channel: String,
    redis: common::redis::Pool,
    redis_timeout: Duration,
    metrics: Arc<Metrics>,
    /// `cache_requests_total{cache="posts_local"}`, resolved once: a hit is the whole read.
    hits: IntCounter,
    misses: IntCounter,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    subscribed: bool,
    /// Counts every event that may have made a row stale: each change heard, each subscription
    /// lost or made.
    heard: u64,
    rows: HashMap<Uuid, (PostRow, Instant)>,
}

impl HotPosts {
    /// Rows kept for `ttl` (zero keeps none), changes published on `{prefix}posts:changes`.
    pub fn new(
        ttl: Duration,
        prefix: &str,
        redis: common::redis::Pool,
        redis_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let counter = |result: &str| metrics.cache.with_label_values(&["posts_local", result]);
        Self {
            ttl,
            channel: format!("{prefix}posts:changes"),
            redis,
            redis_timeout,
            hits: counter("hit"),
            misses: counter("miss"),
            metrics,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept row of `id`, or the ticket to hand to [`Self::keep`] with the row read instead.
    pub fn lookup(&self, id: Uuid) -> Result<PostRow, Ticket> {
        if self.ttl.is_zero() {
            return Err(Ticket(None));
        }
        let found = {
            let inner = self.lock();
            match inner.rows.get(&id) {
                Some((row, until)) if *until > Instant::now() => Ok(row.clone()),
                _ => Err(Ticket(inner.subscribed.then_some(inner.heard))),
            }
        };
        if found.is_ok() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        found
    }

    /// Keeps `row`, read after [`Self::lookup`] gave `ticket`, unless the process heard of a
    /// change (or lost its subscription) since. When full, expired rows go first, and if that is
    /// not enough, all of them.
    pub fn keep(&self, ticket: Ticket, row: &PostRow) {
        let Ticket(Some(seen)) = ticket else {
            return;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        if !inner.subscribed || inner.heard != seen {
            return;
        }
        if inner.rows.len() >= CAPACITY {
            inner.rows.retain(|_, (_, until)| *until > now);
            if inner.rows.len() >= CAPACITY {
                inner.rows.clear();
            }
        }
        inner.rows.insert(row.id, (row.clone(), now + self.ttl));
    }

    fn forget(&self, changes: &[Change]) {
        let mut inner = self.lock();
        inner.heard += 1;
        for change in changes {
            match *change {
                Change::Post(id) => {
                    inner.rows.remove(&id);
                }
                Change::Deleted(id) => {
                    inner.rows.remove(&id);
                    inner.rows.retain(|_, (row, _)| row.reply_to != Some(id));
                }
                Change::All => inner.rows.clear(),
            }
        }
    }

    fn set_subscribed(&self, subscribed: bool) {
        let mut inner = self.lock();
        inner.heard += 1;
        inner.subscribed = subscribed;
        inner.rows.clear();
    }

    /// Tells every process, this one first, that `changes` were committed. Call it after the
    /// commit, before answering. A failed publish is logged and counted; the change stands.
    pub async fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.forget(changes);
        self.tell_others(changes).await;
    }

    /// [`publish`](Self::publish), answering before Redis has the message: this process
    /// forgets now, and the others hear in a task of its own.
    pub fn publish_detached(self: &Arc<Self>, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.forget(&changes);
        let hot = Arc::clone(self);
        tokio::spawn(async move { hot.tell_others(&changes).await });
    }

    async fn tell_others(&self, changes: &[Change]) {
        let payload = Change::encode(changes);
        if let Err(e) = publish(&self.redis, self.redis_timeout, &self.channel, &payload).await {
            self.metrics
                .redis_errors
                .with_label_values(&["post_changes"])
                .inc();
            tracing::warn!(error = %e, "publishing a post change failed; other processes may serve the post as it was until their copy expires");
        }
    }

    /// Subscribes for as long as the process runs, reconnecting with backoff; nothing is kept
    /// while it is not subscribed. Returns once the first attempt has subscribed or failed, or
    /// after `wait`, so that a process starts serving with its subscription made when Redis is
    /// there. Does nothing when rows are not kept at all.
    pub async fn start(self: &Arc<Self>, redis_url: String, wait: Duration) {
        if self.ttl.is_zero() {
            return;
        }
        let (hot, lost) = (Arc::clone(self), Arc::clone(self));
        subscription::keep(
            "post changes",
            "every post is read from PostgreSQL",
            wait,
            move |ready| {
                let (hot, redis_url) = (Arc::clone(&hot), redis_url.clone());
                async move { hot.subscribe_once(&redis_url, &ready).await }
            },
            move || lost.set_subscribed(false),
        )
        .await;
    }

    /// Subscribes and drops what each change names until the subscription ends (`Ok`), or fails
    /// to subscribe.
    async fn subscribe_once(&self, redis_url: &str, ready: &Ready) -> anyhow::Result<()> {
        let mut messages = subscribe(redis_url, &self.channel, SUBSCRIPTION_HEARTBEAT).await?;
        self.set_subscribed(true);
        ready.ready();
        tracing::info!(channel = %self.channel, "subscribed to post changes");
        while let Some(message) = messages.next().await {
            match message.get_payload::<String>() {
                Ok(payload) => self.forget(&Change::decode(&payload)),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable post change; dropping every row");
                    self.forget(&[Change::All]);
                }
            }
        }
        Ok(())
    }
}

/// The rules of keeping and forgetting; what crosses processes is tested through the API.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn hot(ttl: Duration) -> HotPosts {
        let pool = test_support::redis::unreachable_pool();
        HotPosts::new(
            ttl,
            "t:",
            pool,
            Duration::from_millis(50),
            Arc::new(Metrics::new().unwrap()),
        )
    }

    fn row(reply_to: Option<Uuid>) -> PostRow {
        PostRow {
            id: Uuid::now_v7(),
            author_id: Uuid::now_v7(),
            text: "hello".into(),
            reply_to,
            created_at: Utc::now(),
            edited_at: None,
            like_count: 0,
            reply_count: 0,
            liked_by_me: None,
        }
    }

    fn kept(hot: &HotPosts, post: &PostRow) -> bool {
        hot.lookup(post.id).is_ok()
    }

    /// Reads `post` as the handler does: lookup, then keep with the ticket.
    fn read(hot: &HotPosts, post: &PostRow) {
        if let Err(ticket) = hot.lookup(post.id) {
            hot.keep(ticket, post);
        }
    }

    #[test]
    fn nothing_is_kept_before_the_subscription_is_made() {
        let hot = hot(Duration::from_secs(60));
        let post = row(None);
        read(&hot, &post);
        assert!(!kept(&hot, &post));
        hot.set_subscribed(true);
        read(&hot, &post);
        assert!(kept(&hot, &post));
    }

    #[test]
    fn a_row_read_while_a_change_was_heard_is_not_kept() {
        let hot = hot(Duration::from_secs(60));
        hot.set_subscribed(true);
        let post = row(None);
        let ticket = hot.lookup(post.id).unwrap_err();
        // Another post changed while this one was being read: the read may predate a change to
        // this one too, so it is not kept.
        hot.forget(&[Change::Post(Uuid::now_v7())]);
        hot.keep(ticket, &post);
        assert!(!kept(&hot, &post));
    }

    #[test]
    fn a_read_that_spans_a_lost_and_remade_subscription_is_not_kept() {
        let hot = hot(Duration::from_secs(60));
        hot.set_subscribed(true);
        let post = row(None);
        let ticket = hot.lookup(post.id).unwrap_err();
        hot.set_subscribed(false);
        hot.set_subscribed(true);
        hot.keep(ticket, &post);
        assert!(!kept(&hot, &post));
    }

    #[test]
    fn losing_the_subscription_drops_every_row() {
        let hot = hot(Duration::from_secs(60));
        hot.set_subscribed(true);
        let post = row(None);
        read(&hot, &post);
        hot.set_subscribed(false);
        assert!(!kept(&hot, &post));
    }

    #[test]
    fn a_change_drops_its_post_and_a_deletion_also_the_replies_naming_it() {
        let hot = hot(Duration::from_secs(60));
        hot.set_subscribed(true);
        let (parent, other) = (row(None), row(None));
        let (reply, unrelated) = (row(Some(parent.id)), row(Some(other.id)));
        for post in [&parent, &other, &reply, &unrelated] {
            read(&hot, post);
        }
        hot.forget(&[Change::Post(other.id)]);
        assert!(!kept(&hot, &other));
        assert!(kept(&hot, &parent) && kept(&hot, &reply) && kept(&hot, &unrelated));
        hot.forget(&[Change::Deleted(parent.id)]);
        assert!(!kept(&hot, &parent) && !kept(&hot, &reply));
        assert!(kept(&hot, &unrelated));
        hot.forget(&[Change::All]);
        assert!(!kept(&hot, &unrelated));
    }

    #[test]
    fn rows_expire_and_a_zero_lifetime_keeps_none() {
        let hot = hot(Duration::from_millis(20));
        hot.set_subscribed(true);
        let post = row(None);
        read(&hot, &post);
        assert!(kept(&hot, &post));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!kept(&hot, &post));
        let never = self::hot(Duration::ZERO);
        never.set_subscribed(true);
        read(&never, &post);
        assert!(!kept(&never, &post));
    }

    #[test]
    fn messages_round_trip_and_what_is_not_understood_drops_everything() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let changes = [Change::Post(a), Change::Deleted(b), Change::All];
        assert_eq!(Change::decode(&Change::encode(&changes)), changes);
        assert_eq!(
            Change::decode(&format!("{a} something-new")),
            [Change::Post(a), Change::All]
        );
        assert_eq!(Change::decode("-nope"), [Change::All]);
    }

    #[tokio::test]
    async fn a_failed_publish_still_drops_the_row_here() {
        let hot = hot(Duration::from_secs(60));
        hot.set_subscribed(true);
        let post = row(None);
        read(&hot, &post);
        hot.publish(&[Change::Post(post.id)]).await;
        assert!(!kept(&hot, &post));
    }
}
