//! Tasks submitted at run time on the same pools as managed functions: a closure or a future
//! with a kind, priority, timeout, retries and tags; tasks that run after others and take their
//! results; batches; and a handle to watch, cancel or await each (docs/pools.md, "Tasks" and
//! "Pipelines").
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
//! let text = Task::io().tag("ingest").spawn(|| Ok::<_, String>("a b c".to_owned()));
//! let words = Task::cpu()
//!     .after(&text)
//!     .spawn(|text: String| Ok::<_, String>(text.split(' ').count()));
//! assert_eq!(words.join().await.unwrap(), 3);
//! # }
//! ```
//!
//! The driver of a task runs on the tokio runtime it was submitted from (so futures may use
//! that runtime's I/O resources), or on a small runtime of its own when submitted from a plain
//! thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::future::{try_join, try_join3, try_join_all, BoxFuture};
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::meta::{Kind, Priority};
use crate::pool::chain;
use crate::pool::gate::{Gate, Permit};
use crate::pool::io::{Attempts, TimedOut};
use crate::pool::tasks::{Finisher, TaskState, TaskTracker};
use crate::pool::Pools;

pub use crate::pool::tasks::{Cause, TaskFigures, TaskInfo, TaskStatus};

/// Why a task produced no value.
#[derive(Debug, thiserror::Error)]
pub enum TaskError<E> {
    /// The task returned this error on its last attempt.
    #[error("task failed: {0}")]
    Failed(E),
    /// The last attempt ran out of time.
    #[error(transparent)]
    TimedOut(TimedOut),
    /// The task was cancelled (by its handle, its tag, a cascade from a task it depends on,
    /// or shutdown).
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
    /// Never ran: a task it depends on did not succeed.
    #[error("task not run: task #{} it depends on ended {}", .0.task, .0.ended.as_str())]
    DependencyFailed(Cause),
}

impl<E> TaskError<E> {
    /// The status a task ending with this error has.
    fn status(&self) -> TaskStatus {
        match self {
            TaskError::Failed(_) => TaskStatus::Failed,
            TaskError::TimedOut(_) => TaskStatus::TimedOut,
            TaskError::Cancelled => TaskStatus::Cancelled,
            TaskError::Panicked(_) => TaskStatus::Panicked,
            TaskError::Rejected => TaskStatus::Rejected,
            TaskError::DependencyFailed(_) => TaskStatus::DependencyFailed,
        }
    }
}

/// What to run and how: build with [`Task::cpu`], [`Task::io`] or [`Task::memory`].
#[derive(Clone, Debug)]
#[must_use = "a task runs only once spawned"]
pub struct Task {
    kind: Kind,
    priority: Priority,
    attempts: Attempts,
    mem: Option<u64>,
    tags: Vec<Arc<str>>,
}

impl Task {
    /// A task of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            priority: Priority::Normal,
            attempts: Attempts::default(),
            mem: None,
            tags: Vec::new(),
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
    /// Adds a tag: tasks can be listed, counted and cancelled by tag ([`tagged`],
    /// [`count_tagged`], [`cancel_tagged`]); a CPU worker shows the first tag of the task it
    /// runs.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// A task that runs once every task of `inputs` has succeeded, and takes their results:
    /// one handle (`&a`: its value), a tuple of two or three (`(&a, &b)`: a tuple of values),
    /// or a slice of any handles (`&[&a, &b]`: no values, only the order). If one of them
    /// fails, times out, panics, is rejected or cancelled, this task never runs: it ends
    /// `DependencyFailed`, naming that task and how it ended.
    pub fn after<I: Inputs>(self, inputs: I) -> After<I> {
        After { task: self, inputs }
    }

