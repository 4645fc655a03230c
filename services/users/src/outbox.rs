//! The outbox relay: delivers the events in `users.outbox` to the services that must act on
//! them, at least once, whatever state those services are in.
//!
//! An event is written in the same transaction as the change that causes it (an account
//! deletion), so it exists if and only if the change committed. The relay claims due events
//! with a lease (a relay that dies mid-delivery leaves them due again when the lease runs out),
//! calls the target's internal endpoint with a service token, and marks the event delivered on
//! a 2xx. A failure is retried with exponential backoff up to five minutes; the handlers on the
//! other side are idempotent, so a delivery repeated after a lost answer does no harm.
//! See docs/adr/0013-account-deletion-outbox.md.

use crate::startup::AppState;
use crate::store::outbox::{self, Claimed};
use actix_web::web;
use chrono::Utc;
use common::retry::backoff;
use prometheus::{IntCounterVec, IntGauge, Opts};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Events claimed per round.
const BATCH: i64 = 20;
/// How long a claimed event is left to its relay before another may retry it.
const LEASE: Duration = Duration::from_secs(30);
/// Longest wait between two attempts at one event.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Bound on one delivery call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where events go and how often the relay looks for them.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Base URL of each target service (`POSTS_URL`, `MESSAGING_URL`).
    pub targets: BTreeMap<String, String>,
    /// `OUTBOX_POLL_MS` (default 1000): how often due events (retries) are looked for; new
    /// events are sent at once.
    pub poll: Duration,
    /// `OUTBOX_RETRY_BASE_MS` (default 1000): the first retry waits this long, each later one
    /// twice as long as the one before, up to five minutes.
    pub retry_base: Duration,
}

/// The relay of one instance. Several instances may run at once.
pub struct Relay {
    state: web::Data<AppState>,
    settings: OutboxSettings,
    client: reqwest::Client,
    wake: Arc<Notify>,
    deliveries: IntCounterVec,
    pending: IntGauge,
}

impl Relay {
    /// A relay delivering from `state.db`, woken by `state.outbox_wake`.
    pub fn new(
        state: web::Data<AppState>,
        settings: OutboxSettings,
        metrics: &common::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "outbox_deliveries_total",
                "Outbox delivery attempts by target and result",
            ),
            &["target", "result"],
        )?;
        let pending = IntGauge::new("outbox_pending_events", "Outbox events not yet delivered")?;
        metrics.register(Box::new(deliveries.clone()))?;
        metrics.register(Box::new(pending.clone()))?;
        let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?;
        Ok(Self {
            wake: state.outbox_wake.clone(),
            state,
            settings,
            client,
            deliveries,
            pending,
        })
    }

    /// Runs until the process ends.
    pub fn spawn(self) {
        tokio::spawn(async move {
            loop {
                let full = match self.round().await {
                    Ok(claimed) => claimed == BATCH as usize,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox round failed");
                        false
                    }
                };
                if !full {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll) => {}
                    }
                }
            }
        });
    }

    /// Claims due events and tries each once; returns how many were claimed.
    async fn round(&self) -> anyhow::Result<usize> {
        let db = &self.state.db;
        let claimed = outbox::claim_due(db, BATCH, LEASE).await?;
        for event in &claimed {
            match self.deliver(event).await {
                Ok(()) => {
                    outbox::delivered(db, event.id).await?;
                    self.deliveries
                        .with_label_values(&[&event.target, "delivered"])
                        .inc();
                    tracing::info!(id = event.id, target = %event.target, event = %event.event, "outbox event delivered");
                }
                Err(e) => {
                    let retry_at =
                        Utc::now() + backoff(self.settings.retry_base, event.attempts, MAX_BACKOFF);
                    outbox::failed(db, event.id, &format!("{e:#}"), retry_at).await?;
                    self.deliveries
                        .with_label_values(&[&event.target, "failed"])
                        .inc();
                    tracing::warn!(id = event.id, target = %event.target, attempts = event.attempts, error = %format!("{e:#}"), "outbox delivery failed; will retry");
                }
            }
        }
        self.pending.set(outbox::pending(db).await?);
        Ok(claimed.len())
    }

    async fn deliver(&self, event: &Claimed) -> anyhow::Result<()> {
        let base = self
            .settings
            .targets
            .get(&event.target)
            .ok_or_else(|| anyhow::anyhow!("no URL configured for {}", event.target))?;
        let path = match event.event.as_str() {
            "account_deleted" => format!("/internal/v1/accounts/{}/deletion", event.subject_id),
            other => anyhow::bail!("unknown outbox event {other}"),
        };
        let token = self.state.signer.service_token("users")?;
        let response = self
            .client
            .post(format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(token.token)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{} answered {status}", event.target);
        Ok(())
    }
}
