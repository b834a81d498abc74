//! The OTP service: the only part that knows the others. It generates codes with a
//! CSPRNG, keeps only their HMAC, asks the limiter, writes through the store, sends
//! through the sender, and verifies with a counted attempt, a constant-time compare and
//! a conditional consume. It takes `now` as a parameter and knows nothing of HTTP.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::digest::{CtOutput, Output};
use hmac::{Hmac, Mac};
use metrics::Counter;
use rand::Rng;
use sha2::Sha256;
use thiserror::Error;

use crate::breaker::CircuitState;
use crate::config::{Config, KeySource, OtpConfig, RetentionConfig};
use crate::guard::{Guard, GuardError, Subject, Verdict};
use crate::limiter::{Limiter, RateLimited};
use crate::sender::{SendError, Sender};
use crate::store::{
    Attempt, AuditRow, Counts, Cutoffs, Delivery, MessageRow, NewCode, Purged, Store, StoreError,
};
use crate::telemetry::{self, Kept};
use crate::twilio::TwilioError;
use crate::types::{Caller, Channel, OtpCode, PhoneNumber, Purpose, Region, UserId};

#[derive(Debug, Error)]
pub enum OtpError {
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("wrong code")]
    WrongCode { attempts_remaining: u32 },
    #[error("code expired")]
    Expired,
    #[error("code already used")]
    AlreadyUsed,
    #[error("no code to verify")]
    NoCode,
    #[error("no attempts left")]
    AttemptsExhausted { retry_after: Duration },
    #[error("no test phone number is configured")]
    NoTestNumber,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot use the HMAC key file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the HMAC key must be at least 32 bytes (64 hex digits)")]
    TooShort,
}

pub struct SendOtp {
    pub caller: Caller,
    pub phone: PhoneNumber,
    pub purpose: Purpose,
    pub user_id: Option<UserId>,
    /// The SMS language; falls back to its language, then `messaging.default_locale`.
    pub locale: Option<String>,
    /// Only this channel; `None`: `messaging.channels` in order.
    pub channel: Option<Channel>,
}

pub struct VerifyOtp {
    pub caller: Caller,
    pub phone: PhoneNumber,
    pub code: OtpCode,
    pub purpose: Purpose,
    pub user_id: Option<UserId>,
}

pub struct Issued {
    pub otp_id: i64,
    pub expires_at: SystemTime,
    /// The channel that carried the code (for a test number: the one it would have).
    pub channel: Channel,
}

/// What `/status/` reports; shaped into JSON by the api.
pub struct Status {
    pub provider: Option<&'static str>,
    pub dev_mode: bool,
    pub test_phone_configured: bool,
    pub purposes: Vec<String>,
    pub otp_length: usize,
    pub otp_ttl: Duration,
    pub limiter_keys: usize,
    /// Whether the provider answered its last request; `None` before the first.
    pub provider_reachable: Option<bool>,
    /// Twilio's circuit breaker; `None` for the other providers.
    pub provider_circuit: Option<CircuitState>,
    pub counts: Counts,
}

pub struct OtpService {
    otp: OtpConfig,
    retention: RetentionConfig,
    test_phone: Option<PhoneNumber>,
    key: CodeKey,
    store: Store,
    limiter: Arc<Limiter>,
    guard: Arc<Guard>,
    sender: Arc<Sender>,
    channels: Vec<Channel>,
}

const TEST_MESSAGE: &str = "Test message from otpd: your Twilio settings work.";

impl OtpService {
    pub fn new(
        config: &Config,
        store: Store,
        sender: Arc<Sender>,
        limiter: Arc<Limiter>,
        guard: Arc<Guard>,
    ) -> Result<Self, KeyError> {
        Ok(OtpService {
            otp: config.otp.clone(),
            retention: config.retention,
            test_phone: config.test_phone_number.clone(),
            key: CodeKey::new(&load_key(&config.otp.hmac_key)?),
            limiter,
            guard,
            store,
            sender,
            channels: config.messaging.channels.clone(),
        })
    }

    pub fn purposes(&self) -> &[String] {
        &self.otp.purposes
    }

