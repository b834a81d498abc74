//! The schema: the migrations, in order, and what brings a database file up to date.
//! It owns table and index definitions and the tests that pin what they cost (query
//! plans, pages written, opcodes); it must not know what any statement is for beyond
//! the indexes it needs.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::{PRAGMAS, StoreError};

/// Versioned schema; append only. `user_version` records how far a file has come.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE otps (
        id            INTEGER PRIMARY KEY,
        phone         TEXT    NOT NULL,
        purpose       TEXT    NOT NULL,
        user_id       TEXT,
        code_hash     BLOB    NOT NULL,
        state         TEXT    NOT NULL CHECK (state IN
                      ('pending', 'sent', 'failed', 'verified', 'superseded', 'expired')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        max_attempts  INTEGER NOT NULL,
        test_number   INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        verified_at   INTEGER
    );
    CREATE INDEX otps_by_phone_purpose ON otps (phone, purpose, id);

    CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        otp_id        INTEGER REFERENCES otps (id),
        created_at    INTEGER NOT NULL,
        to_number     TEXT    NOT NULL,
        provider      TEXT    NOT NULL,
        sid           TEXT,
        status        TEXT    NOT NULL,
        error_code    INTEGER,
        error_message TEXT
    );
    CREATE INDEX messages_by_otp ON messages (otp_id);

    -- Never holds a code, a hash of one, or a secret.
    CREATE TABLE audit (
        id            INTEGER PRIMARY KEY,
        at            INTEGER NOT NULL,
        otp_id        INTEGER,
        event         TEXT    NOT NULL,
        phone         TEXT,
        purpose       TEXT,
        user_id       TEXT,
        detail        TEXT
    );
    CREATE INDEX audit_by_otp ON audit (otp_id);",
    ),
    // Retention and the read endpoints look rows up by time (and the audit by phone).
    M::up(
        "CREATE INDEX otps_by_expiry ON otps (expires_at);
    CREATE INDEX messages_by_time ON messages (created_at);
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_phone ON audit (phone, at);",
    ),
    // Who asked: the caller's SO_PEERCRED credentials, per audit event.
    M::up(
        "ALTER TABLE audit ADD COLUMN peer_uid INTEGER;
    ALTER TABLE audit ADD COLUMN peer_gid INTEGER;
    ALTER TABLE audit ADD COLUMN peer_pid INTEGER;",
    ),
    // The cost guard: each code's destination region, and a partial index holding only
    // the codes that cost an SMS and were not (yet) verified, so counting a country's
    // unverified codes in a window reads about as many index entries as its budget.
    M::up(
        "ALTER TABLE otps ADD COLUMN country TEXT;
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE state NOT IN ('verified', 'failed') AND test_number = 0;",
    ),
    // General messaging: the durable outbox lives in `messages` beside OTP deliveries,
    // and every status a message passes through (including Twilio's callbacks) is kept.
    M::up(
        "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'otp';
    ALTER TABLE messages ADD COLUMN channel TEXT NOT NULL DEFAULT 'sms';
    ALTER TABLE messages ADD COLUMN body TEXT;
    ALTER TABLE messages ADD COLUMN user_id TEXT;
    ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
    ALTER TABLE messages ADD COLUMN request_hash TEXT;
    ALTER TABLE messages ADD COLUMN send_at INTEGER;
    ALTER TABLE messages ADD COLUMN segments INTEGER;
    ALTER TABLE messages ADD COLUMN send_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN updated_at INTEGER;
    CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX messages_due ON messages (send_at) WHERE status = 'queued';
    CREATE INDEX messages_by_sid ON messages (sid) WHERE sid IS NOT NULL;
    CREATE TABLE message_events (
        id            INTEGER PRIMARY KEY,
        message_id    INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        at            INTEGER NOT NULL,
        status        TEXT    NOT NULL,
        error_code    INTEGER,
        detail        TEXT
    );
    CREATE INDEX message_events_by_message ON message_events (message_id, id);",
    ),
    // How many requests each message took (retries); NULL on rows from before.
    M::up("ALTER TABLE messages ADD COLUMN attempts INTEGER;"),
    // Channels still to try, comma-separated, when Twilio refuses the current one.
    M::up("ALTER TABLE messages ADD COLUMN fallback TEXT;"),
    // Cheaper writes on the hot path:
    // - `state IN (six values)` made SQLite build a temporary b-tree for every write of
    //   `state`; the same rule as comparisons costs nothing. SQLite cannot alter a CHECK,
    //   so `otps` is rebuilt by its documented procedure (foreign keys are off while
    //   migrating; `foreign_key_check` proves `messages` still points at real codes).
    // - No query reads the audit through `audit_by_otp` or `audit_by_phone`, yet every
    //   audit row paid for both (the phone index on a random page per event).
    M::up(
        "CREATE TABLE otps_new (
        id            INTEGER PRIMARY KEY,
        phone         TEXT    NOT NULL,
        purpose       TEXT    NOT NULL,
        user_id       TEXT,
        code_hash     BLOB    NOT NULL,
        state         TEXT    NOT NULL CHECK (state = 'pending' OR state = 'sent'
                      OR state = 'failed' OR state = 'verified' OR state = 'superseded'
                      OR state = 'expired'),
        attempts      INTEGER NOT NULL DEFAULT 0,
        max_attempts  INTEGER NOT NULL,
        test_number   INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        verified_at   INTEGER,
        country       TEXT
    );
    INSERT INTO otps_new (id, phone, purpose, user_id, code_hash, state, attempts,
                          max_attempts, test_number, created_at, expires_at, verified_at,
                          country)
        SELECT id, phone, purpose, user_id, code_hash, state, attempts, max_attempts,
               test_number, created_at, expires_at, verified_at, country FROM otps;
    DROP TABLE otps;
    ALTER TABLE otps_new RENAME TO otps;
    CREATE INDEX otps_by_phone_purpose ON otps (phone, purpose, id);
    CREATE INDEX otps_by_expiry ON otps (expires_at);
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE state NOT IN ('verified', 'failed') AND test_number = 0;
    DROP INDEX audit_by_otp;
    DROP INDEX audit_by_phone;",
    )
    .foreign_key_check(),
    // Indexes that every send or verify maintained for rows no query reads through them:
    // - The unverified budget counts codes by destination country, which otpd stores
    //   only while the cost guard is on; codes without one were in its index anyway (a
    //   page per send and per verify).
    // - The outbox's due index held code deliveries too, as Twilio's status "queued" is
    //   also the outbox's; the outbox reads only `kind = 'sms'`.
    M::up(
        "DROP INDEX otps_unverified_by_country;
    CREATE INDEX otps_unverified_by_country ON otps (country, created_at)
        WHERE country IS NOT NULL AND state NOT IN ('verified', 'failed')
          AND test_number = 0;
    DROP INDEX messages_due;
    CREATE INDEX messages_due ON messages (send_at) WHERE status = 'queued' AND kind = 'sms';",
    ),
    // Sends that may have reached Twilio: when the last attempt began (the window its
    // check reads in Twilio's list), the few messages waiting in `checking`, the SID a
    // WhatsApp message had before it was re-sent on the next channel (late callbacks
    // still find it), and a code's locale, for that re-send's text.
    M::up(
        "ALTER TABLE messages ADD COLUMN attempted_at INTEGER;
    ALTER TABLE messages ADD COLUMN previous_sid TEXT;
    ALTER TABLE otps ADD COLUMN locale TEXT;
    CREATE INDEX messages_checking ON messages (send_at)
        WHERE status = 'checking' AND kind = 'sms';
    CREATE INDEX messages_by_previous_sid ON messages (previous_sid)
        WHERE previous_sid IS NOT NULL;",
    ),
    // An MMS's attachment URLs, newline-separated; NULL for a text.
    M::up("ALTER TABLE messages ADD COLUMN media TEXT;"),
];

