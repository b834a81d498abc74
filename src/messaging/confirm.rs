//! Checks: an outbox message whose last attempt may have reached the provider (its
//! answer was lost, or otpd stopped mid-send) is not sent again blind. The provider's
//! list of what it sent to that number since the attempt is searched for the body:
//! found, the message is sent, with the provider's SID; not there, it goes back to the
//! queue and is sent; the provider cannot be asked, it is asked again later, with a
//! growing wait, until `messaging.unknown_after` has passed since the attempt, and then
//! it is `unknown` (never sent again, so never twice).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::MessagingService;
use super::workers::MAX_RETRY_DELAY;
use crate::sender::Listed;
use crate::store::{Checked, Unconfirmed};
use crate::types::{Channel, PhoneNumber};

impl MessagingService {
    pub(super) async fn check_one(self: Arc<Self>, check: Unconfirmed) {
        let now = self.clock.now();
        let id = check.id;
        let checked = match self.ask(&check).await {
            Ok(candidates) => {
                let provider = self.sender.provider().unwrap_or("none");
                // Newest first as listed; one another message already holds is not ours.
                for found in candidates {
                    let sid = found.sid.clone();
                    let found = Checked::Found {
                        provider,
                        sid: found.sid,
                        status: found.status,
                    };
                    match self.store.resolve_check(id, found, now).await {
                        Ok(true) => {
                            log::info!(message_id = id; "message {id} was taken by {provider} before otpd heard its answer: sid {sid}");
                            return;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            log::error!("outbox: recording the check of message {id}: {e}");
                            return;
                        }
                    }
                }
                log::info!(message_id = id; "message {id} is not at {provider}: sending it");
                Checked::NotThere {
                    detail: "the provider lists no such message: sending it".to_owned(),
                }
            }
            Err(reason) => self.not_asked(&check, reason, now),
        };
        if let Checked::Unknown { detail } = &checked {
            log::warn!(message_id = id; "message {id} is unknown: {detail}");
        }
        if let Err(e) = self.store.resolve_check(id, checked, now).await {
            log::error!("outbox: recording the check of message {id}: {e}");
        }
    }

    /// The listed messages with this message's body, or why the provider could not say.
    async fn ask(&self, check: &Unconfirmed) -> Result<Vec<Listed>, String> {
        let to = PhoneNumber::parse(&check.to).map_err(|e| e.to_string())?;
        let channel = Channel::parse(&check.channel).map_err(|e| e.to_string())?;
        if check.body.is_empty() {
            return Err("no body is kept to compare with".to_owned());
        }
        let listed = self
            .sender
            .sent_since(&to, channel, check.attempted_at)
            .await
            .map_err(|e| e.to_string())?;
        Ok(listed
            .into_iter()
            .filter(|m| m.body == check.body)
            .collect())
    }

    /// Asked again later, each wait half the time since the attempt (at least
    /// `retry_delay`), so an outage of hours costs a few dozen requests; `unknown` once
    /// `unknown_after` has passed.
    fn not_asked(&self, check: &Unconfirmed, reason: String, now: SystemTime) -> Checked {
        let within = self.config.unknown_after;
        let deadline = check.attempted_at + within;
        if now >= deadline {
            return Checked::Unknown {
                detail: format!(
                    "could not ask within {} whether it arrived ({reason}); not sent again, \
                     to avoid sending it twice",
                    humantime::format_duration(within)
                ),
            };
        }
        let waited = now.duration_since(check.attempted_at).unwrap_or_default();
        let wait = (waited / 2)
            .max(self.config.retry_delay)
            .min(MAX_RETRY_DELAY)
            .mul_f64(rand::random_range(0.75..1.25));
        let at = (now + wait)
            .min(deadline)
            .max(now + Duration::from_millis(10));
        Checked::Later {
            detail: format!(
                "{reason}; asking again at {}",
                humantime::format_rfc3339_seconds(at)
            ),
            at,
        }
    }
}