    /// Where numbers without a country code are read from (`otp.default_region`).
    pub fn default_region(&self) -> Option<Region> {
        self.otp.default_region
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    fn mac(&self, phone: &str, purpose: &str, code: &str) -> Hmac<Sha256> {
        self.key.mac(phone, purpose, code)
    }

    pub async fn send_otp(&self, req: SendOtp, now: SystemTime) -> Result<Issued, OtpError> {
        let test = self
            .otp
            .test_numbers
            .iter()
            .find(|t| t.matches(&req.phone, now));
        if test.is_none() && self.sender.provider().is_none() {
            return Err(SendError::NotConfigured.into());
        }
        let channels = match test {
            // A test number is sent nothing, on whatever channel it asks for.
            Some(_) => vec![req.channel.unwrap_or(self.channels[0])],
            None => self
                .sender
                .channels(req.channel, &self.channels)
                .map_err(SendError::ChannelNotConfigured)?,
        };
        self.limiter
            .check_send(req.phone.as_str(), req.user_id.as_ref().map(UserId::as_str))?;
        // The cost guard, after the caller's own limits (a flood stops there) and before
        // anything is stored or sent. Test numbers are exempt: no SMS, no cost.
        let country = match test {
            None if self.guard.is_active() => Some(self.guard_send(&req, now).await?),
            _ => None,
        };

        let code = match test {
            Some(test) => test.code.clone(),
            None => generate_code(self.otp.length),
        };
        let expires_at = now + self.otp.ttl;
        let code_hash = self
            .mac(req.phone.as_str(), req.purpose.as_str(), &code)
            .finalize()
            .into_bytes()
            .to_vec();
        let otp_id = self
            .store
            .insert_code(NewCode {
                caller: req.caller,
                phone: req.phone.as_str().to_owned(),
                purpose: req.purpose.as_str().to_owned(),
                user_id: req.user_id.as_ref().map(|u| u.as_str().to_owned()),
                code_hash,
                max_attempts: self.otp.max_attempts,
                test_number: test.is_some(),
                created_at: now,
                expires_at,
                country,
            })
            .await?;
        let to = req.phone.as_str().to_owned();
        let masked = req.phone.masked();
        let purpose = req.purpose.as_str();

        if test.is_some() {
            self.store
                .record_delivery(otp_id, to, channels[0], Delivery::Skipped, now, req.caller)
                .await?;
            log::info!(otp_id = otp_id, purpose = purpose, phone:% = masked; "otp {otp_id} for {masked} ({purpose}): test number, no SMS sent");
            event("test_number");
            return Ok(Issued {
                otp_id,
                expires_at,
                channel: channels[0],
            });
        }

        let minutes = self.otp.ttl.as_secs().div_ceil(60);
        let minutes = minutes.to_string();
        let template = &self.otp.template;
        let body = template
            .text(template.locale_for(req.locale.as_deref()))
            .map(|text| {
                text.render(|name| match name {
                    "code" => Some(code.as_str()),
                    "minutes" => Some(minutes.as_str()),
                    "purpose" => Some(purpose),
                    _ => None,
                })
            });
        // Checked at load: the otp template has the default locale and only these slots.
        let Some(Ok(body)) = body else {
            unreachable!("the otp template was validated at start-up")
        };
        let provider = self.sender.provider().unwrap_or("none");
        let mut channels = channels.into_iter().peekable();
        while let Some(channel) = channels.next() {
            let result = self.sender.send(&req.phone, channel, &body).await;
            match result {
                Ok(sent) => {
                    // At info, unlike verify's success line: a send already costs a
                    // Twilio call (hundreds of ms), and operators look codes up by it.
                    log::info!(
                        otp_id = otp_id, purpose = purpose, phone:% = masked, channel:% = channel, twilio_sid = sent.sid.as_str();
                        "otp {otp_id} for {masked} ({purpose}) sent via {provider} {channel}, sid {}",
                        sent.sid
                    );
                    event("sent");
                    let delivery = Delivery::Sent {
                        provider,
                        sid: sent.sid,
                        status: sent.status,
                        attempts: sent.attempts,
                    };
                    self.store
                        .record_delivery(otp_id, to, channel, delivery, now, req.caller)
                        .await?;
                    return Ok(Issued {
                        otp_id,
                        expires_at,
                        channel,
                    });
                }
                // Twilio refused this channel for this number: the next one may reach it.
                // Outages are not a reason to switch: every channel is the same Twilio.
                Err(
                    ref error @ SendError::Twilio {
                        error: TwilioError::Rejected { .. },
                        ..
                    },
                ) if channels.peek().is_some() => {
                    log::warn!(
                        otp_id = otp_id, purpose = purpose, phone:% = masked, channel:% = channel, error:% = error;
                        "otp {otp_id} for {masked} ({purpose}) not sent by {channel}, trying the next channel: {error}"
                    );
                    event("channel_fallback");
                    self.store
                        .record_fallback(
                            otp_id,
                            to.clone(),
                            channel,
                            failed(provider, error),
                            now,
                            req.caller,
                        )
                        .await?;
                }
                Err(error) => {
                    // Marked failed: this code can never verify, whatever happens next.
                    let delivery = failed(provider, &error);
                    let error_code = match delivery {
                        Delivery::Failed { error_code, .. } => error_code,
                        _ => None,
                    };
                    log::warn!(otp_id = otp_id, purpose = purpose, phone:% = masked, error:% = error, error_code = error_code; "otp {otp_id} for {masked} ({purpose}) not sent: {error}");
                    event(match delivery {
                        Delivery::CircuitOpen { .. } => "circuit_open",
                        _ => "send_failed",
                    });
                    self.store
                        .record_delivery(otp_id, to, channel, delivery, now, req.caller)
                        .await?;
                    return Err(error.into());
                }
            }
        }
        unreachable!("messaging.channels is never empty")
    }

    /// Asks the guard about a code's SMS; returns the destination region to store.
    async fn guard_send(&self, req: &SendOtp, now: SystemTime) -> Result<String, OtpError> {
        let dest = self.guard.destination(&req.phone);
        let verdict = self.guard.check(&dest, now, &self.store).await?;
        self.audit_guard(
            verdict,
            &req.phone,
            Some(&req.purpose),
            req.user_id.as_ref(),
            Some(req.caller),
            now,
        )
        .await?;
        Ok(dest.region_code())
    }

    /// Audits every refusal and would-be refusal, then fails if the send is blocked.
    async fn audit_guard(
        &self,
        verdict: Verdict,
        phone: &PhoneNumber,
        purpose: Option<&Purpose>,
        user_id: Option<&UserId>,
        caller: Option<Caller>,
        now: SystemTime,
    ) -> Result<(), OtpError> {
        let who = Subject {
            phone,
            purpose: purpose.map(Purpose::as_str),
            user_id: user_id.map(UserId::as_str),
            caller,
        };
        match self.guard.audit(verdict, who, now, &self.store).await? {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub async fn verify_otp(&self, req: VerifyOtp, now: SystemTime) -> Result<i64, OtpError> {
        self.limiter.check_verify(req.phone.as_str())?;
        // The guess's HMAC is made here, on a worker: the writer is one thread that
        // every write waits for, and the HMAC was ~15% of its work per verify. The
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
                // metrics carry the same facts, and at info they cost 13-25% of a verify.
                log::debug!(otp_id = id, purpose = purpose, phone:% = masked; "otp {id} for {masked} ({purpose}) verified");
                event("verified");
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
                    "wrong_code",
                    OtpError::WrongCode { attempts_remaining },
                ))
            }
            Attempt::NoCode => Err(refusal("not_found", OtpError::NoCode)),
            Attempt::Used { .. } => Err(refusal("already_used", OtpError::AlreadyUsed)),
            Attempt::Expired { .. } => Err(refusal("expired", OtpError::Expired)),
            Attempt::Exhausted { expires_at, .. } => {
                let retry_after = expires_at.duration_since(now).unwrap_or_default();
                Err(refusal(
                    "attempts_exhausted",
                    OtpError::AttemptsExhausted { retry_after },
                ))
            }
        }
    }

    /// Sends the fixed test message to the configured test number; returns its SID.
    pub async fn send_test_message(&self, now: SystemTime) -> Result<String, OtpError> {
        let to = self.test_phone.as_ref().ok_or(OtpError::NoTestNumber)?;
        let provider = self.sender.provider().ok_or(SendError::NotConfigured)?;
        self.limiter.check_global()?;
        // Only the daily cap: the message costs money, but goes to the operator's number.
        let verdict = self.guard.check_test_message(now, &self.store).await?;
        self.audit_guard(verdict, to, None, None, None, now).await?;
        let result = self.sender.send(to, Channel::Sms, TEST_MESSAGE).await;
        let delivery = match &result {
            Ok(sent) => Delivery::Sent {
                provider,
                sid: sent.sid.clone(),
                status: sent.status.clone(),
                attempts: sent.attempts,
            },
            Err(error) => failed(provider, error),
        };
        self.store
            .record_message(to.as_str().to_owned(), delivery, now)
            .await?;
        match result {
            Ok(sent) => {
                log::info!(
                    "test message sent to {} via {provider}, sid {}",
                    to.masked(),
                    sent.sid
                );
                Ok(sent.sid)
            }
            Err(error) => {
                log::warn!("test message to {} not sent: {error}", to.masked());
                Err(error.into())
            }
        }
    }

    pub async fn status(&self) -> Result<Status, OtpError> {
        Ok(Status {
            provider: self.sender.provider(),
            dev_mode: self.sender.provider() == Some("dev_outbox"),
            test_phone_configured: self.test_phone.is_some(),
            purposes: self.otp.purposes.clone(),
            otp_length: self.otp.length,
            otp_ttl: self.otp.ttl,
            limiter_keys: self.limiter.key_count(),
            provider_reachable: self.sender.reachable(),
            provider_circuit: self.sender.circuit(),
            counts: self.store.counts().await?,
        })
    }

    /// The retention job: deletes what has outlived `[retention]`.
    pub async fn purge(&self, now: SystemTime) -> Result<Purged, OtpError> {
        let r = &self.retention;
        let before = |keep: Duration| now.checked_sub(keep).unwrap_or(std::time::UNIX_EPOCH);
        let purged = self
            .store
            .purge(Cutoffs {
                codes_before: before(r.codes),
                messages_before: before(r.messages),
                audit_before: before(r.audit),
            })
            .await?;
        log::info!(
            "retention: deleted {} codes, {} messages, {} audit events",
            purged.otps,
            purged.messages,
            purged.audit
        );
        Ok(purged)
    }

    pub fn retention_interval(&self) -> Duration {
        self.retention.interval
    }

    pub async fn messages_since(
        &self,
        since: SystemTime,
        limit: u32,
    ) -> Result<Vec<MessageRow>, OtpError> {
        Ok(self.store.messages_since(since, limit).await?)
    }

    pub async fn audit_since(
        &self,
        since: SystemTime,
        phone: Option<&PhoneNumber>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, OtpError> {
        let phone = phone.map(|p| p.as_str().to_owned());
        Ok(self.store.audit_since(since, phone, limit).await?)
    }
}