    /// Submits a closure, called once per attempt.
    pub fn spawn<T, E, F>(self, mut f: F) -> TaskHandle<T, E>
    where
        F: FnMut() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.after(NoInputs).spawn(move |()| f())
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
        self.after(NoInputs).spawn_async(move |()| make())
    }

    /// Submits one task per closure, with these settings: a [`Batch`] to wait for all of
    /// them (results in submission order), for the first success, or for each as it ends.
    pub fn spawn_batch<T, E, F>(self, jobs: impl IntoIterator<Item = F>) -> Batch<T, E>
    where
        F: FnMut() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        Batch {
            handles: jobs.into_iter().map(|f| self.clone().spawn(f)).collect(),
        }
    }

    /// [`Task::spawn_batch`] of future factories.
    pub fn spawn_batch_async<T, E, F, Fut>(self, jobs: impl IntoIterator<Item = F>) -> Batch<T, E>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        Batch {
            handles: jobs
                .into_iter()
                .map(|f| self.clone().spawn_async(f))
                .collect(),
        }
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

    async fn attempt_closure<T, E>(
        &self,
        pools: &Pools,
        call: impl FnOnce() -> Result<T, E> + Send + 'static,
        state: &TaskState,
    ) -> Attempt<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let Some(permit) = self.admit(pools, state).await else {
            return Attempt::Rejected;
        };
        let joined = match self.kind {
            Kind::Cpu => {
                pools
                    .cpu()
                    .spawn_admitted_tagged(
                        permit,
                        self.tags.first().cloned(),
                        crate::spans::carried(call),
                    )
                    .await
            }
            // Closures of io and memory tasks may block: they get a blocking thread.
            Kind::Io | Kind::Memory => {
                let kind = self.kind;
                join(tokio::task::spawn_blocking(crate::spans::carried(
                    move || {
                        let _permit = permit;
                        // Managed calls the closure makes are nested in its admission.
                        let _chain = chain::Scope::enter(kind, 0);
                        call()
                    },
                )))
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
                join(tokio::spawn(
                    async move {
                        let _permit = permit;
                        fut.await
                    }
                    .in_current_span(),
                ))
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
                .spawn_admitted(
                    permit,
                    crate::spans::carried(move || {
                        // Inside the submitting runtime's context, so the future's timers work.
                        let _context = handle.enter();
                        let poll = fut
                            .as_mut()
                            .poll(&mut std::task::Context::from_waker(&waker));
                        (fut, poll)
                    }),
                )
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

    /// Registers the task and starts its driver: it waits for `inputs`, then for admission,
    /// then runs attempts until one succeeds or none is left.
    fn submit<T, E, V, A, Fut>(
        self,
        upstream: Vec<u64>,
        inputs: BoxFuture<'static, Result<V, Cause>>,
        mut attempt: A,
    ) -> TaskHandle<T, E>
    where
        V: Clone + Send + 'static,
        A: FnMut(Arc<Pools>, Arc<TaskState>, V) -> Fut + Send + 'static,
        Fut: Future<Output = Attempt<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let pools = crate::runtime::runtime().pools().clone();
        let tracker = pools.tasks().clone();
        let id = tracker.next_id();
        let waits = !upstream.is_empty();
        let state = Arc::new(TaskState::new(
            self.kind,
            self.tags.clone().into_boxed_slice(),
            if waits {
                TaskStatus::Waiting
            } else {
                TaskStatus::Queued
            },
        ));
        let shared = Arc::new(Shared::new(id, state.clone(), tracker.clone()));
        let handle = TaskHandle {
            id,
            shared: shared.clone(),
        };
        // A task without dependencies takes its place in the pool's queue now, within its
        // bound; one with dependencies counts against that bound while it waits, and queues
        // once they succeed.
        let (gate, weight) = self.gate(&pools);
        let runtime = match driver_runtime() {
            Some(runtime) if !pools.cpu().gate().is_closed() => Some(runtime),
            _ => None,
        };
        let admitted = runtime.and_then(|runtime| {
            if waits {
                let bound = gate.queue_capacity();
                let held = tracker.waiting(self.kind) + gate.stats().queued_total();
                return bound
                    .is_none_or(|b| held < b)
                    .then(|| (runtime, Some(tracker.start_waiting(self.kind))));
            }
            let ticket = gate.reserve(weight, self.priority).ok()?;
            state.hold_ticket(ticket);
            Some((runtime, None))
        });
        let Some((runtime, waiting)) = admitted else {
            shared.complete(Err(TaskError::Rejected));
            return handle;
        };
        let attempts = self.attempts;
        let finisher: Finisher = {
            let shared = shared.clone();
            Arc::new(move |status| {
                debug_assert_eq!(status, TaskStatus::Cancelled);
                shared.complete(Err(TaskError::Cancelled))
            })
        };
        let driver = move |registered| async move {
            let _registered = registered;
            let values = inputs.await;
            drop(waiting);
            let values = match values {
                Ok(values) => values,
                Err(cause) => {
                    shared.state.set_cause(cause);
                    shared.complete(Err(TaskError::DependencyFailed(cause)));
                    return;
                }
            };
            if waits {
                shared.state.set(TaskStatus::Queued);
            }
            let mut retry = 0;
            let result = loop {
                shared.state.attempt_started();
                let run = attempt(pools.clone(), shared.state.clone(), values.clone());
                let outcome = match attempts.timeout {
                    Some(after) => tokio::time::timeout(after, run)
                        .await
                        .unwrap_or(Attempt::TimedOut(after)),
                    None => run.await,
                };
                let retryable = matches!(outcome, Attempt::Failed(_) | Attempt::TimedOut(_));
                if retryable && retry < attempts.retries {
                    retry += 1;
                    shared.state.set(TaskStatus::Retrying);
                    tokio::time::sleep(attempts.backoff_before(retry)).await;
                    continue;
                }
                break outcome.finish(id);
            };
            shared.complete(result);
        };
        tracker.register(id, state, finisher, &upstream, |registered| {
            // The task runs in the submitter's span, whichever threads it runs on.
            runtime
                .spawn(driver(registered).in_current_span())
                .abort_handle()
        });
        handle
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

/// What a task takes from the tasks it runs after ([`Task::after`]): a handle (the value),
/// a tuple of two or three handles (a tuple of values), or a slice of any handles (`()`).
/// Values are cloned from the results, which stay for the handle's own `join`.
pub trait Inputs {
    /// What the task's closure or future factory is given.
    type Values: Clone + Send + 'static;
    /// The ids of the tasks depended on.
    fn ids(&self) -> Vec<u64>;
    /// Resolves to the values once every task depended on succeeded, or to the first one
    /// that did not.
    fn gather(&self) -> BoxFuture<'static, Result<Self::Values, Cause>>;
}

/// No inputs: a task that runs at once.
#[derive(Clone, Copy, Debug)]
struct NoInputs;

impl Inputs for NoInputs {
    type Values = ();
    fn ids(&self) -> Vec<u64> {
        Vec::new()
    }
    fn gather(&self) -> BoxFuture<'static, Result<(), Cause>> {
        std::future::ready(Ok(())).boxed()
    }
}

impl<T: Clone + Send + 'static, E: Send + 'static> Inputs for &TaskHandle<T, E> {
    type Values = T;
    fn ids(&self) -> Vec<u64> {
        vec![self.id]
    }
    fn gather(&self) -> BoxFuture<'static, Result<T, Cause>> {
        self.shared.value()
    }
}

