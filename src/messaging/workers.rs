//! The outbox workers: claim due messages (now, or at `send_at`), send each through the
//! [`Sender`](crate::sender::Sender), and record the outcome: sent, a retry with backoff, the next channel, or
//! failed. A message interrupted mid-send by a crash becomes `unknown` and is not sent
//! again (at most once; see [`Store::recover_interrupted`](crate::store::Store::recover_interrupted)).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::MessagingService;
use crate::sender::SendError;
use crate::store::{Claimed, Outcome};
use crate::types::{Channel, PhoneNumber};

/// Retries never wait longer than this, however many came before.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The workers look at the queue at least this often, whatever woke them last.
const IDLE_POLL: Duration = Duration::from_secs(30);

impl MessagingService {
    /// The workers: until `shutdown` turns true, claim due messages and send them, at
    /// most `messaging.workers` at a time; then wait for the sends in flight.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.store.recover_interrupted(self.clock.now()).await {
            Ok(ids) if !ids.is_empty() => log::warn!(
                "{} message(s) were being sent when otpd stopped; marked unknown, not resent: {ids:?}",
                ids.len()
            ),
            Ok(_) => {}
            Err(e) => log::error!("outbox recovery: {e}"),
        }
        let mut sends = JoinSet::new();
        while !*shutdown.borrow() {
            while sends.try_join_next().is_some() {}
            if sends.len() >= self.config.workers {
                tokio::select! {
                    _ = sends.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let free = self.config.workers - sends.len();
            match self.store.claim_due(self.clock.now(), free as u32).await {
                Ok(batch) => {
                    let full = batch.len() == free;
                    for message in batch {
                        sends.spawn(self.clone().send_one(message));
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
            // Nothing more is due now: sleep until the next scheduled message, a new
            // one, a finished send, or shutdown.
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
                _ = sends.join_next(), if !sends.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Sends already handed to Twilio finish and are recorded; none start.
        while sends.join_next().await.is_some() {}
    }

    async fn send_one(self: Arc<Self>, message: Claimed) {
        let to = PhoneNumber::parse(&message.to);
        let channel = Channel::parse(&message.channel);
        let outcome = match (to, channel) {
            (Err(_), _) | (_, Err(_)) => Outcome::Failed {
                error_code: None,
                error_message: "stored number or channel no longer parses".into(),
            },
            (Ok(to), Ok(channel)) => match self.sender.send(&to, channel, &message.body).await {
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
                // No request was made: wait for the breaker's probe without spending
                // one of the message's attempts.
                Err(SendError::CircuitOpen {
                    provider,
                    retry_after,
                }) => Outcome::Retry {
                    at: self.clock.now() + retry_after.mul_f64(rand::random_range(1.0..1.25)),
                    reason: format!("{provider}'s circuit is open"),
                    counted: false,
                },
                Err(e @ (SendError::NotConfigured | SendError::ChannelNotConfigured(_))) => {
                    Outcome::Failed {
                        error_code: None,
                        error_message: e.to_string(),
                    }
                }
                Err(e) if message.attempts >= self.config.max_attempts => Outcome::Failed {
                    error_code: None,
                    error_message: format!("gave up after {} attempts: {e}", message.attempts),
                },
                Err(e) => Outcome::Retry {
                    at: self.clock.now() + self.retry_delay(message.attempts),
                    reason: e.to_string(),
                    counted: true,
                },
            },
        };
        match &outcome {
            Outcome::Sent { .. } => {
                log::info!(message_id = message.id; "message {} sent", message.id)
            }
            Outcome::Failed { error_message, .. } => {
                log::warn!(message_id = message.id, error = error_message.as_str(); "message {} failed: {error_message}", message.id)
            }
            Outcome::Retry { reason, .. } => {
                log::warn!(message_id = message.id; "message {} will be retried: {reason}", message.id)
            }
            Outcome::Fallback { reason, next, .. } => {
                log::warn!(message_id = message.id; "message {} {reason}; trying {next}", message.id)
            }
        }
        if let Err(e) = self
            .store
            .finish(message.id, outcome, self.clock.now())
            .await
        {
            log::error!("outbox: recording message {}: {e}", message.id);
        }
    }

    /// `retry_delay` doubled per attempt already made, capped, with ±25% jitter so a
    /// burst of failures does not come back as one burst.
    fn retry_delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .config
            .retry_delay
            .saturating_mul(1 << attempts.saturating_sub(1).min(16));
        let base = doubled.min(MAX_RETRY_DELAY);
        base.mul_f64(rand::random_range(0.75..1.25))
    }
}
