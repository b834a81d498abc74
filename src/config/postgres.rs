//! `[store] backend` and `[store.postgres]`: which store otpd uses, and for the shared
//! PostgreSQL one, where it is, how to log in and how long to wait. Everything is
//! checked here, once: the URL parses (libpq style, several hosts allowed) and holds no
//! password, the password comes from a file, `PGPASSWORD` or the systemd credential
//! `pg-password`, the CA file reads as PEM, the schema is a plain identifier. How a
//! connection is made is the store's business.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sources::{Secret, Sources};
use super::values::duration;
use super::{ConfigError, invalid};

/// The systemd credential holding the PostgreSQL password.
pub const PASSWORD_CREDENTIAL: &str = "pg-password";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub(super) url: String,
    pub(super) password_file: PathBuf,
    pub(super) ca_file: PathBuf,
    pub(super) schema: String,
    pub(super) pool_size: usize,
    pub(super) connect_timeout: String,
    pub(super) statement_timeout: String,
    /// Empty: the host name.
    pub(super) instance: String,
}

impl Default for RawPostgres {
    fn default() -> Self {
        RawPostgres {
            url: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            schema: "otpd".into(),
            pool_size: 8,
            connect_timeout: "2s".into(),
            statement_timeout: "2s".into(),
            instance: String::new(),
        }
    }
}

/// TLS as the URL's `sslmode` asks; `Require` verifies the server's certificate and
/// host name (against `ca_file` when set, else the public web roots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The URL as parsed (hosts, user, database, sslmode, target_session_attrs), no
    /// password: that is `password`.
    pub url: tokio_postgres::Config,
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    /// PEM certificates the server's chain must lead to; empty: the web roots.
    pub ca_certs: Vec<Vec<u8>>,
    pub schema: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// This instance's name in claims, leases and the audit trail.
    pub instance: String,
}

pub(super) fn postgres(
    raw: &RawPostgres,
    sources: &Sources,
) -> Result<PostgresConfig, ConfigError> {
    if raw.url.trim().is_empty() {
        return Err(invalid(
            "store.postgres.url",
            "must be set when store.backend is \"postgres\" (e.g. \
             \"postgresql://otpd@db1,db2/app?target_session_attrs=read-write\")",
        ));
    }
    let mut url = tokio_postgres::Config::from_str(&raw.url)
        .map_err(|e| invalid("store.postgres.url", format!("is not a libpq URL: {e}")))?;
    if url.get_password().is_some() {
        return Err(invalid(
            "store.postgres.url",
            "must not hold the password: put it in store.postgres.password_file, \
             PGPASSWORD in the environment, or the systemd credential pg-password",
        ));
    }
    if url.get_hosts().is_empty() {
        return Err(invalid("store.postgres.url", "names no host"));
    }
    if url.get_user().is_none() {
        return Err(invalid("store.postgres.url", "names no user"));
    }
    let sslmode = match url.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    let connect_timeout = duration("store.postgres.connect_timeout", &raw.connect_timeout)?;
    let statement_timeout = duration("store.postgres.statement_timeout", &raw.statement_timeout)?;
    if connect_timeout.is_zero() || statement_timeout.is_zero() {
        return Err(invalid(
            "store.postgres",
            "connect_timeout and statement_timeout must be above 0: a request must never wait forever",
        ));
    }
    url.connect_timeout(connect_timeout);
    if !(1..=256).contains(&raw.pool_size) {
        return Err(invalid("store.postgres.pool_size", "must be 1 to 256"));
    }
    if !identifier(&raw.schema) {
        return Err(invalid(
            "store.postgres.schema",
            "must be a plain lower-case identifier: a-z, 0-9 and _, at most 63, not starting with a digit",
        ));
    }
    let instance = match raw.instance.trim() {
        "" => host_name(),
        name => name.to_owned(),
    };
    if instance.is_empty() || instance.len() > 63 || instance.chars().any(char::is_control) {
        return Err(invalid(
            "store.postgres.instance",
            "must be 1 to 63 printable characters (default: the host name)",
        ));
    }
    let ca_certs = if raw.ca_file.as_os_str().is_empty() {
        Vec::new()
    } else {
        ca_certs(&raw.ca_file)?
    };
    Ok(PostgresConfig {
        url,
        password: password(raw, sources)?,
        sslmode,
        ca_certs,
        schema: raw.schema.clone(),
        pool_size: raw.pool_size,
        connect_timeout,
        statement_timeout,
        instance,
    })
}

