//! Book-keeping of the tasks submitted through the task API (`optimize::task`): each live
//! task's status, tags and abort handle; who depends on whom, so a cancellation can cascade;
//! and the processor's figures (tasks processed, success rate, execution time, throughput).
//! The typed side of a task (its result, its inputs) lives in `crate::task`; it registers a
//! [`Finisher`] here so a cancellation from outside the task's driver can end it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::AbortHandle;

use super::gate::Ticket;
use crate::meta::Kind;
use crate::stats::{AtomicHistogram, Histogram};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TaskStatus {
    /// Waiting for the tasks it depends on to succeed (not in any queue yet).
    Waiting,
    /// Waiting for admission by its pool.
    Queued,
    /// An attempt is running.
    Running,
    /// An attempt failed; waiting for the next one.
    Retrying,
    /// Finished with a value.
    Succeeded,
    /// Finished with the task's error (after every retry).
    Failed,
    /// The last attempt ran out of time.
    TimedOut,
    /// Cancelled: by its handle, its tag, a cancellation cascading from a task it depends
    /// on, or shutdown.
    Cancelled,
    /// The task panicked.
    Panicked,
    /// Refused at submission: its pool's queue was full (`pools.queue_capacity`), or the
    /// pools were shut down.
    Rejected,
    /// Never ran: a task it depends on did not succeed ([`TaskTracker::cause`] says which
    /// and how it ended).
    DependencyFailed,
}

impl TaskStatus {
    const ALL: [TaskStatus; 11] = [
        TaskStatus::Waiting,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
        TaskStatus::Panicked,
        TaskStatus::Rejected,
        TaskStatus::DependencyFailed,
    ];

    /// Whether the task has ended.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            TaskStatus::Waiting | TaskStatus::Queued | TaskStatus::Running | TaskStatus::Retrying
        )
    }

    /// The name used in figures and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Retrying => "retrying",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Panicked => "panicked",
            TaskStatus::Rejected => "rejected",
            TaskStatus::DependencyFailed => "dependency_failed",
        }
    }
}

/// Why a task ended without running: the task it depended on, and how that one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// The id of the task depended on.
    pub task: u64,
    /// How it ended.
    pub ended: TaskStatus,
}

/// A task's status, attempts, tags and the place it took in its pool's queue: shared by its
/// driver, its handle and the tracker.
#[derive(Debug)]
pub struct TaskState {
    status: AtomicU8,
    attempts: AtomicU32,
    ticket: Mutex<Option<Ticket>>,
    cause: Mutex<Option<Cause>>,
    kind: Kind,
    tags: Box<[Arc<str>]>,
    /// When its first attempt was admitted.
    started: Mutex<Option<Instant>>,
}

impl TaskState {
    /// A task of `kind` with `tags`, `status` at first.
    pub fn new(kind: Kind, tags: Box<[Arc<str>]>, status: TaskStatus) -> Self {
        Self {
            status: AtomicU8::new(status as u8),
            attempts: AtomicU32::new(0),
            ticket: Mutex::new(None),
            cause: Mutex::new(None),
            kind,
            tags,
            started: Mutex::new(None),
        }
    }

    /// Moves the task to `status`.
    pub fn set(&self, status: TaskStatus) {
        if status == TaskStatus::Running {
            lock(&self.started).get_or_insert_with(Instant::now);
        }
        self.status.store(status as u8, Relaxed);
    }

    /// The task's status.
    pub fn get(&self) -> TaskStatus {
        TaskStatus::ALL[usize::from(self.status.load(Relaxed))]
    }

