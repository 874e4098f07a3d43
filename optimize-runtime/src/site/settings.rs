//! A managed function's settings, resolved once when the function is registered: the
//! attribute's values, under the configuration's `[functions."path"]` table, over the
//! process-wide defaults. The call path reads these plain fields and never the configuration.

use std::time::Duration;

use crate::cache::l1::{EngineKind, L1Options};
use crate::cache::store::{FailSafe, StoreOptions};
use crate::meta::{Kind, Level, PredictModel, Priority, SiteMeta, TierSet};
use crate::pool::io::Attempts;
use crate::predict::Prediction;

/// What a `[functions."path::fn"]` table (or the builder) sets for one function; unset
/// fields keep the attribute's values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FnOverride {
    /// `enabled = false` runs the function's body directly: no cache, no pool.
    pub enabled: Option<bool>,
    /// The function's level: its tiers (basic: L1 only), compression and demotion.
    pub level: Option<Level>,
    /// TTL.
    pub ttl: Option<Duration>,
    /// Tiers.
    pub tiers: Option<TierSet>,
    /// L1 capacity (entries; bytes for memory functions).
    pub capacity: Option<u64>,
    /// L1 capacity in bytes, for a function of any kind (`capacity = "256MiB"` in a table):
    /// its values are weighed by their encoded size. Wins over `capacity`.
    pub capacity_bytes: Option<u64>,
    /// Admission priority.
    pub priority: Option<Priority>,
    /// io concurrency limit (replaces an adaptive one).
    pub concurrency: Option<u64>,
    /// An adaptive io concurrency limit's bounds (replaces a fixed one).
    pub adaptive_concurrency: Option<(u64, u64)>,
    /// Fail-safe window (`"0s"` turns it off).
    pub fail_safe: Option<Duration>,
    /// Fail-safe throttle.
    pub fail_safe_throttle: Option<Duration>,
    /// Soft timeout (`"0s"` turns it off); only for a function whose attribute has one.
    pub soft_timeout: Option<Duration>,
    /// Refresh-ahead ratio (`0` turns it off); only for a function whose attribute has one.
    pub refresh_ahead: Option<f64>,
    /// Stale-if-busy queue depth (`0` turns it off).
    pub stale_if_busy: Option<u64>,
    /// The prediction model; `Some(None)` (`predict = "off"`) turns prediction off. Only for
    /// a function whose attribute has `predict`.
    pub predict: Option<Option<PredictModel>>,
    /// How sure the model must be before it prefetches.
    pub predict_confidence: Option<f64>,
    /// How many calls ahead it prefetches.
    pub predict_depth: Option<u32>,
}

/// The process-wide values a function falls back on (from the resolved configuration).
#[derive(Clone, Debug)]
pub struct FnDefaults {
    /// The global level.
    pub level: Level,
    /// L1 capacity of functions that set none.
    pub l1_capacity: u64,
    /// The L1 engine.
    pub l1_engine: EngineKind,
    /// Whether L1 evictions go to L3 for functions without a level of their own.
    pub demote_on_evict: bool,
    /// Weight of a memory call without `mem = "..."`.
    pub memory_weight: u64,
    /// Fail-safe window of functions that set none (`resilience.fail_safe`).
    pub fail_safe: Option<Duration>,
    /// Fail-safe throttle of functions that set none (`resilience.fail_safe_throttle`).
    pub fail_safe_throttle: Duration,
    /// Stale-if-busy depth of functions with fail-safe that set none
    /// (`resilience.stale_if_busy`).
    pub stale_if_busy: Option<u64>,
    /// Confidence of predicting functions that set none (`resilience.predict_confidence`).
    pub predict_confidence: f64,
    /// Depth of predicting functions that set none (`resilience.predict_depth`).
    pub predict_depth: u32,
}

impl Default for FnDefaults {
    fn default() -> Self {
        Self {
            level: Level::default(),
            l1_capacity: L1Options::DEFAULT_CAPACITY,
            l1_engine: EngineKind::default(),
            demote_on_evict: false,
            memory_weight: crate::pool::PoolConfig::DEFAULT_MEMORY_WEIGHT,
            fail_safe: None,
            fail_safe_throttle: FailSafe::DEFAULT_THROTTLE,
            stale_if_busy: None,
            predict_confidence: Prediction::DEFAULT_CONFIDENCE,
            predict_depth: Prediction::DEFAULT_DEPTH,
        }
    }
}

