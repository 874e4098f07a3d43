//! The CPU pool: a dedicated rayon pool with a priority gate in front.
//!
//! The gate admits as many calls as the pool has threads, highest priority first; rayon runs
//! them. A call made inside an admitted cpu body (a cpu body calling another cpu function, or
//! itself recursively) runs in place without a second admission, so recursion deeper than the
//! pool has threads cannot deadlock it (rule 1 of [`super::chain`]).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::gate::{Gate, Permit, Refused};
use super::{blocking, chain, Priority, Rejected};
use crate::meta::Kind;

/// The CPU pool. See the module documentation.
pub struct CpuPool {
    /// `None` when its threads could not be started: bodies then run in place (degraded,
    /// reported once), so a call never fails because of the environment.
    pool: Option<rayon::ThreadPool>,
    gate: Arc<Gate>,
    threads: usize,
    workers: Arc<[Worker]>,
}

/// What one pool thread did.
#[derive(Default)]
struct Worker {
    runs: AtomicU64,
    busy_nanos: AtomicU64,
    /// The first tag of the task it runs now (`None`: idle, or a managed call).
    tag: Mutex<Option<Arc<str>>>,
}

/// One CPU pool thread's figures ([`CpuPool::workers`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    /// The thread's number (`optimize-cpu-N`).
    pub worker: usize,
    /// Bodies and task attempts it ran.
    pub runs: u64,
    /// Time it spent running them.
    #[serde(rename = "busy_seconds", serialize_with = "seconds")]
    pub busy: Duration,
    /// The first tag of the task it runs now, if it runs a tagged task.
    pub current_tag: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Counts a run on the current pool thread (nothing elsewhere), showing `tag` while it
/// lasts.
fn on_worker(workers: &[Worker], tag: Option<Arc<str>>) -> Option<OnWorker<'_>> {
    let worker = workers.get(rayon::current_thread_index()?)?;
    *worker.tag.lock().unwrap_or_else(|e| e.into_inner()) = tag;
    Some(OnWorker {
        worker,
        start: Instant::now(),
    })
}

/// Counts one run on the current pool thread, with `tag` shown meanwhile.
struct OnWorker<'w> {
    worker: &'w Worker,
    start: Instant,
}

impl Drop for OnWorker<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.worker.busy_nanos.fetch_add(nanos, Relaxed);
        self.worker.runs.fetch_add(1, Relaxed);
        *self.worker.tag.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuPool")
            .field("threads", &self.threads)
            .field("gate", &self.gate)
            .finish()
    }
}

impl CpuPool {
    /// A pool of `threads` threads (at least 1), named `optimize-cpu-N`; if they cannot be
    /// started, a pool that runs bodies in place (the error is logged).
    pub fn new(threads: usize) -> Self {
        Self::try_new(threads).unwrap_or_else(|e| {
            tracing::error!(error = %e, threads, "optimize: the CPU pool's threads cannot start; cpu bodies run in their callers' threads");
            Self::in_place(threads)
        })
    }

