//! The code itself: drawn from a CSPRNG, stored only as an HMAC keyed with a secret
//! that never enters the database, compared in constant time; and the key file, made
//! on first start. Knows nothing of the store, the limits or the sender.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::digest::{CtOutput, Output};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use thiserror::Error;

use crate::config::KeySource;

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

/// The HMAC key, keyed once: every MAC starts from a copy of the keyed state instead of
/// hashing the key's pads again.
pub(crate) struct CodeKey(Hmac<Sha256>);

impl CodeKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        #[expect(clippy::unreachable, reason = "HMAC takes keys of any length")]
        let keyed = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        CodeKey(keyed)
    }

    /// The key's check value: an HMAC of a fixed label under the key. Instances that
    /// share a store compare these to know they hold the same key; it reveals nothing
    /// of the key, and no code is ever MACed with this label.
    pub(crate) fn check_value(&self) -> String {
        let mut mac = self.0.clone();
        mac.update(b"otpd key check v1\0");
        hex::encode(mac.finalize().into_bytes())
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
pub(crate) fn generate_code(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Reads the HMAC key, creating a random one (0600) on first start.
pub(crate) fn load_key(source: &KeySource) -> Result<Vec<u8>, KeyError> {
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