    /// Counts the start of an attempt.
    pub fn attempt_started(&self) {
        self.attempts.fetch_add(1, Relaxed);
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Relaxed)
    }

    /// The task's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The task's tags.
    pub fn tags(&self) -> &[Arc<str>] {
        &self.tags
    }

    /// Keeps the place the task took in its pool's queue when it was submitted.
    pub fn hold_ticket(&self, ticket: Ticket) {
        *lock(&self.ticket) = Some(ticket);
    }

    /// The place taken at submission, for the first attempt (`None` after it).
    pub fn take_ticket(&self) -> Option<Ticket> {
        lock(&self.ticket).take()
    }

    /// Why the task never ran, when a task it depends on did not succeed.
    pub fn cause(&self) -> Option<Cause> {
        *lock(&self.cause)
    }

    /// Records why the task will not run.
    pub fn set_cause(&self, cause: Cause) {
        *lock(&self.cause) = Some(cause);
    }

    /// How long it ran, from its first admission (`None`: it never ran).
    fn ran_for(&self) -> Option<Duration> {
        lock(&self.started).map(|t| t.elapsed())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a task from outside its driver with a status (`Cancelled`): completes its result so
/// its handle and the tasks depending on it learn it; `false` if it had ended already.
pub type Finisher = Arc<dyn Fn(TaskStatus) -> bool + Send + Sync>;

struct Live {
    abort: Option<AbortHandle>,
    state: Arc<TaskState>,
    finish: Finisher,
}

#[derive(Default)]
struct Registry {
    live: HashMap<u64, Live>,
    /// For each live task, the live tasks submitted to run after it.
    dependents: HashMap<u64, Vec<u64>>,
}

/// What one live task looks like from outside ([`TaskTracker::tagged`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The task's id.
    pub id: u64,
    /// Where it is.
    pub status: TaskStatus,
    /// Its pool.
    pub kind: &'static str,
    /// Its tags.
    pub tags: Vec<String>,
}

/// The processor's figures ([`TaskTracker::figures`]; in `pool::stats()`, `/stats` and
/// `/metrics`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskFigures {
    /// Tasks that ended, however.
    pub processed: u64,
    /// Of those, tasks that succeeded.
    pub succeeded: u64,
    /// `succeeded / processed` (1 when none ended).
    pub success_rate: f64,
    /// Tasks that ended, by how (`succeeded`, `failed`, `timed_out`, `cancelled`,
    /// `panicked`, `rejected`, `dependency_failed`).
    pub ended: Vec<(&'static str, u64)>,
    /// Mean execution time of the tasks that ran, from admission to end, milliseconds.
    pub mean_ms: f64,
    /// Its 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Tasks ended per second over the last [`TaskTracker::WINDOW`].
    pub throughput_per_s: f64,
    /// Live tasks waiting for the tasks they depend on.
    pub waiting: u64,
    /// Live tasks queued for admission.
    pub queued: u64,
    /// Live tasks running (or between retries).
    pub running: u64,
    /// The execution time histogram (not serialized).
    #[serde(skip)]
    pub execution: Histogram,
    /// Execution time summed over the tasks that ran (not serialized).
    #[serde(skip)]
    pub execution_total: Duration,
}

const WINDOW_SECS: usize = 10;

/// Figures of ended tasks.
struct Figures {
    ended: [AtomicU64; TaskStatus::ALL.len()],
    execution: AtomicHistogram,
    execution_nanos: AtomicU64,
    executed: AtomicU64,
    /// Tasks ended in each of the last seconds (by second since `epoch`).
    window: [(AtomicU64, AtomicU64); WINDOW_SECS],
    epoch: Instant,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            ended: [const { AtomicU64::new(0) }; TaskStatus::ALL.len()],
            execution: AtomicHistogram::new(),
            execution_nanos: AtomicU64::new(0),
            executed: AtomicU64::new(0),
            window: [const { (AtomicU64::new(u64::MAX), AtomicU64::new(0)) }; WINDOW_SECS],
            epoch: Instant::now(),
        }
    }
}

impl Figures {
    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn record(&self, status: TaskStatus, ran_for: Option<Duration>) {
        self.ended[status as usize].fetch_add(1, Relaxed);
        if let Some(d) = ran_for {
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.execution.record(nanos);
            self.execution_nanos.fetch_add(nanos, Relaxed);
            self.executed.fetch_add(1, Relaxed);
        }
        let now = self.second();
        let (second, count) = &self.window[now as usize % WINDOW_SECS];
        // A slot of an older second starts over (a race loses at most a count or two).
        if second.swap(now, Relaxed) != now {
            count.store(0, Relaxed);
        }
        count.fetch_add(1, Relaxed);
    }

