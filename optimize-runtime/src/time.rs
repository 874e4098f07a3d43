//! Monotonic time for expiry and call timing.
//!
//! Wraps [`quanta::Clock`] so the hot path reads the TSC where it is reliable, and so tests
//! can drive expiry deterministically with [`Clock::mock`].

use std::sync::Arc;
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

/// Unix time in milliseconds: the clock of shared-tier expiry, which other processes read.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs a future to completion on this thread, on any executor or none: parks the thread
/// between wake-ups. Used by sync callers to wait for work on the tiers' runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    let mut future = std::pin::pin!(future);
    // Most futures run here finish without waiting (no L2 round trip): try once without
    // setting up a real waker.
    if let Poll::Ready(out) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return out;
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
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
