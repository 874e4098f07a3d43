//! A circuit breaker for a remote tier: after `threshold` consecutive failures it opens and
//! calls skip the tier (adding no latency) until a cool-down has passed; then one probe is let
//! through (half-open), whose result closes or re-opens it.
//!
//! The first cool-down is short ([`Breaker::FIRST_PROBE`]) and doubles after each failed
//! probe up to the configured one: a blip costs a fraction of a second, a server that comes
//! back after a long outage is found again within one configured cool-down, and a server that
//! stays down is probed at most once per cool-down.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::time::Duration;

use crate::time::Clock;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls skip the tier until the cool-down ends.
    Open,
    /// One probe is in flight; other calls skip the tier.
    HalfOpen,
}

/// Lock-free circuit breaker.
///
/// ```
/// use optimize_runtime::cache::breaker::{Breaker, BreakerState};
/// use optimize_runtime::time::Clock;
/// use std::time::Duration;
///
/// let (clock, mock) = Clock::mock();
/// let b = Breaker::new(2, Duration::from_secs(5), clock);
/// b.on_failure();
/// b.on_failure();
/// assert_eq!(b.state(), BreakerState::Open);
/// assert!(!b.allow());
/// mock.increment(Duration::from_secs(5));
/// assert!(b.allow()); // the probe
/// b.on_success();
/// assert_eq!(b.state(), BreakerState::Closed);
/// ```
#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicU64,
    /// Failed probes since the breaker last closed: the current cool-down's exponent.
    failed_probes: AtomicU32,
    threshold: u32,
    cooldown_nanos: u64,
    clock: Clock,
}

impl Breaker {
    /// The first cool-down after the breaker opens (or the configured one, if shorter).
    pub const FIRST_PROBE: Duration = Duration::from_millis(100);

    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration, clock: Clock) -> Self {
        Self {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            failed_probes: AtomicU32::new(0),
            threshold: threshold.max(1),
            cooldown_nanos: u64::try_from(cooldown.as_nanos()).unwrap_or(u64::MAX),
            clock,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.state.load(Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may use the tier now. In the open state after the cool-down, exactly one
    /// caller gets `true` (the probe) and must report its result.
    #[inline]
    pub fn allow(&self) -> bool {
        match self.state.load(Acquire) {
            CLOSED => true,
            OPEN => {
                let opened = self.opened_at.load(Acquire);
                self.clock.now_nanos().saturating_sub(opened) >= self.current_cooldown()
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, AcqRel, Acquire)
                        .is_ok()
            }
            _ => false,
        }
    }

    /// The wait before the next probe: [`Breaker::FIRST_PROBE`], doubled per failed probe,
    /// at most the configured cool-down.
    pub fn current_cooldown(&self) -> u64 {
        let first = u64::try_from(Self::FIRST_PROBE.as_nanos()).unwrap_or(u64::MAX);
        let doublings = self.failed_probes.load(Acquire).min(32);
        first
            .saturating_mul(1 << doublings)
            .min(self.cooldown_nanos)
    }

    /// Reports a successful call.
    pub fn on_success(&self) {
        self.failures.store(0, Release);
        self.failed_probes.store(0, Release);
        self.state.store(CLOSED, Release);
    }

    /// Reports a failed call.
    pub fn on_failure(&self) {
        let state = self.state.load(Acquire);
        let failures = self.failures.fetch_add(1, AcqRel) + 1;
        if state == HALF_OPEN {
            self.failed_probes.fetch_add(1, AcqRel);
        }
        if state == HALF_OPEN || (state == CLOSED && failures >= self.threshold) {
            self.opened_at.store(self.clock.now_nanos(), Release);
            self.state.store(OPEN, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, crate::time::MockClock) {
        let (clock, mock) = Clock::mock();
        (Breaker::new(3, Duration::from_secs(10), clock), mock)
    }

    #[test]
    fn stays_closed_below_threshold_and_success_resets() {
        let (b, _) = breaker();
        b.on_failure();
        b.on_failure();
        b.on_success();
        b.on_failure();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let (b, _) = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
    }

    #[test]
    fn half_open_after_the_first_short_cooldown_admits_exactly_one_probe() {
        let (b, mock) = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        mock.increment(Duration::from_millis(99));
        assert!(!b.allow());
        mock.increment(Duration::from_millis(1));
        assert!(b.allow());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one probe");
    }

    #[test]
    fn probe_success_closes() {
        let (b, mock) = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        mock.increment(Duration::from_secs(10));
        assert!(b.allow());
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_configured_one() {
        let (b, mock) = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        let mut expected = Duration::from_millis(100);
        for _ in 0..10 {
            mock.increment(expected - Duration::from_millis(1));
            assert!(!b.allow(), "not before {expected:?}");
            mock.increment(Duration::from_millis(1));
            assert!(b.allow(), "the probe after {expected:?}");
            b.on_failure();
            assert_eq!(b.state(), BreakerState::Open);
            expected = (expected * 2).min(Duration::from_secs(10));
        }
        assert_eq!(
            expected,
            Duration::from_secs(10),
            "capped at the configured cool-down"
        );
        // A success resets the ladder.
        mock.increment(expected);
        assert!(b.allow());
        b.on_success();
        for _ in 0..3 {
            b.on_failure();
        }
        mock.increment(Duration::from_millis(100));
        assert!(b.allow());
    }
}
