//! Real-time delivery across replicas.
//!
//! Every replica publishes events to one Redis pub/sub channel and subscribes to it on a
//! dedicated connection (pub/sub cannot share the pool). Each event names its recipients; each
//! replica hands it to the sockets of those users it holds. Sockets have bounded queues: a
//! socket that falls behind is disconnected, never allowed to slow the others, and its client
//! catches up over REST (`after_seq`). Delivery is at most once; the database is the record.
//! A deleted account's sockets are closed on every replica the same way: the closing travels
//! through the channel as an envelope of its own ([`Hub::close_accounts`]).
//! See docs/adr/0011-real-time-delivery.md.

use anyhow::Context;
use common::metrics::Metrics;
use common::redis::{SUBSCRIPTION_HEARTBEAT, publish, subscribe};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// An event for some users, or the closing of some accounts' sockets, as it travels through
/// Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    recipients: Vec<Uuid>,
    #[serde(default)]
    event: serde_json::Value,
    /// Accounts whose sockets every replica closes. A closing names no recipients, so a replica
    /// that predates this field, reading it mid-deploy, delivers it to nobody.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    closed_accounts: Vec<Uuid>,
}

/// Why the hub let go of a socket: what the socket tells its client as it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its queue was full: the client reconnects and catches up with `after_seq`.
    SlowConsumer,
    /// The account was deleted: its token, valid until it expires, opens no socket again.
    AccountDeleted,
}

/// A socket's end of its queue.
pub struct Receiver {
    events: mpsc::Receiver<Arc<str>>,
    ending: Arc<OnceLock<Ending>>,
}

impl Receiver {
    /// The next event, or why the hub let go of this socket.
    pub async fn recv(&mut self) -> Result<Arc<str>, Ending> {
        match self.events.recv().await {
            Some(event) => Ok(event),
            // The hub sets the ending before it drops the sender; a full queue sets none.
            None => Err(self.ending.get().copied().unwrap_or(Ending::SlowConsumer)),
        }
    }