/// The password's sources, most specific first, as for Twilio's secrets: the systemd
/// credential, then `PGPASSWORD`, then `password_file`. None: the server asks for none
/// (peer or trust authentication).
fn password(raw: &RawPostgres, sources: &Sources) -> Result<Option<Secret>, ConfigError> {
    let trimmed = |bytes: Vec<u8>, from: &str| {
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid(from, "the PostgreSQL password is not UTF-8"))?;
        Ok::<_, ConfigError>(Secret(text.trim_end_matches(['\r', '\n']).to_owned()))
    };
    if let Some(bytes) = sources.credential(PASSWORD_CREDENTIAL)? {
        return trimmed(bytes, "credential pg-password").map(Some);
    }
    if let Some(value) = sources.env.get("PGPASSWORD").filter(|v| !v.is_empty()) {
        return Ok(Some(Secret(value.clone())));
    }
    if raw.password_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let bytes = std::fs::read(&raw.password_file).map_err(|source| ConfigError::Read {
        path: raw.password_file.clone(),
        source,
    })?;
    trimmed(bytes, "store.postgres.password_file").map(Some)
}

fn ca_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut text.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("store.postgres.ca_file", format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "store.postgres.ca_file",
            "holds no PEM certificate",
        ));
    }
    Ok(certs)
}

fn identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The kernel's host name (Linux only, as otpd is).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawPostgres {
        RawPostgres {
            url: url.into(),
            ..RawPostgres::default()
        }
    }

    #[test]
    fn a_multi_host_url_parses_and_the_instance_defaults_to_the_host_name() {
        let c = postgres(
            &raw("postgresql://otpd@db1,db2/app?target_session_attrs=read-write&sslmode=require"),
            &Sources::default(),
        )
        .unwrap();
        assert_eq!(c.url.get_hosts().len(), 2);
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.schema, "otpd");
        assert_eq!(c.instance, host_name());
        assert!(c.password.is_none());
    }

    #[test]
    fn a_password_in_the_url_is_refused_with_where_it_belongs() {
        let e = postgres(&raw("postgresql://otpd:secret@db/app"), &Sources::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("store.postgres.url") && e.contains("password_file"),
            "{e}"
        );
        assert!(
            !e.contains("secret"),
            "the error must not echo the password: {e}"
        );
    }

    #[test]
    fn the_credential_beats_pgpassword_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut r = raw("host=/tmp user=otpd");
        r.password_file = file;
        let mut sources = Sources::default();
        let got = |s: &Sources| {
            postgres(&r, s)
                .unwrap()
                .password
                .unwrap()
                .expose()
                .to_owned()
        };
        assert_eq!(got(&sources), "from-file");
        sources.env.insert("PGPASSWORD".into(), "from-env".into());
        assert_eq!(got(&sources), "from-env");
        std::fs::write(dir.path().join(PASSWORD_CREDENTIAL), "from-cred\n").unwrap();
        sources.credentials_dir = Some(dir.path().to_owned());
        assert_eq!(got(&sources), "from-cred");
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = Sources::default();
        let check = |r: RawPostgres, key: &str| {
            let e = postgres(&r, &s).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        check(raw(""), "store.postgres.url");
        check(
            raw("postgresql://otpd@db/app?sslmode=verify-full"),
            "store.postgres.url",
        );
        let mut r = raw("host=/tmp user=otpd");
        r.schema = "Otpd; DROP".into();
        check(r, "store.postgres.schema");
        let mut r = raw("host=/tmp user=otpd");
        r.pool_size = 0;
        check(r, "store.postgres.pool_size");
        let mut r = raw("host=/tmp user=otpd");
        r.statement_timeout = "0s".into();
        check(r, "store.postgres");
        let mut r = raw("host=/tmp user=otpd");
        r.ca_file = "/nonexistent/ca.pem".into();
        check(r, "/nonexistent/ca.pem");
    }
}
