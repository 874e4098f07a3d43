//! Per-function statistics, cheap to record from many threads at once.
//!
//! Every counter is sharded: a thread writes to its own cache-line-aligned shard and a read
//! merges the shards, so the L1 hit path never contends on one atomic (docs/metrics.md).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Shards per statistic; a power of two. More than the cores of most machines that run this,
/// few enough that a read (which sums all of them) stays cheap.
pub(crate) const SHARDS: usize = 16;

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
    /// Ran the body, which failed (`Err`, `None`, a timeout), and served the value kept past
    /// its expiry instead (fail-safe); or shared such a call's value; or, with a soft timeout,
    /// served that value while the body went on in the background.
    Stale,
    /// Not a caller's call: a background run of the body (refresh-ahead, or one a soft
    /// timeout left running) that stored a fresh value.
    Refreshed,
    /// Not a caller's call: a warming or prefetch call that ran the body and cached its
    /// value.
    Prefetched,
    /// Refused at once because the pool's queue was full (`pools.queue_capacity`): the
    /// body did not run, and the caller got the return type's rejection (`Err`, `None`).
    Rejected,
    /// Ran the body of a function that never caches (`cache = false`); it succeeded.
    Executed,
    /// Ran the body of a function that never caches; it returned `Err` or `None`.
    Failed,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 13] = [
        Outcome::HitL1,
        Outcome::HitL2,
        Outcome::HitL3,
        Outcome::Coalesced,
        Outcome::Computed,
        Outcome::Uncached,
        Outcome::Panicked,
        Outcome::Stale,
        Outcome::Refreshed,
        Outcome::Prefetched,
        Outcome::Rejected,
        Outcome::Executed,
        Outcome::Failed,
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
            Outcome::Stale => "stale",
            Outcome::Refreshed => "refreshed",
            Outcome::Prefetched => "prefetched",
            Outcome::Rejected => "rejected",
            Outcome::Executed => "executed",
            Outcome::Failed => "failed",
        }
    }

    /// Whether the call was answered from a cache tier.
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::HitL1 | Outcome::HitL2 | Outcome::HitL3)
    }

    /// Whether the call ended in an `Err`/`None` result, a panic or a rejection.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Outcome::Uncached | Outcome::Panicked | Outcome::Failed | Outcome::Rejected
        )
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

/// How much the call path records (docs/metrics.md); see [`set_recording`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recording {
    /// Nothing: no counters, no timings (for measuring what recording costs).
    Off,
    /// Outcome counters only; no clock reads for timing.
    Counters,
    /// Counters, latency histograms and compute time.
    #[default]
    Full,
}

impl Recording {
    /// The level's name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Recording::Off => "off",
            Recording::Counters => "counters",
            Recording::Full => "full",
        }
    }
}

static RECORDING: AtomicU8 = AtomicU8::new(Recording::Full as u8);

/// Sets how much every managed function records from now on.
///
/// ```
/// use optimize_runtime::stats::{recording, set_recording, Recording};
///
/// set_recording(Recording::Counters);
/// assert_eq!(recording(), Recording::Counters);
/// set_recording(Recording::Full);
/// ```
pub fn set_recording(level: Recording) {
    RECORDING.store(level as u8, Relaxed);
}

/// The current recording level.
#[inline]
pub fn recording() -> Recording {
    match RECORDING.load(Relaxed) {
        0 => Recording::Off,
        1 => Recording::Counters,
        _ => Recording::Full,
    }
}

/// Calls at least this slow are logged at `info` unless configured otherwise.
pub const DEFAULT_SLOW_CALL: Duration = Duration::from_secs(1);

static SLOW_CALL_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_SLOW_CALL.as_nanos() as u64);

