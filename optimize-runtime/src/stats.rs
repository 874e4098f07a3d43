//! Per-function statistics, cheap to record from many threads at once.
//!
//! Every counter is sharded: a thread writes to its own cache-line-aligned shard and a read
//! merges the shards, so the L1 hit path never contends on one atomic (design §9).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Shards per statistic; a power of two. More than the cores of most machines that run this,
/// few enough that a read (which sums all of them) stays cheap.
const SHARDS: usize = 16;

/// Sub-buckets per power of two in the latency histogram: each bucket spans at most 1/8 of
/// its lower bound, so a reported quantile is within 12.5% of the true value.
const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
/// Powers of two covered: up to 2^48 ns (about 78 hours).
const ROWS: usize = 48;
const BUCKETS: usize = ROWS * SUBS;

/// How one call ended. Each call records exactly one outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Served from the in-process tier.
    HitL1,
    /// Served from Redis (L2).
    HitL2,
    /// Served from local disk (L3).
    HitL3,
    /// Waited for another caller's computation of the same key and shared its value.
    Coalesced,
    /// Ran the body; the result was cached.
    Computed,
    /// Ran the body; the result was an `Err` or `None` and was not cached.
    Uncached,
    /// The body panicked.
    Panicked,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 7] = [
        Outcome::HitL1,
        Outcome::HitL2,
        Outcome::HitL3,
        Outcome::Coalesced,
        Outcome::Computed,
        Outcome::Uncached,
        Outcome::Panicked,
    ];

    /// The label used in exported metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HitL1 => "hit_l1",
            Outcome::HitL2 => "hit_l2",
            Outcome::HitL3 => "hit_l3",
            Outcome::Coalesced => "coalesced",
            Outcome::Computed => "computed",
            Outcome::Uncached => "uncached",
            Outcome::Panicked => "panic",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[repr(align(128))]
