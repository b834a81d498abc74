//! The shared PostgreSQL store: the same operations as the SQLite one, in one schema
//! that every otpd instance of a backend shares. This file owns the handle: the pool
//! (deadpool over tokio-postgres, TLS by rustls), start-up (connect with retries,
//! migrate, check the HMAC key's check value), the timeouts that keep a request from
//! waiting on a database that does not answer, and PostgreSQL's error codes as faults.
//! The statements live by subject beside it, as the SQLite ones do.
//!
//! Rules every statement file keeps: a reply only after COMMIT returned (every
//! connection runs with `synchronous_commit` as the server has it, `on` by default); a
//! rule that must hold across hosts is one conditional statement or a row lock, never
//! a read then a write in Rust; each operation runs to completion in its own task, so
//! a caller that goes away never leaves a transaction half sent on a pooled connection.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::types::{InstanceRow, from_millis, millis};
use super::{Fault, StoreError};
use crate::config::{PostgresConfig, SslMode};
use crate::telemetry;

mod audit;
mod callbacks;
mod codes;
mod limits;
mod messages;
mod outbox;
mod report;
mod schema;
mod unconfirmed;

pub use schema::PG_SCHEMA_VERSION;

/// How long start-up keeps trying a database that cannot be reached before it gives
/// up (and systemd's `Restart=on-failure` tries again).
const START_RETRIES_FOR: Duration = Duration::from_secs(30);

/// A cheap handle: clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This instance's name: in claims and in the audit trail.
    instance: Arc<str>,
    /// Bound on one whole operation: a connection, its statements, the commit.
    deadline: Duration,
}

/// The rustls client configuration: the CA file's certificates, or the web roots.
fn tls(config: &PostgresConfig) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    if config.ca_certs.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for der in &config.ca_certs {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| StoreError::PgTls(e.to_string()))?;
        }
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::PgTls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(client))
}

