//! Where a managed function's body runs, and when it may start (docs/pools.md).
//!
//! - [`cpu`]: a dedicated thread pool (rayon) behind a priority gate, so CPU-bound bodies never
//!   occupy async runtime workers and urgent work overtakes batch work.
//! - [`io`]: bodies run in the caller's task or thread, limited per function and globally,
//!   with timeouts and retries.
//! - [`memory`]: bodies run in place once a memory budget admits them; the budget also
//!   watches system memory pressure.
//! - [`tasks`]: book-keeping of the tasks submitted through the task API (`crate::task`).
//!
//! Every limit is one [`gate::Gate`]: a weighted admission queue with priorities.
//!
//! ```
//! use optimize_runtime::pool::{self, Priority};
//!
//! let pools = optimize::runtime().pools();
//! let sum = pools.cpu().run(Priority::High, || (1..=100u64).sum::<u64>());
//! assert_eq!(sum, 5050);
//! assert!(pools.stats().cpu.completed >= 1);
//! ```

pub mod adaptive;
pub mod chain;
pub mod cpu;
pub mod gate;
pub mod io;
pub mod memory;
pub mod tasks;

use std::sync::Arc;
use std::time::Duration;

pub use crate::meta::{Priority, UnknownPriority};
pub use gate::{Closed, GateStats, Refused};

/// A managed call or task refused at once because its pool's queue was full
/// (`pools.queue_capacity`): a call's answer under overload instead of an unbounded wait.
///
/// ```
/// use optimize_runtime::pool::Rejected;
///
/// let e = Rejected { function: "shop::price".into(), pool: "io pool", queue_capacity: 100 };
/// assert_eq!(e.to_string(), "`shop::price` rejected: its io pool's queue is full (100 waiting)");
/// let io: std::io::Error = e.clone().into();
/// assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
/// let text: String = e.into();
/// assert!(text.contains("queue is full"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{function}` rejected: its {pool}'s queue is full ({queue_capacity} waiting)")]
pub struct Rejected {
    /// The managed function's path (empty for a task).
    pub function: String,
    /// Whose queue: `cpu pool`, `io pool`, `memory budget`, or `concurrency limit` (the
    /// function's own).
    pub pool: &'static str,
    /// The queue's bound that was reached.
    pub queue_capacity: u64,
}

impl From<Rejected> for std::io::Error {
    fn from(e: Rejected) -> Self {
        std::io::Error::new(std::io::ErrorKind::WouldBlock, e)
    }
}

impl From<Rejected> for String {
    fn from(e: Rejected) -> Self {
        e.to_string()
    }
}

/// A return type that can say a call was rejected: `Result<T, E>` with `E: From<Rejected>`
/// (returns `Err`), or `Option<T>` (returns `None`). A managed function returning anything
/// else waits for admission however long the queue (docs/pools.md, "Bounded queues").
pub trait RejectOutput: Sized {
    /// The value a rejected call returns.
    fn rejected(e: Rejected) -> Self;
}

impl<T, E: From<Rejected>> RejectOutput for Result<T, E> {
    fn rejected(e: Rejected) -> Self {
        Err(E::from(e))
    }
}

impl<T> RejectOutput for Option<T> {
    fn rejected(_: Rejected) -> Self {
        None
    }
}

/// Chooses, at compile time, how a return type answers a rejection: generated code calls
/// `(&RejectProbe::<R>::NEW).on_rejected()` with both traits in scope; a type implementing
/// [`RejectOutput`] gets `Some`, any other `None` (its calls wait instead).
pub struct RejectProbe<R>(std::marker::PhantomData<fn() -> R>);

impl<R> RejectProbe<R> {
    /// The probe.
    pub const NEW: Self = RejectProbe(std::marker::PhantomData);
}

/// The [`RejectProbe`] method for types that can say a call was rejected.
pub trait CanReject<R> {
    /// How a rejected call answers.
    fn on_rejected(&self) -> Option<fn(Rejected) -> R>;
}

impl<R: RejectOutput> CanReject<R> for RejectProbe<R> {
    fn on_rejected(&self) -> Option<fn(Rejected) -> R> {
        Some(R::rejected)
    }
}

/// The [`RejectProbe`] fallback: the call waits.
pub trait WaitsInstead<R> {
    /// `None`.
    fn on_rejected(&self) -> Option<fn(Rejected) -> R>;
}

