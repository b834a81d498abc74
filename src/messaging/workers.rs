//! The outbox workers: claim due messages (now, or at `send_at`) and due checks, make
//! one attempt per claim through the [`Sender`](crate::sender::Sender), and record its
//! outcome before anything else happens: sent, known not sent (back to the queue with
//! backoff), the next channel, failed, or maybe sent (`checking`, see `confirm.rs`).
//! Because each attempt's outcome is committed before the next, a crash can leave at
//! most the one attempt in flight undecided; at start those become checks (see
//! [`Store::recover_interrupted`](crate::store::Store::recover_interrupted)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::MessagingService;
use crate::sender::SendError;
use crate::store::{Claimed, Outcome, StoreError};
use crate::telemetry;
use crate::types::{Channel, PhoneNumber};

/// Retries never wait longer than this, however many came before.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The workers look at the queue at least this often, whatever woke them last.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// A claimed send or check, run on one of the workers.
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Recording an outcome is retried this often (a busy or full store clears up), then
/// left to the next start's recovery.
const RECORD_TRIES: u32 = 10;

impl MessagingService {
    /// The workers: until `shutdown` turns true, claim due messages and checks and run
    /// them, at most `messaging.workers` at a time; then wait for those in flight.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let settle = self.config.retry_delay;
        match self
            .store
            .recover_interrupted(self.clock.now(), settle)
            .await
        {
            Ok(ids) if !ids.is_empty() => log::warn!(
                "{} message(s) were being sent when otpd stopped; asking the provider whether they arrived before sending any again: {ids:?}",
                ids.len()
            ),
            Ok(_) => {}
            Err(e) => log::error!("outbox recovery: {e}"),
        }
        let mut tasks = JoinSet::new();
        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            if tasks.len() >= self.config.workers {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let free = self.config.workers - tasks.len();
            match self.claim(free).await {
                Ok(claimed) => {
                    let full = claimed.len() == free;
                    for task in claimed {
                        tasks.spawn(task);
                    }
                    if full {
                        // More may be due: go round once a worker is free.
                        continue;
                    }
                }
                Err(e) => {
                    log::error!("outbox: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            // Nothing more is due now: sleep until the next scheduled message or check,
            // a new message, a finished task, or shutdown.
            let wait = match self.store.next_due().await {
                Ok(Some(due)) => due
                    .duration_since(self.clock.now())
                    .unwrap_or(Duration::ZERO)
                    .min(IDLE_POLL),
                Ok(None) => IDLE_POLL,
                Err(e) => {
                    log::error!("outbox: {e}");
                    IDLE_POLL
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Attempts already handed to the provider finish and are recorded; none start.
        while tasks.join_next().await.is_some() {}
    }

    /// Claims up to `free` due sends, then due checks with what is left.
    async fn claim(self: &Arc<Self>, free: usize) -> Result<Vec<Task>, StoreError> {
        let now = self.clock.now();
        let sends = self.store.claim_due(now, free as u32).await?;
        let checks = match free - sends.len() {
            0 => Vec::new(),
            left => {
                self.store
                    .claim_checks(now, left as u32, self.check_lease)
                    .await?
            }
        };
        let mut tasks: Vec<Task> = Vec::with_capacity(sends.len() + checks.len());
        for message in sends {
            tasks.push(Box::pin(self.clone().send_one(message)));
        }
        for check in checks {
            tasks.push(Box::pin(self.clone().check_one(check)));
        }
        Ok(tasks)
    }

    async fn send_one(self: Arc<Self>, message: Claimed) {
        let to = PhoneNumber::parse(&message.to);
        let channel = Channel::parse(&message.channel);
        let outcome = match (to, channel) {
            (Err(_), _) | (_, Err(_)) => Outcome::Failed {
                error_code: None,
                error_message: "stored number or channel no longer parses".into(),
            },
            (Ok(to), Ok(channel)) => {
                let sent = self
                    .sender
                    .send_once(&to, channel, &message.body, &message.media)
                    .await;
                self.outcome(&message, channel, sent)
            }
        };
        match &outcome {
            Outcome::Sent { .. } => {
                log::info!(message_id = message.id; "message {} sent", message.id)
            }
            Outcome::Failed { error_message, .. } => {
                log::warn!(message_id = message.id, error = error_message.as_str(); "message {} failed: {error_message}", message.id)
            }
            Outcome::Retry { reason, .. } => {
                log::warn!(message_id = message.id; "message {} not sent, will be retried: {reason}", message.id)
            }
            Outcome::Fallback { reason, next, .. } => {
                log::warn!(message_id = message.id; "message {} {reason}; trying {next}", message.id)
            }
            Outcome::Unconfirmed { reason, .. } => {
                log::warn!(message_id = message.id; "message {} may have been sent: {reason}; checking before any retry", message.id)
            }
        }
        self.record(message.id, outcome).await;
    }

    /// What one attempt's result means for the message.
    fn outcome(
        &self,
        message: &Claimed,
        channel: Channel,
        sent: Result<crate::sender::Sent, SendError>,
    ) -> Outcome {
        let now = self.clock.now();
        match sent {
            Ok(sent) => Outcome::Sent {
                provider: self.sender.provider().unwrap_or("none"),
                sid: sent.sid,
            },
            // The provider refused this channel for this number: the next one may reach it.
            Err(error @ SendError::Rejected { .. })
                if message.fallback.as_deref().is_some_and(|f| !f.is_empty()) =>
            {
                let fallback = message.fallback.as_deref().unwrap_or_default();
                let (next, rest) = fallback.split_once(',').unwrap_or((fallback, ""));
                Outcome::Fallback {
                    next: next.to_owned(),
                    rest: Some(rest.to_owned()).filter(|r| !r.is_empty()),
                    reason: format!("{channel} refused: {error}"),
                }
            }
            Err(SendError::Rejected { code, message, .. }) => Outcome::Failed {
                error_code: code,
                error_message: message,
            },
            // No request was made: wait for the breaker's probe without spending one of
            // the message's attempts.
            Err(SendError::CircuitOpen {
                provider,
                retry_after,
            }) => Outcome::Retry {
                at: now + retry_after.mul_f64(rand::random_range(1.0..1.25)),
                reason: format!("{provider}'s circuit is open"),
                counted: false,
            },
            Err(e @ (SendError::NotConfigured | SendError::ChannelNotConfigured(_))) => {
                Outcome::Failed {
                    error_code: None,
                    error_message: e.to_string(),
                }
            }
            // Sending again could send twice: ask first, after the provider has had time
            // to list what it took.
            Err(e) if e.may_have_been_sent() => Outcome::Unconfirmed {
                reason: e.to_string(),
                check_at: now + self.retry_delay(message.attempts),
            },
            Err(e) if message.attempts >= self.config.max_attempts => Outcome::Failed {
                error_code: None,
                error_message: format!("gave up after {} attempts: {e}", message.attempts),
            },
            Err(e) => Outcome::Retry {
                at: now
                    + self
                        .retry_delay(message.attempts)
                        .max(e.retry_after().unwrap_or_default()),
                reason: e.to_string(),
                counted: true,
            },
        }
    }

    /// Commits an attempt's outcome, retrying a store that fails for a while; a
    /// message still unrecorded stays `sending`, which the next start checks.
    async fn record(&self, id: i64, outcome: Outcome) {
        for tries in 1..=RECORD_TRIES {
            match self
                .store
                .finish(id, outcome.clone(), self.clock.now())
                .await
            {
                Ok(()) => return,
                Err(e) if tries == RECORD_TRIES => {
                    log::error!("outbox: recording message {id}: {e}; left for the next start")
                }
                Err(e) => {
                    log::error!("outbox: recording message {id}: {e}; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// `retry_delay` doubled per attempt already made, capped, with ±25% jitter so a
    /// burst of failures does not come back as one burst.
    pub(super) fn retry_delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .config
            .retry_delay
            .saturating_mul(1 << attempts.saturating_sub(1).min(16));
        let base = doubled.min(MAX_RETRY_DELAY);
        base.mul_f64(rand::random_range(0.75..1.25))
    }

    /// Sets `otpd_outbox_oldest_due_seconds`: how long the oldest message or check that
    /// is due has waited (0 when none is, scheduled ones included), the backlog's age an
    /// alert watches. Read from the store, so it also covers what a crash left.
    pub async fn measure_backlog(&self) {
        match self.store.next_due().await {
            Ok(due) => {
                let waited = due
                    .and_then(|due| self.clock.now().duration_since(due).ok())
                    .unwrap_or_default();
                metrics::gauge!(telemetry::OUTBOX_OLDEST_DUE).set(waited.as_secs_f64());
            }
            Err(e) => log::warn!("outbox backlog: {e}"),
        }
    }
}
