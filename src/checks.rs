//! What both services do around the cost guard: read the counts it needs from the store,
//! ask it, and write its verdict to the audit trail. Here so that the guard holds no
//! store and the two services do not each repeat it.

use std::time::SystemTime;

use crate::guard::{Destination, Guard, GuardError, Needs, Observed, Verdict};
use crate::store::{GuardEvent, Store, StoreError};
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
