//! The managed-function handle: a function's identity, resolved settings, statistics, cache
//! and invalidation. One [`Site`] per annotated function, created by the runtime when it
//! registers the function; the call engine (`crate::call`) runs calls through it.

pub mod settings;

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::backplane::Notice;
use crate::cache::shared::ValueCodec;
use crate::cache::store::{AnyStore, FnStore, StoreEnv};
use crate::cache::tiered::Tiers;
use crate::cache::writeback::{FunctionInvalidation, WriteOp};
use crate::key::{ArgsKey, KeyLayout};
use crate::policy::CacheValue;
use crate::pool::adaptive::AdaptiveLimit;
use crate::pool::gate::Gate;
use crate::pool::io::Attempts;
use crate::pool::Pools;
use crate::predict::{PredictStats, Predictor};
use crate::stats::{FnRecorder, FnStats};
use crate::time::{block_on, Clock};

pub use crate::meta::{Kind, Level, Priority, SiteMeta, TierSet};
pub use settings::{FnDefaults, FnOverride, Settings};

/// What a site shares with the rest of the runtime: handed over when it is created.
#[derive(Clone, Debug)]
pub struct SiteEnv {
    /// The runtime's clock (expiry, call timing).
    pub clock: Clock,
    /// The shared tiers.
    pub tiers: Arc<Tiers>,
    /// The pools.
    pub pools: Arc<Pools>,
    /// The process-wide L1 byte budget (`l1.max_size`), when configured.
    pub l1_budget: Option<Arc<crate::cache::budget::L1Budget>>,
}

/// One managed function at run time: its name, settings, statistics and cache.
///
/// Every annotated function `f` gets a companion `f_cache()` returning its `Site`:
///
/// ```
/// #[optimize::io(ttl = "5m")]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// assert_eq!(square(3), 9);
/// assert_eq!(square(3), 9);
/// let stats = square_cache().stats();
/// assert_eq!((stats.calls(), stats.hits()), (2, 1));
/// square_cache().invalidate_all();
/// assert_eq!(square_cache().len(), 0);
/// ```
pub struct Site {
    pub(crate) meta: &'static SiteMeta,
    pub(crate) path: String,
    pub(crate) settings: Settings,
    pub(crate) recorder: FnRecorder,
    pub(crate) env: SiteEnv,
    /// `type_name::<Self>()` of a method with a receiver: a generic impl gets a site per type.
    owner: Option<&'static str>,
    /// The written signature's hash combined with what its types resolve to, which only a
    /// call knows (see [`Site::bind_types`]).
    schema: OnceLock<u64>,
    /// How a key is computed from arguments given as JSON (see [`Site::key_from_json`]).
    json_key: OnceLock<crate::key::JsonKeyFn>,
    keys: OnceLock<Arc<KeyLayout>>,
    /// The typed store, created on first call when the value type is known, twice: as `Any`
    /// for the hit path (one virtual call to downcast) and as `AnyStore` for type-independent
    /// operations. Both point at one leaked allocation: sites live for the whole process, and
    /// so does their store.
    store: OnceLock<(&'static (dyn Any + Send + Sync), &'static dyn AnyStore)>,
    /// The `concurrency` limit's gate.
    pub(crate) concurrency: Option<Arc<Gate>>,
    /// The prediction model (`predict = "..."`).
    pub(crate) predictor: Option<Predictor>,
    /// What drives the `concurrency` gate when it is `"adaptive"`.
    pub(crate) adaptive: Option<AdaptiveLimit>,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("path", &self.path)
            .field("kind", &self.meta.kind)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// A function's handle, with its settings resolved. `owner` is the self type's name of a
    /// method with a receiver.
    pub fn new(
        meta: &'static SiteMeta,
        path: String,
        owner: Option<&'static str>,
        settings: Settings,
        env: SiteEnv,
    ) -> Self {
        // A function's own limit queues as much as the io pool does.
        let concurrency = settings.concurrency.map(|limit| {
            let gate = Gate::new(limit);
            gate.set_queue_capacity(env.pools.io().gate().queue_capacity());
            gate
        });
        Self {
            concurrency: concurrency.clone(),
            adaptive: settings
                .adaptive_concurrency
                .zip(concurrency)
                .map(|((min, max), gate)| AdaptiveLimit::new(gate, min, max)),
            predictor: settings.predict.map(Predictor::new),
            meta,
            path,
            settings,
            recorder: FnRecorder::new(),
            env,
            owner,
            schema: OnceLock::new(),
            json_key: OnceLock::new(),
            keys: OnceLock::new(),
            store: OnceLock::new(),
        }
    }

