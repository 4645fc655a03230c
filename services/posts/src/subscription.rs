//! A Redis subscription kept for as long as the process runs: what the rows kept for readers
//! without a token (docs/adr/0027) and the heads held for the feed (docs/adr/0028) both hear
//! other processes through.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// Handed to every attempt: the first one to call [`Ready::ready`] lets [`keep`] return, so
/// that a process starts serving with its subscription in place when Redis is there.
#[derive(Clone)]
pub struct Ready(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Ready {
    pub fn ready(&self) {
        let sender = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

/// Runs `attempt` for as long as the process runs, and `lost` after each attempt ends. An
/// attempt that ends `Ok` had subscribed and is tried again after 100 ms; one that fails is
/// tried again after a wait that doubles up to 5 s. `what` names the subscription in the logs,
/// with `meanwhile`, what the process does without it. Returns once the first attempt is ready
/// or has ended, or after `wait`.
pub async fn keep<A, F>(
    what: &'static str,
    meanwhile: &'static str,
    wait: Duration,
    mut attempt: A,
    lost: impl Fn() + Send + 'static,
) where
    A: FnMut(Ready) -> F + Send + 'static,
    F: Future<Output = anyhow::Result<()>> + Send,
{
    let (first, attempted) = oneshot::channel();
    let ready = Ready(Arc::new(Mutex::new(Some(first))));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match attempt(ready.clone()).await {
                Ok(()) => {
                    tracing::warn!(
                        subscription = what,
                        "subscription ended; {meanwhile} until it is back"
                    );
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(subscription = what, error = %e, "subscribing failed; {meanwhile} until it succeeds");
                }
            }
            lost();
            ready.ready();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    let _ = tokio::time::timeout(wait, attempted).await;
}