    fn throughput(&self) -> f64 {
        let now = self.second();
        let recent: u64 = self
            .window
            .iter()
            .filter(|(second, _)| {
                let s = second.load(Relaxed);
                s != u64::MAX && now.saturating_sub(s) < WINDOW_SECS as u64
            })
            .map(|(_, count)| count.load(Relaxed))
            .sum();
        // Over the window, or over the process's life while it is shorter.
        let span = (now + 1).min(WINDOW_SECS as u64);
        recent as f64 / span as f64
    }
}

/// Live tasks, their dependencies and the processor's figures.
#[derive(Clone, Default)]
pub struct TaskTracker {
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    figures: Arc<Figures>,
    /// Tasks waiting for the tasks they depend on, per kind (a counter, so a submission does
    /// not scan every live task).
    waiting: Arc<[AtomicU64; 3]>,
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Io => 0,
        Kind::Cpu => 1,
        Kind::Memory => 2,
    }
}

/// A task of some kind waiting for the tasks it depends on; dropping it ends the wait (its
/// inputs came, or it ended, or its driver was dropped).
#[derive(Debug)]
pub struct Waiting {
    counter: Arc<[AtomicU64; 3]>,
    kind: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.counter[self.kind].fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Debug for TaskTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskTracker")
            .field("running", &self.running())
            .finish()
    }
}

impl TaskTracker {
    /// The window of [`TaskFigures::throughput_per_s`].
    pub const WINDOW: Duration = Duration::from_secs(WINDOW_SECS as u64);

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// A new task number, unique in the process.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Tasks that have not ended.
    pub fn running(&self) -> usize {
        self.lock().live.len()
    }

    /// Registers task `id`, to run after the live tasks among `after`; its driver is started
    /// by `spawn` (called with the registry locked, so a driver that ends at once
    /// unregisters after this insert). The returned guard belongs to the driver: dropping it
    /// unregisters the task.
    pub fn register(
        &self,
        id: u64,
        state: Arc<TaskState>,
        finish: Finisher,
        after: &[u64],
        spawn: impl FnOnce(Registered) -> AbortHandle,
    ) {
        let mut registry = self.lock();
        for upstream in after {
            if registry.live.contains_key(upstream) {
                registry.dependents.entry(*upstream).or_default().push(id);
            }
        }
        let abort = spawn(Registered {
            tracker: self.clone(),
            id,
        });
        registry.live.insert(
            id,
            Live {
                abort: Some(abort),
                state,
                finish,
            },
        );
    }

    /// Records that a task ended with `status` (called once per task, by whoever ended it).
    pub fn record_end(&self, state: &TaskState, status: TaskStatus) {
        self.figures.record(status, state.ran_for());
    }

    /// Cancels task `id` and, transitively, every live task depending on it (none of them
    /// starts); `false` if `id` had ended.
    pub fn cancel(&self, id: u64) -> bool {
        let doomed = {
            let registry = self.lock();
            if !registry.live.contains_key(&id) {
                return false;
            }
            let mut seen = HashSet::from([id]);
            let mut order = Vec::new();
            let mut next = vec![id];
            while let Some(at) = next.pop() {
                for d in registry.dependents.get(&at).into_iter().flatten() {
                    if registry.live.contains_key(d) && seen.insert(*d) {
                        order.push(*d);
                        next.push(*d);
                    }
                }
            }
            order
        };
        // Dependents first: when `id` ends, they are cancelled already, not failed.
        for d in doomed.iter().rev() {
            self.cancel_only(*d);
        }
        self.cancel_only(id)
    }

    /// Cancels task `id` alone: the tasks depending on it then end `DependencyFailed`, with
    /// it as the cause. `false` if it had ended.
    pub fn cancel_only(&self, id: u64) -> bool {
        let live = self.lock().live.remove(&id);
        let Some(live) = live else {
            return false;
        };
        let ended = (live.finish)(TaskStatus::Cancelled);
        if let Some(abort) = &live.abort {
            abort.abort();
        }
        // Its place in the queue (or its admission, if granted before it started) goes.
        drop(live.state.take_ticket());
        ended
    }

