//! Development mode's "phone": a JSON-lines file a developer can `tail -f`, appended
//! to one whole line per message, and read back when a send's outcome must be checked,
//! as Twilio's Messages list is.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{Listed, LookupError, SendError, Sent};
use crate::clock::Clock;
use crate::types::{Channel, PhoneNumber};

pub(super) struct DevOutbox {
    path: PathBuf,
    clock: Clock,
}

#[derive(Serialize, Deserialize)]
struct OutboxLine<'a> {
    sid: &'a str,
    at: String,
    to: &'a str,
    channel: &'a str,
    body: &'a str,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    media_urls: Vec<String>,
}

impl DevOutbox {
    pub(super) fn new(path: PathBuf, clock: Clock) -> Self {
        DevOutbox { path, clock }
    }

    pub(super) async fn append(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        body: &str,
        media: &[String],
    ) -> Result<Sent, SendError> {
        let sid = format!("DEV{:032x}", rand::random::<u128>());
        let line = OutboxLine {
            sid: &sid,
            at: humantime::format_rfc3339_seconds(self.clock.now()).to_string(),
            to: to.as_str(),
            channel: channel.as_str(),
            body,
            media_urls: media.to_vec(),
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
            attempts: 1,
        })
    }

    /// The lines written for `to` on `channel` since `since` (the file's times are to
    /// the second), newest first.
    pub(super) async fn sent_since(
        &self,
        to: &PhoneNumber,
        channel: Channel,
        since: SystemTime,
    ) -> Result<Vec<Listed>, LookupError> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(LookupError::Unavailable {
                    provider: "the development outbox",
                    reason: e.to_string(),
                });
            }
        };
        let after = since.checked_sub(Duration::from_secs(1)).unwrap_or(since);
        let mut listed: Vec<Listed> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<OutboxLine<'_>>(line).ok())
            .filter(|line| line.to == to.as_str() && line.channel == channel.as_str())
            .filter(|line| humantime::parse_rfc3339(&line.at).is_ok_and(|at| at >= after))
            .map(|line| Listed {
                sid: line.sid.to_owned(),
                status: "delivered_to_outbox".to_owned(),
                body: line.body.to_owned(),
            })
            .collect();
        listed.reverse();
        Ok(listed)
    }
}
