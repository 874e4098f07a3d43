//! Calls whose body may go on in the background (docs/resilience.md): `soft_timeout` serves
//! the value fail-safe keeps when the body is slow and lets the body finish; `refresh_ahead`
//! refreshes a hit in the last part of its ttl while the caller gets the value at once.
//!
//! The attribute routes a function here only when it asks for either, and only when its
//! arguments are owned: the body then owns everything it uses and may outlive the call. A
//! key has at most one background run at a time, and a function at most its `concurrency`
//! (64 without one); while a key's body runs in the background, its callers get the stale
//! value at once instead of starting another run. A background run stores its value itself,
//! before handing it to a caller still waiting, so a caller that gave up loses nothing.

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;

use crate::cache::shared::ValueCodec;
use crate::cache::store::{Background, FnStore, Miss, Stale};
use crate::key::ArgsKey;
use crate::policy::{CacheValue, ReturnPolicy};
use crate::site::Site;
use crate::stats::Outcome;

type Panic = Box<dyn std::any::Any + Send>;

/// A background run's result, with this thread's rejection mark cleared: the run records no
/// caller's outcome, and the mark must not reach the next call made on this thread.
fn unflagged<T>(out: T) -> T {
    super::route::take_rejected();
    out
}

/// A sync background run's result, handed to the caller waiting for it, or left with the run
/// when the caller stopped waiting.
struct Handoff<T> {
    state: Mutex<HandoffState<T>>,
    ready: Condvar,
}

enum HandoffState<T> {
    Waiting,
    Done(Result<T, Panic>),
    Abandoned,
}

impl<T> Handoff<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HandoffState::Waiting),
            ready: Condvar::new(),
        })
    }

    /// The run's side: hands `out` over; `false` when nobody waits any more.
    fn offer(&self, out: Result<T, Panic>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let HandoffState::Abandoned = *state {
            return false;
        }
        *state = HandoffState::Done(out);
        self.ready.notify_all();
        true
    }

    /// The caller's side: the result if it comes within `bound`; else the caller gives up,
    /// atomically with the run's [`Handoff::offer`].
    fn take_within(&self, bound: Duration) -> Option<Result<T, Panic>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, bound, |s| matches!(s, HandoffState::Waiting))
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, HandoffState::Abandoned) {
            HandoffState::Done(out) => Some(out),
            _ => None,
        }
    }
}

/// What a call finds before running anything.
enum Before<V> {
    /// A live L1 entry; `true`: refresh-ahead wants it refreshed.
    Hit(V, bool),
    /// The key's body runs in the background already: this value (fail-safe's) is served.
    Running(V),
    /// Nothing to serve at once.
    Miss,
}

impl Site {
    fn before_call<V: CacheValue>(&self, store: &FnStore<V>, key: ArgsKey) -> Before<V> {
        if let Some((v, due)) = store.l1_hit_due(key) {
            return Before::Hit(v, due);
        }
        if store.in_background(key) {
            if let Some(stale) = store.stale(key) {
                return Before::Running(stale.value);
            }
        }
        Before::Miss
    }

    /// A call answered at once with the value fail-safe keeps (it ran no body).
    fn stale_now<P: ReturnPolicy>(&self, policy: P, value: P::Cached, start: u64) -> P::Output
    where
        P::Cached: CacheValue,
    {
        self.serve_stale(policy, value, start, self.now())
    }

    /// Stores a background run's value; whether it was cacheable.
    fn store_background<P: ReturnPolicy>(
        &self,
        policy: P,
        store: &FnStore<P::Cached>,
        key: ArgsKey,
        miss: Miss,
        out: &P::Output,
    ) -> bool
    where
        P::Cached: CacheValue,
    {
        match policy.to_cache(out) {
            Some(cached) => {
                store.store(key, miss, &cached);
                true
            }
            None => false,
        }
    }

    /// A background run no caller took: recorded as a refresh when it stored a value.
    fn record_refresh(&self, stored: bool, compute_start: u64) {
        if stored {
            let took = self.now().saturating_sub(compute_start);
            self.record(Outcome::Refreshed, took, took);
        }
    }

