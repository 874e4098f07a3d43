//! A weighted admission gate with priority queues: the one mechanism behind the CPU pool's
//! priorities, the io concurrency limits and the memory budget.
//!
//! Capacity is a number of units (permits, or bytes for the memory budget). A caller asks for
//! `weight` units at a [`Priority`]; it is admitted at once if they are free and nobody is
//! queued ahead of it, else it queues. Released units go to the oldest waiter of the highest
//! non-empty priority. A waiter that does not fit blocks those behind it (no overtaking), so a
//! large request is never starved by a stream of small ones.
//!
//! Sync callers block on a channel; async callers await one. An async waiter that is dropped
//! leaves the queue, or returns its units if it was admitted meanwhile, so cancellation never
//! leaks capacity.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::Priority;
use crate::stats::{AtomicHistogram, Histogram};
use std::time::Instant;

/// The gate was closed by shutdown: no more admissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

/// Why a caller asking within the queue's bound was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The gate was closed by shutdown.
    Closed,
    /// The queue held its capacity of waiters already ([`Gate::set_queue_capacity`]).
    Full,
}

/// What a waiter is woken with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Admitted,
    Closed,
}

enum Wake {
    Thread(mpsc::SyncSender<Grant>),
    Task(oneshot::Sender<Grant>),
}

struct Waiter {
    id: u64,
    weight: u64,
    wake: Wake,
}

struct State {
    capacity: u64,
    in_use: u64,
    active: u64,
    queues: [VecDeque<Waiter>; Priority::ALL.len()],
    closed: bool,
    next_id: u64,
    /// Extra condition for admission besides free units (the memory budget's pressure
    /// check); ignored while nothing is admitted, so the gate always makes progress.
    held: bool,
    /// Waiters (all priorities) beyond which a caller asking within the bound is refused.
    queue_capacity: Option<u64>,
}

impl State {
    fn queued(&self) -> u64 {
        self.queues.iter().map(|q| q.len() as u64).sum()
    }
}

/// Counters of one gate, readable at any time.
#[derive(Clone, Debug, PartialEq)]
pub struct GateStats {
    /// Units the gate admits at once.
    pub capacity: u64,
    /// Units held by admitted callers.
    pub in_use: u64,
    /// Callers admitted and not yet finished.
    pub active: u64,
    /// Callers waiting, per priority (index by [`Priority::index`]).
    pub queued: [u64; Priority::ALL.len()],
    /// Callers that were admitted and have finished.
    pub completed: u64,
    /// Callers refused because the gate was closed.
    pub rejected: u64,
    /// Callers refused because the queue was full.
    pub refused_full: u64,
    /// The queue's bound (`None`: unbounded).
    pub queue_capacity: Option<u64>,
    /// Time callers spent waiting for admission (callers admitted at once count as zero).
    pub wait: Histogram,
}

impl GateStats {
    /// Callers waiting, over all priorities.
    pub fn queued_total(&self) -> u64 {
        self.queued.iter().sum()
    }
}

/// A weighted priority gate. See the module documentation.
pub struct Gate {
    state: Mutex<State>,
    completed: AtomicU64,
    rejected: AtomicU64,
    refused_full: AtomicU64,
    wait: AtomicHistogram,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Gate")
            .field("capacity", &s.capacity)
            .field("in_use", &s.in_use)
            .field("closed", &s.closed)
            .finish_non_exhaustive()
    }
}

/// Units held by an admitted caller; returned to the gate on drop.
#[must_use = "the admission ends when the permit is dropped"]
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    weight: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release(self.weight);
    }
}

