//! The call engine (docs/architecture.md): what a managed call does between the generated wrapper and
//! the function's [`Site`]. Generated code reaches it through `__private`.
//!
//! The sync and async paths differ only in how they wait (a parked thread or an awaited
//! future) and how they run the body; every decision after that — what a result means, what
//! is stored, what is recorded and traced — is one function used by both, so they cannot
//! drift apart.

mod background;
mod route;

use std::future::Future;
use std::sync::{OnceLock, PoisonError, RwLock};

use crate::cache::shared::{L3Probe, ValueCodec};
use crate::cache::store::{FnStore, Miss};
use crate::flight::{Lead, Role, Settled, Waited};
use crate::key::ArgsKey;
use crate::meta::SiteMeta;
use crate::policy::{CacheValue, ReturnPolicy};
use crate::pool::chain;
use crate::site::Site;
use crate::stats::Outcome;
use crate::time::block_on;

/// What a call running its own body stores its result with: the store, the key and the
/// call's tags.
type Own<'a, V> = (&'a FnStore<V>, ArgsKey, &'a [u64]);

/// A sync call's body past the L1 hit, called at most once. Behind one type per return
/// type, the engine is compiled once per return type rather than once per function (each
/// body is a closure type of its own): docs/architecture.md, "Compile time".
///
/// Async bodies stay generic: a `dyn Future` would have to say whether it is `Send`, which
/// only the caller's future knows.
pub(crate) type Body<'a, O> = &'a mut dyn FnMut() -> O;

/// `body` as an `FnMut` that can be lent as a [`Body`] (or a `dyn FnMut` of a route), for
/// code that calls it once. `Send` when `body` is.
#[inline]
pub(crate) fn once<O>(body: impl FnOnce() -> O) -> impl FnMut() -> O {
    let mut body = Some(body);
    move || (body.take().expect("a managed call runs its body once"))()
}

/// A static slot the generated code holds; resolves to the function's one [`Site`].
///
/// A function and its generated companions (`name_cache()`, `name_invalidate(..)`) each hold
/// a slot with the same [`SiteMeta::id`]; the runtime's registry hands all of them the same
/// `Site`.
#[doc(hidden)]
pub struct SiteSlot {
    meta: &'static SiteMeta,
    site: OnceLock<&'static Site>,
    /// A generic impl's method has one static slot for every type it is instantiated for;
    /// the sites of the types after the first, by `type_name::<Self>()`.
    others: RwLock<Vec<&'static Site>>,
}

impl SiteSlot {
    /// A slot for the function described by `meta`.
    pub const fn new(meta: &'static SiteMeta) -> Self {
        Self {
            meta,
            site: OnceLock::new(),
            others: RwLock::new(Vec::new()),
        }
    }

    /// The function's site. `owner` is `type_name::<Self>` for methods, so their path names
    /// the type they belong to (each type of a generic impl has its own site); `types`
    /// hashes what the signature's types resolve to. The first use of any slot starts the
    /// runtime (the lazy default) if nothing was installed.
    /// `json_key` computes a key from arguments given as JSON (see [`Site::key_from_json`]).
    #[inline]
    pub fn get(
        &'static self,
        owner: Option<fn() -> &'static str>,
        types: Option<fn() -> u64>,
        json_key: Option<crate::key::JsonKeyFn>,
    ) -> &'static Site {
        let site = *self
            .site
            .get_or_init(|| self.resolve(owner, types, json_key));
        match owner {
            Some(owner) if !site.is_owned_by(owner()) => self.other(owner, types, json_key),
            _ => site,
        }
    }

    fn resolve(
        &self,
        owner: Option<fn() -> &'static str>,
        types: Option<fn() -> u64>,
        json_key: Option<crate::key::JsonKeyFn>,
    ) -> &'static Site {
        let site = crate::runtime::runtime()
            .registry()
            .site_for(self.meta, owner);
        if let Some(types) = types {
            site.bind_types(types);
        }
        if let Some(json_key) = json_key {
            site.bind_json_key(json_key);
        }
        site
    }

    /// The site of a further type of a generic impl.
    #[cold]
    fn other(
        &self,
        owner: fn() -> &'static str,
        types: Option<fn() -> u64>,
        json_key: Option<crate::key::JsonKeyFn>,
    ) -> &'static Site {
        let name = owner();
        let found = self
            .others
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .find(|s| s.is_owned_by(name));
        if let Some(site) = found {
            return site;
        }
        let mut others = self.others.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(site) = others.iter().copied().find(|s| s.is_owned_by(name)) {
            return site;
        }
        let site = crate::runtime::runtime()
            .registry()
            .site_for_type(self.meta, name);
        if let Some(types) = types {
            site.bind_types(types);
        }
        if let Some(json_key) = json_key {
            site.bind_json_key(json_key);
        }
        others.push(site);
        site
    }
}

