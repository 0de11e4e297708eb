//! The head sampler of an exporting server: at most so many new traces a second.
//!
//! Every span is exported whole with its trace or not at all, and the decision is taken
//! once, at the trace's root (under `ParentBased`, a span with a parent follows it). A
//! request continuing a client's sampled `traceparent` is always traced: the client
//! asked for it. A request beginning a new trace is traced while this second's budget
//! lasts, so the cost of exporting is bounded however busy the server is: at 50 requests
//! a second every one is traced, at 2,000 one in twenty, at a write rate of 100,000
//! commands a second one in a thousand. A token bucket (`governor`), so the budget is
//! spread over the second rather than spent in its first milliseconds.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// How many new traces a server starts a second at most, by default.
pub const DEFAULT_TRACES_PER_SECOND: u32 = 100;

/// Samples at most `per_second` new traces a second.
#[derive(Clone)]
pub struct TracesPerSecond<C: Clock = DefaultClock> {
    per_second: u32,
    budget: Arc<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
}

impl TracesPerSecond {
    /// The sampler of a server: a client's sampled trace is followed, a new trace begun
    /// while the budget of `per_second` lasts (0: never).
    pub fn parent_based(per_second: u32) -> Sampler {
        match NonZeroU32::new(per_second) {
            None => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Some(per_second) => Sampler::ParentBased(Box::new(TracesPerSecond::with_clock(
                per_second,
                DefaultClock::default(),
            ))),
        }
    }
}

impl<C: Clock> TracesPerSecond<C> {
    fn with_clock(per_second: NonZeroU32, clock: C) -> Self {
        TracesPerSecond {
            per_second: per_second.get(),
            budget: Arc::new(RateLimiter::direct_with_clock(
                Quota::per_second(per_second),
                clock,
            )),
        }
    }

    fn admits(&self) -> bool {
        self.budget.check().is_ok()
    }
}

impl<C: Clock> fmt::Debug for TracesPerSecond<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracesPerSecond")
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl<C> ShouldSample for TracesPerSecond<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn should_sample(
        &self,
        _parent_context: Option<&Context>,
        _trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        SamplingResult {
            decision: if self.admits() {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};

    use super::*;

    fn decide(sampler: &dyn ShouldSample, parent: Option<&Context>) -> SamplingDecision {
        sampler
            .should_sample(
                parent,
                TraceId::from(7),
                "request",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    fn sampled_count(sampler: &dyn ShouldSample, spans: usize) -> usize {
        (0..spans)
            .filter(|_| decide(sampler, None) == SamplingDecision::RecordAndSample)
            .count()
    }

    #[test]
    fn new_traces_are_sampled_while_the_seconds_budget_lasts() {
        let clock = FakeRelativeClock::default();
        let sampler = TracesPerSecond::with_clock(NonZeroU32::new(10).unwrap(), clock.clone());
        assert_eq!(
            sampled_count(&sampler, 1_000),
            10,
            "a burst gets the budget"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(sampled_count(&sampler, 1_000), 5, "half a second: half");
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            sampled_count(&sampler, 1_000),
            10,
            "an idle minute does not save up more than a second's budget"
        );
    }

    #[test]
    fn a_clients_sampled_trace_is_always_followed_and_an_unsampled_one_never() {
        let sampler = TracesPerSecond::parent_based(1);
        let parent = |flags| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(1),
                opentelemetry::trace::SpanId::from(2),
                flags,
                true,
                TraceState::default(),
            ))
        };
        let sampled = parent(TraceFlags::SAMPLED);
        let unsampled = parent(TraceFlags::default());
        for _ in 0..100 {
            assert_eq!(
                decide(&sampler, Some(&sampled)),
                SamplingDecision::RecordAndSample
            );
            assert_eq!(decide(&sampler, Some(&unsampled)), SamplingDecision::Drop);
        }
        // The parents did not spend the budget of new traces.
        assert_eq!(decide(&sampler, None), SamplingDecision::RecordAndSample);
        assert_eq!(decide(&sampler, None), SamplingDecision::Drop);
    }

    #[test]
    fn a_budget_of_zero_begins_no_trace() {
        let sampler = TracesPerSecond::parent_based(0);
        assert_eq!(sampled_count(&sampler, 100), 0);
    }
}