/// A function's resolved settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `false`: the body runs directly, measured, never cached or routed.
    pub enabled: bool,
    /// The function's level: its own, else the global one.
    pub level: Level,
    /// L1 expiry.
    pub ttl: Option<Duration>,
    /// L1 capacity: entries, or bytes when `weigh_by_size`.
    pub capacity: u64,
    /// L1 values are weighed by their encoded size, so `capacity` counts bytes: a memory
    /// function, or a capacity written as a size.
    pub weigh_by_size: bool,
    /// The tiers the function may use.
    pub tiers: TierSet,
    /// Expiry in L2.
    pub l2_ttl: Option<Duration>,
    /// Expiry in L3.
    pub l3_ttl: Option<Duration>,
    /// The function's compression threshold, where it differs from the tiers' default.
    pub compress_above: Option<u32>,
    /// Whether L1 capacity evictions are written to L3.
    pub demote: bool,
    /// Whether an L2 miss takes a lease (`lease = false` turns it off; `l2.lease` for all).
    pub lease: bool,
    /// The L1 engine.
    pub engine: EngineKind,
    /// Admission priority.
    pub priority: Priority,
    /// Calls of this function running at once (io): the fixed limit, or where an adaptive
    /// one starts.
    pub concurrency: Option<u64>,
    /// The bounds of an adaptive limit (`concurrency = "adaptive"`).
    pub adaptive_concurrency: Option<(u64, u64)>,
    /// Timeout, retries and backoff of each call (io).
    pub attempts: Attempts,
    /// Bytes a call reserves from the memory budget (memory).
    pub mem: u64,
    /// Fail-safe: on only for a function whose entries expire (a TTL).
    pub fail_safe: Option<FailSafe>,
    /// Soft timeout: with a stale value at hand, how long a call waits for the body before
    /// serving it (the body goes on in the background).
    pub soft_timeout: Option<Duration>,
    /// Refresh-ahead: the fraction of the ttl after which a hit refreshes in the background.
    pub refresh_ahead: Option<f64>,
    /// Stale if busy: with a stale value at hand, serve it instead of queueing when this many
    /// calls already wait for the function's pool (or memory pressure holds admission).
    pub stale_if_busy: Option<u64>,
    /// Predictive prefetch: the model and its thresholds (only with `predict` in the
    /// attribute, which generates what a prediction needs).
    pub predict: Option<Prediction>,
}

impl Settings {
    /// Background runs of a function's body at once (refreshes, soft timeouts) when it sets
    /// no `concurrency`.
    pub const BACKGROUND_LIMIT: usize = 64;

    /// L1 capacity in bytes of a `memory` function that sets none: 256 MiB.
    pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 << 20;