/// What happened to a call that waited on another caller's computation.
enum AfterWait<O> {
    /// Done: the shared value, or the leader's panic re-raised.
    Done(O),
    /// The leader's result was not shareable (`Err`/`None`): run this caller's own body.
    RunOwn,
}

impl Site {
    /// Records an L1 hit: timed only when the call was sampled (`start` is `Some`).
    #[inline]
    fn record_l1_hit(&self, start: Option<u64>) {
        crate::spans::record_outcome(Outcome::HitL1);
        match start {
            Some(start) => {
                let took = self.now().saturating_sub(start);
                self.recorder.record_sampled(Outcome::HitL1, took);
                self.trace_call(Outcome::HitL1, took);
            }
            None => {
                self.recorder.record_untimed(Outcome::HitL1);
                tracing::debug!(target: "optimize::call", r#fn = %self.path, kind = self.meta.kind.as_str(), outcome = "hit_l1");
            }
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.env.clock.now_nanos()
    }

    /// Records a call that was timed, and traces it.
    #[inline]
    fn record(&self, outcome: Outcome, total: u64, compute: u64) {
        // A warming or prefetch call that computed its value was nobody's call; a call
        // whose `Err`/`None` came from a full queue was rejected, not run.
        let rejected = route::take_rejected();
        let outcome = match outcome {
            Outcome::Computed if crate::warm::prefetching() => Outcome::Prefetched,
            Outcome::Uncached | Outcome::Failed if rejected => Outcome::Rejected,
            other => other,
        };
        self.recorder.record(outcome, total, compute);
        crate::spans::record_outcome(outcome);
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

    /// Shares a value the leader found instead of computing, and records the hit.
    fn serve_found<P: ReturnPolicy>(
        &self,
        policy: P,
        lead: Lead<'_, P::Cached>,
        value: P::Cached,
        outcome: Outcome,
        start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        lead.complete_with(|| Settled::Value(value.clone()));
        self.record(outcome, self.now().saturating_sub(start), 0);
        policy.rebuild(value)
    }

    /// Serves an L3 hit read before joining the key's flight (nobody waits on it), and
    /// records it.
    fn serve_probed<P: ReturnPolicy>(
        &self,
        policy: P,
        value: P::Cached,
        outcome: Outcome,
        start: u64,
    ) -> P::Output {
        self.record(outcome, self.now().saturating_sub(start), 0);
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
        self.call_sync_tagged(policy, codec, key, &[], body)
    }

    /// [`Site::call_sync`] of a call whose entry carries tags (their hashes).
    ///
    /// Only the L1 hit is compiled into the caller: everything after it takes the body as a
    /// [`Body`], so it is compiled once per return type, not once per function.
    #[doc(hidden)]
    #[inline]
    pub fn call_sync_tagged<P: ReturnPolicy>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        tags: &[u64],
        body: impl FnOnce() -> P::Output,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let span = crate::spans::call(&self.path, self.meta.kind.as_str());
        let _in_span = span.enter();
        let mut sampled = None;
        let mut keyed = None;
        if self.settings.enabled {
            // Hits are timed one in `HIT_SAMPLE`; a miss reads the clock when it becomes one.
            if crate::stats::sample_this_call() {
                sampled = Some(self.now());
            }
            if let Some(key) = key {
                let store = self.store::<P::Cached>(codec);
                if let Some(v) = store.l1_hit(key) {
                    self.record_l1_hit(sampled);
                    return policy.rebuild(v);
                }
                keyed = Some((store, key));
            }
        }
        self.missed_sync(policy, keyed, tags, sampled, &mut once(body))
    }

    /// A sync call that L1 did not answer (`keyed`: its store and key, when it is cached):
    /// the shared tiers, the key's flight, the body.
    fn missed_sync<P: ReturnPolicy>(
        &'static self,
        policy: P,
        keyed: Option<(&'static FnStore<P::Cached>, ArgsKey)>,
        tags: &[u64],
        sampled: Option<u64>,
        body: Body<'_, P::Output>,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        if !self.settings.enabled {
            return self.measured_sync(policy, body);
        }
        let start = sampled.unwrap_or_else(|| self.now());
        let Some((store, key)) = keyed else {
            return self.run_own_sync(policy, None, start, body);
        };
        // A local read, made in place like an async lookup's (docs/tiers.md, "The read path").
        let l3_missed = match store.probe_l3(key, tags) {
            L3Probe::Hit((v, outcome)) => return self.serve_probed(policy, v, outcome, start),
            L3Probe::Missed => true,
            L3Probe::Skipped => false,
        };
        loop {
            match store.flights().join(key) {
                Role::Leader(lead) => {
                    // A shared-tier lookup may wait for Redis or the disk: on a multi-thread
                    // tokio worker, under `block_in_place`, so the worker's tasks move on.
                    let lookup = store.lookup(key, tags, l3_missed);
                    let (found, miss) = if store.has_shared() {
                        crate::pool::blocking(|| block_on(lookup))
                    } else {
                        block_on(lookup)
                    };
                    if let Some((v, outcome)) = found {
                        return self.serve_found(policy, lead, v, outcome, start);
                    }
                    if let Some(stale) = self.stale_when_busy(store, key) {
                        lead.complete_with(|| Settled::Stale(stale.value.clone()));
                        return self.serve_stale(policy, stale.value, start, self.now());
                    }
                    let compute_start = self.now();
                    let panic = PanicRecorder::new(self, start, compute_start);
                    let out = lead.run(body);
                    panic.disarm();
                    return self.settle(policy, store, key, miss, lead, out, start, compute_start);
                }
                Role::Waiter(wait)
                    if !chain::may_wait_on(chain::held(), wait.leader_admission()) =>
                {
                    drop(wait);
                    return self.run_own_sync(policy, Some((store, key, tags)), start, body);
                }
                Role::Waiter(wait) => match wait.wait_blocking(&self.path) {
                    Waited::Retry => continue,
                    Waited::Settled(settled) => {
                        return match self.after_wait(policy, settled, start) {
                            AfterWait::Done(out) => out,
                            AfterWait::RunOwn => {
                                self.run_own_sync(policy, Some((store, key, tags)), start, body)
                            }
                        };
                    }
                },
            }
        }
    }

    /// Runs an async call through the cache.
    #[doc(hidden)]
    pub fn call_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        body: F,
    ) -> impl Future<Output = P::Output>
    where
        P::Cached: CacheValue,
    {
        // Not a future of its own around the tagged one: each level of a recursive managed
        // async function would then carry two.
        self.call_async_tagged(policy, codec, key, &[], body)
    }

    /// [`Site::call_async`] of a call whose entry carries tags (their hashes).
    #[doc(hidden)]
    pub fn call_async_tagged<'t, P: ReturnPolicy, F: Future<Output = P::Output>>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        tags: &'t [u64],
        body: F,
    ) -> impl Future<Output = P::Output> + use<'t, P, F>
    where
        P::Cached: CacheValue,
    {
        use tracing::Instrument;
        let span = crate::spans::call(&self.path, self.meta.kind.as_str());
        self.cached_async(policy, codec, key, tags, body)
            .instrument(span)
    }