impl Gate {
    /// A gate admitting `capacity` units at once (at least 1).
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                capacity: capacity.max(1),
                in_use: 0,
                active: 0,
                queues: Default::default(),
                closed: false,
                next_id: 0,
                held: false,
                queue_capacity: None,
            }),
            completed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            wait: AtomicHistogram::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing user-provided runs under this lock; a poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Units the gate admits at once.
    pub fn capacity(&self) -> u64 {
        self.lock().capacity
    }

    /// Callers admitted and not yet finished.
    pub fn active(&self) -> u64 {
        self.lock().active
    }

    /// Changes the capacity; waiters that now fit are admitted.
    pub fn set_capacity(&self, capacity: u64) {
        let mut s = self.lock();
        s.capacity = capacity.max(1);
        Self::admit_waiting(&mut s);
    }

    /// Bounds the queue: once `capacity` callers wait (all priorities together), a caller
    /// asking within the bound ([`Gate::acquire_within_bound`]) is refused at once with
    /// [`Refused::Full`]; `None` removes the bound.
    pub fn set_queue_capacity(&self, capacity: Option<u64>) {
        self.lock().queue_capacity = capacity;
    }

    /// The queue's bound (`None`: unbounded).
    pub fn queue_capacity(&self) -> Option<u64> {
        self.lock().queue_capacity
    }

    /// Holds admissions (while something is admitted) or lets them resume: the memory
    /// budget holds its gate while system memory is under pressure.
    pub fn set_held(&self, held: bool) {
        let mut s = self.lock();
        s.held = held;
        Self::admit_waiting(&mut s);
    }

    /// Whether admissions are held.
    pub fn is_held(&self) -> bool {
        self.lock().held
    }

    /// Closes the gate: queued and future callers get [`Closed`]. Admitted callers keep their
    /// permits.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        for queue in &mut s.queues {
            for waiter in queue.drain(..) {
                self.rejected.fetch_add(1, Relaxed);
                waiter.wake.send(Grant::Closed);
            }
        }
    }

    /// Reopens a closed gate (for tests and for restarting after a shutdown).
    pub fn reopen(&self) {
        self.lock().closed = false;
    }

    /// Whether [`Gate::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The gate's counters.
    pub fn stats(&self) -> GateStats {
        let s = self.lock();
        let mut queued = [0; Priority::ALL.len()];
        for (n, q) in queued.iter_mut().zip(&s.queues) {
            *n = q.len() as u64;
        }
        GateStats {
            capacity: s.capacity,
            in_use: s.in_use,
            active: s.active,
            queued,
            completed: self.completed.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            refused_full: self.refused_full.load(Relaxed),
            queue_capacity: s.queue_capacity,
            wait: self.wait.snapshot(),
        }
    }

    /// `weight` units at once, if they are free, nobody waits ahead and the gate is open;
    /// `None` otherwise (then ask with [`Gate::acquire`] and friends, which queue).
    pub fn try_acquire(self: &Arc<Self>, weight: u64) -> Option<Permit> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        let weight = Self::clamp(&s, weight);
        self.try_admit(&mut s, weight)
    }

    /// Admits the caller at once if `weight` units are free and nobody waits ahead of it.
    fn try_admit(self: &Arc<Self>, s: &mut State, weight: u64) -> Option<Permit> {
        let queued = s.queues.iter().any(|q| !q.is_empty());
        if queued || !Self::fits(s, weight) {
            return None;
        }
        s.in_use += weight;
        s.active += 1;
        self.wait.record(0);
        Some(Permit {
            gate: self.clone(),
            weight,
        })
    }

    fn fits(s: &State, weight: u64) -> bool {
        // Held or not, an idle gate admits: a process must make progress even when the
        // pressure comes from somewhere else.
        if s.active == 0 {
            return true;
        }
        !s.held && s.in_use + weight <= s.capacity
    }

    fn clamp(s: &State, weight: u64) -> u64 {
        weight.clamp(1, s.capacity)
    }

    /// Admits at once, or queues the caller with the waker `channel` builds (only then, so
    /// an immediate admission allocates nothing): the common start of both acquire paths.
    /// `Ok(Err((id, weight, receiver)))` means queued. `bounded`: refuse rather than queue
    /// beyond the queue's capacity.
    fn admit_or_enqueue<R>(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
        bounded: bool,
        channel: impl FnOnce() -> (Wake, R),
    ) -> Result<Result<Permit, (u64, u64, R)>, Refused> {
        let mut s = self.lock();
        if s.closed {
            self.rejected.fetch_add(1, Relaxed);
            return Err(Refused::Closed);
        }
        let weight = Self::clamp(&s, weight);
        if let Some(permit) = self.try_admit(&mut s, weight) {
            return Ok(Ok(permit));
        }
        if bounded && s.queue_capacity.is_some_and(|cap| s.queued() >= cap) {
            self.refused_full.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        let (wake, rx) = channel();
        let id = Self::enqueue(&mut s, weight, priority, wake);
        Ok(Err((id, weight, rx)))
    }

    fn admitted_after_wait(self: &Arc<Self>, weight: u64, start: Instant) -> Permit {
        self.wait
            .record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Permit {
            gate: self.clone(),
            weight,
        }
    }

    /// Waits (blocking the thread) until `weight` units are admitted at `priority`, however
    /// long the queue.
    pub fn acquire_blocking(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
    ) -> Result<Permit, Closed> {
        self.blocking(weight, priority, false).map_err(|_| Closed)
    }

    /// [`Gate::acquire_blocking`], refused at once when the queue is full.
    pub fn acquire_blocking_within_bound(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
    ) -> Result<Permit, Refused> {
        self.blocking(weight, priority, true)
    }

    fn blocking(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
        bounded: bool,
    ) -> Result<Permit, Refused> {
        let channel = || {
            let (tx, rx) = mpsc::sync_channel(1);
            (Wake::Thread(tx), rx)
        };
        let (_, weight, rx) = match self.admit_or_enqueue(weight, priority, bounded, channel)? {
            Ok(permit) => return Ok(permit),
            Err(queued) => queued,
        };
        let start = Instant::now();
        // The sender lives in the queue until it is used, so `recv` only fails if the gate
        // itself is gone, which an `Arc` caller rules out.
        match rx.recv() {
            Ok(Grant::Admitted) => Ok(self.admitted_after_wait(weight, start)),
            Ok(Grant::Closed) | Err(_) => Err(Refused::Closed),
        }
    }

    /// Waits (asynchronously) until `weight` units are admitted at `priority`, however long
    /// the queue. Dropping the future gives up the place in the queue, or the units if they
    /// were granted meanwhile.
    pub async fn acquire(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
    ) -> Result<Permit, Closed> {
        self.waiting(weight, priority, false)
            .await
            .map_err(|_| Closed)
    }

    /// [`Gate::acquire`], refused at once when the queue is full.
    pub async fn acquire_within_bound(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
    ) -> Result<Permit, Refused> {
        self.waiting(weight, priority, true).await
    }

    async fn waiting(
        self: &Arc<Self>,
        weight: u64,
        priority: Priority,
        bounded: bool,
    ) -> Result<Permit, Refused> {
        let channel = || {
            let (tx, rx) = oneshot::channel();
            (Wake::Task(tx), rx)
        };
        let (id, weight, rx) = match self.admit_or_enqueue(weight, priority, bounded, channel)? {
            Ok(permit) => return Ok(permit),
            Err(queued) => queued,
        };
        PendingAdmission {
            gate: self.clone(),
            id,
            weight,
            rx: Some(rx),
            start: Instant::now(),
        }
        .wait()
        .await
    }

    /// Takes a place in the queue now, within its bound, or an admission if one is free: a
    /// task takes it when it is submitted, so the bound holds exactly and the order of
    /// submission is the order of admission. Dropping a queued ticket leaves the queue.
    pub fn reserve(self: &Arc<Self>, weight: u64, priority: Priority) -> Result<Ticket, Refused> {
        let channel = || {
            let (tx, rx) = oneshot::channel();
            (Wake::Task(tx), rx)
        };
        Ok(Ticket(
            match self.admit_or_enqueue(weight, priority, true, channel)? {
                Ok(permit) => TicketState::Admitted(permit),
                Err((id, weight, rx)) => TicketState::Queued(PendingAdmission {
                    gate: self.clone(),
                    id,
                    weight,
                    rx: Some(rx),
                    start: Instant::now(),
                }),
            },
        ))
    }

    fn enqueue(s: &mut State, weight: u64, priority: Priority, wake: Wake) -> u64 {
        let id = s.next_id;
        s.next_id += 1;
        s.queues[priority.index()].push_back(Waiter { id, weight, wake });
        id
    }

    fn release(&self, weight: u64) {
        let mut s = self.lock();
        s.in_use = s.in_use.saturating_sub(weight);
        s.active = s.active.saturating_sub(1);
        self.completed.fetch_add(1, Relaxed);
        Self::admit_waiting(&mut s);
    }

    /// Admits waiters, highest priority first, while the head one fits.
    fn admit_waiting(s: &mut State) {
        if s.closed {
            return;
        }
        loop {
            let Some(queue) = s.queues.iter().position(|q| !q.is_empty()) else {
                return;
            };
            let weight = s.queues[queue][0].weight;
            if !Self::fits(s, weight) {
                return;
            }
            let waiter = s.queues[queue].pop_front().expect("checked non-empty");
            s.in_use += waiter.weight;
            s.active += 1;
            if !waiter.wake.send(Grant::Admitted) {
                // The waiter vanished (a blocked thread cannot, so this is defensive).
                s.in_use -= waiter.weight;
                s.active -= 1;
            }
        }
    }
}