/// The connection settings every connection of this instance starts with: its schema
/// first on the search path, its timeouts, and its name for `pg_stat_activity`.
fn connection_config(config: &PostgresConfig, lock_timeout: Duration) -> tokio_postgres::Config {
    let mut pg = config.url.clone();
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    if config.sslmode == SslMode::Disable {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let ms = |d: Duration| d.as_millis().max(1);
    pg.application_name(format!("otpd/{}", config.instance));
    // The schema is a checked identifier (config/postgres.rs), safe to name here.
    pg.options(format!(
        "-c search_path={} -c statement_timeout={} -c lock_timeout={} \
         -c idle_in_transaction_session_timeout={}",
        config.schema,
        ms(config.statement_timeout),
        ms(lock_timeout.min(config.statement_timeout)),
        ms(config.statement_timeout * 4),
    ));
    pg
}

impl PgStore {
    /// Connects (retrying for a while: at boot the database may come up after otpd),
    /// migrates under an advisory lock, and builds the pool.
    pub async fn open(config: &PostgresConfig, lock_timeout: Duration) -> Result<Self, StoreError> {
        let tls = tls(config)?;
        let pg = connection_config(config, lock_timeout);
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            match schema::migrate(&pg, tls.clone(), &config.schema).await {
                Ok(()) => break,
                Err(e)
                    if e.fault() == Fault::Unavailable && started.elapsed() < START_RETRIES_FOR =>
                {
                    log::warn!("PostgreSQL cannot be reached yet ({e}); trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::PgTls(e.to_string()))?;
        Ok(PgStore {
            pool,
            instance: config.instance.as_str().into(),
            deadline: config.connect_timeout + config.statement_timeout * 2,
        })
    }

    /// Connects once, as start-up would, and reads the schema's version (0: otpd never
    /// ran there): `otpd check-config --connect`.
    pub async fn schema_version(config: &PostgresConfig) -> Result<i32, StoreError> {
        let pg = connection_config(config, config.statement_timeout);
        let version = schema::version(&pg, tls(config)?, &config.schema);
        tokio::time::timeout(config.connect_timeout + config.statement_timeout, version)
            .await
            .unwrap_or(Err(StoreError::PgTimeout(config.connect_timeout)))
    }

    /// Closes the pool: idle connections end, the busy ones when they are returned.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs one operation in its own task, bounded by the deadline, timed by op.
    async fn run<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let started = Instant::now();
        let deadline = self.deadline;
        let task = tokio::spawn(async move {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or(Err(StoreError::PgTimeout(deadline)))
        });
        let result = task.await.map_err(|_| StoreError::Closed)?;
        metrics::histogram!(telemetry::STORE_DURATION, "op" => op).record(started.elapsed());
        result
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The store answers: used by `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("ping", async move {
            s.client().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// Records the HMAC key's check value if no instance has, else compares it: a host
    /// with another key would answer every code sent through the others as wrong.
    pub async fn check_key(&self, check_value: String) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("check_key", async move {
            let c = s.client().await?;
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('hmac_key_check', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&check_value],
            )
            .await?;
            let stored: String = c
                .query_one("SELECT value FROM meta WHERE key = 'hmac_key_check'", &[])
                .await?
                .get(0);
            if stored == check_value {
                Ok(())
            } else {
                Err(StoreError::KeyMismatch)
            }
        })
        .await
    }
}

impl PgStore {
    /// This instance's heartbeat: its version and settings fingerprint, now.
    pub async fn heartbeat(&self, settings: String, now: SystemTime) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("heartbeat", async move {
            s.client()
                .await?
                .execute(
                    "INSERT INTO instances (name, heartbeat, version, settings)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE SET heartbeat = excluded.heartbeat,
                         version = excluded.version, settings = excluded.settings",
                    &[
                        &&*s.instance,
                        &millis(now),
                        &env!("CARGO_PKG_VERSION"),
                        &settings,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The instances seen since `since`, by name.
    pub async fn instances(&self, since: SystemTime) -> Result<Vec<InstanceRow>, StoreError> {
        let s = self.clone();
        self.run("instances", async move {
            let rows = s
                .client()
                .await?
                .query(
                    "SELECT name, heartbeat, version, settings FROM instances
                     WHERE heartbeat >= $1 ORDER BY name",
                    &[&millis(since)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| InstanceRow {
                    name: r.get(0),
                    last_seen: from_millis(r.get(1)),
                    version: r.get(2),
                    settings: r.get(3),
                })
                .collect())
        })
        .await
    }
}

/// PostgreSQL's SQLSTATEs (and the pool's and the network's failures) to what a
/// caller can do about them; the one place they are read.
pub(super) fn fault(error: &StoreError) -> Option<Fault> {
    let pg = match error {
        StoreError::Postgres(e) => e,
        StoreError::PgPool(deadpool_postgres::PoolError::Backend(e)) => e,
        StoreError::PgPool(_) | StoreError::PgTimeout(_) => return Some(Fault::Unavailable),
        StoreError::PgTls(_) | StoreError::PgSchemaTooNew { .. } | StoreError::KeyMismatch => {
            return Some(Fault::Other);
        }
        _ => return None,
    };
    let Some(code) = pg.code() else {
        // No SQLSTATE: the connection itself failed (refused, reset, closed, timed out).
        return Some(Fault::Unavailable);
    };
    Some(match code {
        c if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => Fault::Busy,
        c if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            Fault::Busy
        }
        c if *c == SqlState::DISK_FULL => Fault::Full,
        c if c.code().starts_with("08")
            || *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::TOO_MANY_CONNECTIONS
            // A former primary after a failover: the next connection finds the new one.
            || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            Fault::Unavailable
        }
        _ => Fault::Other,
    })
}

/// tokio-postgres's own text of a server error is "db error"; the server's message,
/// SQLSTATE and the cause say what happened.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// A violation of the unique index `name` (another host's concurrent insert won).
fn unique_violation(error: &tokio_postgres::Error, name: &str) -> bool {
    error
        .as_db_error()
        .is_some_and(|e| *e.code() == SqlState::UNIQUE_VIOLATION && e.constraint() == Some(name))
}

/// Milliseconds of a duration, as the schema keeps times.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Counts as the schema keeps them (`integer`).
fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn uint(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}
