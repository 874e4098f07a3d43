//! Book-keeping of the tasks submitted through the task API (`optimize::task`): their
//! status and abort handles, so that shutdown can cancel what is still running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use super::gate::Ticket;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskStatus {
    /// Waiting for admission.
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
    /// Cancelled (by `TaskHandle::cancel` or by shutdown).
    Cancelled,
    /// The task panicked.
    Panicked,
    /// Refused at submission: its pool's queue was full (`pools.queue_capacity`), or the
    /// pools were shut down.
    Rejected,
}

impl TaskStatus {
    const ALL: [TaskStatus; 9] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
        TaskStatus::Panicked,
        TaskStatus::Rejected,
    ];

    /// Whether the task has ended.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            TaskStatus::Queued | TaskStatus::Running | TaskStatus::Retrying
        )
    }
}

/// A task's status and attempt count, shared by its driver and its handle.
#[derive(Debug, Default)]
pub struct TaskState {
    status: AtomicU8,
    attempts: AtomicU32,
    /// The place its first attempt took in its pool's queue at submission.
    ticket: Mutex<Option<Ticket>>,
}

impl TaskState {
    /// Moves the task to `status`.
    pub fn set(&self, status: TaskStatus) {
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

    /// Keeps the place the task took in its pool's queue when it was submitted.
    pub fn hold_ticket(&self, ticket: Ticket) {
        *self.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
    }

    /// The place taken at submission, for the first attempt (`None` after it).
    pub fn take_ticket(&self) -> Option<Ticket> {
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Each running task's abort handle and shared state, by id.
type RunningTasks = HashMap<u64, (AbortHandle, Arc<TaskState>)>;

/// Tasks that have not ended, for shutdown and statistics.
#[derive(Clone, Default)]
pub struct TaskTracker {
    running: Arc<Mutex<RunningTasks>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for TaskTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskTracker")
            .field("running", &self.running())
            .finish()
    }
}

impl TaskTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunningTasks> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new task number, unique in the process.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Tasks that have not ended.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Registers task `id`, started by `spawn` (called with the registry locked, so a driver
    /// that ends at once unregisters after this insert). The returned guard belongs to the
    /// driver: dropping it unregisters the task.
    pub fn register(
        &self,
        id: u64,
        state: Arc<TaskState>,
        spawn: impl FnOnce(Registered) -> AbortHandle,
    ) {
        let mut running = self.lock();
        let abort = spawn(Registered {
            tracker: self.clone(),
            id,
        });
        running.insert(id, (abort, state));
    }

    /// Cancels task `id`; `false` if it had ended.
    pub fn cancel(&self, id: u64) -> bool {
        let Some((abort, state)) = self.lock().remove(&id) else {
            return false;
        };
        state.set(TaskStatus::Cancelled);
        abort.abort();
        // Its place in the queue (or its admission, if granted before it started) goes.
        drop(state.take_ticket());
        true
    }

    /// Cancels every running task; how many.
    pub fn cancel_all(&self) -> usize {
        let all: Vec<_> = self.lock().drain().collect();
        for (_, (abort, state)) in &all {
            state.set(TaskStatus::Cancelled);
            abort.abort();
            drop(state.take_ticket());
        }
        all.len()
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
        let gone = self.tracker.lock().remove(&self.id);
        // A driver dropped before its first attempt leaves its place in the queue.
        if let Some((_, state)) = gone {
            drop(state.take_ticket());
        }
    }
}