/// Calls taking at least `d` are logged at `info` (target `optimize::slow`); default 1 s.
pub fn set_slow_call_threshold(d: Duration) {
    SLOW_CALL_NANOS.store(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
}

/// The threshold of [`set_slow_call_threshold`], in nanoseconds.
#[inline]
pub fn slow_call_nanos() -> u64 {
    SLOW_CALL_NANOS.load(Relaxed)
}

/// Recorder of one function's calls. Const-constructible, so it lives in the function's static.
pub struct FnRecorder {
    shards: [Shard; SHARDS],
    /// Attempts that hit their timeout, retries started and L1 capacity evictions; rare, so
    /// not sharded.
    timeouts: AtomicU64,
    retries: AtomicU64,
    evictions: AtomicU64,
    /// How long bodies ran; recorded on misses only, so one set of atomics suffices.
    compute: AtomicHistogram,
    /// What [`FnRecorder::reset`] set aside: snapshots are counted from it, while the
    /// counters themselves only grow (the monitor's history reads them whole, so a reset
    /// loses nothing there).
    base: std::sync::Mutex<Option<FnStats>>,
}

/// One in this many hits per thread is timed; its duration is recorded with this weight, so
/// totals and quantiles stay unbiased while most hits skip both clock reads.
pub const HIT_SAMPLE: u64 = 16;

thread_local! {
    /// This thread's shard (`usize::MAX` until assigned) and its hit counter for sampling.
    static LOCAL: Cell<(usize, u64)> = const { Cell::new((usize::MAX, 0)) };
}

pub(crate) fn shard_index() -> usize {
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
/// Call once per call, before the lookup. Never when recording is below [`Recording::Full`].
#[inline]
pub fn sample_this_call() -> bool {
    if recording() != Recording::Full {
        return false;
    }
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
            evictions: AtomicU64::new(0),
            compute: AtomicHistogram::new(),
            base: std::sync::Mutex::new(None),
        }
    }

    /// Records one call: how it ended, how long it took in all, and how long its body ran
    /// (zero when the body did not run).
    #[inline]
    pub fn record(&self, outcome: Outcome, total: u64, compute: u64) {
        match recording() {
            Recording::Off => return,
            Recording::Counters => return self.record_untimed(outcome),
            Recording::Full => {}
        }
        let shard = &self.shards[shard_index()];
        shard.outcomes[outcome.index()].fetch_add(1, Relaxed);
        shard.total_nanos.fetch_add(total, Relaxed);
        if compute != 0 {
            shard.compute_nanos.fetch_add(compute, Relaxed);
            self.compute.record(compute);
        }
        shard.latency[bucket_of(total)].fetch_add(1, Relaxed);
    }

    /// Records a hit that was not timed (see [`sample_this_call`]).
    #[inline]
    pub fn record_untimed(&self, outcome: Outcome) {
        if recording() == Recording::Off {
            return;
        }
        self.shards[shard_index()].outcomes[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Records a timed hit that stands for [`HIT_SAMPLE`] hits in durations.
    #[inline]
    pub fn record_sampled(&self, outcome: Outcome, total: u64) {
        if recording() != Recording::Full {
            return self.record_untimed(outcome);
        }
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

    /// Records an L1 entry evicted because the store was full.
    pub fn record_eviction(&self) {
        self.evictions.fetch_add(1, Relaxed);
    }

    /// What was recorded since the last [`FnRecorder::reset`].
    pub fn snapshot(&self) -> FnStats {
        let all = self.cumulative();
        let base = self
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*base {
            Some(base) => all.since(base),
            None => all,
        }
    }

    /// Everything recorded since the function's first call, resets or not.
    pub fn cumulative(&self) -> FnStats {
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
            compute: self.compute.snapshot(),
            timeouts: self.timeouts.load(Relaxed),
            retries: self.retries.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }

    /// Forgets everything recorded so far: later snapshots count from now.
    pub fn reset(&self) {
        let now = self.cumulative();
        *self
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
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

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
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
    /// An empty histogram.
    pub fn empty() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
        }
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram); counts that went
    /// down (a reset) are taken as they are now.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let reset = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .any(|(a, b)| a < b);
        if reset {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    /// The non-empty buckets as `(bucket, count)` pairs: a compact form for storage.
    pub fn sparse(&self) -> Vec<(u16, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(idx, &n)| (idx as u16, n))
            .collect()
    }

    /// The histogram [`Histogram::sparse`] gave; pairs naming no bucket are ignored, as
    /// they come from storage that may be damaged.
    pub fn from_sparse(pairs: &[(u16, u64)]) -> Histogram {
        let mut h = Histogram::empty();
        for &(idx, n) in pairs {
            if let Some(b) = h.buckets.get_mut(usize::from(idx)) {
                *b = b.saturating_add(n);
            }
        }
        h
    }

    /// Cumulative counts at each upper bound (in nanoseconds, ascending): how many values
    /// are at most that bound. A bucket is counted once its whole range is below the bound,
    /// so each count is exact to the histogram's resolution.
    pub fn cumulative(&self, bounds_nanos: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bounds_nanos.len());
        let mut idx = 0;
        let mut seen = 0;
        for &bound in bounds_nanos {
            while idx < BUCKETS {
                let last_value = if idx + 1 < BUCKETS {
                    bucket_floor(idx + 1) - 1
                } else {
                    u64::MAX
                };
                if last_value > bound {
                    break;
                }
                seen += self.buckets[idx];
                idx += 1;
            }
            out.push(seen);
        }
        out
    }

    /// Sum of the recorded values, each taken at its bucket's midpoint.
    pub fn approx_sum(&self) -> Duration {
        let nanos: u128 = self
            .buckets
            .iter()
            .enumerate()
            .map(|(idx, &n)| u128::from(n) * u128::from(bucket_mid(idx)))
            .sum();
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

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
    /// Distribution of whole-call latency. L1 hits are timed one in [`HIT_SAMPLE`] and
    /// weighted, so its count approximates [`FnStats::calls`].
    pub latency: Histogram,
    /// Distribution of how long the body ran, over the calls that ran it.
    pub compute: Histogram,
    /// Attempts that ran out of their `timeout`.
    pub timeouts: u64,
    /// Retries started after an `Err` (or a timeout).
    pub retries: u64,
    /// L1 entries evicted because the store was full.
    pub evictions: u64,
}

impl FnStats {
    /// What was recorded after `earlier` (a snapshot of the same function).
    pub fn since(&self, earlier: &FnStats) -> FnStats {
        let mut outcomes = self.outcomes;
        for (n, e) in outcomes.iter_mut().zip(earlier.outcomes) {
            *n = n.saturating_sub(e);
        }
        FnStats {
            outcomes,
            total_time: self.total_time.saturating_sub(earlier.total_time),
            compute_time: self.compute_time.saturating_sub(earlier.compute_time),
            latency: self.latency.since(&earlier.latency),
            compute: self.compute.since(&earlier.compute),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            retries: self.retries.saturating_sub(earlier.retries),
            evictions: self.evictions.saturating_sub(earlier.evictions),
        }
    }

    /// Calls that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// All calls (and background refreshes, counted as `Refreshed`).
    pub fn calls(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Calls answered from a cache tier (any tier) without running the body.
    pub fn hits(&self) -> u64 {
        self.count(Outcome::HitL1) + self.count(Outcome::HitL2) + self.count(Outcome::HitL3)
    }

    /// Calls that could have been answered from a cache: every call but those of a
    /// function that never caches. The denominator of [`FnStats::hit_ratio`].
    pub fn cacheable_calls(&self) -> u64 {
        self.calls()
            - self.count(Outcome::Executed)
            - self.count(Outcome::Failed)
            - self.count(Outcome::Refreshed)
            - self.count(Outcome::Prefetched)
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
            + self.count(Outcome::Stale)
            + self.count(Outcome::Refreshed)
            + self.count(Outcome::Prefetched)
            + self.count(Outcome::Executed)
            + self.count(Outcome::Failed)
    }

    /// Calls whose body returned `Err`/`None` or panicked.
    pub fn errors(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.is_error())
            .map(|&o| self.count(o))
            .sum()
    }

    /// Hits divided by cacheable calls (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        match self.cacheable_calls() {
            0 => 0.0,
            n => self.hits() as f64 / n as f64,
        }
    }

    /// Calls served by `tier` divided by cacheable calls (0 when there were none).
    pub fn tier_hit_ratio(&self, tier: crate::meta::Tier) -> f64 {
        let outcome = match tier {
            crate::meta::Tier::L1 => Outcome::HitL1,
            crate::meta::Tier::L2 => Outcome::HitL2,
            crate::meta::Tier::L3 => Outcome::HitL3,
        };
        match self.cacheable_calls() {
            0 => 0.0,
            n => self.count(outcome) as f64 / n as f64,
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
        rec.record(Outcome::Executed, 5, 5);
        rec.record(Outcome::Failed, 5, 5);
        let s = rec.snapshot();
        assert_eq!((s.errors(), s.executions(), s.cacheable_calls()), (3, 5, 5));
        assert_eq!(s.compute.count(), 5);
        rec.reset();
        assert_eq!(rec.snapshot().calls(), 0);
        assert_eq!(rec.snapshot().compute.count(), 0);
    }

    #[test]
    fn cumulative_counts_respect_bucket_ranges() {
        let rec = FnRecorder::new();
        for v in [500u64, 1_500, 9_000, 2_000_000] {
            rec.record(Outcome::Computed, v, 0);
        }
        let h = rec.snapshot().latency;
        assert_eq!(
            h.cumulative(&[1_000, 10_000, 1_000_000, u64::MAX]),
            vec![1, 3, 3, 4]
        );
        let later = {
            rec.record(Outcome::Computed, 700, 0);
            rec.snapshot().latency
        };
        assert_eq!(later.since(&h).count(), 1);
        let sum = h.approx_sum().as_nanos() as f64;
        assert!((sum - 2_011_000.0).abs() / 2_011_000.0 < 0.125, "{sum}");
    }
}
