//! One-time codes on the shared store: inserting one (superseding the live ones, with
//! at most one live code per (phone, purpose) even when two hosts send at once),
//! recording how its message went, and a verify attempt: counted by one conditional
//! update that commits before anything is compared, then consumed by another, so
//! guesses through several hosts can never pass the cap and a code verifies once.

use std::time::SystemTime;

use super::audit::code_event;
use super::messages::insert_message;
use super::{PgStore, int, uint, unique_violation};
use crate::store::StoreError;
use crate::store::types::{Attempt, Delivery, NewCode, from_millis, millis};
use crate::types::{Caller, Channel};

/// How often an insert that met another host's live code is tried again.
const INSERT_TRIES: usize = 3;

impl PgStore {
    /// Supersedes any live code for (phone, purpose) and inserts the new one as pending.
    pub async fn insert_code(&self, code: NewCode) -> Result<i64, StoreError> {
        let s = self.clone();
        self.run("insert_code", async move {
            let mut tries = 0;
            loop {
                tries += 1;
                match s.try_insert_code(&code).await {
                    Err(StoreError::Postgres(e))
                        if tries < INSERT_TRIES && unique_violation(&e, "otps_one_live") =>
                    {
                        // Another host inserted a live code between our supersede and
                        // insert; the next try supersedes it.
                        continue;
                    }
                    other => return other,
                }
            }
        })
        .await
    }

