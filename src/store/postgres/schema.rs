//! The PostgreSQL schema: its migrations, in order, and the runner that applies them
//! when several instances start at once. The tables are SQLite's (times as `bigint`
//! milliseconds, so the row mapping is shared) plus what sharing needs: at most one
//! live code per (phone, purpose), who claimed an outbox message and when, which
//! instance wrote an audit row, the key check value, shared limits and counters.

use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::super::StoreError;

/// Versioned schema; append only. `schema_migrations` records what has been applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE otps (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        phone         text    NOT NULL,
        purpose       text    NOT NULL,
        user_id       text,
        code_hash     bytea   NOT NULL,
        state         text    NOT NULL CHECK (state IN
                      ('pending', 'sent', 'failed', 'verified', 'superseded', 'expired')),
        attempts      integer NOT NULL DEFAULT 0,
        max_attempts  integer NOT NULL,
        test_number   boolean NOT NULL DEFAULT false,
        created_at    bigint  NOT NULL,
        expires_at    bigint  NOT NULL,
        verified_at   bigint,
        country       text,
        locale        text,
        -- The instance that sent it: only its own restart may take a pending code
        -- for an interrupted send (another host may be sending it right now).
        created_by    text
    );
    CREATE INDEX otps_by_phone_purpose ON otps (phone, purpose, id);
    -- Two hosts sending to one phone at once: the second insert waits for the first
    -- and fails, and is retried superseding it (codes.rs).
    CREATE UNIQUE INDEX otps_one_live ON otps (phone, purpose) WHERE state IN ('pending', 'sent');
    CREATE INDEX otps_by_expiry ON otps (expires_at);
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE country IS NOT NULL AND state NOT IN ('verified', 'failed') AND NOT test_number;

    CREATE TABLE messages (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        otp_id        bigint REFERENCES otps (id),
        kind          text    NOT NULL DEFAULT 'otp',
        channel       text    NOT NULL DEFAULT 'sms',
        created_at    bigint  NOT NULL,
        updated_at    bigint,
        to_number     text    NOT NULL,
        provider      text    NOT NULL,
        sid           text,
        previous_sid  text,
        status        text    NOT NULL,
        error_code    bigint,
        error_message text,
        attempts      integer,
        body          text,
        user_id       text,
        idempotency_key text,
        request_hash  text,
        send_at       bigint,
        segments      integer,
        send_attempts integer NOT NULL DEFAULT 0,
        attempted_at  bigint,
        fallback      text,
        media         text,
        claimed_by    text,
        claimed_at    bigint
    );
    CREATE INDEX messages_by_otp ON messages (otp_id);
    CREATE INDEX messages_by_time ON messages (created_at);
    CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX messages_due ON messages (send_at, id) WHERE status = 'queued' AND kind = 'sms';
    CREATE INDEX messages_checking ON messages (send_at, id)
        WHERE status = 'checking' AND kind = 'sms';
    CREATE INDEX messages_sending ON messages (claimed_at) WHERE status = 'sending';
    CREATE INDEX messages_by_sid ON messages (sid) WHERE sid IS NOT NULL;
    CREATE INDEX messages_by_previous_sid ON messages (previous_sid)
        WHERE previous_sid IS NOT NULL;

    CREATE TABLE message_events (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id    bigint  NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        at            bigint  NOT NULL,
        status        text    NOT NULL,
        error_code    bigint,
        detail        text
    );
    CREATE INDEX message_events_by_message ON message_events (message_id, id);

    -- Never holds a code, a hash of one, or a secret.
    CREATE TABLE audit (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at            bigint  NOT NULL,
        otp_id        bigint,
        event         text    NOT NULL,
        phone         text,
        purpose       text,
        user_id       text,
        detail        text,
        peer_uid      bigint,
        peer_gid      bigint,
        peer_pid      integer,
        instance      text
    );
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_phone ON audit (phone, at);

    -- GCRA state per limited key: the theoretical arrival time in microseconds of the
    -- database's clock. No index on tat: every hit updates it, and must stay HOT.
    CREATE TABLE limits (key text PRIMARY KEY, tat bigint NOT NULL) WITH (fillfactor = 50);
    CREATE TABLE counters (
        name text NOT NULL, day bigint NOT NULL, count bigint NOT NULL,
        PRIMARY KEY (name, day)
    ) WITH (fillfactor = 50);
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);",
    // The instances sharing the schema, for `/status/`: each writes its row every 30 s.
    "CREATE TABLE instances (
        name      text   PRIMARY KEY,
        heartbeat bigint NOT NULL,
        version   text   NOT NULL,
        settings  text   NOT NULL
    );",
];

/// The newest schema this binary knows.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any number, the same in every otpd: the advisory lock's key within the schema's
/// name, so two schemas in one database (tests) migrate independently.
const LOCK_CLASS: i32 = 0x6f74_7064; // "otpd"

/// Brings `schema` up to date on one connection of its own. Instances starting together
/// queue on an advisory lock: the first applies, the others then find nothing to do.
/// A schema newer than this binary knows stops the start.
pub(super) async fn migrate<T>(
    pg: &tokio_postgres::Config,
    tls: T,
    schema: &str,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (mut client, connection) = pg.connect(tls).await?;
    let driver = tokio::spawn(connection);
    let result = async {
        client
            .execute(
                "SELECT pg_advisory_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &schema],
            )
            .await?;
        // Created only when missing: CREATE SCHEMA checks the database's CREATE
        // privilege even with IF NOT EXISTS, which a role owning only its schema lacks.
        let exists = client
            .query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                &[&schema],
            )
            .await?
            .get::<_, i64>(0)
            > 0;
        if !exists {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await?;
        }
        // The schema is a checked identifier (config/postgres.rs).
        client
            .batch_execute(&format!(
                "SET search_path = {schema};
                 CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now(),
                     otpd       text NOT NULL
                 );"
            ))
            .await?;
        let found: i32 = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        if found > PG_SCHEMA_VERSION {
            return Err(StoreError::PgSchemaTooNew {
                found,
                known: PG_SCHEMA_VERSION,
            });
        }
        let binary = format!("otpd {}", env!("CARGO_PKG_VERSION"));
        for (version, sql) in (1..)
            .zip(MIGRATIONS)
            .skip(usize::try_from(found).unwrap_or(0))
        {
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, otpd) VALUES ($1, $2)",
                &[&version, &binary],
            )
            .await?;
            tx.commit().await?;
            log::info!("PostgreSQL schema {schema} migrated to version {version}");
        }
        Ok(())
    }
    .await;
    // Ending the session releases the advisory lock, whatever happened.
    drop(client);
    let _ = driver.await;
    result
}

/// The schema version `check-config --connect` reports: 0 when otpd never ran there.
pub(super) async fn version<T>(
    pg: &tokio_postgres::Config,
    tls: T,
    schema: &str,
) -> Result<i32, StoreError>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = pg.connect(tls).await?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.schema_migrations")],
        )
        .await?
        .get::<_, bool>(0);
    let version = if exists {
        client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
                &[],
            )
            .await?
            .get(0)
    } else {
        0
    };
    drop(client);
    let _ = driver.await;
    Ok(version)
}
