//! One managed function: its options, statistics, L1 store and in-progress computations,
//! and the call path that ties them together (design §2).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::l1::{EvictionHandler, L1Options, L1Store};
use crate::cache::shared::{SharedOptions, SharedStore, ValueCodec};
use crate::cache::tiered::{self, unix_ms};
use crate::cache::writeback::WriteOp;
use crate::cache::Tier;
use crate::flight::{Flights, Role, Settled, Waited};
use crate::key::{ArgsKey, FullKey};
use crate::policy::{CacheValue, ReturnPolicy};
use crate::pool::Priority;
use crate::stats::{FnRecorder, FnStats, Outcome};
use crate::time::{self, Clock};

mod route;

/// Where a managed function's body runs and what admits it (design §8; see [`crate::pool`]).
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

/// Everything the attribute decided about a function, fixed at compile time.
#[doc(hidden)]
#[derive(Debug)]
pub struct SiteMeta {
    /// Unique per annotated function: module path, name and the attribute's source position.
    pub id: &'static str,
    /// `module_path!()` where the function is defined.
    pub module_path: &'static str,
    /// The function's identifier.
    pub fn_name: &'static str,
    /// `name = "..."`, replacing the derived path.
    pub name: Option<&'static str>,
    /// The kind from the attribute.
    pub kind: Kind,
    /// Whether the function is `async`.
    pub is_async: bool,
    /// `ttl = "..."`.
    pub ttl: Option<Duration>,
    /// `capacity = N`.
    pub capacity: Option<u64>,
    /// `tiers = "..."`; `None` means every tier the process has configured.
    pub tiers: Option<TierSet>,
    /// `l2_ttl = "..."` (defaults to `ttl`).
    pub l2_ttl: Option<Duration>,
    /// `l3_ttl = "..."` (defaults to `ttl`).
    pub l3_ttl: Option<Duration>,
    /// `compress_above = "..."`: zstd threshold in bytes for shared-tier entries.
    pub compress_above: Option<u32>,
    /// `version = N`.
    pub version: u32,
    /// Hash of the signature's types.
    pub schema: u64,
    /// `priority = "..."` (cpu and memory).
    pub priority: Priority,
    /// `concurrency = N` (io): calls of this function running at once.
    pub concurrency: Option<u64>,
    /// `timeout = "..."` (async io): deadline of each attempt.
    pub timeout: Option<Duration>,
    /// `retries = N` (io): extra attempts after an `Err`.
    pub retries: u32,
    /// `backoff = "..."` (io): first delay between attempts.
    pub backoff: Option<Duration>,
    /// `mem = "..."` (memory): bytes reserved from the memory budget per call.
    pub mem: Option<u64>,
    /// `level = "..."`: the function's optimization level.
    pub level: Option<crate::config::Level>,
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
}

/// A static slot the generated code holds; resolves to the function's one [`Site`].
///
/// A function and its generated companions (`name_cache()`, `name_invalidate(..)`) each hold
/// a slot with the same [`SiteMeta::id`]; the registry hands all of them the same `Site`.
#[doc(hidden)]
pub struct SiteSlot {
    meta: &'static SiteMeta,
    site: OnceLock<&'static Site>,
}

impl SiteSlot {
    /// A slot for the function described by `meta`.
    pub const fn new(meta: &'static SiteMeta) -> Self {
        Self {
            meta,
            site: OnceLock::new(),
        }
    }

    /// The function's site. `owner` is `type_name::<Self>` for methods, so their path names
    /// the type they belong to.
    #[inline]
    pub fn get(&'static self, owner: Option<fn() -> &'static str>) -> &'static Site {
        self.site
            .get_or_init(|| crate::registry::site_for(self.meta, owner))
    }
}