/// Brings the schema up to date, with foreign keys off while it runs: rebuilding a
/// table (SQLite's way to change a constraint) drops the old one while other tables
/// still refer to it. A migration that rebuilds checks the keys before it commits.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    let (started, before) = (Instant::now(), version(conn)?);
    migrate_to(conn, SCHEMA_VERSION)?;
    let after = version(conn)?;
    // A rebuild takes seconds on a large database: say why this start was slow.
    if before > 0 && after != before {
        log::info!(
            "database schema upgraded from version {before} to {after} in {:.1?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// The migrations up to `version`, foreign keys off while they run (see [`migrate`]).
fn migrate_to(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Migrations::from_slice(MIGRATIONS).to_version(conn, version)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the database at `path` with the schema of `version`, as the otpd of that
/// version left it: for upgrade tests, which start today's binary on such a file.
#[doc(hidden)]
pub fn create_at_version(path: &Path, version: usize) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(PRAGMAS)?;
    migrate_to(&mut conn, version)
}

/// The schema version this otpd brings every database to.
#[doc(hidden)]
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A database in memory at today's schema, for the statements' tests.
#[cfg(test)]
pub(super) fn migrated() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate(&mut conn).unwrap();
    conn
}

/// The steps of SQLite's plan for `sql`.
#[cfg(test)]
pub(super) fn query_plan(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Vec<String> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params, |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    #[test]
    fn rebuilding_otps_keeps_every_row_index_and_reference() {
        let mut conn = Connection::open_in_memory().unwrap();
        // Version 7: the schema before migration 8 rebuilt `otps`.
        migrate_to(&mut conn, 7).unwrap();
        conn.execute_batch(
            "INSERT INTO otps (id, phone, purpose, user_id, code_hash, state, attempts,
                               max_attempts, test_number, created_at, expires_at,
                               verified_at, country)
             VALUES (7, '+34600000001', 'login', 'u1', x'0102', 'verified', 2, 5, 0, 10, 20,
                     15, 'ES'),
                    (9, '+34600000002', 'signup', NULL, x'0304', 'sent', 0, 5, 1, 11, 21,
                     NULL, NULL);
             INSERT INTO messages (otp_id, created_at, to_number, provider, status)
             VALUES (7, 10, '+34600000001', 'twilio', 'sent');
             INSERT INTO audit (at, otp_id, event, phone) VALUES (10, 7, 'generated', '+34');",
        )
        .unwrap();
        let rows = |c: &Connection| -> Vec<String> {
            c.prepare(
                "SELECT quote(id) || quote(phone) || quote(purpose) || quote(user_id) ||
                              quote(code_hash) || quote(state) || quote(attempts) ||
                              quote(max_attempts) || quote(test_number) || quote(created_at) ||
                              quote(expires_at) || quote(verified_at) || quote(country)
                       FROM otps ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let before = rows(&conn);

        migrate(&mut conn).unwrap();

        assert_eq!(rows(&conn), before);
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN
                      ('otps', 'audit') AND sql IS NOT NULL ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "audit_by_time",
                "otps_by_expiry",
                "otps_by_phone_purpose",
                "otps_unverified_by_country"
            ]
        );
        // `messages` still refers to `otps`, and the reference is enforced again.
        let e = conn
            .execute("DELETE FROM otps WHERE id = 7", [])
            .unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        conn.execute("DELETE FROM otps WHERE id = 9", []).unwrap();
    }

    /// WAL frames (pages) that `write` commits on a file holding `codes` codes, each
    /// without a destination country (the cost guard off) and with a delivery that
    /// Twilio accepted ("queued"), at schema `version`.
    fn pages_written(version: usize, codes: i64, write: impl FnOnce(&Connection)) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.db");
        create_at_version(&path, version).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for n in 0..codes {
            conn.prepare_cached(SqliteStore::INSERT_CODE)
                .unwrap()
                .execute(params![
                    format!("+346{n:08}"),
                    "login",
                    None::<String>,
                    [7u8; 32],
                    5,
                    false,
                    n,
                    n + 600_000,
                    None::<String>
                ])
                .unwrap();
            deliver(&conn, conn.last_insert_rowid());
        }
        conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        write(&conn);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    /// The row `record_delivery` writes for a code that Twilio accepted.
    fn deliver(conn: &Connection, otp_id: i64) {
        conn.prepare_cached(SqliteStore::INSERT_DELIVERY)
            .unwrap()
            .execute(params![
                otp_id,
                otp_id,
                "+34600000000",
                "twilio",
                format!("SM{otp_id:032x}"),
                "queued",
                None::<i64>,
                None::<String>,
                1,
                "sms"
            ])
            .unwrap();
    }

    #[test]
    fn a_verify_with_the_guard_off_writes_only_the_codes_page() {
        // Before migration 9 every code was in the unverified-budget index, country or
        // not, so a verify also rewrote a page of it.
        let verify = |c: &Connection| {
            c.execute(SqliteStore::CONSUME, params![2_500, 1]).unwrap();
        };
        assert_eq!(pages_written(8, 5_000, verify), 2);
        assert_eq!(pages_written(SCHEMA_VERSION, 5_000, verify), 1);
    }

    #[test]
    fn a_code_delivery_stays_out_of_the_outbox_index() {
        // Before migration 9 Twilio's "queued" put every code delivery in the outbox's
        // due index too.
        let one_more = |c: &Connection| deliver(c, 2_500);
        let before = pages_written(8, 5_000, one_more);
        let after = pages_written(SCHEMA_VERSION, 5_000, one_more);
        assert_eq!(after, before - 1, "{before} pages before, {after} after");
    }

    #[test]
    fn sqlite_is_built_as_cargo_config_says() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for on in ["DEFAULT_MEMSTATUS=0", "DQS=0", "OMIT_LOAD_EXTENSION"] {
            assert!(options.iter().any(|o| o == on), "{on} missing: {options:?}");
        }
        for off in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_DBSTAT_VTAB",
        ] {
            assert!(
                !options.iter().any(|o| o == off),
                "{off} built in: {options:?}"
            );
        }
    }
}