fn event(name: &'static str) {
    // Once per send and per verify: kept handles (see `Kept`).
    static SENT: Kept<Counter> = Kept::new();
    static VERIFIED: Kept<Counter> = Kept::new();
    let kept = match name {
        "sent" => &SENT,
        "verified" => &VERIFIED,
        _ => {
            metrics::counter!(telemetry::OTP_EVENTS, "event" => name).increment(1);
            return;
        }
    };
    kept.with(
        || metrics::counter!(telemetry::OTP_EVENTS, "event" => name),
        |c| c.increment(1),
    );
}

/// Counts a verify that did not succeed under its reason.
fn refusal(name: &'static str, error: OtpError) -> OtpError {
    event(name);
    error
}

/// The record of a message that did not leave, with Twilio's error code if it gave one
/// and the number of requests made; a refusal by the open circuit is told apart.
fn failed(provider: &'static str, error: &SendError) -> Delivery {
    let error_code = match error {
        SendError::Twilio {
            error: TwilioError::Rejected { code, .. } | TwilioError::Unavailable { code, .. },
            ..
        } => *code,
        SendError::Twilio {
            error: TwilioError::CircuitOpen { .. },
            ..
        } => {
            return Delivery::CircuitOpen {
                provider,
                error_message: error.to_string(),
            };
        }
        _ => None,
    };
    Delivery::Failed {
        provider,
        error_code,
        error_message: error.to_string(),
        attempts: error.attempts(),
    }
}

