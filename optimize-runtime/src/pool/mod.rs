//! Where a managed function's body runs, and when it may start (design §8).
//!
//! - [`cpu`]: a dedicated thread pool (rayon) behind a priority gate, so CPU-bound bodies never
//!   occupy async runtime workers and urgent work overtakes batch work.
//! - [`io`]: bodies run in the caller's task or thread, limited per function and globally,
//!   with timeouts and retries.
//! - [`memory`]: bodies run in place once a memory budget admits them; the budget also
//!   watches system memory pressure.
//! - [`task`]: the same pools for closures and futures submitted at run time.
//!
//! Every limit is one [`gate::Gate`]: a weighted admission queue with priorities.
//!
//! ```
//! use optimize_runtime::pool::{self, Priority};
//!
//! let sum = pool::global().cpu().run(Priority::High, || (1..=100u64).sum::<u64>());
//! assert_eq!(sum, 5050);
//! assert!(pool::stats().cpu.completed >= 1);
//! ```

pub mod cpu;
pub mod gate;
pub mod io;
pub mod memory;
pub mod task;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use gate::{Closed, GateStats};

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
    /// io calls running at once over all functions (default 1024).
    pub io_concurrency: u64,
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
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            io_concurrency: 1024,
            memory_budget: None,
            memory_budget_fraction: 0.5,
            memory_default_weight: 64 << 20,
            memory_pressure_threshold: 0.8,
            memory_sample_interval: Duration::from_millis(500),
        }
    }
}

/// The process's pools.
#[derive(Debug)]
pub struct Pools {
    cpu: cpu::CpuPool,
    io: io::IoPool,
    memory: Arc<memory::MemoryBudget>,
    tasks: task::TaskTracker,
}

impl Pools {
    fn start(config: PoolConfig) -> Self {
        Self {
            cpu: cpu::CpuPool::new(config.cpu_threads),
            io: io::IoPool::new(config.io_concurrency),
            memory: memory::MemoryBudget::start(&config),
            tasks: task::TaskTracker::default(),
        }
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

    pub(crate) fn tasks(&self) -> &task::TaskTracker {
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
    /// Tasks submitted through [`task`] that have not finished.
    pub tasks_running: usize,
}

static GLOBAL: OnceLock<Arc<Pools>> = OnceLock::new();

/// `pool::init` was called after the pools had started.
#[derive(Debug, thiserror::Error)]
#[error("optimize's pools were already started (explicitly, or lazily by the first managed call); call pool::init before any managed function runs")]
pub struct PoolsAlreadyStarted;

/// Starts the pools with `config`. Must come before the first managed call.
pub fn init(config: PoolConfig) -> Result<&'static Arc<Pools>, PoolsAlreadyStarted> {
    let mut fresh = false;
    let pools = GLOBAL.get_or_init(|| {
        fresh = true;
        Arc::new(Pools::start(config))
    });
    fresh.then_some(pools).ok_or(PoolsAlreadyStarted)
}

/// The process's pools: started by [`init`], or with the configuration in force
/// ([`crate::config::global`]) on first use.
pub fn global() -> &'static Arc<Pools> {
    if let Some(pools) = GLOBAL.get() {
        return pools;
    }
    // Resolving the configuration starts the pools with it.
    crate::config::global();
    GLOBAL.get_or_init(|| Arc::new(Pools::start(crate::config::global().pools.clone())))
}

/// The pools, if something has started them.
pub fn global_if_started() -> Option<&'static Arc<Pools>> {
    GLOBAL.get()
}

/// A snapshot of every pool's counters (starting the pools if needed).
pub fn stats() -> PoolsStats {
    global().stats()
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