    /// A pool of `threads` threads, or why they cannot be started.
    pub fn try_new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("optimize-cpu-{i}"))
            .build()?;
        Ok(Self {
            pool: Some(pool),
            gate: Gate::new(threads as u64),
            threads,
            workers: (0..threads).map(|_| Worker::default()).collect(),
        })
    }

    /// A pool without threads: admission as for `threads`, bodies in their callers' threads.
    fn in_place(threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            pool: None,
            gate: Gate::new(threads as u64),
            threads,
            workers: Arc::new([]),
        }
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The admission gate (capacity = threads).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Each pool thread's figures.
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerStats {
                worker: i,
                runs: w.runs.load(Relaxed),
                busy: Duration::from_nanos(w.busy_nanos.load(Relaxed)),
                current_tag: w
                    .tag
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_deref()
                    .map(str::to_owned),
            })
            .collect()
    }

    /// Whether the current thread is one of this pool's.
    pub fn on_pool_thread(&self) -> bool {
        self.pool
            .as_ref()
            .is_some_and(|p| p.current_thread_index().is_some())
    }

    /// Runs `f` on a pool thread (in place without threads), in a chain holding cpu.
    fn install<R: Send>(&self, inherited: u8, f: impl FnOnce() -> R + Send) -> R {
        let run = move || {
            let _worker = on_worker(&self.workers, None);
            let _chain = chain::Scope::enter(Kind::Cpu, inherited);
            f()
        };
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    /// Runs `f` on the pool and blocks until it returns; `f` may borrow from the caller. On a
    /// multi-thread tokio worker the wait happens under `block_in_place`. A panic in `f`
    /// reaches the caller. After shutdown closed the gate, `f` runs in place.
    ///
    /// ```
    /// use optimize_runtime::pool::{cpu::CpuPool, Priority};
    ///
    /// let pool = CpuPool::new(2);
    /// let words = vec!["a", "bb", "ccc"];
    /// let total = pool.run(Priority::Normal, || words.iter().map(|w| w.len()).sum::<usize>());
    /// assert_eq!(total, 6);
    /// ```
    pub fn run<R: Send>(&self, priority: Priority, f: impl FnOnce() -> R + Send) -> R {
        self.run_or_reject(priority, None::<fn(Rejected) -> R>, f)
    }

    /// [`CpuPool::run`], answered by `on_rejected` instead when the queue is full (with
    /// `None`, the caller waits however long the queue).
    pub fn run_or_reject<R: Send>(
        &self,
        priority: Priority,
        on_rejected: Option<impl FnOnce(Rejected) -> R>,
        f: impl FnOnce() -> R + Send,
    ) -> R {
        if self.runs_in_place() {
            chain::admitted(Kind::Cpu);
            return f();
        }
        let inherited = chain::held();
        let bounded = on_rejected.is_some();
        blocking(|| {
            let admission = match bounded {
                true => self.gate.acquire_blocking_within_bound(1, priority),
                false => self
                    .gate
                    .acquire_blocking(1, priority)
                    .map_err(|_| Refused::Closed),
            };
            match (admission, on_rejected) {
                (Ok(_permit), _) => {
                    chain::admitted(Kind::Cpu);
                    self.install(inherited, f)
                }
                (Err(Refused::Full), Some(reject)) => reject(self.rejected()),
                (Err(_), _) => {
                    chain::admitted(Kind::Cpu);
                    let _chain = chain::Scope::enter(Kind::Cpu, inherited);
                    f()
                }
            }
        })
    }

    fn rejected(&self) -> Rejected {
        Rejected {
            function: String::new(),
            pool: "cpu pool",
            queue_capacity: self.gate.queue_capacity().unwrap_or(0),
        }
    }

    /// Whether a call made here runs under its chain's admission: inside an admitted cpu body
    /// (rule 1 of [`super::chain`]), or on a pool thread at all (a task's closure, say).
    fn runs_in_place(&self) -> bool {
        !chain::needs_admission(Kind::Cpu) || self.on_pool_thread()
    }

    /// Runs `f` on the pool while the calling task awaits without holding its thread. If the
    /// future is dropped, `f` still runs to completion (CPU work cannot be interrupted) and
    /// its result is discarded; its admission lasts until it finishes.
    pub async fn run_async<R: Send + 'static>(
        &self,
        priority: Priority,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        self.run_async_or_reject(priority, None::<fn(Rejected) -> R>, f)
            .await
    }

    /// [`CpuPool::run_async`], answered by `on_rejected` instead when the queue is full.
    pub async fn run_async_or_reject<R: Send + 'static>(
        &self,
        priority: Priority,
        on_rejected: Option<impl FnOnce(Rejected) -> R>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        if self.runs_in_place() {
            chain::admitted(Kind::Cpu);
            return f();
        }
        let inherited = chain::held();
        let admission = match on_rejected.is_some() {
            true => self.gate.acquire_within_bound(1, priority).await,
            false => self
                .gate
                .acquire(1, priority)
                .await
                .map_err(|_| Refused::Closed),
        };
        let permit = match (admission, on_rejected) {
            (Ok(permit), _) => permit,
            (Err(Refused::Full), Some(reject)) => return reject(self.rejected()),
            (Err(_), _) => {
                chain::admitted(Kind::Cpu);
                return blocking(f);
            }
        };
        chain::admitted(Kind::Cpu);
        match self.spawn_in_chain(permit, inherited, None, f).await {
            Ok(value) => value,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Runs an admitted job on the pool; the permit is held until the job returns. The
    /// result (or the panic) arrives through the returned future.
    pub(crate) async fn spawn_admitted<R: Send + 'static>(
        &self,
        permit: Permit,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::Result<R> {
        self.spawn_in_chain(permit, 0, None, f).await
    }

    /// [`CpuPool::spawn_admitted`] for a task with `tag`, shown by its worker meanwhile.
    pub(crate) async fn spawn_admitted_tagged<R: Send + 'static>(
        &self,
        permit: Permit,
        tag: Option<Arc<str>>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::Result<R> {
        self.spawn_in_chain(permit, 0, tag, f).await
    }

    /// [`CpuPool::spawn_admitted`] for a job whose caller's chain held `inherited`.
    async fn spawn_in_chain<R: Send + 'static>(
        &self,
        permit: Permit,
        inherited: u8,
        tag: Option<Arc<str>>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::Result<R> {
        let (tx, rx) = oneshot::channel();
        let workers = self.workers.clone();
        let job = move || {
            let out = {
                let _worker = on_worker(&workers, tag);
                let _chain = chain::Scope::enter(Kind::Cpu, inherited);
                panic::catch_unwind(AssertUnwindSafe(f))
            };
            drop(permit);
            let _ = tx.send(out);
        };
        match &self.pool {
            Some(pool) => pool.spawn(job),
            None => job(),
        }
        rx.await
            .unwrap_or_else(|_| unreachable!("the CPU pool dropped a job without running it"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    #[test]
    fn runs_on_the_pool_threads() {
        let pool = CpuPool::new(2);
        let name = pool.run(Priority::Normal, || {
            std::thread::current().name().map(str::to_owned)
        });
        assert!(name.unwrap().starts_with("optimize-cpu-"));
    }

    #[test]
    fn nested_calls_run_in_place_beyond_the_thread_count() {
        fn depth(pool: &CpuPool, n: u32) -> u32 {
            if n == 0 {
                return 0;
            }
            pool.run(Priority::Normal, || 1 + depth(pool, n - 1))
        }
        let pool = CpuPool::new(1);
        assert_eq!(depth(&pool, 50), 50);
        assert_eq!(
            pool.gate().stats().completed,
            1,
            "only the outer call was admitted"
        );
    }

    #[test]
    fn a_panic_reaches_the_caller_and_frees_the_thread() {
        let pool = CpuPool::new(1);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(Priority::Normal, || panic!("boom"));
        }));
        assert!(caught.is_err());
        assert_eq!(pool.run(Priority::Normal, || 7), 7);
        assert_eq!(pool.gate().stats().in_use, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_panics_reach_the_awaiting_task() {
        let pool = Arc::new(CpuPool::new(1));
        let p = pool.clone();
        let joined =
            tokio::spawn(async move { p.run_async(Priority::Normal, || panic!("x")).await }).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(pool.run_async(Priority::Low, || 3).await, 3);
    }

    #[test]
    fn waiting_work_runs_in_priority_order() {
        let pool = Arc::new(CpuPool::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicUsize::new(0));
        let p = pool.clone();
        let s = started.clone();
        let blocker = std::thread::spawn(move || {
            p.run(Priority::Normal, move || {
                s.fetch_add(1, SeqCst);
                release_rx.recv().unwrap();
            })
        });
        while started.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        let mut threads = Vec::new();
        for (i, prio) in [
            Priority::Batch,
            Priority::Normal,
            Priority::Critical,
            Priority::Low,
        ]
        .into_iter()
        .enumerate()
        {
            let (p, order) = (pool.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                p.run(prio, move || order.lock().unwrap().push(prio));
            }));
            while pool.gate().stats().queued_total() < i as u64 + 1 {
                std::thread::yield_now();
            }
        }
        release_tx.send(()).unwrap();
        blocker.join().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![
                Priority::Critical,
                Priority::Normal,
                Priority::Low,
                Priority::Batch
            ]
        );
    }
}
