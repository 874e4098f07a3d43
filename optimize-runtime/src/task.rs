//! Tasks submitted at run time on the same pools as managed functions: a closure or a future
//! with a kind, priority, timeout and retries, and a handle to watch, cancel or await it.
//!
//! ```
//! use std::time::Duration;
//! use optimize_runtime::task::{Task, TaskStatus};
//! use optimize_runtime::pool::Priority;
//!
//! # #[tokio::main] async fn main() {
//! let handle = Task::cpu()
//!     .priority(Priority::High)
//!     .timeout(Duration::from_secs(5))
//!     .spawn(|| Ok::<_, std::io::Error>((1..=10u64).product::<u64>()));
//! assert_eq!(handle.join().await.unwrap(), 3_628_800);
//!
//! let handle = Task::io().retries(2).spawn_async(|| async { Ok::<_, String>("done") });
//! assert_eq!(handle.join().await.unwrap(), "done");
//! # }
//! ```
//!
//! The driver of a task runs on the tokio runtime it was submitted from (so futures may use
//! that runtime's I/O resources), or on a small runtime of its own when submitted from a plain
//! thread.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::meta::{Kind, Priority};
use crate::pool::chain;
use crate::pool::gate::{Gate, Permit};
use crate::pool::io::{Attempts, TimedOut};
use crate::pool::tasks::{TaskState, TaskTracker};
use crate::pool::Pools;

pub use crate::pool::tasks::TaskStatus;

/// Why a task produced no value.
#[derive(Debug, thiserror::Error)]
pub enum TaskError<E> {
    /// The task returned this error on its last attempt.
    #[error("task failed: {0}")]
    Failed(E),
    /// The last attempt ran out of time.
    #[error(transparent)]
    TimedOut(TimedOut),
    /// The task was cancelled.
    #[error("task cancelled")]
    Cancelled,
    /// The task panicked; the panic message.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// Refused at submission: its pool's queue held `pools.queue_capacity` waiting calls and
    /// tasks already; or the pools were shut down (or, outside a tokio runtime, the task
    /// runtime's threads could not be started; the error is logged).
    #[error("task rejected: its pool's queue is full, or the pools are shut down")]
    Rejected,
}

/// What to run and how: build with [`Task::cpu`], [`Task::io`] or [`Task::memory`].
#[derive(Clone, Debug)]
#[must_use = "a task runs only once spawned"]
pub struct Task {
    kind: Kind,
    priority: Priority,
    attempts: Attempts,
    mem: Option<u64>,
}

