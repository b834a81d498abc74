//! One-time codes: inserting one (superseding the live ones), recording how its message
//! went (the message row itself is `messages.rs`'s), and counting a verify attempt
//! against it. It sees only keyed hashes: the comparison is the service's closure, and
//! no code or key ever reaches SQL.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, StoreError, audit, from_millis, millis};
use crate::store::types::{Attempt, Delivery, NewCode};
use crate::types::{Caller, Channel};

impl SqliteStore {
    /// The live codes for (phone, purpose). Found, then updated by id: `UPDATE …
    /// RETURNING` would buffer its rows in a temporary b-tree on every send, though
    /// most sends supersede nothing.
    const LIVE_CODES: &str = "SELECT id FROM otps
         WHERE phone = ?1 AND purpose = ?2 AND state IN ('pending', 'sent')";
    const SUPERSEDE: &str = "UPDATE otps SET state = 'superseded' WHERE id = ?1";
    pub(super) const INSERT_CODE: &str =
        "INSERT INTO otps (phone, purpose, user_id, code_hash, state, max_attempts,
                           test_number, created_at, expires_at, country)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9)";

    /// Supersedes any live code for (phone, purpose) and inserts the new one as pending.
    pub async fn insert_code(&self, code: NewCode) -> Result<i64, StoreError> {
        self.write("insert_code", move |tx| {
            let superseded: Vec<i64> = tx
                .prepare_cached(Self::LIVE_CODES)?
                .query_map(params![code.phone, code.purpose], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for old in superseded {
                tx.prepare_cached(Self::SUPERSEDE)?.execute([old])?;
                audit::code_event(tx, code.created_at, old, "superseded", None, code.caller)?;
            }
            tx.prepare_cached(Self::INSERT_CODE)?.execute(params![
                code.phone,
                code.purpose,
                code.user_id,
                code.code_hash,
                code.max_attempts,
                code.test_number,
                millis(code.created_at),
                millis(code.expires_at),
                code.country,
            ])?;
            let id = tx.last_insert_rowid();
            audit::code_event(tx, code.created_at, id, "generated", None, code.caller)?;
            Ok(id)
        })
        .await
    }

    /// A concurrent re-send may have superseded the code meanwhile; that is kept.
    const MARK_DELIVERED: &str = "UPDATE otps SET state = ?2 WHERE id = ?1 AND state = 'pending'";

    /// Records how the code's message went. Only a sent (or test-number) code can ever
    /// be verified; a failed one is marked failed for good.
    pub async fn record_delivery(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        self.write("record_delivery", move |tx| {
            let (state, event, detail) = delivery.code_outcome();
            tx.prepare_cached(Self::MARK_DELIVERED)?
                .execute(params![otp_id, state])?;
            // The locale a re-send on the next channel renders in (`callbacks.rs`).
            if let Delivery::Sent {
                fallback: Some(fallback),
                ..
            } = &delivery
            {
                tx.prepare_cached("UPDATE otps SET locale = ?2 WHERE id = ?1")?
                    .execute(params![otp_id, fallback.locale])?;
            }
            Self::insert_message(tx, Some(otp_id), &to, channel, &delivery, now)?;
            audit::code_event(tx, now, otp_id, event, detail.as_deref(), caller)
        })
        .await
    }

    /// Records a channel that refused the code's message when another is tried next:
    /// the message row shows the refusal, the code stays pending for the next channel.
    pub async fn record_fallback(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        self.write("record_fallback", move |tx| {
            let detail = delivery.refusal_detail(channel);
            Self::insert_message(tx, Some(otp_id), &to, channel, &delivery, now)?;
            audit::code_event(tx, now, otp_id, "channel_fallback", Some(&detail), caller)
        })
        .await
    }

    const EXPIRE: &str = "UPDATE otps SET state = 'expired' WHERE id = ?1";
    /// A wrong guess: the attempt is counted, the code stays.
    const COUNT_ATTEMPT: &str = "UPDATE otps SET attempts = attempts + 1 WHERE id = ?1";
    /// A match: the attempt is counted and the code consumed in one statement.
    pub(super) const CONSUME: &str = "UPDATE otps SET attempts = attempts + 1, state = 'verified',
                                          verified_at = ?2
         WHERE id = ?1";

    /// One verify attempt in one transaction: finds the latest code for (phone,
    /// purpose) and, if it can still be verified, counts this attempt against it
    /// before anything is compared (parallel guesses are serialized on the writer and
    /// can never exceed the cap); then asks `matches` (the service's constant-time
    /// comparison and user binding: the store never sees a key or a code) and either
    /// consumes the code or audits the wrong guess. One writer round trip per verify.
    pub async fn check_attempt<M>(
        &self,
        phone: String,
        purpose: String,
        now: SystemTime,
        caller: Caller,
        mut matches: M,
    ) -> Result<Attempt, StoreError>
    where
        M: FnMut(&[u8], Option<&str>) -> bool + Send + 'static,
    {
        self.write("check_attempt", move |tx| {
            let latest = tx
                .prepare_cached(
                    "SELECT id, state, code_hash, user_id, attempts, max_attempts, expires_at
                     FROM otps WHERE phone = ?1 AND purpose = ?2 ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![phone, purpose], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })
                .optional()?;
            let Some((id, state, code_hash, user_id, attempts, max_attempts, expires_at)) = latest
            else {
                return Ok(Attempt::NoCode);
            };
            match state.as_str() {
                "verified" => return Ok(Attempt::Used),
                "expired" => return Ok(Attempt::Expired),
                "sent" => {}
                // Pending (its SMS not sent yet), failed or superseded: unverifiable.
                _ => return Ok(Attempt::NoCode),
            }
            if expires_at <= millis(now) {
                tx.prepare_cached(Self::EXPIRE)?.execute([id])?;
                audit::code_event(tx, now, id, "expired", None, caller)?;
                return Ok(Attempt::Expired);
            }
            if attempts >= max_attempts {
                return Ok(Attempt::Exhausted {
                    expires_at: from_millis(expires_at),
                });
            }
            // Whatever the comparison says, this attempt is spent: both branches count
            // it, in the transaction that read the count.
            if matches(&code_hash, user_id.as_deref()) {
                tx.prepare_cached(Self::CONSUME)?
                    .execute(params![id, millis(now)])?;
                audit::code_event(tx, now, id, "verified", None, caller)?;
                return Ok(Attempt::Verified { id });
            }
            tx.prepare_cached(Self::COUNT_ATTEMPT)?.execute([id])?;
            let attempts_remaining = max_attempts.saturating_sub(attempts + 1);
            let detail = format!("{attempts_remaining} attempts remaining");
            audit::code_event(tx, now, id, "failed_attempt", Some(&detail), caller)?;
            Ok(Attempt::Wrong {
                id,
                attempts_remaining,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::migrated;

    /// The opcodes SQLite compiles `sql` to (its parameters left unbound).
    fn opcodes(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let mut rows = stmt.raw_query();
        let mut ops = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            ops.push(row.get(1).unwrap());
        }
        ops
    }

    #[test]
    fn the_writes_of_a_send_and_a_verify_build_no_temporary_btree() {
        let conn = migrated();
        for sql in [
            SqliteStore::LIVE_CODES,
            SqliteStore::SUPERSEDE,
            SqliteStore::INSERT_CODE,
            SqliteStore::MARK_DELIVERED,
            SqliteStore::CONSUME,
            SqliteStore::COUNT_ATTEMPT,
            SqliteStore::EXPIRE,
        ] {
            let ops = opcodes(&conn, sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {ops:?}"
            );
        }
        // The CHECK still holds as comparisons.
        let e = conn
            .execute(
                "INSERT INTO otps (phone, purpose, code_hash, state, max_attempts, created_at,
                                   expires_at) VALUES ('+1', 'login', x'00', 'bogus', 5, 0, 0)",
                [],
            )
            .unwrap_err();
        assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
    }
}
