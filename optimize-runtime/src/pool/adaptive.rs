//! An adaptive concurrency limit (docs/pools.md, "Adaptive concurrency"): the gradient
//! algorithm of Netflix's concurrency-limits (`Gradient2Limit`), driving a [`Gate`]'s capacity
//! from the latency of the calls it admits.
//!
//! Each finished call is a sample of its latency. Two figures follow them: a short average
//! (the latency now) and the lowest latency seen (what the backend gives unloaded; it drifts up
//! slowly, so a backend that became slower for good is accepted in time — Vegas's "base RTT").
//! Their ratio, with a tolerance of 1.5, is the *gradient*: 1 while the backend keeps its
//! usual latency, below 1 once calls queue inside it. After each sample the limit moves towards
//!
//! ```text
//! limit × gradient + 4
//! ```
//!
//! (the 4 is the headroom that lets it probe upwards), smoothed, within its bounds: while
//! latency holds, the limit grows by about 0.8 per sample; when latency rises, it
//! shrinks in proportion; a timed-out call counts as a sample at twice the long average. The
//! long average drifts slowly towards what the backend gives, so a backend that is slower for
//! good is eventually accepted as normal. A call that finds the gate under half full does not
//! raise the limit (the load, not the backend, is the bottleneck then).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::gate::Gate;

/// Tuning of [`AdaptiveLimit`] (the defaults of `Gradient2Limit`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveTuning {
    /// Samples the short average spans.
    pub short_window: f64,
    /// Samples over which the lowest latency seen rises by a tenth (so a backend slower for
    /// good is accepted in time).
    pub long_window: f64,
    /// How much slower than the long average the short one may be before the limit shrinks.
    pub tolerance: f64,
    /// Weight of each new limit against the previous one.
    pub smoothing: f64,
    /// Calls the target leaves room for beyond what the gradient allows: how the limit probes
    /// upwards (`Gradient2Limit`'s queue size).
    pub headroom: f64,
}

