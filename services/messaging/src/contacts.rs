//! Contactability answers kept in the process, trusted while the contact versions the users
//! service publishes still match (docs/adr/0022-published-contact-versions.md).
//!
//! Only answers that let a sender send are kept: per (sender, recipient) in a direct
//! conversation, per sender alone in a group (where only the sender's suspension is asked), with
//! the contact versions of the accounts involved as the users service read them with the answer.
//! A send reads the versions published now in its rate-limit round trip; when they equal the
//! kept ones, nothing that decides the answer (a suspension, a deletion, a block either way) has
//! happened since, and users is not asked. Users raises a version before it answers the change,
//! so a block that was answered 204 is seen by the very next send.

use common::graph_versions;
use common::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Most answers kept; when full, all are dropped and refilled by the sends that follow.
const CAPACITY: usize = 100_000;

/// Who sends, and to whom in a direct conversation (`None` in a group).
type Pair = (Uuid, Option<Uuid>);

/// The answers of one process, each with the versions it was read at, the sender's first.
pub struct ContactCache {
    prefix: String,
    allowed: Mutex<HashMap<Pair, Vec<i64>>>,
    metrics: Arc<Metrics>,
}

impl ContactCache {
    /// An empty cache reading the versions under the Redis key prefix `prefix`.
    pub fn new(prefix: String, metrics: Arc<Metrics>) -> Self {
        Self {
            prefix,
            allowed: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The Redis keys of the published versions a send depends on, the sender's first: what
    /// it reads in its rate-limit round trip. None when no answer is kept for the pair: no
    /// version read could spare the send its question to users, so it reads none (a send to a
    /// conversation this process has not seen then makes no round trip to Redis at all).
    pub fn keys(&self, sender: Uuid, recipient: Option<Uuid>) -> Vec<String> {
        if !self.lock().contains_key(&(sender, recipient)) {
            return Vec::new();
        }
        std::iter::once(sender)
            .chain(recipient)
            .map(|id| graph_versions::contact_key(&self.prefix, id))
            .collect()
    }

    /// Whether an answer kept for the pair still lets `sender` send, given the values read at
    /// [`keys`](Self::keys) (`None` when Redis could not be read).
    pub fn allows(
        &self,
        sender: Uuid,
        recipient: Option<Uuid>,
        published: Option<&[Option<Vec<u8>>]>,
    ) -> bool {
        let current: Option<Vec<i64>> = published.and_then(|values| {
            values
                .iter()
                .map(|v| v.as_deref().and_then(graph_versions::parse))
                .collect()
        });
        let hit =
            current.is_some_and(|current| self.lock().get(&(sender, recipient)) == Some(&current));
        self.metrics.observe_cache("contactability", hit);
        hit
    }

    /// Counts a send that found no answer kept for its pair ([`keys`](Self::keys) was empty),
    /// as [`allows`](Self::allows) counts the ones it checks.
    pub fn observe_miss(&self) {
        self.metrics.observe_cache("contactability", false);
    }

    /// Keeps an answer that let `sender` send, with the versions users read it at (the
    /// answer's `versions`; nothing is kept when one is missing).
    pub fn remember(&self, sender: Uuid, recipient: Option<Uuid>, versions: &HashMap<Uuid, i64>) {
        let read_at: Option<Vec<i64>> = std::iter::once(sender)
            .chain(recipient)
            .map(|id| versions.get(&id).copied())
            .collect();
        let Some(read_at) = read_at else {
            return;
        };
        let mut allowed = self.lock();
        if allowed.len() >= CAPACITY {
            allowed.clear();
        }
        allowed.insert((sender, recipient), read_at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pair, Vec<i64>>> {
        self.allowed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(versions: &[&str]) -> Vec<Option<Vec<u8>>> {
        versions
            .iter()
            .map(|v| Some(v.as_bytes().to_vec()))
            .collect()
    }

    fn cache() -> ContactCache {
        ContactCache::new("t:".into(), Arc::new(Metrics::new().expect("metrics")))
    }

    #[test]
    fn an_answer_holds_only_while_both_versions_are_the_ones_it_was_read_at() {
        let cache = cache();
        let (sender, recipient) = (Uuid::now_v7(), Some(Uuid::now_v7()));
        let read_at = HashMap::from([(sender, 3), (recipient.expect("some"), 7)]);
        assert!(cache.keys(sender, recipient).is_empty());
        assert!(!cache.allows(sender, recipient, Some(&published(&["3", "7"]))));
        cache.remember(sender, recipient, &read_at);
        assert_eq!(cache.keys(sender, recipient).len(), 2);
        assert!(cache.allows(sender, recipient, Some(&published(&["3", "7"]))));
        // Either side changed, a key is gone, or Redis could not be read: ask users.
        assert!(!cache.allows(sender, recipient, Some(&published(&["4", "7"]))));
        assert!(!cache.allows(sender, recipient, Some(&published(&["3", "8"]))));
        assert!(!cache.allows(sender, recipient, Some(&[None, Some(b"7".to_vec())])));
        assert!(!cache.allows(sender, recipient, None));
        // The answer is for this direction only, and not for the sender's group sends.
        let back = recipient.expect("some");
        assert!(!cache.allows(back, Some(sender), Some(&published(&["7", "3"]))));
        assert!(!cache.allows(sender, None, Some(&published(&["3"]))));
    }

    #[test]
    fn a_group_send_depends_on_the_sender_alone() {
        let cache = cache();
        let sender = Uuid::now_v7();
        cache.remember(sender, None, &HashMap::from([(sender, 5)]));
        assert!(cache.allows(sender, None, Some(&published(&["5"]))));
        assert!(!cache.allows(sender, None, Some(&published(&["6"]))));
    }

    #[test]
    fn an_answer_without_every_version_is_not_kept() {
        let cache = cache();
        let (sender, recipient) = (Uuid::now_v7(), Uuid::now_v7());
        cache.remember(sender, Some(recipient), &HashMap::from([(sender, 3)]));
        assert!(!cache.allows(sender, Some(recipient), Some(&published(&["3", "0"]))));
    }
}
