//! The provider boundary: one `send(to, body)` for Twilio and for the development outbox,
//! plus "no provider" so a daemon without credentials says so instead of pretending.
//! Knows nothing of OTPs, the store or HTTP serving.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::config::ProviderConfig;
use crate::twilio::{TwilioClient, TwilioError};
use crate::types::PhoneNumber;

#[derive(Debug, Error)]
pub enum SendError {
    #[error("no SMS provider is configured")]
    NotConfigured,
    #[error(transparent)]
    Twilio(#[from] TwilioError),
    #[error("cannot write the development outbox {path}: {source}")]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A message the provider accepted.
#[derive(Debug)]
pub struct Sent {
    pub sid: String,
    pub status: String,
}

pub enum Sender {
    Twilio(TwilioClient),
    DevOutbox(DevOutbox),
    None,
}

impl Sender {
    pub fn new(config: &ProviderConfig) -> Result<Sender, SendError> {
        Ok(match config {
            ProviderConfig::Twilio(twilio) => Sender::Twilio(TwilioClient::new(twilio)?),
            ProviderConfig::DevOutbox(path) => Sender::DevOutbox(DevOutbox { path: path.clone() }),
            ProviderConfig::None => Sender::None,
        })
    }

    /// The name stored with each message and shown by `/status/`.
    pub fn provider(&self) -> Option<&'static str> {
        match self {
            Sender::Twilio(_) => Some("twilio"),
            Sender::DevOutbox(_) => Some("dev_outbox"),
            Sender::None => None,
        }
    }

    pub async fn send(&self, to: &PhoneNumber, body: &str) -> Result<Sent, SendError> {
        match self {
            Sender::Twilio(client) => {
                let message = client.send(to, body).await?;
                Ok(Sent {
                    sid: message.sid,
                    status: message.status.unwrap_or_else(|| "queued".to_owned()),
                })
            }
            Sender::DevOutbox(outbox) => outbox.append(to, body).await,
            Sender::None => Err(SendError::NotConfigured),
        }
    }
}

/// Development mode's "phone": a JSON-lines file a developer can `tail -f`.
pub struct DevOutbox {
    path: PathBuf,
}

#[derive(Serialize)]
struct OutboxLine<'a> {
    sid: &'a str,
    at: String,
    to: &'a str,
    body: &'a str,
}

impl DevOutbox {
    async fn append(&self, to: &PhoneNumber, body: &str) -> Result<Sent, SendError> {
        let sid = format!("DEV{:032x}", rand::random::<u128>());
        let line = OutboxLine {
            sid: &sid,
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            to: to.as_str(),
            body,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let outbox_error = |source| SendError::Outbox {
            path: self.path.clone(),
            source,
        };
        // 0600: the outbox holds live codes. One write of a whole line with O_APPEND,
        // so concurrent sends never interleave.
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .await
            .map_err(outbox_error)?;
        file.write_all(&bytes).await.map_err(outbox_error)?;
        // tokio writes in the background; flush so the line is on disk before we answer.
        file.flush().await.map_err(outbox_error)?;
        Ok(Sent {
            sid,
            status: "delivered_to_outbox".to_owned(),
        })
    }
}
