//! What the attribute decides about a function, and the small vocabulary every layer shares:
//! [`Kind`], [`TierSet`], [`Tier`], [`Priority`], [`Level`] and [`SiteMeta`].
//!
//! This module imports nothing from the crate, so any layer may use it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where a managed function's body runs and what admits it (docs/pools.md; see [`crate::pool`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// I/O-bound work.
    Io,
    /// CPU-bound work.
    Cpu,
    /// Memory-heavy work.
    Memory,
}

impl Kind {
    /// The kind's name as written in the attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Io => "io",
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// In-process.
    L1,
    /// Redis.
    L2,
    /// sled on local disk.
    L3,
}

impl Tier {
    /// The label used in metrics and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::L3 => "l3",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tiers a function uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierSet {
    /// In-process.
    pub l1: bool,
    /// Redis.
    pub l2: bool,
    /// Local disk.
    pub l3: bool,
}

impl TierSet {
    /// Every tier.
    pub const ALL: TierSet = TierSet {
        l1: true,
        l2: true,
        l3: true,
    };

    /// The in-process tier alone.
    pub const L1_ONLY: TierSet = TierSet {
        l1: true,
        l2: false,
        l3: false,
    };
}

/// Order of waiting work: `Critical` is admitted before `High`, and so on down to `Batch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Admitted before anything else.
    Critical,
    /// Before normal work.
    High,
    /// The default.
    #[default]
    Normal,
    /// After normal work.
    Low,
    /// Only when nothing else waits.
    Batch,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Batch,
    ];

    /// Position in [`Priority::ALL`]: 0 for `Critical`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name as written in attributes and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not one of `critical`, `high`, `normal`, `low`, `batch`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}`; expected one of critical, high, normal, low, batch")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

/// How a function with `predict = "..."` guesses its next call (docs/resilience.md,
/// "Predictive prefetch").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PredictModel {
    /// The next key after each key: after `a` came `b` often enough, so `b` is prefetched
    /// when `a` is called.
    Markov,
    /// A constant step in one integer argument: 3, 4, 5 → 6 is prefetched.
    Sequential,
}

impl PredictModel {
    /// The model's name as written in the attribute and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            PredictModel::Markov => "markov",
            PredictModel::Sequential => "sequential",
        }
    }
}

/// An optimization level: a preset of what is turned on (docs/configuration.md has the
/// table; `config` holds its code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// L1, outcome counters and pool routing; no shared tiers, no latency histograms.
    Basic,
    /// + L3 on disk, L2 when a Redis URL is set, compression above 1 KiB, full metrics.
    #[default]
    Advanced,
    /// + demotion of L1 evictions to L3, the monitor with system metrics and alert rules.
    Ultra,
    /// + compression of every shared-tier entry, a longer monitor history (6 hours).
    Extreme,
}

impl Level {
    /// Every level, from least to most.
    pub const ALL: [Level; 4] = [Level::Basic, Level::Advanced, Level::Ultra, Level::Extreme];

    /// The level's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Basic => "basic",
            Level::Advanced => "advanced",
            Level::Ultra => "ultra",
            Level::Extreme => "extreme",
        }
    }

    /// The level named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the attribute decided about a function, fixed at compile time.
///
/// Generated code builds it with [`SiteMeta::new`] and one `const fn` call per option the
/// user wrote, so every default lives here rather than in the macro.
///
/// ```
/// use optimize_runtime::meta::{Kind, Priority, SiteMeta};
/// use std::time::Duration;
///
/// const META: SiteMeta = SiteMeta::new("app::f@src/main.rs:1:1", "app", "f", Kind::Io, false, 0)
///     .ttl(Duration::from_secs(60))
///     .priority(Priority::High);
/// assert_eq!(META.priority, Priority::High);
/// assert_eq!(META.retries, 0);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct SiteMeta {
    /// Unique per annotated function: module path, name and the attribute's source position.
    pub id: &'static str,
    /// `module_path!()` where the function is defined.
    pub module_path: &'static str,
    /// The function's identifier.
    pub fn_name: &'static str,
    /// `name = "..."`, replacing the derived path.
    pub name: Option<&'static str>,
    /// Whether the function takes `self`: its path then names the type, known at first call.
    pub has_receiver: bool,
    /// The kind from the attribute.
    pub kind: Kind,
    /// Whether the function is `async`.
    pub is_async: bool,
    /// `cache = false`: measured, never cached.
    pub cached: bool,
    /// `lease = false`: no lease on an L2 miss (every instance may compute the key).
    pub lease: bool,
    /// `ttl = "..."`.
    pub ttl: Option<Duration>,
    /// `capacity = N` (entries; bytes for a memory function) or `capacity = "256MiB"`.
    pub capacity: Option<u64>,
    /// The capacity was written as a size: the function's L1 counts bytes, whatever its kind.
    pub capacity_in_bytes: bool,
    /// `tiers = "..."`; `None` means every tier the process has configured.
    pub tiers: Option<TierSet>,
    /// `l2_ttl = "..."` (defaults to `ttl`).
    pub l2_ttl: Option<Duration>,
    /// `fail_safe = "..."`.
    pub fail_safe: Option<Duration>,
    /// `fail_safe_throttle = "..."`.
    pub fail_safe_throttle: Option<Duration>,
    /// `soft_timeout = "..."`.
    pub soft_timeout: Option<Duration>,
    /// `refresh_ahead = 0.8`.
    pub refresh_ahead: Option<f64>,
    /// `stale_if_busy = N`.
    pub stale_if_busy: Option<u64>,
    /// `predict = "..."`.
    pub predict: Option<PredictModel>,
    /// `predict_confidence = 0.6`.
    pub predict_confidence: Option<f64>,
    /// `predict_depth = N`.
    pub predict_depth: Option<u32>,
    /// `l3_ttl = "..."` (defaults to `ttl`).
    pub l3_ttl: Option<Duration>,
    /// `compress_above = "..."`: zstd threshold in bytes for shared-tier entries.
    pub compress_above: Option<u32>,
    /// `version = N`.
    pub version: u32,
    /// Hash of the signature's types, as written (the call adds what they resolve to).
    pub schema: u64,
    /// `priority = "..."` (cpu and memory).
    pub priority: Priority,
    /// `concurrency = N` (io): calls of this function running at once.
    pub concurrency: Option<u64>,
    /// `concurrency = "adaptive(min..max)"` (io): the limit follows latency within these.
    pub adaptive_concurrency: Option<(u64, u64)>,
    /// `timeout = "..."` (async io): deadline of each attempt.
    pub timeout: Option<Duration>,
    /// `retries = N` (io): extra attempts after an `Err`.
    pub retries: u32,
    /// `backoff = "..."` (io): first delay between attempts.
    pub backoff: Option<Duration>,
    /// `mem = "..."` (memory): bytes reserved from the memory budget per call.
    pub mem: Option<u64>,
    /// `level = "..."`: the function's optimization level.
    pub level: Option<Level>,
}