/// One managed function at run time: its name, options, statistics and cache.
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
    meta: &'static SiteMeta,
    path: String,
    /// What configuration says of this function, over the attribute's values.
    overrides: crate::config::FnOverride,
    recorder: FnRecorder,
    /// The typed store, twice: as `Any` for the hit path (one virtual call to downcast) and
    /// as `AnyStore` for type-independent operations. Both point at one leaked allocation.
    store: OnceLock<(&'static (dyn Any + Send + Sync), &'static dyn AnyStore)>,
    key_prefix: OnceLock<String>,
    /// The `concurrency` limit's gate, created on first io call.
    concurrency: OnceLock<Option<Arc<crate::pool::gate::Gate>>>,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("path", &self.path)
            .field("kind", &self.meta.kind)
            .field("ttl", &self.ttl())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// The typed part of a site, created on first call when the value type is known.
struct Store<V> {
    l1: Option<L1Store<V>>,
    flights: Flights<V>,
    shared: Option<Arc<SharedStore<V>>>,
}

/// What the site needs from its store without knowing the value type.
trait AnyStore: Send + Sync {
    fn remove(&self, key: ArgsKey) -> bool;
    fn clear(&self);
    fn len(&self) -> u64;
    fn purge_expired(&self) -> u64;
}

impl<V: Clone + Send + Sync + 'static> AnyStore for Store<V> {
    fn remove(&self, key: ArgsKey) -> bool {
        self.l1.as_ref().is_some_and(|l1| l1.remove(key))
    }
    fn clear(&self) {
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }
    fn len(&self) -> u64 {
        self.l1.as_ref().map_or(0, L1Store::len)
    }
    fn purge_expired(&self) -> u64 {
        self.l1.as_ref().map_or(0, L1Store::purge_expired)
    }
}

impl Site {
    pub(crate) fn new(meta: &'static SiteMeta, path: String) -> Self {
        let overrides = crate::config::global()
            .function(&path)
            .cloned()
            .unwrap_or_default();
        Self {
            meta,
            path,
            overrides,
            recorder: FnRecorder::new(),
            store: OnceLock::new(),
            key_prefix: OnceLock::new(),
            concurrency: OnceLock::new(),
        }
    }

    /// The function's path in keys and statistics: `name = "..."` if given, else
    /// `module::path::fn` (with the self type for methods).
    pub fn path(&self) -> &str {
        &self.path
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
        self.overrides.ttl.or(self.meta.ttl)
    }

    /// The L1 capacity: entries, or bytes for a `memory` function (whose values are weighed
    /// by their encoded size; default [`Site::DEFAULT_MEMORY_CAPACITY`]). Configuration's
    /// value for this function, else the attribute's, else `l1.capacity`.
    pub fn capacity(&self) -> u64 {
        self.overrides
            .capacity
            .or(self.meta.capacity)
            .unwrap_or(match self.meta.kind {
                Kind::Memory => Self::DEFAULT_MEMORY_CAPACITY,
                _ => crate::config::global().l1_capacity,
            })
    }

    /// The function's optimization level: configuration's, else the attribute's, else the
    /// global level.
    pub fn level(&self) -> crate::config::Level {
        self.overrides
            .level
            .or(self.meta.level)
            .unwrap_or(crate::config::global().level)
    }

    /// Whether the function is managed at all: `enabled = false` in its configuration runs
    /// the body directly (measured, never cached, not routed to a pool).
    pub fn enabled(&self) -> bool {
        self.overrides.enabled.unwrap_or(true)
    }

    /// The level set for this function alone, if any.
    fn own_level(&self) -> Option<crate::config::Level> {
        self.overrides.level.or(self.meta.level)
    }

    /// Whether L1 capacity evictions go to L3: level ultra and above, or `tiers.demote_on_evict`.
    fn demotes(&self) -> bool {
        match self.own_level() {
            Some(level) => level >= crate::config::Level::Ultra,
            None => crate::config::global().demote_on_evict,
        }
    }

    /// L1 capacity in bytes of a `memory` function that sets none: 256 MiB.
    pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 << 20;

    /// The user's `version = N` (0 when not given).
    pub fn version(&self) -> u32 {
        self.meta.version
    }