struct Shard {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    total_nanos: AtomicU64,
    compute_nanos: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Shard {
    const fn new() -> Self {
        Self {
            outcomes: [const { AtomicU64::new(0) }; Outcome::ALL.len()],
            total_nanos: AtomicU64::new(0),
            compute_nanos: AtomicU64::new(0),
            latency: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

/// Recorder of one function's calls. Const-constructible, so it lives in the function's static.
pub struct FnRecorder {
    shards: [Shard; SHARDS],
    /// Attempts that hit their timeout, and retries started; rare, so not sharded.
    timeouts: AtomicU64,
    retries: AtomicU64,
}

/// One in this many hits per thread is timed; its duration is recorded with this weight, so
/// totals and quantiles stay unbiased while most hits skip both clock reads.
pub const HIT_SAMPLE: u64 = 16;

thread_local! {
    /// This thread's shard (`usize::MAX` until assigned) and its hit counter for sampling.
    static LOCAL: Cell<(usize, u64)> = const { Cell::new((usize::MAX, 0)) };
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    LOCAL.with(|l| {
        let (mut v, tick) = l.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Relaxed) % SHARDS;
            l.set((v, tick));
        }
        v
    })
}

/// Whether this call should be timed: every call that misses, and one hit in [`HIT_SAMPLE`].
/// Call once per call, before the lookup.
#[inline]
pub fn sample_this_call() -> bool {
    LOCAL.with(|l| {
        let (shard, tick) = l.get();
        l.set((shard, tick.wrapping_add(1)));
        tick % HIT_SAMPLE == 0
    })
}

#[inline]
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUBS as u64 {
        return nanos as usize;
    }
    let row = 63 - nanos.leading_zeros(); // >= SUB_BITS
    let sub = (nanos >> (row - SUB_BITS)) as usize & (SUBS - 1);
    let idx = ((row - SUB_BITS + 1) as usize) * SUBS + sub;
    idx.min(BUCKETS - 1)
}

/// The lower bound of a bucket, in nanoseconds.
fn bucket_floor(idx: usize) -> u64 {
    if idx < SUBS {
        return idx as u64;
    }
    let row = (idx / SUBS) as u32 + SUB_BITS - 1;
    let sub = (idx % SUBS) as u64;
    (1u64 << row) | (sub << (row - SUB_BITS))
}

/// The midpoint of a bucket, the value reported for quantiles that fall in it.
fn bucket_mid(idx: usize) -> u64 {
    let lo = bucket_floor(idx);
    let hi = if idx + 1 < BUCKETS {
        bucket_floor(idx + 1)
    } else {
        lo
    };
    lo + (hi - lo) / 2
}

impl FnRecorder {
    /// An empty recorder.
    pub const fn new() -> Self {
        Self {
            shards: [const { Shard::new() }; SHARDS],
            timeouts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Records one call: how it ended, how long it took in all, and how long its body ran
    /// (zero when the body did not run).
    #[inline]
    pub fn record(&self, outcome: Outcome, total: u64, compute: u64) {
        let shard = &self.shards[shard_index()];
        shard.outcomes[outcome.index()].fetch_add(1, Relaxed);
        shard.total_nanos.fetch_add(total, Relaxed);
        if compute != 0 {
            shard.compute_nanos.fetch_add(compute, Relaxed);
        }
        shard.latency[bucket_of(total)].fetch_add(1, Relaxed);
    }

    /// Records a hit that was not timed (see [`sample_this_call`]).
    #[inline]
    pub fn record_untimed(&self, outcome: Outcome) {
        self.shards[shard_index()].outcomes[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Records a timed hit that stands for [`HIT_SAMPLE`] hits in durations.
    #[inline]
    pub fn record_sampled(&self, outcome: Outcome, total: u64) {
        let shard = &self.shards[shard_index()];
        shard.outcomes[outcome.index()].fetch_add(1, Relaxed);
        shard.total_nanos.fetch_add(total * HIT_SAMPLE, Relaxed);
        shard.latency[bucket_of(total)].fetch_add(HIT_SAMPLE, Relaxed);
    }

    /// Records an attempt that ran out of time.
    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// Records a retry about to start.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Merges the shards into a snapshot.
    pub fn snapshot(&self) -> FnStats {
        let mut outcomes = [0u64; Outcome::ALL.len()];
        let mut latency = vec![0u64; BUCKETS];
        let (mut total, mut compute) = (0u64, 0u64);
        for shard in &self.shards {
            for (sum, c) in outcomes.iter_mut().zip(&shard.outcomes) {
                *sum += c.load(Relaxed);
            }
            total += shard.total_nanos.load(Relaxed);
            compute += shard.compute_nanos.load(Relaxed);
            for (sum, c) in latency.iter_mut().zip(&shard.latency) {
                *sum += c.load(Relaxed);
            }
        }
        FnStats {
            outcomes,
            total_time: Duration::from_nanos(total),
            compute_time: Duration::from_nanos(compute),
            latency: Histogram { buckets: latency },
            timeouts: self.timeouts.load(Relaxed),
            retries: self.retries.load(Relaxed),
        }
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        for shard in &self.shards {
            for c in shard.outcomes.iter().chain(&shard.latency) {
                c.store(0, Relaxed);
            }
            shard.total_nanos.store(0, Relaxed);
            shard.compute_nanos.store(0, Relaxed);
        }
        self.timeouts.store(0, Relaxed);
        self.retries.store(0, Relaxed);
    }
}

impl Default for FnRecorder {
    fn default() -> Self {
        Self::new()
    }
}

/// An unsharded latency histogram, for slow paths (waits for admission) where one set of
/// atomics is contended only by callers that are already waiting.
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl AtomicHistogram {
    pub(crate) const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    pub(crate) fn record(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// A merged latency histogram (log-linear buckets, 12.5% resolution).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
}

impl Histogram {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The value at quantile `q` (0.0..=1.0), or zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let count = self.count();
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (idx, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(bucket_mid(idx));
            }
        }
        Duration::from_nanos(bucket_mid(BUCKETS - 1))
    }
}

/// A snapshot of one function's statistics.
///
/// ```
/// use optimize_runtime::stats::{FnRecorder, Outcome};
///
/// let rec = FnRecorder::new();
/// rec.record(Outcome::Computed, 20_000, 19_000);
/// rec.record(Outcome::HitL1, 100, 0);
/// let stats = rec.snapshot();
/// assert_eq!(stats.calls(), 2);
/// assert_eq!(stats.hits(), 1);
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FnStats {
    outcomes: [u64; Outcome::ALL.len()],
    /// Time spent in calls, from entry to return, summed over all calls.
    pub total_time: Duration,
    /// Time spent running the body, summed over the calls that ran it.
    pub compute_time: Duration,
    /// Distribution of whole-call latency.
    pub latency: Histogram,
    /// Attempts that ran out of their `timeout`.
    pub timeouts: u64,
    /// Retries started after an `Err` (or a timeout).
    pub retries: u64,
}

impl FnStats {
    /// Calls that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// All calls.
    pub fn calls(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Calls answered from a cache tier (any tier) without running the body.
    pub fn hits(&self) -> u64 {
        self.count(Outcome::HitL1) + self.count(Outcome::HitL2) + self.count(Outcome::HitL3)
    }

    /// Calls not answered from a cache tier (they ran the body, or shared a concurrent run).
    pub fn misses(&self) -> u64 {
        self.calls() - self.hits()
    }

    /// Calls that ran the body.
    pub fn executions(&self) -> u64 {
        self.count(Outcome::Computed)
            + self.count(Outcome::Uncached)
            + self.count(Outcome::Panicked)
    }

    /// Calls whose body returned `Err`/`None` or panicked.
    pub fn errors(&self) -> u64 {
        self.count(Outcome::Uncached) + self.count(Outcome::Panicked)
    }

    /// Hits divided by calls (0 when there were no calls).
    pub fn hit_ratio(&self) -> f64 {
        match self.calls() {
            0 => 0.0,
            n => self.hits() as f64 / n as f64,
        }
    }

    /// Mean whole-call latency.
    pub fn mean(&self) -> Duration {
        match self.calls() {
            0 => Duration::ZERO,
            n => self.total_time / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_monotonic_and_contain_their_values() {
        for idx in 1..BUCKETS {
            assert!(bucket_floor(idx) > bucket_floor(idx - 1), "bucket {idx}");
        }
        for v in [0u64, 1, 7, 8, 9, 15, 16, 17, 1000, 123_456_789, 1 << 40] {
            let b = bucket_of(v);
            assert!(bucket_floor(b) <= v, "{v} below bucket {b}");
            if b + 1 < BUCKETS {
                assert!(v < bucket_floor(b + 1), "{v} above bucket {b}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_resolution() {
        let rec = FnRecorder::new();
        for i in 1..=1000u64 {
            rec.record(Outcome::Computed, i * 1000, i * 1000);
        }
        let h = rec.snapshot().latency;
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (1.0, 1_000_000.0)] {
            let got = h.quantile(q).as_nanos() as f64;
            assert!((got - want).abs() / want < 0.125, "q{q}: {got} vs {want}");
        }
    }

    #[test]
    fn shards_merge_across_threads() {
        let rec = std::sync::Arc::new(FnRecorder::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        rec.record(Outcome::HitL1, 10, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = rec.snapshot();
        assert_eq!(s.hits(), 8000);
        assert_eq!(s.total_time, Duration::from_nanos(80_000));
        assert_eq!(s.latency.count(), 8000);
    }

    #[test]
    fn derived_counts() {
        let rec = FnRecorder::new();
        rec.record(Outcome::HitL1, 1, 0);
        rec.record(Outcome::Coalesced, 1, 0);
        rec.record(Outcome::Computed, 5, 4);
        rec.record(Outcome::Uncached, 5, 4);
        rec.record(Outcome::Panicked, 5, 4);
        let s = rec.snapshot();
        assert_eq!(
            (s.calls(), s.hits(), s.misses(), s.executions(), s.errors()),
            (5, 1, 4, 3, 2)
        );
        assert_eq!(s.compute_time, Duration::from_nanos(12));
        rec.reset();
        assert_eq!(rec.snapshot().calls(), 0);
    }
}