    async fn try_insert_code(&self, code: &NewCode) -> Result<i64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let superseded = tx
            .query(
                &tx.prepare_cached(
                    "UPDATE otps SET state = 'superseded'
                     WHERE phone = $1 AND purpose = $2 AND state IN ('pending', 'sent')
                     RETURNING id",
                )
                .await?,
                &[&code.phone, &code.purpose],
            )
            .await?;
        for row in superseded {
            let old: i64 = row.get(0);
            code_event(
                &tx,
                &self.instance,
                code.created_at,
                old,
                "superseded",
                None,
                code.caller,
            )
            .await?;
        }
        let id: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "INSERT INTO otps (phone, purpose, user_id, code_hash, state, max_attempts,
                                       test_number, created_at, expires_at, country, created_by)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10) RETURNING id",
                )
                .await?,
                &[
                    &code.phone,
                    &code.purpose,
                    &code.user_id,
                    &code.code_hash,
                    &int(code.max_attempts),
                    &code.test_number,
                    &millis(code.created_at),
                    &millis(code.expires_at),
                    &code.country,
                    &&*self.instance,
                ],
            )
            .await?
            .get(0);
        code_event(
            &tx,
            &self.instance,
            code.created_at,
            id,
            "generated",
            None,
            code.caller,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records how the code's message went (a concurrent re-send may have superseded
    /// the code meanwhile; that is kept).
    pub async fn record_delivery(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("record_delivery", async move {
            let (state, event, detail) = delivery.code_outcome();
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE otps SET state = $2 WHERE id = $1 AND state = 'pending'",
                )
                .await?,
                &[&otp_id, &state],
            )
            .await?;
            if let Delivery::Sent {
                fallback: Some(fallback),
                ..
            } = &delivery
            {
                tx.execute(
                    "UPDATE otps SET locale = $2 WHERE id = $1",
                    &[&otp_id, &fallback.locale],
                )
                .await?;
            }
            insert_message(&tx, Some(otp_id), &to, channel, &delivery, now).await?;
            code_event(
                &tx,
                &s.instance,
                now,
                otp_id,
                event,
                detail.as_deref(),
                caller,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Records a channel that refused the code's message when another is tried next.
    pub async fn record_fallback(
        &self,
        otp_id: i64,
        to: String,
        channel: Channel,
        delivery: Delivery,
        now: SystemTime,
        caller: Caller,
    ) -> Result<(), StoreError> {
        let s = self.clone();
        self.run("record_fallback", async move {
            let detail = delivery.refusal_detail(channel);
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            insert_message(&tx, Some(otp_id), &to, channel, &delivery, now).await?;
            code_event(
                &tx,
                &s.instance,
                now,
                otp_id,
                "channel_fallback",
                Some(&detail),
                caller,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// One verify attempt. First, in a statement of its own that commits before the
    /// comparison, the attempt is counted on the newest code of (phone, purpose) if it
    /// can still be verified; then `matches` compares (it never sees the database) and
    /// a match consumes the code with a conditional update, so of two correct guesses
    /// through two hosts one verifies and the other finds the code used.
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
        let s = self.clone();
        self.run("check_attempt", async move {
            let c = s.client().await?;
            let at = millis(now);
            // A code superseded between the statements sends us round again, a bounded
            // number of times: each round means another host's send committed.
            for _ in 0..4 {
                let counted = c
                    .query_opt(
                        &c.prepare_cached(
                            "UPDATE otps SET attempts = attempts + 1
                             WHERE id = (SELECT id FROM otps WHERE phone = $1 AND purpose = $2
                                         ORDER BY id DESC LIMIT 1)
                               AND state = 'sent' AND expires_at > $3
                               AND attempts < max_attempts
                             RETURNING id, code_hash, user_id, max_attempts - attempts",
                        )
                        .await?,
                        &[&phone, &purpose, &at],
                    )
                    .await?;
                if let Some(row) = counted {
                    let id: i64 = row.get(0);
                    let hash: Vec<u8> = row.get(1);
                    let user_id: Option<String> = row.get(2);
                    let attempts_remaining = uint(row.get(3));
                    if matches(&hash, user_id.as_deref()) {
                        return s.consume(&c, id, now, caller).await;
                    }
                    let detail = format!("{attempts_remaining} attempts remaining");
                    code_event(
                        &c,
                        &s.instance,
                        now,
                        id,
                        "failed_attempt",
                        Some(&detail),
                        caller,
                    )
                    .await?;
                    return Ok(Attempt::Wrong {
                        id,
                        attempts_remaining,
                    });
                }
                // Not counted: say why, from the newest row.
                let latest = c
                    .query_opt(
                        &c.prepare_cached(
                            "SELECT id, state, attempts, max_attempts, expires_at FROM otps
                             WHERE phone = $1 AND purpose = $2 ORDER BY id DESC LIMIT 1",
                        )
                        .await?,
                        &[&phone, &purpose],
                    )
                    .await?;
                let Some(row) = latest else {
                    return Ok(Attempt::NoCode);
                };
                let (id, state) = (row.get::<_, i64>(0), row.get::<_, String>(1));
                let (attempts, max_attempts) = (row.get::<_, i32>(2), row.get::<_, i32>(3));
                let expires_at: i64 = row.get(4);
                match state.as_str() {
                    "verified" => return Ok(Attempt::Used),
                    "expired" => return Ok(Attempt::Expired),
                    "sent" => {}
                    _ => return Ok(Attempt::NoCode),
                }
                if expires_at <= at {
                    let expired = c
                        .execute(
                            "UPDATE otps SET state = 'expired' WHERE id = $1 AND state = 'sent'",
                            &[&id],
                        )
                        .await?;
                    if expired == 1 {
                        code_event(&c, &s.instance, now, id, "expired", None, caller).await?;
                    }
                    return Ok(Attempt::Expired);
                }
                if attempts >= max_attempts {
                    return Ok(Attempt::Exhausted {
                        expires_at: from_millis(expires_at),
                    });
                }
            }
            Ok(Attempt::NoCode)
        })
        .await
    }

    /// A matching guess: the code is consumed unless another host's guess was first.
    async fn consume(
        &self,
        c: &deadpool_postgres::Client,
        id: i64,
        now: SystemTime,
        caller: Caller,
    ) -> Result<Attempt, StoreError> {
        let consumed = c
            .execute(
                &c.prepare_cached(
                    "UPDATE otps SET state = 'verified', verified_at = $2
                     WHERE id = $1 AND state = 'sent'",
                )
                .await?,
                &[&id, &millis(now)],
            )
            .await?;
        if consumed == 0 {
            return Ok(Attempt::Used);
        }
        code_event(c, &self.instance, now, id, "verified", None, caller).await?;
        Ok(Attempt::Verified { id })
    }

    /// Gives a code whose message never arrived a new MAC (its attempts and expiry
    /// stay), pending until the next channel's send is recorded. False when it was
    /// verified, superseded or expired meanwhile: then nothing is sent.
    pub async fn replace_code(
        &self,
        otp_id: i64,
        code_hash: Vec<u8>,
        reason: String,
        now: SystemTime,
        caller: Caller,
    ) -> Result<bool, StoreError> {
        let s = self.clone();
        self.run("replace_code", async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await?;
            let replaced = tx
                .execute(
                    "UPDATE otps SET code_hash = $2, state = 'pending'
                     WHERE id = $1 AND state = 'sent' AND expires_at > $3",
                    &[&otp_id, &code_hash, &millis(now)],
                )
                .await?;
            if replaced == 1 {
                let detail = format!("{reason}; a new code goes by the next channel");
                code_event(
                    &tx,
                    &s.instance,
                    now,
                    otp_id,
                    "channel_fallback",
                    Some(&detail),
                    caller,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(replaced == 1)
        })
        .await
    }
}