impl<R> WaitsInstead<R> for &RejectProbe<R> {
    fn on_rejected(&self) -> Option<fn(Rejected) -> R> {
        None
    }
}

/// Sizes and thresholds of the process's pools.
///
/// ```
/// use optimize_runtime::pool::PoolConfig;
///
/// let config = PoolConfig {
///     cpu_threads: 4,
///     ..PoolConfig::default()
/// };
/// assert_eq!(config.memory_pressure_threshold, 0.8);
/// ```
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Threads of the CPU pool (default: the number of cores).
    pub cpu_threads: usize,
    /// io calls running at once over all functions (default 1024); with `io_adaptive`, the
    /// most the adaptive limit admits.
    pub io_concurrency: u64,
    /// Whether the io limit follows the calls' latency (docs/pools.md, "Adaptive
    /// concurrency").
    pub io_adaptive: bool,
    /// Bytes the memory budget admits at once; `None`: `memory_budget_fraction` of the
    /// system's total memory.
    pub memory_budget: Option<u64>,
    /// Share of total system memory used as the budget when `memory_budget` is `None`.
    pub memory_budget_fraction: f64,
    /// Weight of a `memory` call without `mem = "..."` (default 64 MiB).
    pub memory_default_weight: u64,
    /// System memory use (0..1) above which memory calls wait (default 0.8).
    pub memory_pressure_threshold: f64,
    /// How often system memory is sampled (default 500 ms).
    pub memory_sample_interval: Duration,
    /// Calls and tasks that may wait for each pool's admission (all priorities together);
    /// beyond, a task is rejected at once and a managed call that can say so returns
    /// [`Rejected`](crate::pool::Rejected). `None`: unbounded.
    pub cpu_queue_capacity: Option<u64>,
    /// The same bound for the io pool (and each io function's `concurrency` limit).
    pub io_queue_capacity: Option<u64>,
    /// The same bound for the memory budget.
    pub memory_queue_capacity: Option<u64>,
}

impl PoolConfig {
    /// Weight of a memory call that names none: 64 MiB.
    pub const DEFAULT_MEMORY_WEIGHT: u64 = 64 << 20;
    /// Calls and tasks that may wait for a pool's admission by default.
    pub const DEFAULT_QUEUE_CAPACITY: u64 = 10_000;
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            io_concurrency: 1024,
            io_adaptive: false,
            memory_budget: None,
            memory_budget_fraction: 0.5,
            memory_default_weight: Self::DEFAULT_MEMORY_WEIGHT,
            memory_pressure_threshold: 0.8,
            memory_sample_interval: Duration::from_millis(500),
            cpu_queue_capacity: Some(Self::DEFAULT_QUEUE_CAPACITY),
            io_queue_capacity: Some(Self::DEFAULT_QUEUE_CAPACITY),
            memory_queue_capacity: Some(Self::DEFAULT_QUEUE_CAPACITY),
        }
    }
}

/// The process's pools.
#[derive(Debug)]
pub struct Pools {
    cpu: cpu::CpuPool,
    io: io::IoPool,
    memory: Arc<memory::MemoryBudget>,
    tasks: tasks::TaskTracker,
}

/// What the memory budget calls under pressure to free memory: removes expired cache
/// entries and returns how many. The pools sit below the functions' caches, so the layer
/// that owns both (the runtime) supplies it.
pub type PurgeHook = Box<dyn Fn() -> u64 + Send + Sync>;

impl Pools {
    /// Starts the pools. `purge` is called under memory pressure. If the CPU pool's threads
    /// cannot be started, cpu bodies run in their callers' threads (logged).
    pub fn start(config: &PoolConfig, purge: PurgeHook) -> Arc<Self> {
        Self::with_cpu(cpu::CpuPool::new(config.cpu_threads), config, purge)
    }

    /// [`Pools::start`], or why the CPU pool's threads cannot be started.
    pub fn try_start(
        config: &PoolConfig,
        purge: PurgeHook,
    ) -> Result<Arc<Self>, rayon::ThreadPoolBuildError> {
        let cpu = cpu::CpuPool::try_new(config.cpu_threads)?;
        Ok(Self::with_cpu(cpu, config, purge))
    }

