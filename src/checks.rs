//! What both services do around the cost guard and the shared rate limits: read the
//! counts the guard needs from the store, ask it, and write its verdict to the audit
//! trail; take the shared limits' cells after the in-process limiter passed. Here so
//! that neither the guard nor the limiter holds a store and the two services do not
//! each repeat it.

use std::time::SystemTime;

use crate::config::Rate;
use crate::guard::{Destination, Guard, GuardError, Needs, Observed, Verdict};
use crate::limiter::{Limit, Limiter, RateLimited};
use crate::store::{GuardEvent, LimitCheck, Store, StoreError};
use crate::types::{Caller, PhoneNumber};

/// Who a guarded send was for, as the audit trail records it.
pub struct Subject<'a> {
    pub phone: &'a PhoneNumber,
    pub purpose: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub caller: Option<Caller>,
}

/// Which of the guard's checks a send goes through.
#[derive(Clone, Copy)]
pub enum Check<'a> {
    /// A code: every rule.
    Code(&'a Destination),
    /// A plain message: the country lists and the daily cap.
    Message(&'a Destination),
    /// The operator's test message: the daily cap alone.
    TestMessage,
}

/// The shared limits behind the in-process ones (which already passed): with a store
/// shared by several hosts, a limit of N allows N in total, not N per host. The outer
/// error is the store's (503), the inner the limit's refusal (429).
pub async fn shared_limits(
    store: &Store,
    limiter: &Limiter,
    checks: Vec<(Limit, String, Rate)>,
) -> Result<Result<(), RateLimited>, StoreError> {
    if matches!(store, Store::Sqlite(_)) {
        return Ok(Ok(()));
    }
    let cells = checks
        .iter()
        .map(|(_, key, rate)| LimitCheck {
            key: key.clone(),
            interval: rate.period / rate.count.get(),
            burst: rate.count.get(),
        })
        .collect();
    let Some((i, retry_after)) = store.take_limits(cells).await? else {
        return Ok(Ok(()));
    };
    let limit = checks
        .get(i)
        .map_or(Limit::SendGlobal, |(limit, _, _)| *limit);
    let refused = RateLimited { limit, retry_after };
    limiter.note(&refused);
    Ok(Err(refused))
}

/// Asks the guard, audits every refusal and would-be refusal, and returns the refusal
/// that stops the send, if any.
pub async fn guard(
    guard: &Guard,
    store: &Store,
    check: Check<'_>,
    who: Subject<'_>,
    now: SystemTime,
) -> Result<Option<GuardError>, StoreError> {
    let dest = match check {
        Check::Code(dest) => Some(dest),
        Check::Message(_) | Check::TestMessage => None,
    };
    let observed = observe(store, guard.needs(dest, now)).await?;
    let verdict: Verdict = match check {
        Check::Code(dest) => guard.check(dest, now, &observed),
        Check::Message(dest) => guard.check_message(dest, now, &observed),
        Check::TestMessage => guard.check_test_message(now, &observed),
    };
    for (event, e) in verdict.events() {
        log::warn!("{event} {} for {}: {e}", e.rule(), who.phone.masked());
        store
            .record_guard_event(GuardEvent {
                at: now,
                event,
                phone: who.phone.as_str().to_owned(),
                purpose: who.purpose.map(str::to_owned),
                user_id: who.user_id.map(str::to_owned),
                detail: e.rule(),
                caller: who.caller,
            })
            .await?;
    }
    Ok(verdict.blocked)
}

async fn observe(store: &Store, needs: Needs) -> Result<Observed, StoreError> {
    let unverified = match needs.unverified {
        Some((country, since)) => store.count_unverified(country, since).await?,
        None => (0, None),
    };
    let messages_today = match needs.messages_since {
        Some(since) => Some(store.count_messages_since(since).await?),
        None => None,
    };
    Ok(Observed {
        unverified,
        messages_today,
    })
}