    /// Adds what the signature's types resolve to (full paths and sizes, hashed by `types`)
    /// to the schema. Generated code calls it at the function's first use in the process,
    /// where the types can be named (generics and `Self` included); the first call wins.
    pub fn bind_types(&self, types: fn() -> u64) {
        let _ = self.schema.set(self.meta.schema.rotate_left(17) ^ types());
    }

    /// Adds how keys are computed from arguments given as JSON; generated code calls it at
    /// the function's first use in the process.
    pub fn bind_json_key(&self, json_key: crate::key::JsonKeyFn) {
        let _ = self.json_key.set(json_key);
    }

    /// The key of the call with these key arguments, given as JSON: an object by parameter
    /// name (`{"id": 7}`), an array in parameter order (`[7, "eu"]`), or, for a function of
    /// one key parameter, the value alone (`7`). `Ok(None)`: the call has no key (a key
    /// expression that gave none). Errors say what was expected.
    ///
    /// ```
    /// #[optimize::io(ttl = "1m")]
    /// fn price(sku: &str, qty: u32) -> u64 {
    ///     qty as u64 * 10
    /// }
    ///
    /// price("apple", 3);
    /// let site = price_cache();
    /// let key = site.key_from_json(&serde_json::json!({"sku": "apple", "qty": 3})).unwrap();
    /// assert!(site.invalidate(key.unwrap()));
    /// ```
    pub fn key_from_json(&self, args: &serde_json::Value) -> Result<Option<ArgsKey>, String> {
        match self.json_key.get() {
            Some(key_of) => key_of(args),
            None => Err(format!(
                "`{}` has not been called in this process yet, so its argument types are not known here: invalidate the whole function or a tag instead",
                self.path
            )),
        }
    }

    /// Whether this is the site of methods of `type_name` (a generic impl has one per type).
    #[inline]
    pub(crate) fn is_owned_by(&self, type_name: &'static str) -> bool {
        self.owner
            .is_none_or(|o| std::ptr::eq(o, type_name) || o == type_name)
    }

    fn keys(&self) -> &Arc<KeyLayout> {
        self.keys.get_or_init(|| {
            Arc::new(KeyLayout::new(
                &self.env.tiers.config().namespace,
                &self.path,
                self.meta.version,
                self.schema(),
            ))
        })
    }