    fn with_cpu(cpu: cpu::CpuPool, config: &PoolConfig, purge: PurgeHook) -> Arc<Self> {
        let pools = Self {
            cpu,
            io: match config.io_adaptive {
                true => io::IoPool::adaptive(config.io_concurrency),
                false => io::IoPool::new(config.io_concurrency),
            },
            memory: memory::MemoryBudget::start(config, purge),
            tasks: tasks::TaskTracker::default(),
        };
        pools
            .cpu
            .gate()
            .set_queue_capacity(config.cpu_queue_capacity);
        pools.io.gate().set_queue_capacity(config.io_queue_capacity);
        pools
            .memory
            .gate()
            .set_queue_capacity(config.memory_queue_capacity);
        Arc::new(pools)
    }

    /// The CPU pool.
    pub fn cpu(&self) -> &cpu::CpuPool {
        &self.cpu
    }

    /// The global io limit.
    pub fn io(&self) -> &io::IoPool {
        &self.io
    }

    /// The memory budget.
    pub fn memory(&self) -> &memory::MemoryBudget {
        &self.memory
    }

    /// The tasks submitted through the task API that have not finished.
    pub fn tasks(&self) -> &tasks::TaskTracker {
        &self.tasks
    }

    /// A snapshot of every pool's counters.
    pub fn stats(&self) -> PoolsStats {
        PoolsStats {
            cpu: self.cpu.gate().stats(),
            cpu_threads: self.cpu.threads(),
            io: self.io.gate().stats(),
            memory: self.memory.gate().stats(),
            memory_pressure: self.memory.pressure(),
            memory_held: self.memory.gate().is_held(),
            tasks_running: self.tasks.running(),
            tasks: self.tasks.figures(),
            cpu_workers: self.cpu.workers(),
        }
    }

    /// Stops admission, waits for running work until `deadline`, then cancels tasks still
    /// running. Returns what happened.
    pub fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        for gate in [self.cpu.gate(), self.io.gate(), self.memory.gate()] {
            gate.close();
        }
        let start = std::time::Instant::now();
        let idle = || {
            self.tasks.running() == 0
                && [self.cpu.gate(), self.io.gate(), self.memory.gate()]
                    .iter()
                    .all(|g| g.stats().active == 0)
        };
        while !idle() && start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let drained = idle();
        let cancelled = if drained { 0 } else { self.tasks.cancel_all() };
        ShutdownReport {
            drained,
            cancelled_tasks: cancelled,
            waited: start.elapsed(),
        }
    }

    /// Opens the pools again after [`Pools::shutdown`].
    pub fn reopen(&self) {
        for gate in [self.cpu.gate(), self.io.gate(), self.memory.gate()] {
            gate.reopen();
        }
    }
}

/// What [`shutdown`](crate::shutdown_within) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every admitted call and task finished before the deadline.
    pub drained: bool,
    /// Tasks cancelled at the deadline.
    pub cancelled_tasks: usize,
    /// Time spent waiting.
    pub waited: Duration,
}

impl ShutdownReport {
    /// The report of a shutdown with nothing to wait for (nothing had started).
    pub const NOTHING_RUNNING: ShutdownReport = ShutdownReport {
        drained: true,
        cancelled_tasks: 0,
        waited: Duration::ZERO,
    };
}

/// Counters of every pool, for the monitor and for tests.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolsStats {
    /// The CPU pool's admission.
    pub cpu: GateStats,
    /// Threads of the CPU pool.
    pub cpu_threads: usize,
    /// The global io limit.
    pub io: GateStats,
    /// The memory budget (units are bytes).
    pub memory: GateStats,
    /// The last sampled system memory use, 0..1.
    pub memory_pressure: f64,
    /// Whether the budget is holding admissions because of pressure.
    pub memory_held: bool,
    /// Tasks submitted through the task API that have not finished.
    pub tasks_running: usize,
    /// The task processor's figures.
    pub tasks: tasks::TaskFigures,
    /// Each CPU pool thread's figures.
    pub cpu_workers: Vec<cpu::WorkerStats>,
}

/// Runs blocking work from sync code that may be on an async runtime's worker: under
/// `block_in_place` on a multi-thread tokio runtime, so the worker's other tasks move to
/// another thread; in place anywhere else (a plain thread, or a current-thread runtime,
/// where nothing else could run the other tasks anyway).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