/// The HMAC key, keyed once: keying hashes the key's inner and outer pads (two of the
/// four SHA-256 blocks of a code's MAC), and every MAC starts from a copy of that state.
pub(crate) struct CodeKey(Hmac<Sha256>);

impl CodeKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        CodeKey(
            Hmac::<Sha256>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    /// HMAC-SHA256 over the code and what it is bound to, so a hash copied to another
    /// row (or a stolen database) is worth nothing without the key. The NUL after each
    /// part keeps ("+3460", "0login") and ("+34600", "login") apart.
    pub(crate) fn mac(&self, phone: &str, purpose: &str, code: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [phone, purpose, code] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac
    }
}

/// Whether `code` is the one `stored` was made from; constant time. The property
/// tests' view of what a verify compares.
#[cfg(test)]
pub(crate) fn code_matches(
    key: &[u8],
    phone: &str,
    purpose: &str,
    code: &str,
    stored: &[u8],
) -> bool {
    Guess::new(&CodeKey::new(key), phone, purpose, code).matches(stored)
}

/// The HMAC of a guessed code, made before the store is asked, so that the writer
/// thread only compares.
pub(crate) struct Guess(CtOutput<Hmac<Sha256>>);

impl Guess {
    pub(crate) fn new(key: &CodeKey, phone: &str, purpose: &str, code: &str) -> Self {
        Guess(key.mac(phone, purpose, code).finalize())
    }