impl<A, B, EA, EB> Inputs for (&TaskHandle<A, EA>, &TaskHandle<B, EB>)
where
    A: Clone + Send + 'static,
    B: Clone + Send + 'static,
    EA: Send + 'static,
    EB: Send + 'static,
{
    type Values = (A, B);
    fn ids(&self) -> Vec<u64> {
        vec![self.0.id, self.1.id]
    }
    fn gather(&self) -> BoxFuture<'static, Result<(A, B), Cause>> {
        try_join(self.0.shared.value(), self.1.shared.value()).boxed()
    }
}

impl<A, B, C, EA, EB, EC> Inputs for (&TaskHandle<A, EA>, &TaskHandle<B, EB>, &TaskHandle<C, EC>)
where
    A: Clone + Send + 'static,
    B: Clone + Send + 'static,
    C: Clone + Send + 'static,
    EA: Send + 'static,
    EB: Send + 'static,
    EC: Send + 'static,
{
    type Values = (A, B, C);
    fn ids(&self) -> Vec<u64> {
        vec![self.0.id, self.1.id, self.2.id]
    }
    fn gather(&self) -> BoxFuture<'static, Result<(A, B, C), Cause>> {
        try_join3(
            self.0.shared.value(),
            self.1.shared.value(),
            self.2.shared.value(),
        )
        .boxed()
    }
}

/// Any task, whatever its result's type: what `after(&[&a, &b])` waits for.
pub trait Upstream {
    /// Its id.
    fn id(&self) -> u64;
    /// Resolves once it succeeded, or to how it ended.
    fn succeeded(&self) -> BoxFuture<'static, Result<(), Cause>>;
}