    async fn cached_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        tags: &[u64],
        body: F,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        if !self.settings.enabled {
            return self.measured_async(policy, body).await;
        }
        let sampled = crate::stats::sample_this_call().then(|| self.now());
        let Some(key) = key else {
            let start = sampled.unwrap_or_else(|| self.now());
            return self.run_own_async(policy, None, start, body).await;
        };
        let store = self.store::<P::Cached>(codec);
        if let Some(v) = store.l1_hit(key) {
            self.record_l1_hit(sampled);
            return policy.rebuild(v);
        }
        let start = sampled.unwrap_or_else(|| self.now());
        let l3_missed = match store.probe_l3(key, tags) {
            L3Probe::Hit((v, outcome)) => return self.serve_probed(policy, v, outcome, start),
            L3Probe::Missed => true,
            L3Probe::Skipped => false,
        };
        loop {
            match store.flights().join(key) {
                Role::Leader(lead) => {
                    let (found, miss) = store.lookup(key, tags, l3_missed).await;
                    if let Some((v, outcome)) = found {
                        return self.serve_found(policy, lead, v, outcome, start);
                    }
                    if let Some(stale) = self.stale_when_busy(store, key) {
                        lead.complete_with(|| Settled::Stale(stale.value.clone()));
                        return self.serve_stale(policy, stale.value, start, self.now());
                    }
                    let compute_start = self.now();
                    let out = {
                        let panic = PanicRecorder::new(self, start, compute_start);
                        let out = lead.run_async(body).await;
                        panic.disarm();
                        out
                    };
                    return self.settle(policy, store, key, miss, lead, out, start, compute_start);
                }
                Role::Waiter(wait)
                    if !chain::may_wait_on(chain::held(), wait.leader_admission()) =>
                {
                    drop(wait);
                    return self
                        .run_own_async(policy, Some((store, key, tags)), start, body)
                        .await;
                }
                Role::Waiter(wait) => match wait.wait(&self.path).await {
                    Waited::Retry => continue,
                    Waited::Settled(settled) => {
                        return match self.after_wait(policy, settled, start) {
                            AfterWait::Done(out) => out,
                            AfterWait::RunOwn => {
                                self.run_own_async(policy, Some((store, key, tags)), start, body)
                                    .await
                            }
                        };
                    }
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
        let span = crate::spans::call(&self.path, self.meta.kind.as_str());
        let _in_span = span.enter();
        self.measured_sync(policy, &mut once(body))
    }

    fn measured_sync<P: ReturnPolicy>(&self, policy: P, body: Body<'_, P::Output>) -> P::Output {
        let start = self.now();
        let guard = PanicRecorder::new(self, start, start);
        let out = body();
        guard.disarm();
        self.record_measured(policy, &out, start);
        out
    }

    /// Runs an async call of a function with `cache = false`: measured, never cached or shared.
    #[doc(hidden)]
    pub fn call_measured_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &self,
        policy: P,
        body: F,
    ) -> impl Future<Output = P::Output> + use<'_, P, F> {
        use tracing::Instrument;
        let span = crate::spans::call(&self.path, self.meta.kind.as_str());
        self.measured_async(policy, body).instrument(span)
    }