    /// Constant time, as `Mac::verify_slice`: `CtOutput`'s `==` is `subtle`'s
    /// `ct_eq`, and a stored hash of another length never matches.
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        Output::<Hmac<Sha256>>::from_exact_iter(stored.iter().copied())
            .is_some_and(|stored| CtOutput::new(stored) == self.0)
    }
}

/// Each digit drawn uniformly from the thread-local CSPRNG (ChaCha, seeded by the OS).
fn generate_code(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Reads the HMAC key, creating a random one (0600) on first start.
fn load_key(source: &KeySource) -> Result<Vec<u8>, KeyError> {
    let bytes = match source {
        KeySource::Credential(bytes) => bytes.clone(),
        KeySource::File(path) => read_or_create_key(path)?,
    };
    let text = String::from_utf8_lossy(&bytes);
    let key = match hex::decode(text.trim()) {
        Ok(decoded) => decoded,
        Err(_) => bytes,
    };
    if key.len() < 32 {
        return Err(KeyError::TooShort);
    }
    Ok(key)
}

fn read_or_create_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "HMAC key file {} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let text = format!("{}\n", hex::encode(key));
            // create_new: two daemons racing cannot overwrite each other's key.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            log::info!("created a new HMAC key in {}", path.display());
            Ok(text.into_bytes())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_configured_length_and_vary() {
        let codes: Vec<String> = (0..50).map(|_| generate_code(6)).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
        );
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert!(distinct.len() > 40, "{distinct:?}");
    }

    /// Stored hashes outlive releases: the MAC is pinned to HMAC-SHA256 over
    /// "phone NUL purpose NUL code NUL" (this value from Python's `hmac`), and a keyed
    /// state reused across codes gives each the same MAC as a fresh one.
    #[test]
    fn the_code_mac_is_plain_hmac_sha256_and_reusing_the_key_changes_nothing() {
        let key = CodeKey::new(&[7u8; 32]);
        let mac = |code| {
            hex::encode(
                key.mac("+34600111222", "login", code)
                    .finalize()
                    .into_bytes(),
            )
        };
        let pinned = "06b1310357db4bd2aa08c4b8b83a17abb4a1cd2a764fa55f8959516a66f0b7cc";
        assert_eq!(mac("123456"), pinned);
        assert_ne!(mac("123457"), pinned);
        assert_eq!(mac("123456"), pinned);
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hmac.key");
        let first = load_key(&KeySource::File(path.clone())).unwrap();
        assert_eq!(first.len(), 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_key(&KeySource::File(path)).unwrap(), first);
        assert!(matches!(
            load_key(&KeySource::Credential(b"short".to_vec())),
            Err(KeyError::TooShort)
        ));
    }
}
