//! Checking a code: the attempt is counted before the compare, the compare is constant
//! time on a MAC made here, and a match consumes the code in the same transaction.

use std::time::SystemTime;

use super::code::Guess;
use super::{OtpError, OtpService, VerifyOtp, refusal};
use crate::store::Attempt;

impl OtpService {
    pub async fn verify_otp(&self, req: VerifyOtp, now: SystemTime) -> Result<i64, OtpError> {
        self.limiter.check_verify(req.phone.as_str())?;
        let shared = self.limiter.shared_verify(req.phone.as_str());
        crate::checks::shared_limits(&self.store, &self.limiter, shared).await??;
        // The guess's HMAC is made here, on a worker: the writer is one thread that
        // every write waits for, so it should not also hash. The
        // closure runs on the writer after the store counted the attempt and only
        // compares, in constant time (the store sees neither the key nor the code).
        let guess = Guess::new(
            &self.key,
            req.phone.as_str(),
            req.purpose.as_str(),
            req.code.as_str(),
        );
        let given_user = req.user_id.as_ref().map(|u| u.as_str().to_owned());
        let matches = move |stored: &[u8], bound_user: Option<&str>| {
            let code_matches = guess.matches(stored);
            // A code sent for a user verifies only for that user; one sent without a
            // user (sign-up, before the account exists) verifies for any caller.
            let user_matches = match (bound_user, given_user.as_deref()) {
                (Some(bound), Some(given)) => bound == given,
                (Some(_), None) => false,
                (None, _) => true,
            };
            code_matches && user_matches
        };
        let attempt = self
            .store
            .check_attempt(
                req.phone.as_str().to_owned(),
                req.purpose.as_str().to_owned(),
                now,
                req.caller,
                matches,
            )
            .await?;
        let masked = req.phone.masked();
        let purpose = req.purpose.as_str();
        match attempt {
            Attempt::Verified { id } => {
                // Per-request lines that succeed are at debug: the audit table and the
                // metrics carry the same facts, and a line per verify is a cost at high rates.
                log::debug!(otp_id = id, purpose = purpose, phone:% = masked; "otp {id} for {masked} ({purpose}) verified");
                self.events.verified.increment(1);
                self.events.verified_in.increment(req.phone.country());
                Ok(id)
            }
            Attempt::Wrong {
                id,
                attempts_remaining,
            } => {
                log::debug!(
                    otp_id = id, purpose = purpose, phone:% = masked;
                    "otp {id} for {masked} ({purpose}): wrong code, {attempts_remaining} attempts remaining"
                );
                Err(refusal(
                    &self.events.wrong_code,
                    OtpError::WrongCode { attempts_remaining },
                ))
            }
            Attempt::NoCode => Err(refusal(&self.events.not_found, OtpError::NoCode)),
            Attempt::Used => Err(refusal(&self.events.already_used, OtpError::AlreadyUsed)),
            Attempt::Expired => Err(refusal(&self.events.expired, OtpError::Expired)),
            Attempt::Exhausted { expires_at } => {
                let retry_after = expires_at.duration_since(now).unwrap_or_default();
                Err(refusal(
                    &self.events.attempts_exhausted,
                    OtpError::AttemptsExhausted { retry_after },
                ))
            }
        }
    }
}
