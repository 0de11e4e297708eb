//! Per-principal token buckets with per-role limits.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use security::rate_limit::{RateLimiter, RateLimits};
use security::{Principal, Role};

fn principal(sub: &str, roles: &[Role]) -> Principal {
    Principal {
        subject: sub.to_owned(),
        issuer: None,
        roles: roles.to_vec(),
        customer_id: None,
    }
}

fn per_second(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// How many of `attempts` immediate checks of `who` pass.
fn passed(limiter: &RateLimiter, who: &Principal, attempts: u32) -> u32 {
    (0..attempts).filter(|_| limiter.check(who).is_ok()).count() as u32
}

#[test]
fn over_the_limit_waits_and_another_principal_is_unaffected() {
    let limiter = RateLimiter::new(RateLimits {
        default_per_second: Some(per_second(5)),
        ..RateLimits::default()
    });
    let alice = principal("alice", &[Role::Customer]);
    assert_eq!(
        passed(&limiter, &alice, 5),
        5,
        "a full bucket of one second"
    );
    let wait = limiter
        .check(&alice)
        .expect_err("the sixth request is over the limit");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    let bob = principal("bob", &[Role::Customer]);
    assert_eq!(passed(&limiter, &bob, 5), 5, "bob has his own bucket");
}

#[test]
fn the_highest_role_limit_applies_else_the_default() {
    let limiter = RateLimiter::new(RateLimits {
        default_per_second: Some(per_second(2)),
        per_role: BTreeMap::from([
            (Role::Clerk, per_second(4)),
            (Role::Operator, per_second(8)),
        ]),
        burst_seconds: per_second(1),
    });
    assert_eq!(passed(&limiter, &principal("c", &[Role::Customer]), 20), 2);
    assert_eq!(passed(&limiter, &principal("k", &[Role::Clerk]), 20), 4);
    assert_eq!(
        passed(
            &limiter,
            &principal("o", &[Role::Clerk, Role::Operator]),
            20
        ),
        8
    );
    assert_eq!(passed(&limiter, &principal("n", &[]), 20), 2);
}

#[test]
fn without_a_default_only_limited_roles_are_limited() {
    let limiter = RateLimiter::new(RateLimits {
        per_role: BTreeMap::from([(Role::Customer, per_second(3))]),
        burst_seconds: per_second(2),
        ..RateLimits::default()
    });
    assert_eq!(
        passed(&limiter, &principal("c", &[Role::Customer]), 20),
        6,
        "burst of 2 s"
    );
    assert_eq!(
        passed(&limiter, &principal("a", &[Role::Admin]), 1000),
        1000
    );
    let unlimited = RateLimiter::new(RateLimits::default());
    assert!(!RateLimits::default().is_enabled());
    assert_eq!(
        passed(&unlimited, &principal("c", &[Role::Customer]), 1000),
        1000
    );
}

#[test]
fn idle_principals_are_forgotten() {
    let limiter = RateLimiter::new(RateLimits {
        default_per_second: Some(per_second(1000)),
        ..RateLimits::default()
    });
    for n in 0..100 {
        limiter
            .check(&principal(&format!("user-{n}"), &[]))
            .unwrap();
    }
    assert_eq!(limiter.tracked_principals(), 100);
    // One request of a 1000/s bucket is replenished after a millisecond.
    std::thread::sleep(Duration::from_millis(20));
    limiter.forget_idle();
    assert_eq!(limiter.tracked_principals(), 0);
}

#[test]
fn check_is_cheap() {
    // A figure for the report, not an assertion: timings on a shared machine vary.
    let limiter = RateLimiter::new(RateLimits {
        default_per_second: Some(per_second(1_000_000)),
        per_role: BTreeMap::from([(Role::Operator, per_second(2_000_000))]),
        ..RateLimits::default()
    });
    let principals: Vec<Principal> = (0..1000)
        .map(|n| principal(&format!("user-{n}"), &[Role::Operator]))
        .collect();
    let checks = 200_000;
    let started = Instant::now();
    for n in 0..checks {
        let _ = limiter.check(&principals[n % principals.len()]);
    }
    let per_check = started.elapsed() / checks as u32;
    eprintln!("rate limit check: {per_check:?} per check ({checks} checks, 1000 principals)");
}