impl Wake {
    fn send(self, grant: Grant) -> bool {
        match self {
            Wake::Thread(tx) => tx.try_send(grant).is_ok(),
            Wake::Task(tx) => tx.send(grant).is_ok(),
        }
    }
}

/// A place in a gate's queue, or an admission ([`Gate::reserve`]).
#[must_use = "dropping a ticket gives up its place"]
pub struct Ticket(TicketState);

enum TicketState {
    Admitted(Permit),
    Queued(PendingAdmission),
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            TicketState::Admitted(_) => "Ticket(admitted)",
            TicketState::Queued(_) => "Ticket(queued)",
        })
    }
}

impl Ticket {
    /// Waits for the admission (at once if it was granted already).
    pub async fn admitted(self) -> Result<Permit, Closed> {
        match self.0 {
            TicketState::Admitted(permit) => Ok(permit),
            TicketState::Queued(pending) => pending.wait().await.map_err(|_| Closed),
        }
    }
}

/// An async caller's place in the queue.
struct PendingAdmission {
    gate: Arc<Gate>,
    id: u64,
    weight: u64,
    rx: Option<oneshot::Receiver<Grant>>,
    start: Instant,
}

impl PendingAdmission {
    async fn wait(mut self) -> Result<Permit, Refused> {
        let rx = self.rx.as_mut().expect("set until resolved");
        let grant = rx.await;
        self.rx = None;
        match grant {
            Ok(Grant::Admitted) => Ok(self.gate.admitted_after_wait(self.weight, self.start)),
            Ok(Grant::Closed) | Err(_) => Err(Refused::Closed),
        }
    }
}

