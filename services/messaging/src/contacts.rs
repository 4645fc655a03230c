//! Contactability answers kept in the process, trusted while the contact versions the users
//! service publishes still match (docs/adr/0022-published-contact-versions.md).
//!
//! Only answers that let a sender message a recipient are kept, per (sender, recipient), with
//! the two accounts' contact versions as the users service read them with the answer. A send
//! reads the versions published now in its rate-limit round trip; when both equal the kept ones,
//! nothing that decides the answer (a suspension, a deletion, a block either way) has happened
//! since, and users is not asked. Users raises a version before it answers the change, so a
//! block that was answered 204 is seen by the very next send.

use common::graph_versions;
use common::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Most answers kept; when full, all are dropped and refilled by the sends that follow.
const CAPACITY: usize = 100_000;

/// The answers of one process.
pub struct ContactCache {
    prefix: String,
    allowed: Mutex<HashMap<(Uuid, Uuid), (i64, i64)>>,
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

    /// The Redis keys of the sender's and the recipient's published versions, in that order:
    /// what a send reads in its rate-limit round trip.
    pub fn keys(&self, sender: Uuid, recipient: Uuid) -> Vec<String> {
        vec![
            graph_versions::contact_key(&self.prefix, sender),
            graph_versions::contact_key(&self.prefix, recipient),
        ]
    }

    /// Whether an answer kept for the pair still lets `sender` message `recipient`, given the
    /// values read at [`keys`](Self::keys) (`None` when Redis could not be read).
    pub fn allows(
        &self,
        sender: Uuid,
        recipient: Uuid,
        published: Option<&[Option<Vec<u8>>]>,
    ) -> bool {
        let current = match published {
            Some([Some(s), Some(r)]) => graph_versions::parse(s).zip(graph_versions::parse(r)),
            _ => None,
        };
        let hit =
            current.is_some_and(|current| self.lock().get(&(sender, recipient)) == Some(&current));
        self.metrics.observe_cache("contactability", hit);
        hit
    }

    /// Keeps an answer that let `sender` message `recipient`, with the versions users read it
    /// at (`versions` of the answer; nothing is kept when either is missing).
    pub fn remember(&self, sender: Uuid, recipient: Uuid, versions: &HashMap<Uuid, i64>) {
        let (Some(s), Some(r)) = (versions.get(&sender), versions.get(&recipient)) else {
            return;
        };
        let mut allowed = self.lock();
        if allowed.len() >= CAPACITY {
            allowed.clear();
        }
        allowed.insert((sender, recipient), (*s, *r));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, Uuid), (i64, i64)>> {
        self.allowed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(s: &str, r: &str) -> Vec<Option<Vec<u8>>> {
        vec![Some(s.as_bytes().to_vec()), Some(r.as_bytes().to_vec())]
    }

    #[test]
    fn an_answer_holds_only_while_both_versions_are_the_ones_it_was_read_at() {
        let cache = ContactCache::new("t:".into(), Arc::new(Metrics::new().expect("metrics")));
        let (sender, recipient) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(!cache.allows(sender, recipient, Some(&published("3", "7"))));
        cache.remember(
            sender,
            recipient,
            &HashMap::from([(sender, 3), (recipient, 7)]),
        );
        assert!(cache.allows(sender, recipient, Some(&published("3", "7"))));
        // Either side changed, a key is gone, or Redis could not be read: ask users.
        assert!(!cache.allows(sender, recipient, Some(&published("4", "7"))));
        assert!(!cache.allows(sender, recipient, Some(&published("3", "8"))));
        assert!(!cache.allows(sender, recipient, Some(&[None, Some(b"7".to_vec())])));
        assert!(!cache.allows(sender, recipient, None));
        // The answer is for this direction only.
        assert!(!cache.allows(recipient, sender, Some(&published("7", "3"))));
    }

    #[test]
    fn an_answer_without_both_versions_is_not_kept() {
        let cache = ContactCache::new("t:".into(), Arc::new(Metrics::new().expect("metrics")));
        let (sender, recipient) = (Uuid::now_v7(), Uuid::now_v7());
        cache.remember(sender, recipient, &HashMap::from([(sender, 3)]));
        assert!(!cache.allows(sender, recipient, Some(&published("3", "0"))));
    }
}
