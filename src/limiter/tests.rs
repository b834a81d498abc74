//! The limiter's unit tests: quotas, refills, the key bound, reload.

use super::*;
use bounded::FIRST_PRUNE_AT;

fn rate(count: u32, secs: u64) -> Rate {
    Rate {
        count: NonZeroU32::new(count).unwrap(),
        period: Duration::from_secs(secs),
    }
}

fn limiter() -> Limiter {
    Limiter::new(&LimitsConfig {
        send_per_phone: rate(2, 600),
        send_per_user: rate(3, 3600),
        verify_per_phone: rate(1, 60),
        send_global: rate(100, 1),
        max_keys: 1000,
    })
}

#[test]
fn a_phone_gets_its_burst_then_a_wait_of_one_refill_interval() {
    let l = limiter();
    assert!(l.check_send("+34600111222", None).is_ok());
    assert!(l.check_send("+34600111222", None).is_ok());
    let refused = l.check_send("+34600111222", None).unwrap_err();
    assert_eq!(refused.limit, Limit::SendPerPhone);
    // 2 per 10 minutes refills one send every 5 minutes.
    assert!(refused.retry_after > Duration::from_secs(290));
    assert!(refused.retry_after <= Duration::from_secs(300));
    assert!(l.check_send("+34600111223", None).is_ok());
}

#[test]
fn a_user_is_limited_across_phones() {
    let l = limiter();
    for n in 0..3 {
        assert!(l.check_send(&format!("+3460011122{n}"), Some("42")).is_ok());
    }
    let refused = l.check_send("+34600111229", Some("42")).unwrap_err();
    assert_eq!(refused.limit, Limit::SendPerUser);
}

#[test]
fn pruning_drops_only_refilled_keys() {
    let l = limiter();
    let _ = l.check_verify("+34600111222");
    assert_eq!(l.key_count(), 1);
    l.prune();
    // Still draining: kept, and still limited.
    assert_eq!(l.key_count(), 1);
    assert!(l.check_verify("+34600111222").is_err());
}

fn bounded(per_phone: Rate, max_keys: usize) -> Limiter {
    Limiter::new(&LimitsConfig {
        send_per_phone: per_phone,
        send_per_user: rate(10, 3600),
        verify_per_phone: per_phone,
        send_global: Rate {
            count: NonZeroU32::MAX,
            period: Duration::from_secs(1),
        },
        max_keys,
    })
}

#[test]
fn millions_of_distinct_keys_never_grow_a_map_past_its_bound() {
    let max = 10_000;
    let l = bounded(rate(5, 600), max);
    // A victim's number, drained before the flood: its state must survive it.
    let victim = "+34600000001";
    while l.check_verify(victim).is_ok() {}
    let mut refused_new = 0u32;
    for n in 0..2_000_000u64 {
        let phone = format!("+1415{n:07}");
        if let Err(e) = l.check_verify(&phone) {
            assert_eq!(e.limit, Limit::VerifyPerPhone);
            refused_new += 1;
        }
        let _ = l.check_send(&phone, Some(&n.to_string()));
    }
    assert!(l.verify_per_phone.load().len() <= max);
    assert!(l.send_per_phone.load().len() <= max);
    assert!(l.send_per_user.load().len() <= max);
    assert!(l.key_count() <= 3 * max);
    assert!(refused_new >= 2_000_000 - max as u32);
    // Failing closed: the flood did not buy the victim a fresh limit.
    assert!(l.check_verify(victim).is_err());
}

#[test]
fn a_full_map_makes_room_by_forgetting_refilled_keys() {
    // One cell per microsecond: every key has refilled by the time it is checked again.
    let fast = Rate {
        count: NonZeroU32::new(1).unwrap(),
        period: Duration::from_micros(1),
    };
    let l = bounded(fast, 100);
    for n in 0..100 {
        assert!(l.check_verify(&format!("+3460000{n:04}")).is_ok());
    }
    assert_eq!(l.verify_per_phone.load().len(), 100);
    std::thread::sleep(Duration::from_millis(1));
    assert!(l.check_verify("+34611111111").is_ok());
    assert!(l.verify_per_phone.load().len() <= 100);
}

#[test]
fn reconfigure_restarts_only_the_limits_that_changed() {
    let l = limiter();
    let _ = l.check_verify("+34600111222");
    assert!(l.check_send("+34600111222", None).is_ok());
    assert!(l.check_send("+34600111222", None).is_ok());
    assert!(l.check_send("+34600111222", None).is_err());
    l.reconfigure(&LimitsConfig {
        send_per_phone: rate(3, 600),
        send_per_user: rate(3, 3600),
        verify_per_phone: rate(1, 60),
        send_global: rate(100, 1),
        max_keys: 1000,
    });
    // Unchanged limit: the key keeps its state.
    assert!(l.check_verify("+34600111222").is_err());
    // Changed limit: the new quota, from a fresh start.
    for _ in 0..3 {
        assert!(l.check_send("+34600111222", None).is_ok());
    }
    assert!(l.check_send("+34600111222", None).is_err());
}

#[test]
fn phone_keys_are_distinct_for_distinct_numbers() {
    let h = std::collections::hash_map::RandomState::new();
    let keys: std::collections::HashSet<u64> = [
        "+1",
        "+10",
        "+100",
        "+34600111222",
        "+346001112220",
        "+999999999999999",
    ]
    .iter()
    .map(|p| phone_key(p, &h))
    .collect();
    assert_eq!(keys.len(), 6);
    assert_ne!(phone_key("+34600111222", &h), phone_key("34600111222x", &h));
}

#[test]
fn keys_that_refill_at_once_never_pile_up() {
    let instant = Rate {
        count: NonZeroU32::new(1).unwrap(),
        period: Duration::from_micros(1),
    };
    let l = bounded(instant, 1_000_000);
    let mut most = 0;
    for n in 0..200_000u64 {
        assert!(l.check_verify(&format!("+1415{n:07}")).is_ok());
        most = most.max(l.verify_per_phone.load().len());
    }
    // Scanned each time it reached FIRST_PRUNE_AT: never near the 200,000 seen.
    assert!(most <= 2 * FIRST_PRUNE_AT, "{most}");
}