impl Task {
    /// A task of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            priority: Priority::Normal,
            attempts: Attempts::default(),
            mem: None,
        }
    }

    /// CPU work, run on the CPU pool.
    pub fn cpu() -> Self {
        Self::new(Kind::Cpu)
    }

    /// I/O work: futures run on the runtime, closures on its blocking threads; both count
    /// against the global io limit.
    pub fn io() -> Self {
        Self::new(Kind::Io)
    }

    /// Memory-heavy work, admitted by the memory budget.
    pub fn memory() -> Self {
        Self::new(Kind::Memory)
    }

    /// Admission priority (default `Normal`).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Deadline of each attempt. A timed-out future is dropped; a timed-out closure cannot be
    /// interrupted, so it finishes in the background and its result is discarded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.attempts.timeout = Some(timeout);
        self
    }

    /// Extra attempts after an `Err` or a timeout (default 0).
    pub fn retries(mut self, retries: u32) -> Self {
        self.attempts.retries = retries;
        self
    }

    /// First backoff between attempts (default 100 ms; doubled each retry, with jitter).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.attempts.backoff = backoff;
        self
    }

    /// Bytes a memory task reserves from the budget (default: the budget's default weight).
    pub fn mem(mut self, bytes: u64) -> Self {
        self.mem = Some(bytes);
        self
    }

    /// Submits a closure, called once per attempt.
    pub fn spawn<T, E, F>(self, f: F) -> TaskHandle<T, E>
    where
        F: FnMut() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let f = Arc::new(Mutex::new(f));
        let task = self.clone();
        self.submit(move |pools, state| {
            let f = f.clone();
            let task = task.clone();
            async move { task.attempt_closure(&pools, f, &state).await }
        })
    }

    /// Submits a future factory, called once per attempt. A `cpu` future is polled on the
    /// CPU pool (inside the submitting runtime's context, so its timers work), each poll
    /// admitted by the pool's gate; while it waits it holds neither a pool thread nor an
    /// admission. `io` and `memory` futures run on the runtime.
    pub fn spawn_async<T, E, F, Fut>(self, mut make: F) -> TaskHandle<T, E>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let task = self.clone();
        self.submit(move |pools, state| {
            let fut = make();
            let task = task.clone();
            async move { task.attempt_future(&pools, fut, &state).await }
        })
    }

    /// This task's pool's gate, and what an attempt weighs there.
    fn gate<'p>(&self, pools: &'p Pools) -> (&'p Arc<Gate>, u64) {
        match self.kind {
            Kind::Cpu => (pools.cpu().gate(), 1),
            Kind::Io => (pools.io().gate(), 1),
            Kind::Memory => {
                let budget = pools.memory();
                (budget.gate(), self.mem.unwrap_or(budget.default_weight()))
            }
        }
    }

    /// Waits for this task's pool to admit an attempt — the first in the place it took at
    /// submission, a retry at the back of the queue (an accepted task is never refused);
    /// `None` once the pools are shut down.
    async fn admit(&self, pools: &Pools, state: &TaskState) -> Option<Permit> {
        let permit = match state.take_ticket() {
            Some(ticket) => ticket.admitted().await,
            None => {
                let (gate, weight) = self.gate(pools);
                gate.acquire(weight, self.priority).await
            }
        };
        let permit = permit.ok()?;
        state.set(TaskStatus::Running);
        Some(permit)
    }

    async fn attempt_closure<T, E, F>(
        &self,
        pools: &Pools,
        f: Arc<Mutex<F>>,
        state: &TaskState,
    ) -> Attempt<T, E>
    where
        F: FnMut() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let call = move || {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            f()
        };
        let Some(permit) = self.admit(pools, state).await else {
            return Attempt::Rejected;
        };
        let joined = match self.kind {
            Kind::Cpu => pools.cpu().spawn_admitted(permit, call).await,
            // Closures of io and memory tasks may block: they get a blocking thread.
            Kind::Io | Kind::Memory => {
                let kind = self.kind;
                join(tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    // Managed calls the closure makes are nested in its admission.
                    let _chain = chain::Scope::enter(kind, 0);
                    call()
                }))
                .await
            }
        };
        Attempt::from(joined)
    }

    async fn attempt_future<T, E, Fut>(
        &self,
        pools: &Pools,
        fut: Fut,
        state: &TaskState,
    ) -> Attempt<T, E>
    where
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let Some(permit) = self.admit(pools, state).await else {
            return Attempt::Rejected;
        };
        let joined = match self.kind {
            Kind::Cpu => match self.poll_on_cpu_pool(pools, permit, fut).await {
                Some(joined) => joined,
                None => return Attempt::Rejected,
            },
            Kind::Io | Kind::Memory => {
                let fut = chain::InChain::new(self.kind, fut);
                join(tokio::spawn(async move {
                    let _permit = permit;
                    fut.await
                }))
                .await
            }
        };
        Attempt::from(joined)
    }

    /// Drives a cpu task's future: each poll runs on the CPU pool, admitted by the gate, and
    /// the pool's thread and admission are given back while the future waits, so a future
    /// that awaits I/O never parks a CPU thread. `None` once the pools are shut down.
    async fn poll_on_cpu_pool<T, Fut>(
        &self,
        pools: &Pools,
        first: Permit,
        fut: Fut,
    ) -> Option<std::thread::Result<T>>
    where
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        struct Wake(tokio::sync::Notify);
        impl std::task::Wake for Wake {
            fn wake(self: Arc<Self>) {
                self.0.notify_one();
            }
        }
        let woken = Arc::new(Wake(tokio::sync::Notify::new()));
        let waker = std::task::Waker::from(woken.clone());
        let handle = Handle::current();
        let mut fut = Box::pin(fut);
        let mut permit = Some(first);
        loop {
            let permit = match permit.take() {
                Some(p) => p,
                None => pools.cpu().gate().acquire(1, self.priority).await.ok()?,
            };
            let (waker, handle) = (waker.clone(), handle.clone());
            let polled = pools
                .cpu()
                .spawn_admitted(permit, move || {
                    // Inside the submitting runtime's context, so the future's timers work.
                    let _context = handle.enter();
                    let poll = fut
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&waker));
                    (fut, poll)
                })
                .await;
            match polled {
                Err(panic) => return Some(Err(panic)),
                Ok((_, std::task::Poll::Ready(out))) => return Some(Ok(out)),
                Ok((back, std::task::Poll::Pending)) => {
                    fut = back;
                    // `notify_one` keeps a wake-up that came before this wait.
                    woken.0.notified().await;
                }
            }
        }
    }

    fn submit<T, E, A, Fut>(self, mut attempt: A) -> TaskHandle<T, E>
    where
        A: FnMut(Arc<Pools>, Arc<TaskState>) -> Fut + Send + 'static,
        Fut: Future<Output = Attempt<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let pools = crate::runtime::runtime().pools().clone();
        let tracker = pools.tasks().clone();
        let shared = Arc::new(TaskState::default());
        let (tx, rx) = oneshot::channel();
        let id = tracker.next_id();
        // The place in the pool's queue is taken now, within its bound: over it, the task is
        // refused at once (and the gate counts it).
        let (gate, weight) = self.gate(&pools);
        let ticket = match driver_runtime() {
            Some(runtime) if !pools.cpu().gate().is_closed() => gate
                .reserve(weight, self.priority)
                .ok()
                .map(|ticket| (runtime, ticket)),
            _ => None,
        };
        let Some((runtime, ticket)) = ticket else {
            shared.set(TaskStatus::Rejected);
            let _ = tx.send(Err(TaskError::Rejected));
            return TaskHandle {
                id,
                shared,
                rx,
                tracker,
            };
        };
        shared.hold_ticket(ticket);
        let attempts = self.attempts;
        let state = shared.clone();
        let driver = move |registered| async move {
            let _registered = registered;
            let mut retry = 0;
            let result = loop {
                state.attempt_started();
                let outcome = match attempts.timeout {
                    Some(after) => {
                        tokio::time::timeout(after, attempt(pools.clone(), state.clone()))
                            .await
                            .unwrap_or(Attempt::TimedOut(after))
                    }
                    None => attempt(pools.clone(), state.clone()).await,
                };
                let retryable = matches!(outcome, Attempt::Failed(_) | Attempt::TimedOut(_));
                if retryable && retry < attempts.retries {
                    retry += 1;
                    state.set(TaskStatus::Retrying);
                    tokio::time::sleep(attempts.backoff_before(retry)).await;
                    continue;
                }
                break outcome.finish(id);
            };
            state.set(match &result {
                Ok(_) => TaskStatus::Succeeded,
                Err(TaskError::Failed(_)) => TaskStatus::Failed,
                Err(TaskError::TimedOut(_)) => TaskStatus::TimedOut,
                Err(TaskError::Cancelled) => TaskStatus::Cancelled,
                Err(TaskError::Panicked(_)) => TaskStatus::Panicked,
                Err(TaskError::Rejected) => TaskStatus::Rejected,
            });
            let _ = tx.send(result);
        };
        tracker.register(id, shared.clone(), |registered| {
            runtime.spawn(driver(registered)).abort_handle()
        });
        TaskHandle {
            id,
            shared,
            rx,
            tracker,
        }
    }
}