impl Drop for PendingAdmission {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return; // resolved: the permit (if any) owns the units now
        };
        let mut s = self.gate.lock();
        for queue in &mut s.queues {
            if let Some(pos) = queue.iter().position(|w| w.id == self.id) {
                queue.remove(pos);
                return;
            }
        }
        drop(s);
        // Not queued any more: it was admitted (or the gate closed) before this caller saw it.
        if let Ok(Grant::Admitted) = rx.try_recv() {
            self.gate.release(self.weight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn a_full_queue_refuses_callers_within_its_bound_only() {
        let gate = Gate::new(1);
        gate.set_queue_capacity(Some(2));
        let _running = gate.acquire_blocking(1, Priority::Normal).unwrap();
        let first = gate.reserve(1, Priority::Normal).unwrap();
        let second = gate.reserve(1, Priority::High).unwrap();
        assert_eq!(
            gate.reserve(1, Priority::Critical).unwrap_err(),
            Refused::Full
        );
        assert_eq!(
            gate.acquire_blocking_within_bound(1, Priority::Normal)
                .unwrap_err(),
            Refused::Full
        );
        let stats = gate.stats();
        assert_eq!((stats.queued_total(), stats.refused_full), (2, 2));
        // A caller that cannot be refused still queues.
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.acquire_blocking(1, Priority::Low).is_ok());
        while gate.stats().queued_total() < 3 {
            std::thread::yield_now();
        }
        // A dropped ticket leaves the queue.
        drop(first);
        assert_eq!(gate.stats().queued_total(), 2);
        drop(_running);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let admitted = rt.block_on(second.admitted()).unwrap();
        drop(admitted);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn admits_up_to_capacity_then_queues() {
        let gate = Gate::new(2);
        let a = gate.acquire_blocking(1, Priority::Normal).unwrap();
        let _b = gate.acquire_blocking(1, Priority::Normal).unwrap();
        assert_eq!(gate.stats().in_use, 2);
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.acquire_blocking(1, Priority::Normal).is_ok());
        while gate.stats().queued_total() == 0 {
            std::thread::yield_now();
        }
        drop(a);
        assert!(waiter.join().unwrap());
        let stats = gate.stats();
        assert_eq!((stats.in_use, stats.completed), (1, 2));
    }

    #[test]
    fn higher_priority_waiters_are_admitted_first() {
        let gate = Gate::new(1);
        let holder = gate.acquire_blocking(1, Priority::Normal).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, p) in [
            Priority::Batch,
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ]
        .into_iter()
        .enumerate()
        {
            let (g, order) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _p = g.acquire_blocking(1, p).unwrap();
                order.lock().unwrap().push(p);
            }));
            while gate.stats().queued_total() < i as u64 + 1 {
                std::thread::yield_now();
            }
        }
        drop(holder);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Low,
                Priority::Batch
            ]
        );
    }

    #[test]
    fn weights_never_exceed_capacity() {
        let gate = Gate::new(100);
        let peak = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (g, peak, held) = (gate.clone(), peak.clone(), held.clone());
                std::thread::spawn(move || {
                    for j in 0..200u64 {
                        let w = 10 + (i * 7 + j * 13) % 60;
                        let _p = g.acquire_blocking(w, Priority::Normal).unwrap();
                        let now = held.fetch_add(w, Relaxed) + w;
                        peak.fetch_max(now, Relaxed);
                        std::thread::yield_now();
                        held.fetch_sub(w, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Relaxed) <= 100, "peak {}", peak.load(Relaxed));
        assert!(peak.load(Relaxed) > 60, "never ran concurrently");
        assert_eq!(gate.stats().in_use, 0);
    }

    #[test]
    fn a_weight_above_capacity_is_clamped_instead_of_waiting_forever() {
        let gate = Gate::new(10);
        let p = gate.acquire_blocking(1_000, Priority::Normal).unwrap();
        assert_eq!(gate.stats().in_use, 10);
        drop(p);
        assert_eq!(gate.stats().in_use, 0);
    }

    #[test]
    fn close_wakes_waiters_and_refuses_new_callers() {
        let gate = Gate::new(1);
        let _held = gate.acquire_blocking(1, Priority::Normal).unwrap();
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.acquire_blocking(1, Priority::Normal));
        while gate.stats().queued_total() == 0 {
            std::thread::yield_now();
        }
        gate.close();
        assert_eq!(waiter.join().unwrap().unwrap_err(), Closed);
        assert_eq!(
            gate.acquire_blocking(1, Priority::High).unwrap_err(),
            Closed
        );
        assert_eq!(gate.stats().rejected, 2);
    }

    #[test]
    fn held_gate_admits_only_when_idle() {
        let gate = Gate::new(10);
        gate.set_held(true);
        let first = gate.acquire_blocking(1, Priority::Normal).unwrap();
        let admitted = Arc::new(AtomicUsize::new(0));
        let (g, a) = (gate.clone(), admitted.clone());
        let t = std::thread::spawn(move || {
            let _p = g.acquire_blocking(1, Priority::Normal).unwrap();
            a.fetch_add(1, Relaxed);
        });
        while gate.stats().queued_total() == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(admitted.load(Relaxed), 0, "admitted while held");
        gate.set_held(false);
        t.join().unwrap();
        assert_eq!(admitted.load(Relaxed), 1);
        drop(first);
    }

    #[tokio::test]
    async fn a_cancelled_async_waiter_leaks_nothing() {
        let gate = Gate::new(1);
        let held = gate.acquire(1, Priority::Normal).await.unwrap();
        let g = gate.clone();
        let waiting = tokio::spawn(async move { g.acquire(1, Priority::Normal).await.map(drop) });
        while gate.stats().queued_total() == 0 {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(gate.stats().queued_total(), 0);
        drop(held);
        assert_eq!(gate.stats().in_use, 0);
        // The gate still admits.
        let _again = gate.acquire(1, Priority::Normal).await.unwrap();
    }

    #[tokio::test]
    async fn an_async_waiter_dropped_after_its_grant_returns_the_units() {
        let gate = Gate::new(1);
        let held = gate.acquire(1, Priority::Normal).await.unwrap();
        let pending = Box::pin(gate.acquire(1, Priority::Normal));
        let mut pending = pending;
        // Poll once so it queues.
        assert!(futures_poll_once(&mut pending).is_none());
        drop(held); // grants the queued waiter
        assert_eq!(gate.stats().in_use, 1);
        drop(pending); // never looked at its grant
        assert_eq!(gate.stats().in_use, 0);
    }

    fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
