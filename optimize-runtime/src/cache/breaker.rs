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
    /// Times it opened (closed or half-open to open).
    opened: AtomicU64,
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
            opened: AtomicU64::new(0),
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
            if self.state.swap(OPEN, AcqRel) != OPEN {
                self.opened.fetch_add(1, Relaxed);
            }
        }
    }

    /// How many times it has opened.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Relaxed)
    }
}

/// The breakers of one remote tier: one for a single server; for a Redis Cluster, one per
/// group of [`Breakers::SLOTS_PER_GROUP`] hash slots, so a failed node opens the breakers of
/// its slots and the other nodes stay in use.
///
/// ```
/// use optimize_runtime::cache::breaker::{Breakers, BreakerState};
/// use optimize_runtime::time::Clock;
/// use std::time::Duration;
///
/// let b = Breakers::per_slot_group(1, Duration::from_secs(5), Clock::default());
/// b.for_slot(0).on_failure();
/// assert_eq!(b.for_slot(0).state(), BreakerState::Open);
/// assert_eq!(b.for_slot(16383).state(), BreakerState::Closed);
/// assert_eq!((b.open(), b.opened_total()), (1, 1));
/// ```
#[derive(Debug)]
pub struct Breakers(Box<[Breaker]>);

impl Breakers {
    /// Hash slots per breaker of a cluster (64 breakers for the 16384 slots).
    pub const SLOTS_PER_GROUP: u16 = 256;

    /// One breaker for everything (a single server).
    pub fn single(threshold: u32, cooldown: Duration, clock: Clock) -> Self {
        Self(Box::new([Breaker::new(threshold, cooldown, clock)]))
    }

    /// One breaker per group of slots (a cluster).
    pub fn per_slot_group(threshold: u32, cooldown: Duration, clock: Clock) -> Self {
        let groups = 16384 / Self::SLOTS_PER_GROUP;
        Self(
            (0..groups)
                .map(|_| Breaker::new(threshold, cooldown, clock.clone()))
                .collect(),
        )
    }

    /// The breaker of a hash slot (the only one, for a single server).
    pub fn for_slot(&self, slot: u16) -> &Breaker {
        let group = usize::from(slot / Self::SLOTS_PER_GROUP);
        &self.0[group.min(self.0.len() - 1)]
    }

    /// Whether the breakers are per slot group.
    pub fn is_per_slot(&self) -> bool {
        self.0.len() > 1
    }

    /// How many are not closed.
    pub fn open(&self) -> usize {
        self.0
            .iter()
            .filter(|b| b.state() != BreakerState::Closed)
            .count()
    }

    /// Closes every breaker (a fresh connection deserves a fresh start).
    pub fn reset(&self) {
        for b in self.0.iter() {
            b.on_success();
        }
    }

    /// How many times any of them opened.
    pub fn opened_total(&self) -> u64 {
        self.0.iter().map(Breaker::opened_total).sum()
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