impl Default for AdaptiveTuning {
    fn default() -> Self {
        Self {
            short_window: 10.0,
            long_window: 600.0,
            tolerance: 1.5,
            smoothing: 0.2,
            headroom: 4.0,
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    short: Option<f64>,
    long: Option<f64>,
}

/// A gate whose capacity follows measured latency, between `min` and `max`.
#[derive(Debug)]
pub struct AdaptiveLimit {
    gate: Arc<Gate>,
    min: u64,
    max: u64,
    tuning: AdaptiveTuning,
    state: Mutex<State>,
}

impl AdaptiveLimit {
    /// What a timed-out call multiplies the limit by.
    pub const BACKOFF: f64 = 0.9;

    /// The limit a gate starts with: 16, within the bounds (where `Gradient2Limit` starts).
    pub fn initial(min: u64, max: u64) -> u64 {
        16.clamp(min.max(1), max.max(min.max(1)))
    }

    /// Drives `gate`'s capacity between `min` and `max` (it starts at [`initial`](Self::initial)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use optimize_runtime::pool::{adaptive::AdaptiveLimit, gate::Gate};
    ///
    /// let gate = Gate::new(AdaptiveLimit::initial(1, 100));
    /// let limit = AdaptiveLimit::new(gate.clone(), 1, 100);
    /// // A steady backend with the gate busy: the limit grows.
    /// for _ in 0..50 {
    ///     limit.sample(Duration::from_millis(10), gate.capacity(), false);
    /// }
    /// let grown = limit.limit();
    /// assert!(grown > 16, "{grown}");
    /// // The backend slows down fourfold: the limit shrinks.
    /// for _ in 0..50 {
    ///     limit.sample(Duration::from_millis(40), gate.capacity(), false);
    /// }
    /// assert!(limit.limit() < grown / 2, "{}", limit.limit());
    /// assert_eq!(gate.capacity(), limit.limit());
    /// ```
    pub fn new(gate: Arc<Gate>, min: u64, max: u64) -> Self {
        Self::with_tuning(gate, min, max, AdaptiveTuning::default())
    }

    /// [`AdaptiveLimit::new`] with other tuning than `Gradient2Limit`'s defaults.
    pub fn with_tuning(gate: Arc<Gate>, min: u64, max: u64, tuning: AdaptiveTuning) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let start = Self::initial(min, max);
        gate.set_capacity(start);
        Self {
            gate,
            min,
            max,
            tuning,
            state: Mutex::new(State {
                limit: start as f64,
                short: None,
                long: None,
            }),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u64 {
        self.gate.capacity()
    }

    /// The bounds.
    pub fn bounds(&self) -> (u64, u64) {
        (self.min, self.max)
    }

    /// Learns from one call: it took `latency`, `in_flight` calls were admitted when it
    /// started, and it `timed_out` (then its latency says nothing but "too slow").
    pub fn sample(&self, latency: Duration, in_flight: u64, timed_out: bool) {
        let t = self.tuning;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if timed_out {
            // Its latency is unknown (only "too slow"): back off, as on a loss.
            let next = (s.limit * Self::BACKOFF).max(self.min as f64);
            s.limit = next;
            drop(s);
            self.gate.set_capacity(next.round() as u64);
            return;
        }
        let rtt = latency.as_secs_f64().max(1e-9);
        let short = match s.short {
            Some(avg) => avg + (rtt - avg) * (2.0 / (t.short_window + 1.0)),
            None => rtt,
        };
        // The latency the backend gives unloaded: the lowest seen, rising by about a tenth
        // every `long_window` samples, so a backend slower for good is accepted in time,
        // while a slow spell is not taken for the norm.
        let long = match s.long {
            Some(low) => (low * (1.0 + 1.0 / (10.0 * t.long_window))).min(rtt),
            None => rtt,
        };
        s.short = Some(short);
        s.long = Some(long);
        // Under half full, latency says nothing about the limit.
        if (in_flight as f64) < s.limit / 2.0 {
            return;
        }
        let gradient = (t.tolerance * long / short).clamp(0.5, 1.0);
        let target = s.limit * gradient + t.headroom;
        let next = (s.limit * (1.0 - t.smoothing) + target * t.smoothing)
            .clamp(self.min as f64, self.max as f64);
        s.limit = next;
        let capacity = next.round() as u64;
        drop(s);
        if capacity != self.gate.capacity() {
            self.gate.set_capacity(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(min: u64, max: u64) -> (Arc<Gate>, AdaptiveLimit) {
        let gate = Gate::new(1);
        let limit = AdaptiveLimit::new(gate.clone(), min, max);
        (gate, limit)
    }

    #[test]
    fn grows_while_latency_holds_and_stays_within_bounds() {
        let (gate, l) = limit(2, 40);
        for _ in 0..500 {
            l.sample(Duration::from_millis(5), gate.capacity(), false);
        }
        assert_eq!(l.limit(), 40);
    }

    #[test]
    fn shrinks_when_latency_rises_and_recovers_when_it_falls() {
        let (gate, l) = limit(1, 200);
        for _ in 0..200 {
            l.sample(Duration::from_millis(5), gate.capacity(), false);
        }
        let healthy = l.limit();
        for _ in 0..100 {
            l.sample(Duration::from_millis(50), gate.capacity(), false);
        }
        let slow = l.limit();
        assert!(slow < healthy / 4, "{healthy} -> {slow}");
        for _ in 0..200 {
            l.sample(Duration::from_millis(5), gate.capacity(), false);
        }
        assert!(l.limit() > slow * 4, "{slow} -> {}", l.limit());
    }

    #[test]
    fn timeouts_shrink_it_and_an_idle_gate_does_not_grow_it() {
        let (gate, l) = limit(1, 100);
        for _ in 0..20 {
            l.sample(Duration::from_millis(5), 1, false);
        }
        assert_eq!(l.limit(), 16, "half empty: no growth");
        for _ in 0..20 {
            l.sample(Duration::from_millis(5), gate.capacity(), true);
        }
        assert!(l.limit() < 16, "{}", l.limit());
        assert!(l.limit() >= 1);
    }
}
