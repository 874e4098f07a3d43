//! Warming and prefetching (docs/resilience.md), as methods of a function's [`Site`]
//! (`f_cache()`): [`Site::warm`] fills the cache with a list of argument sets through a call
//! of the function per set, with bounded concurrency, counting failures and never stopping at
//! one; [`Site::prefetch`] starts one call and returns at once; predictive prefetch (the
//! model is in [`crate::predict`]) starts the calls a function's model expects next.
//!
//! The calls are the caller's own closures calling the function, so they go through its
//! ordinary call path (its tiers, its lease, its pool) and work for methods as well: a warmed
//! value is exactly what a caller would have stored. A call they make that runs the body
//! counts as `prefetched` rather than `computed`: it was nobody's call.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use futures_util::FutureExt;

use crate::key::ArgsKey;
use crate::predict::Stepper;
use crate::site::Site;

thread_local! {
    /// Set while this thread runs a warm or prefetch call (or polls one).
    static PREFETCHING: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread runs a background refresh's body (or polls it).
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current call was started by warming or prefetching.
pub(crate) fn prefetching() -> bool {
    PREFETCHING.with(Cell::get)
}

/// Whether the current work is nobody's call — a warming, a prefetch or a background
/// refresh — and so waits for admission behind callers.
pub(crate) fn behind_callers() -> bool {
    prefetching() || REFRESHING.with(Cell::get)
}

type Mark = std::thread::LocalKey<Cell<bool>>;

/// Runs `f` with `mark` set.
fn with_mark<R>(mark: &'static Mark, f: impl FnOnce() -> R) -> R {
    let before = mark.with(|p| p.replace(true));
    let out = f();
    mark.with(|p| p.set(before));
    out
}

/// Polls `fut` with `mark` set (only while it is polled).
async fn with_mark_async<F: Future>(mark: &'static Mark, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| with_mark(mark, || fut.as_mut().poll(cx))).await
}

/// Runs `f` marked as a prefetch.
fn marked<R>(f: impl FnOnce() -> R) -> R {
    with_mark(&PREFETCHING, f)
}

/// Polls `fut` marked as a prefetch.
async fn marked_async<F: Future>(fut: F) -> F::Output {
    with_mark_async(&PREFETCHING, fut).await
}

/// Runs a background refresh's body behind callers.
pub(crate) fn refreshing<R>(f: impl FnOnce() -> R) -> R {
    with_mark(&REFRESHING, f)
}

/// Polls a background refresh's body behind callers.
pub(crate) async fn refreshing_async<F: Future>(fut: F) -> F::Output {
    with_mark_async(&REFRESHING, fut).await
}

/// How far a warming has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmProgress {
    /// Argument sets called so far.
    pub done: u64,
    /// Of those, calls that failed (`Err`, `None`, a panic): not cached, counted, and the
    /// warming went on.
    pub failed: u64,
    /// Whether every argument set has been called.
    pub finished: bool,
}

#[derive(Default)]
struct WarmState {
    done: AtomicU64,
    failed: AtomicU64,
    finished: Mutex<bool>,
    ended: Condvar,
    woken: tokio::sync::Notify,
}

/// A warming running in the background ([`Site::warm_in_background`]): its progress, and a
/// way to wait for its end.
///
/// ```
/// #[optimize::io(ttl = "10m")]
/// fn price(id: u64) -> Result<u64, String> {
///     if id == 13 { Err("unlucky".into()) } else { Ok(id * 2) }
/// }
///
/// let warming = price_cache().warm_in_background(0..100, |id| price(id).is_ok());
/// let report = warming.wait();
/// assert_eq!((report.done, report.failed, report.finished), (100, 1, true));
/// assert_eq!(price_cache().len(), 99);
/// ```
#[derive(Clone)]
pub struct Warming {
    state: Arc<WarmState>,
}

impl std::fmt::Debug for Warming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Warming").field(&self.progress()).finish()
    }
}

impl Warming {
    fn new() -> Self {
        Self {
            state: Arc::default(),
        }
    }

