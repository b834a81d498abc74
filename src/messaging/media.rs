//! The media of an MMS (or a WhatsApp message with attachments): the public https URLs
//! the provider fetches and attaches, checked once at the edge. Twilio takes up to ten
//! per message (`MediaUrl`, repeated) and fetches them itself, so otpd never downloads
//! them; it only refuses what the provider could not use or what must not be stored.

use url::Url;

use super::MessagingError;

/// Twilio's limit of `MediaUrl` values on one message.
pub const MAX_MEDIA: usize = 10;
/// Longer URLs are not links a provider fetches but data smuggled into the store.
const MAX_URL_BYTES: usize = 2048;

/// Up to [`MAX_MEDIA`] absolute https URLs with a host, no credentials, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Media(Vec<String>);

impl Media {
    pub fn parse(urls: Vec<String>) -> Result<Self, MessagingError> {
        if urls.len() > MAX_MEDIA {
            return Err(MessagingError::Media(format!(
                "{} media_urls: at most {MAX_MEDIA} per message",
                urls.len()
            )));
        }
        let checked = urls
            .iter()
            .enumerate()
            .map(|(i, text)| {
                check(text).map_err(|why| MessagingError::Media(format!("media_urls[{i}]: {why}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Media(checked))
    }

    pub fn urls(&self) -> &[String] {
        &self.0
    }

    pub fn into_urls(self) -> Vec<String> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn check(text: &str) -> Result<String, &'static str> {
    if text.len() > MAX_URL_BYTES {
        return Err("longer than 2048 bytes");
    }
    let url = Url::parse(text).map_err(|_| "not an absolute URL")?;
    if url.scheme() != "https" {
        // The provider fetches it over the internet: plain http can be altered on the way.
        return Err("not https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would be stored, listed and logged with the message.
        return Err("carries a user name or password");
    }
    // The parsed form: normalised, and percent-encoded so it holds no space or newline.
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(urls: &[&str]) -> String {
        match Media::parse(urls.iter().map(|s| s.to_string()).collect()) {
            Err(MessagingError::Media(why)) => why,
            other => panic!("accepted {urls:?}: {other:?}"),
        }
    }

    #[test]
    fn https_urls_are_kept_in_order_and_normalised() {
        let media = Media::parse(vec![
            "https://example.com/a b.png".into(),
            "HTTPS://Example.COM/b.jpg?x=1".into(),
        ])
        .unwrap();
        assert_eq!(
            media.urls(),
            [
                "https://example.com/a%20b.png",
                "https://example.com/b.jpg?x=1"
            ]
        );
    }

    #[test]
    fn what_a_provider_cannot_fetch_or_must_not_store_is_refused_by_position() {
        assert_eq!(
            refused(&["https://e.com/1", "http://e.com/2"]),
            "media_urls[1]: not https"
        );
        assert_eq!(
            refused(&["/relative.png"]),
            "media_urls[0]: not an absolute URL"
        );
        assert_eq!(
            refused(&["https://u:p@e.com/x"]),
            "media_urls[0]: carries a user name or password"
        );
        assert_eq!(
            refused(&["data:image/png;base64,AAAA"]),
            "media_urls[0]: not https"
        );
        let long = format!("https://e.com/{}", "a".repeat(2048));
        assert_eq!(refused(&[&long]), "media_urls[0]: longer than 2048 bytes");
        let eleven = vec!["https://e.com/x"; 11];
        assert_eq!(refused(&eleven), "11 media_urls: at most 10 per message");
    }

    #[test]
    fn ten_are_accepted_and_none_is_no_media() {
        assert_eq!(
            Media::parse(vec!["https://e.com/x".into(); 10])
                .unwrap()
                .urls()
                .len(),
            10
        );
        assert!(Media::parse(Vec::new()).unwrap().is_empty());
    }
}
