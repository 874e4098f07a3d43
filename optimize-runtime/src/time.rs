//! Monotonic time for expiry and call timing.
//!
//! Wraps [`quanta::Clock`] so the hot path reads the TSC where it is reliable, and so tests
//! can drive expiry deterministically with [`Clock::mock`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A monotonic clock reporting nanoseconds since the clock was created.
///
/// ```
/// use optimize_runtime::time::Clock;
/// use std::time::Duration;
///
/// let (clock, mock) = Clock::mock();
/// let t0 = clock.now_nanos();
/// mock.increment(Duration::from_millis(5));
/// assert_eq!(clock.now_nanos() - t0, 5_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    inner: quanta::Clock,
    origin: u64,
}

/// Handle that moves a mocked [`Clock`] forward.
pub type MockClock = Arc<quanta::Mock>;

impl Clock {
    /// A clock backed by the system's monotonic time source.
    pub fn new() -> Self {
        let inner = quanta::Clock::new();
        let origin = inner.raw();
        Self { inner, origin }
    }

    /// A clock that only moves when the returned handle says so.
    pub fn mock() -> (Self, MockClock) {
        let (inner, mock) = quanta::Clock::mock();
        let origin = inner.raw();
        (Self { inner, origin }, mock)
    }

    /// Nanoseconds since this clock was created. Never 0 after creation is the caller's
    /// concern: expiry uses 0 as "never", so see [`Clock::deadline`].
    #[inline]
    pub fn now_nanos(&self) -> u64 {
        self.inner.delta_as_nanos(self.origin, self.inner.raw())
    }

    /// The deadline `ttl` from `now`, in this clock's nanoseconds; `0` means no deadline.
    #[inline]
    pub fn deadline(now: u64, ttl: Option<Duration>) -> u64 {
        match ttl {
            // +1 keeps a real deadline distinct from the "never" marker even at now == 0.
            Some(ttl) => now
                .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
                .max(1),
            None => 0,
        }
    }

    /// Whether a deadline made by [`Clock::deadline`] has passed at `now`.
    #[inline]
    pub fn is_expired(deadline: u64, now: u64) -> bool {
        deadline != 0 && now >= deadline
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide clock used by managed functions.
pub fn global() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_zero_means_never() {
        assert_eq!(Clock::deadline(10, None), 0);
        assert!(!Clock::is_expired(0, u64::MAX));
    }

    #[test]
    fn deadline_passes_exactly_at_ttl() {
        let d = Clock::deadline(100, Some(Duration::from_nanos(50)));
        assert!(!Clock::is_expired(d, 149));
        assert!(Clock::is_expired(d, 150));
    }

    #[test]
    fn deadline_at_time_zero_is_not_never() {
        let d = Clock::deadline(0, Some(Duration::ZERO));
        assert_ne!(d, 0);
        assert!(Clock::is_expired(d, 1));
    }

    #[test]
    fn huge_ttl_saturates() {
        let d = Clock::deadline(5, Some(Duration::MAX));
        assert_eq!(d, u64::MAX);
    }
}