    /// The function's path in keys and statistics: `name = "..."` if given, else
    /// `module::path::fn` (with the self type for methods).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the attribute decided.
    pub fn meta(&self) -> &'static SiteMeta {
        self.meta
    }

    /// The function's settings, resolved when it was registered.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The function's kind.
    pub fn kind(&self) -> Kind {
        self.meta.kind
    }

    /// Whether the function is `async`.
    pub fn is_async(&self) -> bool {
        self.meta.is_async
    }

    /// How long a cached value stays valid (`None`: until evicted or invalidated): the
    /// configuration's `ttl` for this function, else the attribute's.
    pub fn ttl(&self) -> Option<Duration> {
        self.settings.ttl
    }

    /// The L1 capacity: entries, or bytes for a `memory` function (whose values are weighed
    /// by their encoded size; default [`Settings::DEFAULT_MEMORY_CAPACITY`]). Configuration's
    /// value for this function, else the attribute's, else `l1.capacity`.
    pub fn capacity(&self) -> u64 {
        self.settings.capacity
    }

    /// The function's optimization level: configuration's, else the attribute's, else the
    /// global level.
    pub fn level(&self) -> Level {
        self.settings.level
    }

    /// Whether the function is managed at all: `enabled = false` in its configuration runs
    /// the body directly (measured, never cached, not routed to a pool).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The tiers the function may use: configuration's, else the attribute's; level basic
    /// (set for this function) means L1 only; else every tier the process runs.
    pub fn tiers(&self) -> TierSet {
        self.settings.tiers
    }

    /// Admission priority (`priority = "..."`, default `normal`): where the function's calls
    /// queue at the CPU pool, the io limits or the memory budget.
    pub fn priority(&self) -> Priority {
        self.settings.priority
    }

    /// Timeout, retries and backoff of each call.
    pub fn attempts(&self) -> Attempts {
        self.settings.attempts
    }

    /// The `concurrency` limit: calls of this function running at once (now, for an
    /// adaptive one).
    pub fn concurrency(&self) -> Option<u64> {
        match &self.adaptive {
            Some(limit) => Some(limit.limit()),
            None => self.settings.concurrency,
        }
    }

    /// An adaptive `concurrency` limit's bounds.
    pub fn adaptive_concurrency(&self) -> Option<(u64, u64)> {
        self.adaptive.as_ref().map(AdaptiveLimit::bounds)
    }

    /// Counters of the function's own `concurrency` limit (running and queued calls).
    pub fn concurrency_stats(&self) -> Option<crate::pool::GateStats> {
        self.concurrency.as_ref().map(|g| g.stats())
    }

    /// Bytes a call reserves from the memory budget (`mem = "..."`, else the budget's default).
    pub fn mem(&self) -> u64 {
        self.settings.mem
    }

    /// The user's `version = N` (0 when not given).
    pub fn version(&self) -> u32 {
        self.meta.version
    }

    /// Hash of the function's argument and return types: as written, and as resolved (full
    /// paths and sizes) once the function or one of its companions (`f_cache()`,
    /// `f_invalidate(..)`) has been used in this process. A site reached only through a
    /// listing (`optimize::functions()`, `optimize::site(path)`) before that reports the
    /// written types' hash, and keeps it for the life of the process.
    pub fn schema(&self) -> u64 {
        *self.schema.get_or_init(|| self.meta.schema)
    }

    /// The key an entry for `args` has in shared tiers.
    pub fn full_key(&self, args: ArgsKey) -> String {
        self.keys().key(args)
    }

    /// A snapshot of the function's statistics.
    pub fn stats(&self) -> FnStats {
        self.recorder.snapshot()
    }

    /// Everything recorded since the function's first call, whatever
    /// [`Site::reset_stats`] did (what the monitor's history reads).
    pub fn cumulative_stats(&self) -> FnStats {
        self.recorder.cumulative()
    }

    /// Forgets the statistics recorded so far, predictions' included (the cache and the
    /// prediction model are untouched).
    pub fn reset_stats(&self) {
        self.recorder.reset();
        if let Some(p) = &self.predictor {
            p.reset_stats();
        }
    }

    /// What predictive prefetch did, for a function with `predict = "..."` that has it on
    /// (docs/resilience.md).
    ///
    /// ```
    /// #[optimize::io(ttl = "10m", predict = "sequential")]
    /// fn page(n: u64) -> String {
    ///     format!("page {n}")
    /// }
    ///
    /// for n in 0..20 {
    ///     page(n);
    /// }
    /// let p = page_cache().predictions().expect("predict is on");
    /// assert!(p.predicted > 0);
    /// ```
    pub fn predictions(&self) -> Option<PredictStats> {
        self.predictor.as_ref().map(Predictor::stats)
    }

    /// Number of entries in the function's L1 store.
    pub fn len(&self) -> u64 {
        self.store.get().map_or(0, |(_, s)| s.len())
    }

    /// Whether L1 holds an entry for this key (expired or not); not counted as a read.
    pub fn contains(&self, key: ArgsKey) -> bool {
        self.store.get().is_some_and(|(_, s)| s.contains(key))
    }

    /// Whether the function's L1 store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the function's expired L1 entries now; how many (the memory budget does this
    /// under pressure).
    pub fn purge_expired(&self) -> u64 {
        self.store.get().map_or(0, |(_, s)| s.purge_expired())
    }

    /// Removes the entry for one call's key from every tier; whether this process had it in
    /// L1. Shared-tier deletions are applied before this returns, so a following call cannot
    /// read the old value back. Generated `name_invalidate(args..)` companions call this.
    ///
    /// The wait for the shared tiers happens under `block_in_place` on a multi-thread tokio
    /// worker; in async code on a current-thread runtime, use [`Site::invalidate_async`].
    pub fn invalidate(&self, key: ArgsKey) -> bool {
        let (removed, queued) = self.start_invalidate(key);
        if let Some(tiers) = queued {
            crate::pool::blocking(|| block_on(tiers.barrier()));
        }
        removed
    }

    /// [`Site::invalidate`] for async code: awaits the shared tiers instead of blocking.
    pub async fn invalidate_async(&self, key: ArgsKey) -> bool {
        let (removed, queued) = self.start_invalidate(key);
        if let Some(tiers) = queued {
            tiers.barrier().await;
        }
        removed
    }

    /// Removes the L1 entry and queues the shared-tier deletion; the tiers to wait for.
    fn start_invalidate(&self, key: ArgsKey) -> (bool, Option<&Arc<Tiers>>) {
        let removed = self.store.get().is_some_and(|(_, s)| s.remove(key));
        let shared = self.shared_tiers().is_some();
        let tiers = self.reaches_beyond_l1();
        if let Some(tiers) = tiers {
            let full = self.full_key(key);
            tiers.enqueue(WriteOp::Delete {
                key: full.clone(),
                l2: shared,
                l3: shared,
                notice: Some(Notice::Key {
                    path: self.path.clone(),
                    args: key,
                    key: full,
                }),
            });
        }
        (removed, tiers)
    }

    /// Removes every cached entry of this function, from every tier (waiting as
    /// [`Site::invalidate`] does; see [`Site::invalidate_all_async`]).
    pub fn invalidate_all(&self) {
        if let Some(tiers) = self.start_invalidate_all() {
            crate::pool::blocking(|| block_on(tiers.barrier()));
        }
    }

    /// [`Site::invalidate_all`] for async code: awaits the shared tiers instead of blocking.
    pub async fn invalidate_all_async(&self) {
        if let Some(tiers) = self.start_invalidate_all() {
            tiers.barrier().await;
        }
    }

    fn start_invalidate_all(&self) -> Option<&Arc<Tiers>> {
        self.clear_l1();
        let tiers = self.reaches_beyond_l1()?;
        let wanted = self.settings.tiers;
        tiers.enqueue(WriteOp::InvalidateFunction(FunctionInvalidation {
            path: self.path.clone(),
            prefix: self.keys().function_prefix().to_owned(),
            generation_key: (wanted.l2 && tiers.has_l2())
                .then(|| tiers.function_generation_key(&self.path)),
            l3: wanted.l3,
        }));
        Some(tiers)
    }

    /// Removes one entry from this process's L1 only (another instance's invalidation, which
    /// took care of the shared tiers); whether it was there.
    pub fn forget_l1(&self, key: ArgsKey) -> bool {
        self.store.get().is_some_and(|(_, s)| s.remove(key))
    }

    /// Removes from this process's L1 every entry that may carry the tag (by its hash; see
    /// [`Entry::tag_bits`](crate::cache::l1::Entry::tag_bits)); how many.
    pub fn forget_tag(&self, tag: u64) -> u64 {
        self.store.get().map_or(0, |(_, s)| s.purge_tag(tag))
    }

    /// Empties this process's L1 for the function; shared tiers keep their entries (what a
    /// restart looks like to them).
    pub fn clear_l1(&self) {
        if let Some((_, s)) = self.store.get() {
            s.clear();
        }
    }

    /// The tiers to go through when invalidating: the function's shared tiers, or the
    /// backplane alone (other instances' L1) for a function kept in L1.
    fn reaches_beyond_l1(&self) -> Option<&Arc<Tiers>> {
        let tiers = &self.env.tiers;
        (self.shared_tiers().is_some() || tiers.backplane().is_some()).then_some(tiers)
    }

    /// The process's shared tiers, if this function may use any of them.
    fn shared_tiers(&self) -> Option<&Arc<Tiers>> {
        let wanted = self.settings.tiers;
        let tiers = &self.env.tiers;
        ((wanted.l2 && tiers.has_l2()) || (wanted.l3 && tiers.l3().is_some())).then_some(tiers)
    }

    /// The function's typed store, created on first use.
    #[inline]
    pub(crate) fn store<V: CacheValue>(
        &'static self,
        codec: Option<ValueCodec<V>>,
    ) -> &'static FnStore<V> {
        self.store
            .get_or_init(|| {
                let recorder = &self.recorder;
                let store: &'static FnStore<V> = Box::leak(Box::new(FnStore::new(
                    &self.path,
                    &self.settings.store_options(self.schema()),
                    codec,
                    self.keys().clone(),
                    StoreEnv {
                        tiers: &self.env.tiers,
                        clock: self.env.clock.clone(),
                        budget: self.env.l1_budget.as_ref(),
                    },
                    Arc::new(move || recorder.record_eviction()),
                )));
                if let (Some(budget), Some(member)) = (&self.env.l1_budget, store.budget_member()) {
                    budget.register(member);
                }
                if let Some(l3) = &self.env.tiers.config().l3 {
                    store.warm_from_l3(l3.warm_l1);
                }
                (store, store)
            })
            .0
            .downcast_ref::<FnStore<V>>()
            .unwrap_or_else(|| {
                panic!(
                    "optimize: `{}` was called with two different return types; this happens \
                     when the attribute is used in a generic impl, which is not supported",
                    self.path
                )
            })
    }
}
