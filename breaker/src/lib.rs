//! A circuit breaker and the retry delays around it. Pure: the caller passes the time, so
//! the rules are tested without sleeping. One breaker for the whole workspace: the outbox
//! relay keeps one for NATS, the payment provider chain (`psp`) one per provider.
//!
//! - **Closed**: attempts go ahead; after each failure the relay waits a backoff delay
//!   (exponential with jitter, from `backon`); `failure_threshold` failures in a row open it.
//! - **Open**: no attempt at all until `cool_down` has passed.
//! - **Half-open**: one trial attempt; success closes the breaker, failure opens it again.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// The breaker's state, as reported in the relay status and the dependencies route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Attempts go ahead.
    Closed,
    /// Attempts are suspended until the cool-down ends.
    Open,
    /// One trial attempt is under way.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in the order of the metrics' `state` label.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// The state's name, as its JSON says it (`closed`, `open`, `half_open`).
    pub const fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The breaker with its backoff.
#[derive(Debug)]
pub struct Breaker {
    failure_threshold: u32,
    cool_down: Duration,
    backoff_builder: ExponentialBuilder,
    backoff: ExponentialBackoff,
    state: BreakerState,
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(
        failure_threshold: u32,
        cool_down: Duration,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> Self {
        let backoff_builder = ExponentialBuilder::new()
            .with_min_delay(backoff_min)
            .with_max_delay(backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Breaker {
            failure_threshold: failure_threshold.max(1),
            cool_down,
            backoff: backoff_builder.build(),
            backoff_builder,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// While open: when the cool-down ends and one trial attempt may go (the next
    /// probe). `None` while closed or half-open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open => self.open_until,
            _ => None,
        }
    }

    /// When the next attempt may start: `None` means now. Moves an open breaker whose
    /// cool-down has passed to half-open.
    pub fn wait_until(&mut self, now: Instant) -> Option<Instant> {
        match (self.state, self.open_until) {
            (BreakerState::Open, Some(until)) if now < until => Some(until),
            (BreakerState::Open, _) => {
                self.state = BreakerState::HalfOpen;
                self.open_until = None;
                None
            }
            _ => None,
        }
    }

    /// Records a success: the breaker closes and the backoff starts over.
    pub fn success(&mut self) {
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.open_until = None;
        self.backoff = self.backoff_builder.build();
    }

    /// Records a failure at `now` and returns how long to wait before the next attempt
    /// (the rest of the cool-down if this opened the breaker).
    pub fn failure(&mut self, now: Instant) -> Duration {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let opens = self.state == BreakerState::HalfOpen
            || self.consecutive_failures >= self.failure_threshold;
        if opens {
            self.state = BreakerState::Open;
            self.open_until = Some(now + self.cool_down);
            return self.cool_down;
        }
        self.backoff.next().unwrap_or(self.cool_down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            3,
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn failures_back_off_then_open_the_breaker() {
        let now = Instant::now();
        let mut breaker = breaker();
        let first = breaker.failure(now);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        let second = breaker.failure(now);
        assert!(second >= Duration::from_millis(200) && second <= Duration::from_millis(400));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.failure(now), Duration::from_secs(10));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.consecutive_failures(), 3);
    }

    #[test]
    fn an_open_breaker_waits_its_cool_down_then_allows_one_trial() {
        let now = Instant::now();
        let mut breaker = breaker();
        for _ in 0..3 {
            breaker.failure(now);
        }
        assert_eq!(breaker.wait_until(now), Some(now + Duration::from_secs(10)));
        assert_eq!(breaker.open_until(), Some(now + Duration::from_secs(10)));
        assert_eq!(breaker.wait_until(now + Duration::from_secs(10)), None);
        assert_eq!(
            breaker.open_until(),
            None,
            "half-open: the probe is under way"
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // A failed trial opens it again at once.
        breaker.failure(now + Duration::from_secs(10));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.wait_until(now + Duration::from_secs(11)).is_some());
        assert_eq!(breaker.wait_until(now + Duration::from_secs(20)), None);
        breaker.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.consecutive_failures(), 0);
        let delay = breaker.failure(now);
        assert!(
            delay <= Duration::from_millis(200),
            "the backoff starts over"
        );
    }

    #[test]
    fn the_backoff_is_capped() {
        let now = Instant::now();
        let mut breaker = Breaker::new(
            1000,
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(1),
        );
        for _ in 0..50 {
            assert!(breaker.failure(now) <= Duration::from_secs(2));
        }
    }
}