    /// Progress now.
    pub fn progress(&self) -> WarmProgress {
        WarmProgress {
            done: self.state.done.load(Acquire),
            failed: self.state.failed.load(Acquire),
            finished: *self
                .state
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Blocks this thread until every argument set has been called (not from inside an async
    /// task: await [`Warming::finished`] there).
    pub fn wait(&self) -> WarmProgress {
        let finished = self
            .state
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(
            self.state
                .ended
                .wait_while(finished, |f| !*f)
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.progress()
    }

    /// Waits until every argument set has been called.
    pub async fn finished(&self) -> WarmProgress {
        loop {
            let woken = self.state.woken.notified();
            if self.progress().finished {
                return self.progress();
            }
            woken.await;
        }
    }

    fn count(&self, failed: bool) {
        if failed {
            self.state.failed.fetch_add(1, AcqRel);
        }
        self.state.done.fetch_add(1, AcqRel);
    }

    fn finish(&self) {
        *self
            .state
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.state.ended.notify_all();
        self.state.woken.notify_waiters();
    }
}

/// How many calls a warming makes at once: the function's `concurrency`, else this.
pub const WARM_CONCURRENCY: usize = 8;

fn warm_concurrency(site: &Site) -> usize {
    site.concurrency()
        .map_or(WARM_CONCURRENCY, |c| c as usize)
        .clamp(1, 64)
}

/// One call of a warming, marked, with a panic counted as a failure; whether it succeeded.
fn warm_one<T>(call: &(impl Fn(T) -> bool + ?Sized), args: T) -> bool {
    catch_unwind(AssertUnwindSafe(|| marked(|| call(args)))).unwrap_or(false)
}

impl Site {
    /// Calls `call` for every item, `concurrency` (8 without one) at a time on threads of
    /// their own, and returns when all are done. `call` calls the function with the item's
    /// arguments and says whether it succeeded (`price(id).is_ok()`); a failure or a panic is
    /// counted and the warming goes on.
    ///
    /// ```
    /// #[optimize::io(ttl = "10m")]
    /// fn price(id: u64) -> Result<u64, String> {
    ///     if id % 10 == 0 { Err("no price".into()) } else { Ok(id * 2) }
    /// }
    ///
    /// let report = price_cache().warm(0..100, |id| price(id).is_ok());
    /// assert_eq!((report.done, report.failed), (100, 10));
    /// assert_eq!(price_cache().len(), 90);
    /// ```
    pub fn warm<T, I>(&self, items: I, call: impl Fn(T) -> bool + Sync) -> WarmProgress
    where
        T: Send,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send,
    {
        let warming = Warming::new();
        self.warm_into(items, call, &warming);
        warming.progress()
    }

    /// [`Site::warm`], counting into `warming` (which is then finished).
    fn warm_into<T, I>(&self, items: I, call: impl Fn(T) -> bool + Sync, warming: &Warming)
    where
        T: Send,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send,
    {
        let items = Mutex::new(items.into_iter());
        let work = || loop {
            let next = items.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some(args) = next else {
                return;
            };
            warming.count(!warm_one(&call, args));
        };
        std::thread::scope(|s| {
            let started = (0..warm_concurrency(self))
                .filter(|n| {
                    std::thread::Builder::new()
                        .name(format!("optimize-warm-{n}"))
                        .spawn_scoped(s, work)
                        .is_ok()
                })
                .count();
            if started == 0 {
                // No thread could start: warmed on this one.
                work();
            }
        });
        warming.finish();
    }

    /// [`Site::warm`] in the background: returns at once with a handle on its progress.
    pub fn warm_in_background<T, I>(
        &'static self,
        items: I,
        call: impl Fn(T) -> bool + Send + Sync + 'static,
    ) -> Warming
    where
        T: Send + 'static,
        I: IntoIterator<Item = T> + Send + 'static,
        I::IntoIter: Send,
    {
        let warming = Warming::new();
        let theirs = warming.clone();
        let spawned = std::thread::Builder::new()
            .name("optimize-warm".into())
            .spawn(move || self.warm_into(items, call, &theirs));
        if spawned.is_err() {
            tracing::error!(r#fn = %self.path(), "optimize: no thread could start to warm the cache");
            warming.finish();
        }
        warming
    }

    /// [`Site::warm`] for an async function: `call` returns the call's future (`async move {
    /// price(id).await.is_ok() }`); `concurrency` of them run at once, within this future.
    ///
    /// ```
    /// #[optimize::io(ttl = "10m")]
    /// async fn price(id: u64) -> Option<u64> {
    ///     (id != 7).then_some(id * 2)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let report = price_cache()
    ///     .warm_async(0..10, |id| async move { price(id).await.is_some() })
    ///     .await;
    /// assert_eq!((report.done, report.failed), (10, 1));
    /// # }
    /// ```
    pub async fn warm_async<T, I, F, Fut>(&self, items: I, call: F) -> WarmProgress
    where
        I: IntoIterator<Item = T>,
        F: Fn(T) -> Fut,
        Fut: Future<Output = bool>,
    {
        use futures_util::StreamExt;
        let warming = Warming::new();
        futures_util::stream::iter(items)
            .map(|args| {
                let call = call(args);
                async move {
                    AssertUnwindSafe(marked_async(call))
                        .catch_unwind()
                        .await
                        .unwrap_or(false)
                }
            })
            .buffer_unordered(warm_concurrency(self))
            .for_each(|ok| {
                warming.count(!ok);
                async {}
            })
            .await;
        warming.finish();
        warming.progress()
    }

    /// Starts `call` (a call of the function with one argument set, its result ignored) and
    /// returns at once: on one of a few prefetch threads. At most [`MAX_PREFETCHES`] run at once in the
    /// process; beyond, a prefetch is skipped and counted ([`prefetches_skipped`]).
    ///
    /// ```
    /// #[optimize::io(ttl = "10m")]
    /// fn page(n: u32) -> String {
    ///     format!("page {n}")
    /// }
    ///
    /// page(1);
    /// page_cache().prefetch(|| {
    ///     page(2);
    /// });
    /// ```
    pub fn prefetch(&self, call: impl FnOnce() + Send + 'static) {
        if !submit(call) {
            tracing::debug!(r#fn = %self.path(), "optimize: prefetch skipped");
        }
    }

    /// [`Site::prefetch`] of an async call: on the caller's tokio runtime (outside one, on a
    /// thread with a runtime of its own).
    pub fn prefetch_async(&self, call: impl Future<Output = ()> + Send + 'static) {
        if !self.submit_async(call) {
            tracing::debug!(r#fn = %self.path(), "optimize: prefetch skipped");
        }
    }

    /// Starts `call` marked as a prefetch on the caller's runtime (or a thread of its own);
    /// `false` if [`MAX_PREFETCHES`] were running.
    fn submit_async(&self, call: impl Future<Output = ()> + Send + 'static) -> bool {
        let Some(slot) = PrefetchSlot::take() else {
            return false;
        };
        run_async(self, async move {
            let _slot = slot;
            let _ = AssertUnwindSafe(marked_async(call)).catch_unwind().await;
        });
        true
    }

    /// Predictive prefetch, called by generated code before each call of a function with
    /// `predict = "..."`: tells the model about this call (`args`, keyed by `key_of`) and
    /// starts `run` for each argument set it then expects, unless L1 holds it already or its
    /// prefetch is outstanding.
    #[doc(hidden)]
    pub fn predict_sync<A: Clone + Send + 'static>(
        &'static self,
        args: &A,
        key_of: impl Fn(&A) -> Option<ArgsKey>,
        step: Option<Stepper<A>>,
        run: impl FnOnce(A) + Clone + Send + 'static,
    ) {
        self.predict_with(args, key_of, step.as_ref(), |next| {
            let run = run.clone();
            submit(move || run(next))
        });
    }

    /// [`Site::predict_sync`] for an async function: `run` returns the call's future.
    #[doc(hidden)]
    pub fn predict_async<A, Fut>(
        &'static self,
        args: &A,
        key_of: impl Fn(&A) -> Option<ArgsKey>,
        step: Option<Stepper<A>>,
        run: impl FnOnce(A) -> Fut + Clone + Send + 'static,
    ) where
        A: Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.predict_with(args, key_of, step.as_ref(), |next| {
            self.submit_async(run.clone()(next))
        });
    }

    fn predict_with<A: Clone + Send + 'static>(
        &self,
        args: &A,
        key_of: impl Fn(&A) -> Option<ArgsKey>,
        step: Option<&Stepper<A>>,
        start: impl Fn(A) -> bool,
    ) {
        let Some(predictor) = &self.predictor else {
            return;
        };
        // A prefetch's own call teaches nothing: nobody asked for it.
        if prefetching() || !self.settings.enabled {
            return;
        }
        let Some(key) = key_of(args) else {
            return;
        };
        predictor.note_call(key, |k| self.contains(k));
        for next in predictor.learn(key, args, step) {
            let Some(next_key) = key_of(&next) else {
                continue;
            };
            if self.contains(next_key) || !predictor.claim(next_key) {
                continue;
            }
            if !start(next) {
                predictor.unclaim(next_key);
            }
        }
    }
}

/// Sync prefetches waiting for a prefetch thread, and the threads.
struct PrefetchQueue {
    jobs: VecDeque<Box<dyn FnOnce() + Send>>,
    threads: usize,
    idle: usize,
}

static QUEUE: Mutex<PrefetchQueue> = Mutex::new(PrefetchQueue {
    jobs: VecDeque::new(),
    threads: 0,
    idle: 0,
});
static QUEUED: Condvar = Condvar::new();

/// Prefetch threads, started as prefetches need them; they live as long as the process.
pub const PREFETCH_THREADS: usize = 4;

/// Queues `call` for a prefetch thread, marked as a prefetch; `false` if [`MAX_PREFETCHES`]
/// were running (or no thread could start).
fn submit(call: impl FnOnce() + Send + 'static) -> bool {
    let Some(slot) = PrefetchSlot::take() else {
        return false;
    };
    let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
    queue.jobs.push_back(Box::new(move || {
        let _slot = slot;
        let _ = catch_unwind(AssertUnwindSafe(|| marked(call)));
    }));
    if queue.idle == 0 && queue.threads < PREFETCH_THREADS {
        let started = std::thread::Builder::new()
            .name("optimize-prefetch".into())
            .spawn(prefetch_thread)
            .is_ok();
        if started {
            queue.threads += 1;
        } else if queue.threads == 0 {
            // Nothing would ever run it.
            drop(queue.jobs.pop_back());
            return false;
        }
    }
    drop(queue);
    QUEUED.notify_one();
    true
}

fn prefetch_thread() {
    loop {
        let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
        let job = loop {
            if let Some(job) = queue.jobs.pop_front() {
                break job;
            }
            queue.idle += 1;
            queue = QUEUED.wait(queue).unwrap_or_else(PoisonError::into_inner);
            queue.idle -= 1;
        };
        drop(queue);
        job();
    }
}

/// Runs `fut` on the caller's tokio runtime, else on a thread with a runtime of its own.
fn run_async(site: &Site, fut: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(fut);
        return;
    }
    let path = site.path().to_owned();
    let spawned = std::thread::Builder::new()
        .name("optimize-warm".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(fut),
                Err(e) => {
                    tracing::error!(r#fn = %path, error = %e, "optimize: no runtime to warm on")
                }
            }
        });
    if spawned.is_err() {
        tracing::error!(r#fn = %site.path(), "optimize: no thread could start to warm the cache");
    }
}

/// Prefetches running at once, process-wide, at most [`MAX_PREFETCHES`]; beyond, a prefetch
/// is skipped (and counted): it is a hint, and must not pile up.
static PREFETCHES: AtomicUsize = AtomicUsize::new(0);
/// Prefetches skipped because [`MAX_PREFETCHES`] ran.
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// The most prefetches running at once.
pub const MAX_PREFETCHES: usize = 64;

/// Prefetches skipped so far because [`MAX_PREFETCHES`] were running.
pub fn prefetches_skipped() -> u64 {
    SKIPPED.load(Relaxed)
}

struct PrefetchSlot;

impl PrefetchSlot {
    fn take() -> Option<Self> {
        if PREFETCHES.fetch_add(1, AcqRel) >= MAX_PREFETCHES {
            PREFETCHES.fetch_sub(1, AcqRel);
            SKIPPED.fetch_add(1, Relaxed);
            if !WARNED.swap(true, Relaxed) {
                tracing::warn!("optimize: prefetches skipped: {MAX_PREFETCHES} already running");
            }
            return None;
        }
        Some(Self)
    }
}

impl Drop for PrefetchSlot {
    fn drop(&mut self) {
        PREFETCHES.fetch_sub(1, AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_is_behind_callers_but_no_prefetch() {
        assert!(!behind_callers());
        refreshing(|| assert!(behind_callers() && !prefetching()));
        marked(|| assert!(behind_callers()));
        assert!(!behind_callers());
    }

    #[test]
    fn marks_nest_and_restore() {
        assert!(!prefetching());
        marked(|| {
            assert!(prefetching());
            marked(|| assert!(prefetching()));
            assert!(prefetching());
        });
        assert!(!prefetching());
    }
}