    /// Hash of the function's argument and return types.
    pub fn schema(&self) -> u64 {
        self.meta.schema
    }

    /// The key an entry for `args` has in shared tiers.
    pub fn full_key(&self, args: ArgsKey) -> String {
        // The prefix is fixed once the tiers (and so the namespace) have started; it is built
        // once then, and the per-call part is 32 hex digits.
        let Some(tiers) = tiered::global_if_started() else {
            return self.key_in(crate::registry::namespace(), args);
        };
        let prefix = self.key_prefix.get_or_init(|| {
            let mut p = self.key_in(&tiers.config().namespace, ArgsKey(0));
            p.truncate(p.len() - 32);
            p
        });
        let mut key = String::with_capacity(prefix.len() + 32);
        key.push_str(prefix);
        crate::key::push_hex128(&mut key, args.0);
        key
    }

    fn key_in(&self, namespace: &str, args: ArgsKey) -> String {
        FullKey {
            namespace,
            fn_path: &self.path,
            version: self.meta.version,
            schema: self.meta.schema,
            args,
        }
        .to_string()
    }

    /// A snapshot of the function's statistics.
    pub fn stats(&self) -> FnStats {
        self.recorder.snapshot()
    }

    /// Forgets the statistics recorded so far (the cache is untouched).
    pub fn reset_stats(&self) {
        self.recorder.reset();
    }

    /// Number of entries in the function's L1 store.
    pub fn len(&self) -> u64 {
        self.store.get().map_or(0, |(_, s)| s.len())
    }

    /// Removes the function's expired L1 entries now; how many (the memory budget does this
    /// under pressure).
    pub fn purge_expired(&self) -> u64 {
        self.store.get().map_or(0, |(_, s)| s.purge_expired())
    }

    /// Whether the function's L1 store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the entry for one call's key from every tier; whether this process had it in
    /// L1. Shared-tier deletions are applied before this returns, so a following call cannot
    /// read the old value back. Generated `name_invalidate(args..)` companions call this.
    pub fn invalidate(&'static self, key: ArgsKey) -> bool {
        let removed = self.store.get().is_some_and(|(_, s)| s.remove(key));
        if let Some(tiers) = self.shared_tiers() {
            tiers.enqueue(WriteOp::Delete {
                key: self.full_key(key),
                l2: true,
                l3: true,
            });
            tiered::block_on(tiers.barrier());
        }
        removed
    }

    /// Removes every cached entry of this function, from every tier.
    pub fn invalidate_all(&'static self) {
        self.clear_l1();
        if let Some(tiers) = self.shared_tiers() {
            let prefix = format!("{}:{}:", crate::registry::namespace(), self.path);
            tiers.enqueue(WriteOp::DeletePrefix(prefix));
            tiered::block_on(tiers.barrier());
        }
    }

    /// Empties this process's L1 for the function; shared tiers keep their entries (what a
    /// restart looks like to them).
    pub fn clear_l1(&self) {
        if let Some((_, s)) = self.store.get() {
            s.clear();
        }
    }

    /// The tiers the function may use: configuration's, else the attribute's; level basic
    /// (set for this function) means L1 only; else every tier the process runs.
    pub fn tiers(&self) -> TierSet {
        self.overrides
            .tiers
            .or(self.meta.tiers)
            .or_else(|| {
                (self.own_level() == Some(crate::config::Level::Basic)).then_some(TierSet {
                    l1: true,
                    l2: false,
                    l3: false,
                })
            })
            .unwrap_or(TierSet::ALL)
    }

    fn wanted_tiers(&self) -> TierSet {
        self.tiers()
    }