impl<T: Send + 'static, E: Send + 'static> Upstream for TaskHandle<T, E> {
    fn id(&self) -> u64 {
        self.id
    }
    fn succeeded(&self) -> BoxFuture<'static, Result<(), Cause>> {
        self.shared.ended()
    }
}

impl Inputs for &[&dyn Upstream] {
    type Values = ();
    fn ids(&self) -> Vec<u64> {
        self.iter().map(|u| u.id()).collect()
    }
    fn gather(&self) -> BoxFuture<'static, Result<(), Cause>> {
        try_join_all(self.iter().map(|u| u.succeeded()))
            .map(|r| r.map(drop))
            .boxed()
    }
}

impl<const N: usize> Inputs for &[&dyn Upstream; N] {
    type Values = ();
    fn ids(&self) -> Vec<u64> {
        self.as_slice().ids()
    }
    fn gather(&self) -> BoxFuture<'static, Result<(), Cause>> {
        self.as_slice().gather()
    }
}

/// A task to run after others ([`Task::after`]): spawn it with a closure or future factory
/// taking their values.
#[must_use = "a task runs only once spawned"]
pub struct After<I> {
    task: Task,
    inputs: I,
}

impl<I: Inputs> After<I> {
    /// Submits a closure, called once per attempt with the values.
    pub fn spawn<T, E, F>(self, f: F) -> TaskHandle<T, E>
    where
        F: FnMut(I::Values) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let f = Arc::new(Mutex::new(f));
        let task = self.task.clone();
        self.task.submit(
            self.inputs.ids(),
            self.inputs.gather(),
            move |pools, state, values| {
                let f = f.clone();
                let task = task.clone();
                async move {
                    let call = move || (lock(&f))(values);
                    task.attempt_closure(&pools, call, &state).await
                }
            },
        )
    }

    /// Submits a future factory, called once per attempt with the values (see
    /// [`Task::spawn_async`]).
    pub fn spawn_async<T, E, F, Fut>(self, mut make: F) -> TaskHandle<T, E>
    where
        F: FnMut(I::Values) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let task = self.task.clone();
        self.task.submit(
            self.inputs.ids(),
            self.inputs.gather(),
            move |pools, state, values| {
                let fut = make(values);
                let task = task.clone();
                async move { task.attempt_future(&pools, fut, &state).await }
            },
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Told how a task ended: its value, or why it has none.
type Listener<T> = Box<dyn FnOnce(Result<&T, Cause>) + Send>;

enum Slot<T, E> {
    /// Running; these are told when it ends.
    Pending(Vec<Listener<T>>),
    /// Ended; the result, until the handle takes it.
    Done(Option<Result<T, TaskError<E>>>),
}

/// A task's result as its handle, its dependents and its cancellers share it: whoever ends
/// the task first (its driver, or a cancellation) sets it, once.
struct Shared<T, E> {
    id: u64,
    state: Arc<TaskState>,
    tracker: TaskTracker,
    slot: Mutex<Slot<T, E>>,
    done: Notify,
}

impl<T: Send + 'static, E: Send + 'static> Shared<T, E> {
    fn new(id: u64, state: Arc<TaskState>, tracker: TaskTracker) -> Self {
        Self {
            id,
            state,
            tracker,
            slot: Mutex::new(Slot::Pending(Vec::new())),
            done: Notify::new(),
        }
    }

    /// Ends the task with `result`; `false` if it had ended already.
    fn complete(&self, result: Result<T, TaskError<E>>) -> bool {
        let status = match &result {
            Ok(_) => TaskStatus::Succeeded,
            Err(e) => e.status(),
        };
        let mut slot = lock(&self.slot);
        let Slot::Pending(listeners) = std::mem::replace(&mut *slot, Slot::Done(None)) else {
            *slot = Slot::Done(None);
            return false;
        };
        self.state.set(status);
        let told = result.as_ref().map_err(|_| Cause {
            task: self.id,
            ended: status,
        });
        for listener in listeners {
            listener(told);
        }
        *slot = Slot::Done(Some(result));
        drop(slot);
        self.tracker.record_end(&self.state, status);
        self.done.notify_waiters();
        true
    }

    /// Calls `listener` when the task ends (now, if it has).
    fn listen(&self, listener: Listener<T>) {
        let mut slot = lock(&self.slot);
        match &mut *slot {
            Slot::Pending(listeners) => listeners.push(listener),
            Slot::Done(result) => {
                let ended = self.state.get();
                listener(match result {
                    Some(Ok(v)) => Ok(v),
                    _ => Err(Cause {
                        task: self.id,
                        ended,
                    }),
                });
            }
        }
    }

    /// Resolves once the task ended: its value cloned, or how it ended.
    fn value(&self) -> BoxFuture<'static, Result<T, Cause>>
    where
        T: Clone,
    {
        self.watch(|r| r.cloned())
    }

    /// Resolves once the task ended: `Ok` if it succeeded.
    fn ended(&self) -> BoxFuture<'static, Result<(), Cause>> {
        self.watch(|r| r.map(drop))
    }

    /// Resolves to what `read` takes from the task's end.
    fn watch<V: Send + 'static>(
        &self,
        read: impl FnOnce(Result<&T, Cause>) -> Result<V, Cause> + Send + 'static,
    ) -> BoxFuture<'static, Result<V, Cause>> {
        let (tx, rx) = oneshot::channel();
        self.listen(Box::new(move |r| {
            let _ = tx.send(read(r));
        }));
        let id = self.id;
        rx.map(move |r| {
            r.unwrap_or(Err(Cause {
                task: id,
                ended: TaskStatus::Cancelled,
            }))
        })
        .boxed()
    }

    fn take(&self) -> Option<Result<T, TaskError<E>>> {
        match &mut *lock(&self.slot) {
            Slot::Done(result) => Some(result.take().unwrap_or(Err(TaskError::Cancelled))),
            Slot::Pending(_) => None,
        }
    }

    async fn join(&self) -> Result<T, TaskError<E>> {
        loop {
            let notified = self.done.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.take() {
                return result;
            }
            notified.await;
        }
    }
}

