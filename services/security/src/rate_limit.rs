//! Per-principal rate limits: a token bucket per `sub` (never per IP address, which a
//! client behind a proxy shares and a forged `X-Forwarded-For` changes), with limits per
//! role.
//!
//! A principal's limit is the highest limit among its roles that have one, else the
//! default; with no limit configured at all every request passes. There is one governor
//! keyed limiter (GCRA, a token bucket in one atomic word per key) per distinct limit, so
//! two principals of the same limit never share a bucket and one principal always lands
//! in the bucket of its limit. Keys idle long enough to have a full bucket are dropped
//! every [`RETAIN_EVERY`] checks, which bounds the memory to the principals active
//! recently.
//!
//! A check is a hash-map lookup and a compare-and-swap, no allocation: about 2 µs in a
//! debug build on the shared test machine (the `check_is_cheap` test prints the figure).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::{Principal, Role};

/// How many checks pass between two sweeps of idle keys.
pub const RETAIN_EVERY: u64 = 16_384;

/// The configured limits (`annals serve --rate-limit RPS` and the per-role settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per second of a principal none of whose roles has a limit; `None`: such
    /// principals are not limited.
    pub default_per_second: Option<NonZeroU32>,
    /// Requests per second of a principal with the role; the highest of its roles wins.
    pub per_role: BTreeMap<Role, NonZeroU32>,
    /// How many seconds' worth of requests a principal idle for a while may send at once:
    /// the bucket's size is the rate times this (1: a burst of one second's requests).
    pub burst_seconds: NonZeroU32,
}

impl Default for RateLimits {
    /// No limit at all, a burst of one second.
    fn default() -> Self {
        RateLimits {
            default_per_second: None,
            per_role: BTreeMap::new(),
            burst_seconds: NonZeroU32::MIN,
        }
    }
}

impl RateLimits {
    /// Whether any limit is configured.
    pub fn is_enabled(&self) -> bool {
        self.default_per_second.is_some() || !self.per_role.is_empty()
    }

    /// The requests per second allowed to `principal`, if it is limited at all.
    pub fn limit_of(&self, principal: &Principal) -> Option<NonZeroU32> {
        principal
            .roles
            .iter()
            .filter_map(|role| self.per_role.get(role).copied())
            .max()
            .or(self.default_per_second)
    }
}

/// The token buckets of every principal. Shared by reference (or in an `Arc`) across
/// request handlers; every method takes `&self`.
pub struct RateLimiter {
    limits: RateLimits,
    /// One keyed limiter per distinct requests-per-second value.
    buckets: BTreeMap<NonZeroU32, DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .field("tracked_principals", &self.tracked_principals())
            .finish()
    }
}

impl RateLimiter {
    /// Buckets for `limits`; every principal starts with a full bucket.
    pub fn new(limits: RateLimits) -> Self {
        let clock = DefaultClock::default();
        let buckets = limits
            .default_per_second
            .iter()
            .chain(limits.per_role.values())
            .map(|&per_second| {
                let burst = per_second.saturating_mul(limits.burst_seconds);
                let quota = Quota::per_second(per_second).allow_burst(burst);
                (
                    per_second,
                    governor::RateLimiter::new(quota, Default::default(), clock.clone()),
                )
            })
            .collect();
        RateLimiter {
            limits,
            buckets,
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from `principal`'s bucket: `Ok`, or `Err(wait)`, how long until
    /// the next request would pass. The caller answers 429 with
    /// `Retry-After = ceil(wait)` seconds.
    pub fn check(&self, principal: &Principal) -> Result<(), Duration> {
        let Some(per_second) = self.limits.limit_of(principal) else {
            return Ok(());
        };
        let bucket = &self.buckets[&per_second];
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.forget_idle();
        }
        bucket
            .check_key(&principal.subject)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the buckets of principals idle long enough for their bucket to be full
    /// again (they would start from a full bucket anyway).
    pub fn forget_idle(&self) {
        for bucket in self.buckets.values() {
            bucket.retain_recent();
            bucket.shrink_to_fit();
        }
    }

    /// How many principals have a bucket right now.
    pub fn tracked_principals(&self) -> usize {
        self.buckets.values().map(|bucket| bucket.len()).sum()
    }
}