    /// The process's shared tiers, if this function may use any of them.
    fn shared_tiers(&self) -> Option<&'static Arc<tiered::Tiers>> {
        let wanted = self.wanted_tiers();
        let tiers = tiered::global();
        ((wanted.l2 && tiers.has_l2()) || (wanted.l3 && tiers.l3().is_some())).then_some(tiers)
    }

    #[inline]
    fn store<V: Clone + Send + Sync + 'static>(
        &'static self,
        codec: Option<ValueCodec<V>>,
    ) -> &'static Store<V> {
        self.store
            .get_or_init(|| {
                // Sites live for the whole process, and so does their store.
                let store: &'static Store<V> = Box::leak(Box::new(self.new_store(codec)));
                (store, store)
            })
            .0
            .downcast_ref::<Store<V>>()
            .unwrap_or_else(|| {
                panic!(
                    "optimize: `{}` was called with two different return types; this happens \
                     when the attribute is used in a generic impl, which is not supported",
                    self.path
                )
            })
    }

    fn new_store<V: Clone + Send + Sync + 'static>(
        &'static self,
        codec: Option<ValueCodec<V>>,
    ) -> Store<V> {
        let wanted = self.wanted_tiers();
        let shared = codec
            .filter(|_| wanted.l2 || wanted.l3)
            .and_then(|codec| {
                let tiers = tiered::global().clone();
                let mut envelope = tiers.config().envelope;
                let own = self.meta.compress_above.or_else(|| {
                    (self.own_level() == Some(crate::config::Level::Extreme)).then_some(0)
                });
                if let Some(threshold) = own {
                    envelope.compress_threshold = threshold as usize;
                }
                let options = SharedOptions {
                    l2: wanted.l2,
                    l3: wanted.l3,
                    l2_ttl: self.meta.l2_ttl.or(self.ttl()),
                    l3_ttl: self.meta.l3_ttl.or(self.ttl()),
                    envelope,
                };
                SharedStore::new(tiers, codec, options, self.meta.schema)
            })
            .map(Arc::new);
        let l1 = wanted.l1.then(|| {
            let options = L1Options {
                capacity: self.capacity(),
                ttl: self.ttl(),
                engine: crate::cache::l1::default_engine(),
            };
            let clock = time::global().clone();
            let on_evict = self.on_evict(shared.clone());
            match self.meta.kind {
                // Memory-kind values are weighed by their encoded size (by their stack size
                // when they cannot be encoded), so capacity counts bytes.
                Kind::Memory => {
                    let size = codec.map_or(stack_size::<V> as fn(&V) -> u64, |c| c.size_fn());
                    L1Store::weighed(options, clock, Some(on_evict), size)
                }
                _ => L1Store::with_eviction(options, clock, on_evict),
            }
        });
        Store {
            l1,
            flights: Flights::new(),
            shared,
        }
    }

    /// Counts L1 capacity evictions and, with shared tiers, demotes the entries to L3
    /// (through the write-behind queue).
    fn on_evict<V: Send + 'static>(
        &'static self,
        shared: Option<Arc<SharedStore<V>>>,
    ) -> EvictionHandler<V> {
        Arc::new(move |key, entry| {
            self.recorder.record_eviction();
            let Some(shared) = shared.as_ref().filter(|_| self.demotes()) else {
                return;
            };
            let expires_at_ms = match entry.expires_at {
                0 => 0,
                deadline => {
                    let left = deadline.saturating_sub(time::global().now_nanos()) / 1_000_000;
                    unix_ms().saturating_add(left)
                }
            };
            shared.demote(self.full_key(key), entry.value, expires_at_ms);
        })
    }

    #[inline]
    fn l1_hit<V: CacheValue>(&self, store: &Store<V>, key: ArgsKey) -> Option<V> {
        store.l1.as_ref()?.get_live(key)
    }

    /// Records an L1 hit: timed only when the call was sampled (`start` is `Some`).
    #[inline]
    fn record_l1_hit(&self, start: Option<u64>) {
        match start {
            Some(start) => {
                let took = time::global().now_nanos().saturating_sub(start);
                self.recorder.record_sampled(Outcome::HitL1, took);
                self.trace_call(Outcome::HitL1, took);
            }
            None => {
                self.recorder.record_untimed(Outcome::HitL1);
                tracing::debug!(target: "optimize::call", r#fn = %self.path, kind = self.meta.kind.as_str(), outcome = "hit_l1");
            }
        }
    }

    /// Records a call that was timed, and traces it.
    #[inline]
    fn record(&self, outcome: Outcome, total: u64, compute: u64) {
        self.recorder.record(outcome, total, compute);
        self.trace_call(outcome, total);
    }

    /// One `debug` event per call (target `optimize::call`) and an `info` event for calls
    /// slower than [`crate::stats::set_slow_call_threshold`] (target `optimize::slow`).
    #[inline]
    fn trace_call(&self, outcome: Outcome, nanos: u64) {
        let kind = self.meta.kind.as_str();
        let micros = nanos / 1000;
        tracing::debug!(target: "optimize::call", r#fn = %self.path, kind, outcome = outcome.as_str(), micros);
        if nanos >= crate::stats::slow_call_nanos() {
            tracing::info!(target: "optimize::slow", r#fn = %self.path, kind, outcome = outcome.as_str(), micros, "slow call");
        }
    }

    /// Fills L1 and the flight from a shared-tier hit.
    fn accept_shared<V: CacheValue>(
        &self,
        store: &Store<V>,
        key: ArgsKey,
        full_key: &str,
        found: crate::cache::shared::Found<V>,
    ) -> (V, Outcome) {
        if let Some(shared) = &store.shared {
            shared.promote(full_key, &found);
        }
        if let Some(l1) = &store.l1 {
            let remaining = (found.expires_at_ms != 0)
                .then(|| Duration::from_millis(found.expires_at_ms.saturating_sub(unix_ms())));
            l1.insert_within(
                key,
                found.value.clone(),
                time::global().now_nanos(),
                remaining,
            );
        }
        let outcome = match found.tier {
            Tier::L3 => Outcome::HitL3,
            _ => Outcome::HitL2,
        };
        (found.value, outcome)
    }

    /// What a new leader finds before running the body: a value in L1 (put there by a leader
    /// that finished just before this one joined) or in a shared tier. Also returns the
    /// shared-tier key, built once per miss, for storing a computed value.
    async fn leader_lookup<V: CacheValue>(
        &'static self,
        store: &Store<V>,
        key: ArgsKey,
    ) -> (Option<(V, Outcome)>, Option<String>) {
        if let Some(v) = self.l1_hit(store, key) {
            return (Some((v, Outcome::HitL1)), None);
        }
        let Some(shared) = &store.shared else {
            return (None, None);
        };
        let full = self.full_key(key);
        let found = shared.lookup(&full).await;
        let served = found.map(|f| self.accept_shared(store, key, &full, f));
        (served, Some(full))
    }

    /// Shares a value the leader found instead of computing, and records the hit.
    fn serve_found<P: ReturnPolicy>(
        &self,
        policy: P,
        lead: crate::flight::Lead<'_, P::Cached>,
        value: P::Cached,
        outcome: Outcome,
        start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        lead.complete_with(|| Settled::Value(value.clone()));
        self.record(outcome, time::global().now_nanos().saturating_sub(start), 0);
        policy.rebuild(value)
    }

    /// Runs a sync call through the cache.
    #[doc(hidden)]
    #[inline]
    pub fn call_sync<P: ReturnPolicy>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        body: impl FnOnce() -> P::Output,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        if !self.enabled() {
            return self.call_measured_sync(policy, body);
        }
        let clock = time::global();
        // Hits are timed one in `HIT_SAMPLE`; a miss reads the clock when it becomes one.
        let sampled = crate::stats::sample_this_call().then(|| clock.now_nanos());
        let Some(key) = key else {
            let start = sampled.unwrap_or_else(|| clock.now_nanos());
            return self.run_uncoalesced(policy, start, body);
        };
        let store = self.store::<P::Cached>(codec);
        if let Some(v) = self.l1_hit(store, key) {
            self.record_l1_hit(sampled);
            return policy.rebuild(v);
        }
        let start = sampled.unwrap_or_else(|| clock.now_nanos());
        loop {
            match store.flights.join(key) {
                Role::Leader(lead) => {
                    let (found, full_key) = tiered::block_on(self.leader_lookup(store, key));
                    if let Some((v, outcome)) = found {
                        return self.serve_found(policy, lead, v, outcome, start);
                    }
                    let compute_start = clock.now_nanos();
                    let panic = PanicRecorder::new(self, start, compute_start);
                    let out = lead.run(body);
                    panic.disarm();
                    return self.settle(
                        policy,
                        store,
                        key,
                        full_key,
                        lead,
                        out,
                        start,
                        compute_start,
                    );
                }
                Role::Waiter(wait) => match wait.wait_blocking(&self.path) {
                    Waited::Retry => continue,
                    Waited::Settled(settled) => {
                        return self.waited(policy, settled, start, body);
                    }
                },
            }
        }
    }

    /// Runs an async call through the cache.
    #[doc(hidden)]
    pub async fn call_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        body: F,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        if !self.enabled() {
            return self.call_measured_async(policy, body).await;
        }
        let clock = time::global();
        let sampled = crate::stats::sample_this_call().then(|| clock.now_nanos());
        let Some(key) = key else {
            let start = sampled.unwrap_or_else(|| clock.now_nanos());
            let out = body.await;
            return self.finish_uncoalesced(policy, out, start, start);
        };
        let store = self.store::<P::Cached>(codec);
        if let Some(v) = self.l1_hit(store, key) {
            self.record_l1_hit(sampled);
            return policy.rebuild(v);
        }
        let start = sampled.unwrap_or_else(|| clock.now_nanos());
        loop {
            match store.flights.join(key) {
                Role::Leader(lead) => {
                    let (found, full_key) = self.leader_lookup(store, key).await;
                    if let Some((v, outcome)) = found {
                        return self.serve_found(policy, lead, v, outcome, start);
                    }
                    let compute_start = clock.now_nanos();
                    let out = {
                        let panic = PanicRecorder::new(self, start, compute_start);
                        let out = lead.run_async(body).await;
                        panic.disarm();
                        out
                    };
                    return self.settle(
                        policy,
                        store,
                        key,
                        full_key,
                        lead,
                        out,
                        start,
                        compute_start,
                    );
                }
                Role::Waiter(wait) => match wait.wait(&self.path).await {
                    Waited::Retry => continue,
                    Waited::Settled(Settled::Value(v)) => {
                        self.record(
                            Outcome::Coalesced,
                            clock.now_nanos().saturating_sub(start),
                            0,
                        );
                        return policy.rebuild(v);
                    }
                    Waited::Settled(Settled::NotShared) => {
                        let compute_start = clock.now_nanos();
                        let out = body.await;
                        return self.finish_uncoalesced(policy, out, start, compute_start);
                    }
                    Waited::Settled(Settled::Panicked) => self.leader_panicked(start),
                },
            }
        }
    }

    /// Runs a sync call of a function with `cache = false`: measured, never cached or shared.
    #[doc(hidden)]
    pub fn call_measured_sync<P: ReturnPolicy>(
        &self,
        policy: P,
        body: impl FnOnce() -> P::Output,
    ) -> P::Output {
        let start = time::global().now_nanos();
        let guard = PanicRecorder::new(self, start, start);
        let out = body();
        guard.disarm();
        self.record_measured(policy, &out, start);
        out
    }

    /// Runs an async call of a function with `cache = false`: measured, never cached or shared.
    #[doc(hidden)]
    pub async fn call_measured_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &self,
        policy: P,
        body: F,
    ) -> P::Output {
        let start = time::global().now_nanos();
        let guard = PanicRecorder::new(self, start, start);
        let out = body.await;
        guard.disarm();
        self.record_measured(policy, &out, start);
        out
    }

    fn record_measured<P: ReturnPolicy>(&self, policy: P, out: &P::Output, start: u64) {
        let took = time::global().now_nanos().saturating_sub(start);
        let outcome = if policy.is_failure(out) {
            Outcome::Failed
        } else {
            Outcome::Executed
        };
        self.record(outcome, took, took);
    }

    /// Stores the leader's result, releases the waiters and records the call.
    #[allow(clippy::too_many_arguments)]
    fn settle<P: ReturnPolicy>(
        &self,
        policy: P,
        store: &Store<P::Cached>,
        key: ArgsKey,
        full_key: Option<String>,
        lead: crate::flight::Lead<'_, P::Cached>,
        out: P::Output,
        start: u64,
        compute_start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let now = time::global().now_nanos();
        let outcome = match policy.to_cache(&out) {
            Some(cached) => {
                if let (Some(shared), Some(full)) = (&store.shared, full_key) {
                    shared.store(full, &cached);
                }
                // Fill L1 before completing, so callers arriving after the flight ends hit it.
                if let Some(l1) = &store.l1 {
                    l1.insert(key, cached.clone(), now);
                }
                lead.complete_with(|| Settled::Value(cached));
                Outcome::Computed
            }
            None => {
                lead.complete(Settled::NotShared);
                Outcome::Uncached
            }
        };
        self.record(
            outcome,
            now.saturating_sub(start),
            now.saturating_sub(compute_start),
        );
        out
    }

    /// A sync waiter's end: share the value, run its own body, or re-raise the panic.
    fn waited<P: ReturnPolicy>(
        &self,
        policy: P,
        settled: Settled<P::Cached>,
        start: u64,
        body: impl FnOnce() -> P::Output,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        match settled {
            Settled::Value(v) => {
                let now = time::global().now_nanos();
                self.recorder
                    .record(Outcome::Coalesced, now.saturating_sub(start), 0);
                policy.rebuild(v)
            }
            Settled::NotShared => self.run_uncoalesced(policy, start, body),
            Settled::Panicked => self.leader_panicked(start),
        }
    }

    fn run_uncoalesced<P: ReturnPolicy>(
        &self,
        policy: P,
        start: u64,
        body: impl FnOnce() -> P::Output,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let compute_start = time::global().now_nanos();
        let guard = PanicRecorder::new(self, start, compute_start);
        let out = body();
        guard.disarm();
        self.finish_uncoalesced(policy, out, start, compute_start)
    }

    fn finish_uncoalesced<P: ReturnPolicy>(
        &self,
        policy: P,
        out: P::Output,
        start: u64,
        compute_start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let now = time::global().now_nanos();
        let outcome = if policy.to_cache(&out).is_some() {
            Outcome::Computed
        } else {
            Outcome::Uncached
        };
        self.record(
            outcome,
            now.saturating_sub(start),
            now.saturating_sub(compute_start),
        );
        out
    }

    fn leader_panicked(&self, start: u64) -> ! {
        self.record(
            Outcome::Panicked,
            time::global().now_nanos().saturating_sub(start),
            0,
        );
        panic!(
            "optimize: the call of `{}` this caller was waiting for panicked; see that panic \
             for the cause",
            self.path
        );
    }
}

fn stack_size<V>(_: &V) -> u64 {
    std::mem::size_of::<V>() as u64
}

/// Records a `panic` outcome if the body unwinds before [`PanicRecorder::disarm`].
struct PanicRecorder<'a> {
    site: &'a Site,
    start: u64,
    compute_start: u64,
    armed: bool,
}

impl<'a> PanicRecorder<'a> {
    fn new(site: &'a Site, start: u64, compute_start: u64) -> Self {
        Self {
            site,
            start,
            compute_start,
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PanicRecorder<'_> {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let now = time::global().now_nanos();
            self.site.record(
                Outcome::Panicked,
                now.saturating_sub(self.start),
                now.saturating_sub(self.compute_start),
            );
        }
    }
}

/// The clock used by managed functions (re-exported for tests and tools).
pub fn clock() -> &'static Clock {
    time::global()
}