/// A submitted task: its status, and its result once it ends.
#[must_use = "dropping the handle does not cancel the task, but its result is lost"]
pub struct TaskHandle<T, E> {
    id: u64,
    shared: Arc<Shared<T, E>>,
}

impl<T, E> std::fmt::Debug for TaskHandle<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("status", &self.shared.state.get())
            .finish()
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskHandle<T, E> {
    /// The task's number, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the task is now.
    pub fn status(&self) -> TaskStatus {
        self.shared.state.get()
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.shared.state.attempts()
    }

    /// For a task that ended `DependencyFailed`: which task it depended on did not succeed,
    /// and how that one ended.
    pub fn cause(&self) -> Option<Cause> {
        self.shared.state.cause()
    }

    /// The task's tags.
    pub fn tags(&self) -> Vec<String> {
        self.shared
            .state
            .tags()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// Cancels the task and, transitively, every task submitted to run after it (none of
    /// them starts): a queued or waiting task never runs; a running future is dropped; a
    /// running closure cannot be interrupted and finishes in the background with its result
    /// discarded. `false` if the task had already ended.
    pub fn cancel(&self) -> bool {
        self.shared.tracker.cancel(self.id)
    }

    /// Cancels only this task: the tasks that run after it then end `DependencyFailed`, with
    /// this one as the cause. `false` if the task had already ended.
    pub fn cancel_only(&self) -> bool {
        self.shared.tracker.cancel_only(self.id)
    }

    /// The task's result.
    pub async fn join(self) -> Result<T, TaskError<E>> {
        self.shared.join().await
    }

    /// The task's result, blocking this thread. Do not call it on the runtime thread that
    /// drives the task (use [`TaskHandle::join`] there).
    pub fn wait(self) -> Result<T, TaskError<E>> {
        crate::pool::blocking(|| crate::time::block_on(self.shared.join()))
    }
}

/// Tasks submitted together ([`Task::spawn_batch`]): wait for all of them, for the first
/// success, or for each as it ends; cancel the rest.
///
/// ```
/// use optimize_runtime::task::Task;
///
/// # #[tokio::main] async fn main() {
/// let batch = Task::cpu().spawn_batch((1..=100u64).map(|n| move || Ok::<_, String>(n * n)));
/// let squares: Vec<u64> = batch.join_all().await.into_iter().map(Result::unwrap).collect();
/// assert_eq!(squares[9], 100);
///
/// let mirrors = Task::io().spawn_batch_async(["a", "b", "c"].map(|host| move || async move {
///     if host == "b" { Ok(host) } else { Err(format!("{host} is down")) }
/// }));
/// assert_eq!(mirrors.first_ok().await.unwrap(), "b");
/// # }
/// ```
#[must_use = "dropping a batch does not cancel its tasks, but their results are lost"]
pub struct Batch<T, E> {
    handles: Vec<TaskHandle<T, E>>,
}

impl<T, E> std::fmt::Debug for Batch<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("tasks", &self.handles.len())
            .finish()
    }
}