impl SiteMeta {
    /// A function with no options: the attribute's defaults.
    pub const fn new(
        id: &'static str,
        module_path: &'static str,
        fn_name: &'static str,
        kind: Kind,
        is_async: bool,
        schema: u64,
    ) -> Self {
        Self {
            id,
            module_path,
            fn_name,
            name: None,
            has_receiver: false,
            kind,
            is_async,
            cached: true,
            lease: true,
            ttl: None,
            capacity: None,
            capacity_in_bytes: false,
            tiers: None,
            l2_ttl: None,
            fail_safe: None,
            fail_safe_throttle: None,
            soft_timeout: None,
            refresh_ahead: None,
            stale_if_busy: None,
            predict: None,
            predict_confidence: None,
            predict_depth: None,
            l3_ttl: None,
            compress_above: None,
            version: 0,
            schema,
            priority: Priority::Normal,
            concurrency: None,
            adaptive_concurrency: None,
            timeout: None,
            retries: 0,
            backoff: None,
            mem: None,
            level: None,
        }
    }

    /// `name = "..."`.
    pub const fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }
    /// The function takes `self`.
    pub const fn receiver(mut self) -> Self {
        self.has_receiver = true;
        self
    }
    /// `cache = false`.
    pub const fn uncached(mut self) -> Self {
        self.cached = false;
        self
    }
    /// `lease = false`.
    pub const fn without_lease(mut self) -> Self {
        self.lease = false;
        self
    }
    /// `ttl = "..."`.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// `capacity = N`.
    pub const fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }
    /// `capacity = "256MiB"`: L1 bounded in bytes.
    pub const fn capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self.capacity_in_bytes = true;
        self
    }
    /// `tiers = "..."`.
    pub const fn tiers(mut self, l1: bool, l2: bool, l3: bool) -> Self {
        self.tiers = Some(TierSet { l1, l2, l3 });
        self
    }
    /// `fail_safe = "..."`.
    pub const fn fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = Some(window);
        self
    }

    /// `fail_safe_throttle = "..."`.
    pub const fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = Some(throttle);
        self
    }

    /// `soft_timeout = "..."`.
    pub const fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// `refresh_ahead = 0.8`.
    pub const fn refresh_ahead(mut self, ratio: f64) -> Self {
        self.refresh_ahead = Some(ratio);
        self
    }

    /// `stale_if_busy = N`.
    pub const fn stale_if_busy(mut self, depth: u64) -> Self {
        self.stale_if_busy = Some(depth);
        self
    }

    /// `predict = "..."`.
    pub const fn predict(mut self, model: PredictModel) -> Self {
        self.predict = Some(model);
        self
    }

    /// `predict_confidence = 0.6`.
    pub const fn predict_confidence(mut self, confidence: f64) -> Self {
        self.predict_confidence = Some(confidence);
        self
    }

    /// `predict_depth = N`.
    pub const fn predict_depth(mut self, depth: u32) -> Self {
        self.predict_depth = Some(depth);
        self
    }

    /// `l2_ttl = "..."`.
    pub const fn l2_ttl(mut self, ttl: Duration) -> Self {
        self.l2_ttl = Some(ttl);
        self
    }
    /// `l3_ttl = "..."`.
    pub const fn l3_ttl(mut self, ttl: Duration) -> Self {
        self.l3_ttl = Some(ttl);
        self
    }
    /// `compress_above = "..."`.
    pub const fn compress_above(mut self, bytes: u32) -> Self {
        self.compress_above = Some(bytes);
        self
    }
    /// `version = N`.
    pub const fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }
    /// `priority = "..."`.
    pub const fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
    /// `concurrency = N`.
    pub const fn concurrency(mut self, limit: u64) -> Self {
        self.concurrency = Some(limit);
        self
    }
    /// `concurrency = "adaptive(min..max)"`.
    pub const fn adaptive_concurrency(mut self, min: u64, max: u64) -> Self {
        self.adaptive_concurrency = Some((min, max));
        self
    }
    /// `timeout = "..."`.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// `retries = N`.
    pub const fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    /// `backoff = "..."`.
    pub const fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = Some(backoff);
        self
    }
    /// `mem = "..."`.
    pub const fn mem(mut self, bytes: u64) -> Self {
        self.mem = Some(bytes);
        self
    }
    /// `level = "..."`.
    pub const fn level(mut self, level: Level) -> Self {
        self.level = Some(level);
        self
    }
}