    /// Resolves a function's settings: `o` (configuration) over `meta` (attribute) over
    /// `defaults` (process-wide).
    ///
    /// ```
    /// use optimize_runtime::meta::{Kind, SiteMeta};
    /// use optimize_runtime::site::settings::{FnDefaults, FnOverride, Settings};
    /// use std::time::Duration;
    ///
    /// static META: SiteMeta = SiteMeta::new("app::f@x", "app", "f", Kind::Io, false, 0)
    ///     .ttl(Duration::from_secs(60));
    /// let o = FnOverride { ttl: Some(Duration::from_secs(5)), ..FnOverride::default() };
    /// let s = Settings::resolve(&META, &o, &FnDefaults::default());
    /// assert_eq!(s.ttl, Some(Duration::from_secs(5)));
    /// assert_eq!(s.capacity, 10_000);
    /// ```
    pub fn resolve(meta: &SiteMeta, o: &FnOverride, defaults: &FnDefaults) -> Self {
        let own_level = o.level.or(meta.level);
        let ttl = o.ttl.or(meta.ttl);
        // A size (from the table, then the attribute) bounds L1 in bytes for any kind; a
        // number from the table replaces the attribute's size as a number of entries.
        let (capacity, in_bytes) = match (o.capacity_bytes, o.capacity, meta.capacity) {
            (Some(bytes), _, _) => (bytes, true),
            (None, Some(n), _) => (n, meta.kind == Kind::Memory),
            (None, None, Some(n)) => (n, meta.capacity_in_bytes || meta.kind == Kind::Memory),
            (None, None, None) => match meta.kind {
                Kind::Memory => (Self::DEFAULT_MEMORY_CAPACITY, true),
                _ => (defaults.l1_capacity, false),
            },
        };
        let tiers = o
            .tiers
            .or(meta.tiers)
            .or_else(|| (own_level == Some(Level::Basic)).then_some(TierSet::L1_ONLY))
            .unwrap_or(TierSet::ALL);
        let demote = match own_level {
            Some(level) => level >= Level::Ultra,
            None => defaults.demote_on_evict,
        };
        let compress_above = meta
            .compress_above
            .or_else(|| (own_level == Some(Level::Extreme)).then_some(0));
        let soft_timeout = meta
            .soft_timeout
            .map(|attr| o.soft_timeout.unwrap_or(attr))
            .filter(|d| !d.is_zero());
        let refresh_ahead = meta
            .refresh_ahead
            .map(|attr| o.refresh_ahead.unwrap_or(attr))
            .filter(|r| *r > 0.0 && *r < 1.0);
        // A sequential model needs the step function the attribute generates for it.
        let predict = meta
            .predict
            .and_then(|attr| match o.predict {
                Some(Some(PredictModel::Sequential)) if attr != PredictModel::Sequential => {
                    Some(attr)
                }
                Some(choice) => choice,
                None => Some(attr),
            })
            .map(|model| Prediction {
                model,
                confidence: o
                    .predict_confidence
                    .or(meta.predict_confidence)
                    .unwrap_or(defaults.predict_confidence)
                    .clamp(0.0, 1.0),
                depth: o
                    .predict_depth
                    .or(meta.predict_depth)
                    .unwrap_or(defaults.predict_depth)
                    .clamp(1, Prediction::MAX_DEPTH),
            });
        let (concurrency, adaptive_concurrency) = match (
            o.concurrency,
            o.adaptive_concurrency,
            meta.adaptive_concurrency,
        ) {
            (Some(n), _, _) => (Some(n), None),
            (None, Some((min, max)), _) | (None, None, Some((min, max))) => (
                Some(crate::pool::adaptive::AdaptiveLimit::initial(min, max)),
                Some((min, max)),
            ),
            (None, None, None) => (meta.concurrency, None),
        };
        Self {
            predict,
            concurrency,
            adaptive_concurrency,
            soft_timeout,
            refresh_ahead,
            stale_if_busy: o
                .stale_if_busy
                .or(meta.stale_if_busy)
                .or(defaults.stale_if_busy)
                .filter(|d| *d > 0),
            enabled: o.enabled.unwrap_or(true),
            level: own_level.unwrap_or(defaults.level),
            ttl,
            capacity,
            weigh_by_size: in_bytes,
            tiers,
            l2_ttl: meta.l2_ttl.or(ttl),
            l3_ttl: meta.l3_ttl.or(ttl),
            compress_above,
            demote,
            lease: meta.lease,
            engine: defaults.l1_engine,
            priority: o.priority.unwrap_or(meta.priority),
            attempts: Attempts {
                timeout: meta.timeout,
                retries: meta.retries,
                backoff: meta.backoff.unwrap_or(Attempts::DEFAULT_BACKOFF),
            },
            mem: meta.mem.unwrap_or(defaults.memory_weight),
            fail_safe: o
                .fail_safe
                .or(meta.fail_safe)
                .or(defaults.fail_safe)
                .filter(|w| !w.is_zero() && ttl.is_some())
                .map(|window| FailSafe {
                    window,
                    throttle: o
                        .fail_safe_throttle
                        .or(meta.fail_safe_throttle)
                        .unwrap_or(defaults.fail_safe_throttle),
                }),
        }
    }

    /// What the function's typed store is built from (`schema`: the function's effective
    /// schema).
    pub fn store_options(&self, schema: u64) -> StoreOptions {
        StoreOptions {
            tiers: self.tiers,
            capacity: self.capacity,
            ttl: self.ttl,
            l2_ttl: self.l2_ttl,
            l3_ttl: self.l3_ttl,
            engine: self.engine,
            weigh_by_size: self.weigh_by_size,
            demote: self.demote,
            compress_above: self.compress_above,
            schema,
            lease: self.lease,
            fail_safe: self.fail_safe,
            refresh_ahead: self.refresh_ahead,
            background_limit: self
                .adaptive_concurrency
                .map(|(_, max)| max)
                .or(self.concurrency)
                .map_or(Self::BACKGROUND_LIMIT, |c| c as usize),
        }
    }
}