/// Each result of a [`Batch`] as its task ends, with its position in the batch.
pub type BatchStream<T, E> = Pin<Box<dyn Stream<Item = (usize, Result<T, TaskError<E>>)> + Send>>;

/// Cancels what is left of a batch, even once it is being awaited ([`Batch::canceller`]).
#[derive(Clone, Debug)]
pub struct BatchCanceller {
    ids: Arc<[u64]>,
    tracker: TaskTracker,
}

impl BatchCanceller {
    /// Cancels every task of the batch that has not ended (and what runs after them); how
    /// many.
    pub fn cancel(&self) -> usize {
        self.ids
            .iter()
            .filter(|id| self.tracker.cancel(**id))
            .count()
    }
}

impl<T: Send + 'static, E: Send + 'static> Batch<T, E> {
    /// Tasks in the batch.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The tasks, in submission order (to make other tasks run after some of them).
    pub fn handles(&self) -> &[TaskHandle<T, E>] {
        &self.handles
    }

    /// Each task's status, in submission order.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.handles.iter().map(TaskHandle::status).collect()
    }

    /// Something that cancels the rest of the batch from elsewhere.
    pub fn canceller(&self) -> BatchCanceller {
        BatchCanceller {
            ids: self.handles.iter().map(|h| h.id).collect(),
            tracker: self
                .handles
                .first()
                .map_or_else(TaskTracker::default, |h| h.shared.tracker.clone()),
        }
    }

    /// Cancels every task that has not ended; how many.
    pub fn cancel(&self) -> usize {
        self.canceller().cancel()
    }

    /// Every result, in submission order.
    pub async fn join_all(self) -> Vec<Result<T, TaskError<E>>> {
        let mut out = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            out.push(handle.join().await);
        }
        out
    }

    /// [`Batch::join_all`], blocking this thread.
    pub fn wait_all(self) -> Vec<Result<T, TaskError<E>>> {
        crate::pool::blocking(|| crate::time::block_on(self.join_all()))
    }

    /// The first result to succeed; the other tasks are then cancelled. If none succeeds,
    /// every error, in submission order.
    pub async fn first_ok(self) -> Result<T, Vec<TaskError<E>>> {
        let canceller = self.canceller();
        let mut errors: Vec<(usize, TaskError<E>)> = Vec::new();
        let mut stream = self.into_stream();
        while let Some((index, result)) = stream.next().await {
            match result {
                Ok(value) => {
                    canceller.cancel();
                    return Ok(value);
                }
                Err(e) => errors.push((index, e)),
            }
        }
        errors.sort_by_key(|(i, _)| *i);
        Err(errors.into_iter().map(|(_, e)| e).collect())
    }

    /// Each result as its task ends, with its position in the batch.
    pub fn into_stream(self) -> BatchStream<T, E> {
        let pending: FuturesUnordered<_> = self
            .handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| async move { (i, h.join().await) })
            .collect();
        Box::pin(pending)
    }
}

/// The live tasks carrying `tag`.
pub fn tagged(tag: &str) -> Vec<TaskInfo> {
    crate::runtime::runtime().pools().tasks().tagged(tag)
}

/// How many live tasks carry `tag`.
pub fn count_tagged(tag: &str) -> usize {
    crate::runtime::runtime().pools().tasks().count_tagged(tag)
}

/// Cancels every live task carrying `tag`, and what runs after them; how many carried it.
pub fn cancel_tagged(tag: &str) -> usize {
    crate::runtime::runtime().pools().tasks().cancel_tagged(tag)
}

/// The task processor's figures now (also in `pool::stats()`, `/stats` and `/metrics`).
pub fn figures() -> TaskFigures {
    crate::runtime::runtime().pools().tasks().figures()
}