    /// Cancels every live task; how many.
    pub fn cancel_all(&self) -> usize {
        let ids: Vec<u64> = self.lock().live.keys().copied().collect();
        ids.into_iter().filter(|id| self.cancel_only(*id)).count()
    }

    /// The live tasks carrying `tag`, by id.
    pub fn tagged(&self, tag: &str) -> Vec<TaskInfo> {
        let registry = self.lock();
        let mut out: Vec<TaskInfo> = registry
            .live
            .iter()
            .filter(|(_, live)| live.state.tags.iter().any(|t| &**t == tag))
            .map(|(id, live)| TaskInfo {
                id: *id,
                status: live.state.get(),
                kind: live.state.kind.as_str(),
                tags: live.state.tags.iter().map(|t| t.to_string()).collect(),
            })
            .collect();
        out.sort_by_key(|t| t.id);
        out
    }

    /// How many live tasks carry `tag`.
    pub fn count_tagged(&self, tag: &str) -> usize {
        self.lock()
            .live
            .values()
            .filter(|live| live.state.tags.iter().any(|t| &**t == tag))
            .count()
    }

    /// Cancels every live task carrying `tag` (and what depends on them); how many carried it.
    pub fn cancel_tagged(&self, tag: &str) -> usize {
        let ids: Vec<u64> = self.tagged(tag).into_iter().map(|t| t.id).collect();
        ids.into_iter().filter(|id| self.cancel(*id)).count()
    }

    /// Live tasks of `kind` waiting for the tasks they depend on.
    pub fn waiting(&self, kind: Kind) -> u64 {
        self.waiting[kind_index(kind)].load(Relaxed)
    }

    /// Counts a task of `kind` as waiting until the returned guard is dropped.
    pub fn start_waiting(&self, kind: Kind) -> Waiting {
        let kind = kind_index(kind);
        self.waiting[kind].fetch_add(1, Relaxed);
        Waiting {
            counter: self.waiting.clone(),
            kind,
        }
    }

    /// The processor's figures now.
    pub fn figures(&self) -> TaskFigures {
        let mut live = [0u64; TaskStatus::ALL.len()];
        for l in self.lock().live.values() {
            live[l.state.get() as usize] += 1;
        }
        let f = &self.figures;
        let ended: Vec<(&'static str, u64)> = TaskStatus::ALL
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| (s.as_str(), f.ended[*s as usize].load(Relaxed)))
            .collect();
        let processed: u64 = ended.iter().map(|(_, n)| n).sum();
        let succeeded = f.ended[TaskStatus::Succeeded as usize].load(Relaxed);
        let executed = f.executed.load(Relaxed);
        let execution = f.execution.snapshot();
        TaskFigures {
            processed,
            succeeded,
            success_rate: if processed == 0 {
                1.0
            } else {
                succeeded as f64 / processed as f64
            },
            ended,
            mean_ms: if executed == 0 {
                0.0
            } else {
                f.execution_nanos.load(Relaxed) as f64 / executed as f64 / 1e6
            },
            p99_ms: execution.quantile(0.99).as_secs_f64() * 1000.0,
            throughput_per_s: f.throughput(),
            waiting: live[TaskStatus::Waiting as usize],
            queued: live[TaskStatus::Queued as usize],
            running: live[TaskStatus::Running as usize] + live[TaskStatus::Retrying as usize],
            execution,
            execution_total: Duration::from_nanos(f.execution_nanos.load(Relaxed)),
        }
    }
}

/// Unregisters a task when its driver ends or is dropped.
#[derive(Debug)]
pub struct Registered {
    tracker: TaskTracker,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let gone = {
            let mut registry = self.tracker.lock();
            registry.dependents.remove(&self.id);
            registry.live.remove(&self.id)
        };
        // A driver dropped before its first attempt leaves its place in the queue.
        if let Some(live) = gone {
            drop(live.state.take_ticket());
        }
    }
}