    async fn measured_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &self,
        policy: P,
        body: F,
    ) -> P::Output {
        let start = self.now();
        let guard = PanicRecorder::new(self, start, start);
        let out = body.await;
        guard.disarm();
        self.record_measured(policy, &out, start);
        out
    }

    fn record_measured<P: ReturnPolicy>(&self, policy: P, out: &P::Output, start: u64) {
        let took = self.now().saturating_sub(start);
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
        store: &FnStore<P::Cached>,
        key: ArgsKey,
        miss: Miss,
        lead: Lead<'_, P::Cached>,
        out: P::Output,
        start: u64,
        compute_start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let outcome = match policy.to_cache(&out) {
            Some(cached) => {
                store.store(key, miss, &cached);
                lead.complete_with(|| Settled::Value(cached));
                Outcome::Computed
            }
            None => match store.stale(key) {
                Some(stale) => {
                    // Fail-safe: the value kept past its expiry instead of the failure, for
                    // this caller and its waiters.
                    store.throttle(key, &stale);
                    lead.complete_with(|| Settled::Stale(stale.value.clone()));
                    return self.serve_stale(policy, stale.value, start, compute_start);
                }
                None => {
                    lead.complete(Settled::NotShared);
                    Outcome::Uncached
                }
            },
        };
        let now = self.now();
        self.record(
            outcome,
            now.saturating_sub(start),
            now.saturating_sub(compute_start),
        );
        out
    }

    /// A waiter's end: share the value, re-raise the panic, or run its own body.
    fn after_wait<P: ReturnPolicy>(
        &self,
        policy: P,
        settled: Settled<P::Cached>,
        start: u64,
    ) -> AfterWait<P::Output>
    where
        P::Cached: CacheValue,
    {
        match settled {
            Settled::Value(v) => {
                self.record(Outcome::Coalesced, self.now().saturating_sub(start), 0);
                AfterWait::Done(policy.rebuild(v))
            }
            Settled::Stale(v) => {
                self.record(Outcome::Stale, self.now().saturating_sub(start), 0);
                AfterWait::Done(policy.rebuild(v))
            }
            Settled::NotShared => AfterWait::RunOwn,
            Settled::Panicked => self.leader_panicked(start),
        }
    }

    /// Runs the caller's own body outside any flight: without a key, after a leader's
    /// unshareable result, or instead of waiting on a leader it must not wait on (the waiting
    /// rule). With `own` (the store and key), a cacheable result is stored as a leader's is.
    fn run_own_sync<P: ReturnPolicy>(
        &self,
        policy: P,
        own: Option<Own<'_, P::Cached>>,
        start: u64,
        body: Body<'_, P::Output>,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let compute_start = self.now();
        let guard = PanicRecorder::new(self, start, compute_start);
        let out = body();
        guard.disarm();
        self.finish_own(policy, own, out, start, compute_start)
    }

    async fn run_own_async<P: ReturnPolicy, F: Future<Output = P::Output>>(
        &self,
        policy: P,
        own: Option<Own<'_, P::Cached>>,
        start: u64,
        body: F,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let compute_start = self.now();
        let guard = PanicRecorder::new(self, start, compute_start);
        let out = body.await;
        guard.disarm();
        self.finish_own(policy, own, out, start, compute_start)
    }

    fn finish_own<P: ReturnPolicy>(
        &self,
        policy: P,
        own: Option<Own<'_, P::Cached>>,
        out: P::Output,
        start: u64,
        compute_start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let outcome = match (policy.to_cache(&out), own) {
            (Some(cached), Some((store, key, tags))) => {
                store.store(key, Miss::without_lookup(tags), &cached);
                Outcome::Computed
            }
            (Some(_), None) => Outcome::Computed,
            (None, Some((store, key, _))) => match store.stale(key) {
                Some(stale) => {
                    store.throttle(key, &stale);
                    return self.serve_stale(policy, stale.value, start, compute_start);
                }
                None => Outcome::Uncached,
            },
            (None, None) => Outcome::Uncached,
        };
        let now = self.now();
        self.record(
            outcome,
            now.saturating_sub(start),
            now.saturating_sub(compute_start),
        );
        out
    }

    /// Stale if busy: the value fail-safe keeps, when the function's pool already has
    /// `stale_if_busy` calls waiting (or, for a memory function, memory pressure holds
    /// admission), so this call is answered at once instead of queueing behind them.
    fn stale_when_busy<V: CacheValue>(
        &self,
        store: &FnStore<V>,
        key: ArgsKey,
    ) -> Option<crate::cache::store::Stale<V>> {
        let depth = self.settings.stale_if_busy?;
        let stale = store.stale(key)?;
        self.pool_busy(depth).then_some(stale)
    }

    /// Whether `depth` calls (or more) wait for this function's admission.
    fn pool_busy(&self, depth: u64) -> bool {
        let pools = &self.env.pools;
        let waiting = |gate: &crate::pool::gate::Gate| gate.stats().queued_total() >= depth;
        match self.meta.kind {
            crate::meta::Kind::Io => {
                self.concurrency.as_deref().is_some_and(waiting) || waiting(pools.io().gate())
            }
            crate::meta::Kind::Cpu => waiting(pools.cpu().gate()),
            crate::meta::Kind::Memory => {
                let gate = pools.memory().gate();
                gate.is_held() || waiting(gate)
            }
        }
    }

    /// Returns a stale value in place of a failed result (fail-safe), and records it.
    fn serve_stale<P: ReturnPolicy>(
        &self,
        policy: P,
        value: P::Cached,
        start: u64,
        compute_start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let now = self.now();
        self.record(
            Outcome::Stale,
            now.saturating_sub(start),
            now.saturating_sub(compute_start),
        );
        policy.rebuild(value)
    }

    fn leader_panicked(&self, start: u64) -> ! {
        self.record(Outcome::Panicked, self.now().saturating_sub(start), 0);
        panic!(
            "optimize: the call of `{}` this caller was waiting for panicked; see that panic \
             for the cause",
            self.path
        );
    }
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
            let now = self.site.now();
            self.site.record(
                Outcome::Panicked,
                now.saturating_sub(self.start),
                now.saturating_sub(self.compute_start),
            );
        }
    }
}