/// How one attempt ended.
enum Attempt<T, E> {
    Ok(T),
    Failed(E),
    TimedOut(Duration),
    Panicked(String),
    Rejected,
}

impl<T, E> From<std::thread::Result<Result<T, E>>> for Attempt<T, E> {
    fn from(joined: std::thread::Result<Result<T, E>>) -> Self {
        match joined {
            Ok(Ok(v)) => Attempt::Ok(v),
            Ok(Err(e)) => Attempt::Failed(e),
            Err(payload) => Attempt::Panicked(panic_message(&*payload)),
        }
    }
}

impl<T, E> Attempt<T, E> {
    fn finish(self, id: u64) -> Result<T, TaskError<E>> {
        match self {
            Attempt::Ok(v) => Ok(v),
            Attempt::Failed(e) => Err(TaskError::Failed(e)),
            Attempt::TimedOut(after) => Err(TaskError::TimedOut(TimedOut {
                function: format!("task #{id}"),
                after,
            })),
            Attempt::Panicked(msg) => Err(TaskError::Panicked(msg)),
            Attempt::Rejected => Err(TaskError::Rejected),
        }
    }
}

async fn join<R>(handle: tokio::task::JoinHandle<R>) -> std::thread::Result<R> {
    struct AbortOnDrop(AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    // A timed-out or cancelled attempt stops its future too.
    let _abort = AbortOnDrop(handle.abort_handle());
    match handle.await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => Err(e.into_panic()),
        Err(_) => Err(Box::new("the attempt was cancelled")),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

/// The runtime that drives tasks: the caller's, or a small one of the pools' (`None` when
/// its threads cannot be started; the task is then rejected, and the error logged).
fn driver_runtime() -> Option<Handle> {
    static OWN: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    if let Ok(handle) = Handle::try_current() {
        return Some(handle);
    }
    OWN.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("optimize-tasks")
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::error!(error = %e, "optimize: the task runtime cannot start; tasks submitted outside a tokio runtime are rejected");
            })
            .ok()
    })
    .as_ref()
    .map(|rt| rt.handle().clone())
}

/// A submitted task: its status, and its result once it ends.
#[must_use = "dropping the handle does not cancel the task, but its result is lost"]
pub struct TaskHandle<T, E> {
    id: u64,
    shared: Arc<TaskState>,
    rx: oneshot::Receiver<Result<T, TaskError<E>>>,
    tracker: TaskTracker,
}

impl<T, E> std::fmt::Debug for TaskHandle<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish()
    }
}

impl<T, E> TaskHandle<T, E> {
    /// The task's number, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the task is now.
    pub fn status(&self) -> TaskStatus {
        self.shared.get()
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.shared.attempts()
    }

    /// Cancels the task: it leaves its queue, or its running future is dropped; a running
    /// closure cannot be interrupted and finishes in the background with its result
    /// discarded. `false` if the task had already ended.
    pub fn cancel(&self) -> bool {
        self.tracker.cancel(self.id)
    }

    /// The task's result.
    pub async fn join(self) -> Result<T, TaskError<E>> {
        self.rx.await.unwrap_or(Err(TaskError::Cancelled))
    }

    /// The task's result, blocking this thread. Do not call it on the runtime thread that
    /// drives the task (use [`TaskHandle::join`] there).
    pub fn wait(self) -> Result<T, TaskError<E>> {
        crate::pool::blocking(|| crate::time::block_on(self.rx))
            .unwrap_or(Err(TaskError::Cancelled))
    }
}