    /// An event already queued, if there is one.
    pub fn try_recv(&mut self) -> Option<Arc<str>> {
        self.events.try_recv().ok()
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
    ending: Arc<OnceLock<Ending>>,
}

/// The sockets this replica holds, and the way to every other replica.
pub struct Hub {
    sockets: Mutex<HashMap<Uuid, Vec<Subscriber>>>,
    next_id: AtomicU64,
    redis: common::redis::Pool,
    redis_timeout: Duration,
    channel: String,
    queue: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub publishing on `{prefix}messaging:events`.
    pub fn new(
        redis: common::redis::Pool,
        prefix: &str,
        redis_timeout: Duration,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sockets: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            redis,
            redis_timeout,
            channel: format!("{prefix}messaging:events"),
            queue,
            metrics,
        })
    }

    /// Registers a socket of `user`; returns its id and the receiving end of its queue.
    pub fn register(&self, user: Uuid) -> (u64, Receiver) {
        let (tx, events) = mpsc::channel(self.queue);
        let ending = Arc::new(OnceLock::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(user).or_default().push(Subscriber {
            id,
            tx,
            ending: Arc::clone(&ending),
        });
        self.metrics.ws_connections.inc();
        (id, Receiver { events, ending })
    }

    /// Forgets a socket.
    pub fn unregister(&self, user: Uuid, id: u64) {
        self.metrics.ws_connections.dec();
        let mut sockets = self.lock();
        if let Some(list) = sockets.get_mut(&user) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                sockets.remove(&user);
            }
        }
    }

    /// How many slow sockets were disconnected since start.
    pub fn dropped_slow_consumers(&self) -> u64 {
        self.metrics.ws_dropped_slow.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Subscriber>>> {
        self.sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands an event to this replica's sockets of `recipients`. A full queue disconnects that
    /// socket (its sender is dropped, which ends the socket's loop).
    fn deliver_locally(&self, recipients: &[Uuid], event: &Arc<str>) {
        let mut sockets = self.lock();
        for user in recipients {
            let Some(list) = sockets.get_mut(user) else {
                continue;
            };
            list.retain(|s| match s.tx.try_send(Arc::clone(event)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.ws_dropped_slow.inc();
                    tracing::warn!(user_id = %user, socket = s.id, "slow consumer disconnected");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        sockets.retain(|_, list| !list.is_empty());
    }

    /// Lets go of this replica's sockets of `accounts`, each told why.
    fn close_locally(&self, accounts: &[Uuid], ending: Ending) {
        let mut sockets = self.lock();
        for account in accounts {
            for socket in sockets.remove(account).unwrap_or_default() {
                // Set before the sender drops with `socket`, so the receiver finds it.
                let _ = socket.ending.set(ending);
                tracing::info!(user_id = %account, socket = socket.id, ?ending, "socket let go");
            }
        }
    }

    /// Closes the sockets of deleted `accounts` on every replica. This replica's close at once;
    /// the others', when the closing reaches them through Redis. An error means Redis did not
    /// take it: the caller must try again (the users service's outbox does), or the other
    /// replicas' sockets stay open until their tokens expire.
    pub async fn close_accounts(&self, accounts: Vec<Uuid>) -> anyhow::Result<()> {
        self.close_locally(&accounts, Ending::AccountDeleted);
        self.send(&Envelope {
            recipients: Vec::new(),
            event: serde_json::Value::Null,
            closed_accounts: accounts,
        })
        .await
    }

    /// Publishes `envelope` to every replica, this one included; a failure of Redis is counted.
    async fn send(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let payload = serde_json::to_string(envelope)?;
        publish(&self.redis, self.redis_timeout, &self.channel, &payload)
            .await
            .inspect_err(|_| {
                self.metrics
                    .redis_errors
                    .with_label_values(&["publish"])
                    .inc();
            })
    }

    /// Closes this replica's sockets of accounts recorded as deleted. A closing published while
    /// this replica was not subscribed never reaches it (pub/sub keeps nothing), so each
    /// subscription starts with this, once Redis has confirmed it: a deletion whose closing was
    /// published before that committed before this reads, and one published after reaches the
    /// subscription.
    async fn close_departed(&self, db: &PgPool) -> anyhow::Result<()> {
        let held: Vec<Uuid> = self.lock().keys().copied().collect();
        if held.is_empty() {
            return Ok(());
        }
        let departed = crate::store::accounts::departed_among(db, &held)
            .await
            .context("reading which accounts with sockets here were deleted")?;
        self.close_locally(&departed, Ending::AccountDeleted);
        Ok(())
    }

    /// Publishes an event to every replica. If Redis cannot take it, this replica's sockets
    /// still get it; clients elsewhere catch up over REST.
    pub async fn publish(&self, recipients: Vec<Uuid>, event: serde_json::Value) {
        if recipients.is_empty() {
            return;
        }
        let envelope = Envelope {
            recipients,
            event,
            closed_accounts: Vec::new(),
        };
        if let Err(e) = self.send(&envelope).await {
            tracing::warn!(error = %e, "publishing to Redis failed; delivering on this replica only");
            let event: Arc<str> = Arc::from(envelope.event.to_string());
            self.deliver_locally(&envelope.recipients, &event);
        }
    }

    /// [`publish`](Self::publish) in a task of its own, for a handler whose answer need not
    /// wait for Redis: its write has committed, the event is at most once either way, and a
    /// client that misses it catches up over REST. One event per call: two spawned publishes
    /// may reach Redis in either order, as two requests' publishes always could.
    pub fn publish_detached(self: &Arc<Self>, recipients: Vec<Uuid>, event: serde_json::Value) {
        let hub = Arc::clone(self);
        tokio::spawn(async move { hub.publish(recipients, event).await });
    }

    /// Subscribes to the channel for as long as the process runs, reconnecting with backoff.
    /// `db` is where deletions are recorded: each subscription starts by closing the sockets of
    /// accounts deleted while it was down ([`Hub::close_departed`]).
    pub fn spawn_subscriber(self: &Arc<Self>, redis_url: String, db: PgPool) {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match hub.subscribe_once(&redis_url, &db).await {
                    // It had subscribed: the next attempt starts from the shortest wait again.
                    Ok(()) => {
                        tracing::warn!("event subscription ended; reconnecting");
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::warn!(error = %e, "subscribing to events failed; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Subscribes and delivers events until the subscription ends (`Ok`), or fails to subscribe
    /// or to close the sockets of accounts deleted meanwhile.
    async fn subscribe_once(&self, redis_url: &str, db: &PgPool) -> anyhow::Result<()> {
        let mut messages = subscribe(redis_url, &self.channel, SUBSCRIPTION_HEARTBEAT).await?;
        tracing::info!(channel = %self.channel, "subscribed to events");
        self.close_departed(db).await?;
        while let Some(message) = messages.next().await {
            let payload: String = match message.get_payload() {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable event");
                    continue;
                }
            };
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(envelope) => {
                    self.close_locally(&envelope.closed_accounts, Ending::AccountDeleted);
                    if !envelope.recipients.is_empty() {
                        let event: Arc<str> = Arc::from(envelope.event.to_string());
                        self.deliver_locally(&envelope.recipients, &event);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "malformed event"),
            }
        }
        Ok(())
    }
}

/// Tests of the local fan-out; delivery across replicas is tested through the API.
#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue: usize) -> Arc<Hub> {
        let pool = test_support::redis::unreachable_pool();
        Hub::new(
            pool,
            "t:",
            Duration::from_millis(50),
            queue,
            Arc::new(Metrics::new().unwrap()),
        )
    }

    #[tokio::test]
    async fn every_socket_of_a_recipient_gets_the_event_and_others_do_not() {
        let hub = hub(4);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let (_, mut a1) = hub.register(alice);
        let (_, mut a2) = hub.register(alice);
        let (_, mut b) = hub.register(bob);
        hub.deliver_locally(&[alice], &Arc::from("hello"));
        assert_eq!(&*a1.recv().await.unwrap(), "hello");
        assert_eq!(&*a2.recv().await.unwrap(), "hello");
        assert!(b.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_socket_whose_queue_is_full_is_cut_off_without_affecting_the_others() {
        let hub = hub(2);
        let user = Uuid::now_v7();
        let (_, mut slow) = hub.register(user);
        let (_, mut fast) = hub.register(user);
        for i in 0..3 {
            hub.deliver_locally(&[user], &Arc::from(format!("e{i}").as_str()));
            assert_eq!(&*fast.recv().await.unwrap(), format!("e{i}"));
        }
        assert_eq!(hub.dropped_slow_consumers(), 1);
        assert_eq!(&*slow.recv().await.unwrap(), "e0");
        assert_eq!(&*slow.recv().await.unwrap(), "e1");
        assert_eq!(
            slow.recv().await.unwrap_err(),
            Ending::SlowConsumer,
            "its queue was closed"
        );
    }

    #[tokio::test]
    async fn with_redis_unreachable_events_still_reach_local_sockets() {
        let hub = hub(4);
        let user = Uuid::now_v7();
        let (_, mut rx) = hub.register(user);
        hub.publish(vec![user], serde_json::json!({"type": "x"}))
            .await;
        assert_eq!(&*rx.recv().await.unwrap(), r#"{"type":"x"}"#);
    }

    #[tokio::test]
    async fn closing_an_account_ends_its_sockets_with_the_reason_and_no_others() {
        let hub = hub(4);
        let (leaving, staying) = (Uuid::now_v7(), Uuid::now_v7());
        let (_, mut first) = hub.register(leaving);
        let (_, mut second) = hub.register(leaving);
        let (_, mut other) = hub.register(staying);
        hub.deliver_locally(&[leaving], &Arc::from("before"));
        // Redis is unreachable here: this replica's sockets close all the same, and the caller
        // hears that the other replicas were not told.
        let told = hub.close_accounts(vec![leaving]).await;
        assert!(told.is_err(), "an unreachable Redis is reported");
        assert_eq!(
            &*first.recv().await.unwrap(),
            "before",
            "what was queued is kept"
        );
        assert_eq!(first.recv().await.unwrap_err(), Ending::AccountDeleted);
        assert_eq!(&*second.recv().await.unwrap(), "before");
        assert_eq!(second.recv().await.unwrap_err(), Ending::AccountDeleted);
        hub.deliver_locally(&[staying], &Arc::from("after"));
        assert_eq!(&*other.recv().await.unwrap(), "after");
    }

    #[test]
    fn a_closing_names_no_recipients_so_older_replicas_deliver_it_to_nobody() {
        let account = Uuid::now_v7();
        let envelope = Envelope {
            recipients: Vec::new(),
            event: serde_json::Value::Null,
            closed_accounts: vec![account],
        };
        let wire: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&envelope).unwrap()).unwrap();
        assert_eq!(wire["recipients"], serde_json::json!([]));
        assert_eq!(wire["closed_accounts"], serde_json::json!([account]));
        // And an event from an older replica, without the field, still reads.
        let older: Envelope = serde_json::from_str(&format!(
            r#"{{"recipients":["{account}"],"event":{{"type":"x"}}}}"#
        ))
        .unwrap();
        assert!(older.closed_accounts.is_empty());
        assert_eq!(older.recipients, vec![account]);
    }
}
