//! One request at a time per idempotency key, in this process: the racers of a burst
//! of identical requests wait for the first to commit, then find its message and
//! replay it, so none of them spends a rate-limit token or the cost guard's budget.
//! (The store's insert still checks the key in its transaction; that check alone came
//! too late, after every racer had been charged.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub(super) struct KeyLocks {
    /// std Mutex: held only to find or drop an entry, never across an await.
    held: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while a request with this key is looked up, charged and committed.
pub(super) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub(super) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mutex = self.map().entry(key.to_owned()).or_default().clone();
        KeyGuard {
            locks: self,
            key: key.to_owned(),
            guard: Some(mutex.lock_owned().await),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyGuard<'_> {
    /// The last holder removes the entry, so the map holds only keys in flight. Waiters
    /// clone the entry under the map's lock, so its count there is exact: the map's
    /// reference and this guard's mean nobody else waits.
    fn drop(&mut self) {
        let mut map = self.locks.map();
        if let Some(guard) = self.guard.take()
            && Arc::strong_count(OwnedMutexGuard::mutex(&guard)) == 2
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_request_and_forgotten_after_the_last() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("k").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("k").await;
            })
        };
        // Another key is not held up.
        drop(locks.lock("other").await);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "the second request waits for the first"
        );
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0, "no key is kept once nobody holds it");
    }
}
