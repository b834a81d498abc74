//! Status callbacks: a signed report from the provider about a message it took
//! (delivered, undelivered, ...), appended to that message's history. Only a valid
//! signature over the configured public URL is trusted; a forged one is refused and
//! audited. A WhatsApp message reported lost moves to its next channel once: the
//! outbox's workers send it again; a code is handed back to the caller for the OTP
//! service, which this part must not know.

use std::time::SystemTime;

use super::{MessagingError, MessagingService};
use crate::store::{AfterReport, CodeResend};
use crate::twilio::webhook::{self, StatusUpdate};
use crate::types::Caller;

/// What a valid report led to.
pub struct Reported {
    pub message_id: i64,
    /// A code whose WhatsApp message will not arrive: the OTP service re-issues it.
    pub resend_code: Option<CodeResend>,
}

impl MessagingService {
    /// A status callback, as Twilio posted it (form fields and the signature header).
    /// Only a valid signature over the configured public URL is trusted; a forged or
    /// unsigned one is refused and audited.
    pub async fn status_callback(
        &self,
        params: Vec<(String, String)>,
        signature: Option<String>,
        caller: Caller,
        now: SystemTime,
    ) -> Result<Reported, MessagingError> {
        let Some((url, token)) = &self.callbacks else {
            return Err(MessagingError::CallbacksNotConfigured);
        };
        let valid = signature
            .as_deref()
            .is_some_and(|s| webhook::signature_is_valid(token.expose(), url, &params, s));
        if !valid {
            let sid = params
                .iter()
                .find(|(k, _)| k == "MessageSid")
                .map_or("none", |(_, v)| v.as_str());
            let detail = format!(
                "{} X-Twilio-Signature for MessageSid {sid:.40}",
                if signature.is_some() {
                    "invalid"
                } else {
                    "missing"
                }
            );
            log::warn!("refused a status callback: {detail}");
            self.store
                .audit_other("callback_refused", detail, caller, now)
                .await?;
            return Err(MessagingError::BadSignature);
        }
        let update = StatusUpdate::from_params(&params).ok_or(MessagingError::BadCallback)?;
        let (message_id, after) = self
            .store
            .apply_status(update.sid.clone(), update.status, update.error_code, now)
            .await?
            .ok_or(MessagingError::UnknownSid(update.sid))?;
        let resend_code = match after {
            AfterReport::Nothing => None,
            AfterReport::Requeued { channel } => {
                log::warn!(message_id = message_id; "message {message_id} will not arrive on whatsapp; trying {channel}");
                self.wake.notify_one();
                None
            }
            AfterReport::ResendCode(code) => Some(code),
        };
        Ok(Reported {
            message_id,
            resend_code,
        })
    }
}