    /// The end of a call that waited (at most its soft timeout) for a background run: the
    /// run's result (already stored), fail-safe's value for a failure, the run's panic, or —
    /// when the run is still going — the stale value at once.
    fn after_soft_wait<P: ReturnPolicy>(
        &self,
        policy: P,
        store: &FnStore<P::Cached>,
        key: ArgsKey,
        stale: Stale<P::Cached>,
        got: Option<Result<P::Output, Panic>>,
        start: u64,
    ) -> P::Output
    where
        P::Cached: CacheValue,
    {
        let took = self.now().saturating_sub(start);
        match got {
            Some(Ok(out)) if !policy.is_failure(&out) || policy.to_cache(&out).is_some() => {
                self.record(Outcome::Computed, took, took);
                out
            }
            Some(Ok(_)) => {
                store.throttle(key, &stale);
                self.record(Outcome::Stale, took, took);
                policy.rebuild(stale.value)
            }
            Some(Err(panic)) => {
                self.record(Outcome::Panicked, took, took);
                resume_unwind(panic)
            }
            None => self.stale_now(policy, stale.value, start),
        }
    }

    /// Runs a sync call of a function with `soft_timeout` or `refresh_ahead`.
    #[doc(hidden)]
    pub fn call_sync_background<P>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        tags: &[u64],
        body: impl FnOnce() -> P::Output + Send + 'static,
    ) -> P::Output
    where
        P: ReturnPolicy + Send + 'static,
        P::Cached: CacheValue,
        P::Output: Send + 'static,
    {
        let Some(key) = key.filter(|_| self.settings.enabled) else {
            return self.call_sync_tagged(policy, codec, key, tags, body);
        };
        let start = self.now();
        let store = self.store::<P::Cached>(codec);
        match self.before_call(store, key) {
            Before::Hit(v, due) => {
                if due {
                    if let Background::Started(run) = store.start_background(key) {
                        let tags = tags.to_vec();
                        let refresh = move || {
                            let _run = run;
                            let Some(miss) = crate::time::block_on(store.refresh_miss(key, &tags))
                            else {
                                // Another instance refreshes it.
                                return;
                            };
                            let compute_start = self.now();
                            let run = || crate::warm::refreshing(body);
                            if let Ok(out) = unflagged(catch_unwind(AssertUnwindSafe(run))) {
                                let stored = self.store_background(policy, store, key, miss, &out);
                                self.record_refresh(stored, compute_start);
                            }
                        };
                        // A thread that cannot start is a refresh skipped; the next hit tries.
                        let _ = std::thread::Builder::new()
                            .name("optimize-refresh".into())
                            .spawn(refresh);
                    }
                }
                self.record(Outcome::HitL1, self.now().saturating_sub(start), 0);
                return policy.rebuild(v);
            }
            Before::Running(stale) => return self.stale_now(policy, stale, start),
            Before::Miss => {}
        }
        let (Some(soft), Some(stale)) = (self.settings.soft_timeout, store.stale(key)) else {
            return self.call_sync_tagged(policy, codec, Some(key), tags, body);
        };
        if self
            .settings
            .stale_if_busy
            .is_some_and(|depth| self.pool_busy(depth))
        {
            return self.stale_now(policy, stale.value, start);
        }
        let run = match store.start_background(key) {
            Background::Started(run) => run,
            Background::Running => return self.stale_now(policy, stale.value, start),
            Background::Full => {
                return self.call_sync_tagged(policy, codec, Some(key), tags, body);
            }
        };
        let handoff = Handoff::new();
        let theirs = handoff.clone();
        let tags = tags.to_vec();
        let work = move || {
            let _run = run;
            let miss = crate::time::block_on(store.refresh_miss(key, &tags))
                .unwrap_or_else(|| Miss::without_lookup(&tags));
            let compute_start = self.now();
            match unflagged(catch_unwind(AssertUnwindSafe(body))) {
                Ok(out) => {
                    let stored = self.store_background(policy, store, key, miss, &out);
                    if !theirs.offer(Ok(out)) {
                        self.record_refresh(stored, compute_start);
                    }
                }
                Err(panic) => {
                    if !theirs.offer(Err(panic)) {
                        tracing::warn!(r#fn = %self.path, "the body panicked in the background (a soft timeout had served the stale value)");
                    }
                }
            }
        };
        if std::thread::Builder::new()
            .name("optimize-soft".into())
            .spawn(work)
            .is_err()
        {
            return self.stale_now(policy, stale.value, start);
        }
        let got = handoff.take_within(soft);
        self.after_soft_wait(policy, store, key, stale, got, start)
    }

    /// Runs an async call of a function with `soft_timeout` or `refresh_ahead`. Background
    /// runs go to the caller's tokio runtime; outside one, the call runs as any other.
    #[doc(hidden)]
    pub async fn call_async_background<P, F>(
        &'static self,
        policy: P,
        codec: Option<ValueCodec<P::Cached>>,
        key: Option<ArgsKey>,
        tags: &[u64],
        body: F,
    ) -> P::Output
    where
        P: ReturnPolicy + Send + 'static,
        P::Cached: CacheValue,
        P::Output: Send + 'static,
        F: Future<Output = P::Output> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(key), Some(runtime)) = (key.filter(|_| self.settings.enabled), runtime) else {
            return self.call_async_tagged(policy, codec, key, tags, body).await;
        };
        let start = self.now();
        let store = self.store::<P::Cached>(codec);
        match self.before_call(store, key) {
            Before::Hit(v, due) => {
                if due {
                    if let Background::Started(run) = store.start_background(key) {
                        let tags = tags.to_vec();
                        crate::cache::tiered::spawn_boxed(&runtime, async move {
                            let _run = run;
                            let Some(miss) = store.refresh_miss(key, &tags).await else {
                                return;
                            };
                            let compute_start = self.now();
                            let run = crate::warm::refreshing_async(body);
                            if let Ok(out) = unflagged(AssertUnwindSafe(run).catch_unwind().await) {
                                let stored = self.store_background(policy, store, key, miss, &out);
                                self.record_refresh(stored, compute_start);
                            }
                        });
                    }
                }
                self.record(Outcome::HitL1, self.now().saturating_sub(start), 0);
                return policy.rebuild(v);
            }
            Before::Running(stale) => return self.stale_now(policy, stale, start),
            Before::Miss => {}
        }
        let (Some(soft), Some(stale)) = (self.settings.soft_timeout, store.stale(key)) else {
            return self
                .call_async_tagged(policy, codec, Some(key), tags, body)
                .await;
        };
        if self
            .settings
            .stale_if_busy
            .is_some_and(|depth| self.pool_busy(depth))
        {
            return self.stale_now(policy, stale.value, start);
        }
        let run = match store.start_background(key) {
            Background::Started(run) => run,
            Background::Running => return self.stale_now(policy, stale.value, start),
            Background::Full => {
                return self
                    .call_async_tagged(policy, codec, Some(key), tags, body)
                    .await;
            }
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Result<P::Output, Panic>>();
        let tags = tags.to_vec();
        crate::cache::tiered::spawn_boxed(&runtime, async move {
            let _run = run;
            let miss = store
                .refresh_miss(key, &tags)
                .await
                .unwrap_or_else(|| Miss::without_lookup(&tags));
            let compute_start = self.now();
            match unflagged(AssertUnwindSafe(body).catch_unwind().await) {
                Ok(out) => {
                    let stored = self.store_background(policy, store, key, miss, &out);
                    if tx.send(Ok(out)).is_err() {
                        self.record_refresh(stored, compute_start);
                    }
                }
                Err(panic) => {
                    if tx.send(Err(panic)).is_err() {
                        tracing::warn!(r#fn = %self.path, "the body panicked in the background (a soft timeout had served the stale value)");
                    }
                }
            }
        });
        let got = match tokio::time::timeout(soft, &mut rx).await {
            Ok(got) => got.ok(),
            Err(_) => {
                // Given up: closed first, so the run either sent already (taken here) or
                // learns that nobody waits and records its result itself.
                rx.close();
                rx.try_recv().ok()
            }
        };
        self.after_soft_wait(policy, store, key, stale, got, start)
    }
}
