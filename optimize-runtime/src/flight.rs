//! Single-flight: concurrent misses on one key share one execution (docs/architecture.md).
//!
//! The first caller of a cold key becomes the *leader* and runs the body; later callers become
//! *waiters* and receive the leader's value. The leader holds a [`Lead`] guard:
//!
//! - completed with a value: every waiter gets a clone;
//! - completed as "not cacheable" (`Err`, `None`): each waiter runs its own body, since an
//!   error value cannot be cloned to share;
//! - dropped while unwinding from a panic: every waiter panics too, so nobody hangs;
//! - dropped otherwise (the leading future was cancelled): one waiter takes over as leader.
//!
//! A caller that would wait on a flight its own thread is leading (a function calling itself
//! with the same key) gets a clear panic instead of a deadlock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::key::{ArgsKey, PrehashedBuild};

const SHARDS: usize = 16;

/// The state a flight ends in, as seen by its waiters.
#[derive(Debug)]
pub enum Settled<V> {
    /// The leader produced a cacheable value; waiters share it.
    Value(V),
    /// The leader's result is not shared (an `Err` or `None`); each waiter runs its own body.
    NotShared,
    /// The leader's body failed and it served a value kept past its expiry (fail-safe);
    /// waiters share it.
    Stale(V),
    /// The leader panicked.
    Panicked,
}

enum State<V> {
    Running,
    Done(Settled<V>),
    /// The leader went away without a result (cancelled); a waiter should lead instead.
    Abandoned,
}

struct Flight<V> {
    state: Mutex<State<V>>,
    /// What the leader's call chain holds once its body is admitted (see
    /// [`mark_leader_admitted`]); [`NOT_ADMITTED`] until then.
    admission: Arc<AtomicU8>,
    /// Wakes blocked sync waiters.
    condvar: Condvar,
    /// Wakes async waiters; works on any executor.
    notify: tokio::sync::Notify,
}

impl<V> Flight<V> {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::Running),
            admission: Arc::new(AtomicU8::new(NOT_ADMITTED)),
            condvar: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        // The state is only ever replaced whole, so a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as *const () as usize
    }
}

/// Keys are uniform hashes already: the map folds them instead of hashing them again.
type Shard<V> = Mutex<HashMap<ArgsKey, Arc<Flight<V>>, PrehashedBuild>>;

/// The in-progress computations of one function, sharded by key.
pub struct Flights<V> {
    shards: Box<[Shard<V>]>,
}

/// What a caller becomes when it joins the flight for a key.
pub enum Role<'a, V: Clone> {
    /// Run the body, then complete the guard.
    Leader(Lead<'a, V>),
    /// Wait with [`Wait::wait_blocking`] or [`Wait::wait`].
    Waiter(Wait<V>),
}

impl<V: Clone> Flights<V> {
    /// An empty set of flights.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    fn shard(
        &self,
        key: ArgsKey,
    ) -> MutexGuard<'_, HashMap<ArgsKey, Arc<Flight<V>>, PrehashedBuild>> {
        self.shards[(key.0 as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the flight for `key`, starting one if none is running.
    pub fn join(&self, key: ArgsKey) -> Role<'_, V> {
        let mut shard = self.shard(key);
        if let Some(flight) = shard.get(&key) {
            return Role::Waiter(Wait {
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight::new());
        shard.insert(key, flight.clone());
        Role::Leader(Lead {
            flights: self,
            key,
            flight,
            done: false,
        })
    }

    /// Number of flights in progress.
    pub fn in_progress(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl<V: Clone> Default for Flights<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A flight's admission before its leader's body was admitted.
pub const NOT_ADMITTED: u8 = u8::MAX;

thread_local! {
    /// Flights whose leader is running on this thread right now (nested when a body calls
    /// other managed functions): identity (never dereferenced) and admission cell.
    static LEADING: RefCell<Vec<(usize, Arc<AtomicU8>)>> = const { RefCell::new(Vec::new()) };
}

/// Marks a flight as led by the current thread while alive.
struct LeadingMark(usize);

impl LeadingMark {
    fn enter(id: usize, admission: &Arc<AtomicU8>) -> Self {
        LEADING.with(|l| l.borrow_mut().push((id, admission.clone())));
        Self(id)
    }
}

impl Drop for LeadingMark {
    fn drop(&mut self) {
        LEADING.with(|l| {
            let mut l = l.borrow_mut();
            if let Some(pos) = l.iter().rposition(|(id, _)| *id == self.0) {
                l.remove(pos);
            }
        });
    }
}

fn led_by_this_thread(id: usize) -> bool {
    LEADING.with(|l| l.borrow().iter().any(|(i, _)| *i == id))
}

/// Records that the body of the flight this thread is leading right now (the innermost one)
/// was admitted, with `held` the admissions its call chain holds (the pools' bit set). A
/// waiter that holds admissions itself reads it to decide whether it may wait (the waiting
/// rule in docs/pools.md). A no-op outside a leader's body.
pub fn mark_leader_admitted(held: u8) {
    LEADING.with(|l| {
        if let Some((_, cell)) = l.borrow().last() {
            // Only the first admission counts: retried attempts re-enter with the same chain.
            let _ = cell.compare_exchange(NOT_ADMITTED, held, Relaxed, Relaxed);
        }
    });
}

/// The leader's obligation: complete the flight, or let the guard's drop release the waiters.
pub struct Lead<'a, V: Clone> {
    flights: &'a Flights<V>,
    key: ArgsKey,
    flight: Arc<Flight<V>>,
    done: bool,
}

impl<V: Clone> Lead<'_, V> {
    /// Runs `body` as this flight's leader (so a same-key call inside it is detected).
    pub fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        let _mark = LeadingMark::enter(self.flight.id(), &self.flight.admission);
        body()
    }

    /// Awaits `body` as this flight's leader; the mark is held only while it is being polled,
    /// which is exactly when a nested same-key call could start waiting.
    pub async fn run_async<F: std::future::Future>(&self, body: F) -> F::Output {
        let id = self.flight.id();
        let admission = self.flight.admission.clone();
        let mut body = pin!(body);
        std::future::poll_fn(|cx| {
            let _mark = LeadingMark::enter(id, &admission);
            body.as_mut().poll(cx)
        })
        .await
    }

    /// Ends the flight and wakes every waiter.
    pub fn complete(self, settled: Settled<V>) {
        self.complete_with(|| settled);
    }

    /// Ends the flight; `settled` is only called when somebody is waiting (it usually clones
    /// the value, which is wasted when nobody is).
    pub fn complete_with(mut self, settled: impl FnOnce() -> Settled<V>) {
        self.done = true;
        self.unregister();
        // Unregistered: no new waiter can join, so the count says whether any exist.
        let state = if Arc::strong_count(&self.flight) > 1 {
            State::Done(settled())
        } else {
            State::Done(Settled::NotShared)
        };
        self.publish(state);
    }

    fn finish(&mut self, state: State<V>) {
        self.done = true;
        self.unregister();
        self.publish(state);
    }

    /// Removes the flight from the map first: a caller arriving after this point starts
    /// afresh (and, for a value, finds it in L1, which the leader filled before completing).
    fn unregister(&self) {
        let mut shard = self.flights.shard(self.key);
        if shard
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            shard.remove(&self.key);
        }
    }

    fn publish(&self, state: State<V>) {
        *self.flight.lock() = state;
        // Called after `unregister`, so only existing waiters hold the flight. Without them,
        // skip the wake-ups: std's `Condvar::notify_all` makes a futex syscall even when
        // nobody waits, which was most of the cost of a shared-tier hit.
        if Arc::strong_count(&self.flight) > 1 {
            self.flight.condvar.notify_all();
            self.flight.notify.notify_waiters();
        }
    }
}

impl<V: Clone> Drop for Lead<'_, V> {
    fn drop(&mut self) {
        if !self.done {
            let state = if std::thread::panicking() {
                State::Done(Settled::Panicked)
            } else {
                State::Abandoned
            };
            self.finish(state);
        }
    }
}

/// What a waiter learns when the flight it waited on ends.
#[derive(Debug)]
pub enum Waited<V> {
    /// The flight ended; see [`Settled`].
    Settled(Settled<V>),
    /// The leader was cancelled; join again (one waiter will lead).
    Retry,
}

/// A waiter's handle on a flight.
pub struct Wait<V> {
    flight: Arc<Flight<V>>,
}

impl<V: Clone> Wait<V> {
    /// What the leader's call chain held when its body was admitted; `None` while the
    /// leader is still looking up the shared tiers or queued for admission.
    pub fn leader_admission(&self) -> Option<u8> {
        match self.flight.admission.load(Relaxed) {
            NOT_ADMITTED => None,
            held => Some(held),
        }
    }

    fn read(state: &State<V>) -> Option<Waited<V>> {
        match state {
            State::Running => None,
            State::Abandoned => Some(Waited::Retry),
            State::Done(Settled::Value(v)) => Some(Waited::Settled(Settled::Value(v.clone()))),
            State::Done(Settled::Stale(v)) => Some(Waited::Settled(Settled::Stale(v.clone()))),
            State::Done(Settled::NotShared) => Some(Waited::Settled(Settled::NotShared)),
            State::Done(Settled::Panicked) => Some(Waited::Settled(Settled::Panicked)),
        }
    }

    /// Panics if this thread leads the flight: waiting would never end.
    fn check_self_wait(&self, fn_name: &str) {
        if led_by_this_thread(self.flight.id()) {
            panic!(
                "optimize: `{fn_name}` called itself with the same cache key while computing it, \
                 so it would wait for itself forever; give the inner call different arguments \
                 or a different `key = ...`"
            );
        }
    }

    /// Blocks the thread until the flight ends.
    pub fn wait_blocking(self, fn_name: &str) -> Waited<V> {
        self.check_self_wait(fn_name);
        let mut state = self.flight.lock();
        loop {
            if let Some(w) = Self::read(&state) {
                return w;
            }
            state = self
                .flight
                .condvar
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits without blocking the thread until the flight ends.
    pub async fn wait(self, fn_name: &str) -> Waited<V> {
        self.check_self_wait(fn_name);
        loop {
            // Register before reading the state, so a completion in between is not missed.
            let notified = self.flight.notify.notified();
            if let Some(w) = Self::read(&self.flight.lock()) {
                return w;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn second_caller_waits_and_shares_the_value() {
        let flights = Flights::<u32>::new();
        let Role::Leader(lead) = flights.join(ArgsKey(1)) else {
            panic!("first caller must lead")
        };
        let Role::Waiter(wait) = flights.join(ArgsKey(1)) else {
            panic!("second caller must wait")
        };
        // Another key is independent.
        assert!(matches!(flights.join(ArgsKey(2)), Role::Leader(_)));
        lead.complete(Settled::Value(7));
        assert!(matches!(
            wait.wait_blocking("f"),
            Waited::Settled(Settled::Value(7))
        ));
        assert_eq!(flights.in_progress(), 0);
    }

    #[test]
    fn dropped_leader_lets_a_waiter_retry() {
        let flights = Flights::<u32>::new();
        let Role::Leader(lead) = flights.join(ArgsKey(1)) else {
            panic!()
        };
        let Role::Waiter(wait) = flights.join(ArgsKey(1)) else {
            panic!()
        };
        drop(lead);
        assert!(matches!(wait.wait_blocking("f"), Waited::Retry));
        assert!(matches!(flights.join(ArgsKey(1)), Role::Leader(_)));
    }

    #[test]
    fn leader_panic_reaches_blocked_waiters() {
        let flights = Arc::new(Flights::<u32>::new());
        let barrier = Arc::new(Barrier::new(2));
        let leader = {
            let (flights, barrier) = (flights.clone(), barrier.clone());
            std::thread::spawn(move || {
                let Role::Leader(lead) = flights.join(ArgsKey(1)) else {
                    panic!()
                };
                barrier.wait();
                lead.run(|| -> u32 { panic!("boom") })
            })
        };
        barrier.wait();
        let waited = match flights.join(ArgsKey(1)) {
            Role::Waiter(w) => w.wait_blocking("f"),
            // The leader may already have finished; then there is nothing to wait for.
            Role::Leader(_) => Waited::Settled(Settled::Panicked),
        };
        assert!(leader.join().is_err());
        assert!(matches!(waited, Waited::Settled(Settled::Panicked)));
    }

    #[test]
    fn waiting_on_own_flight_panics_with_a_clear_message() {
        let flights = Flights::<u32>::new();
        let Role::Leader(lead) = flights.join(ArgsKey(1)) else {
            panic!()
        };
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lead.run(|| match flights.join(ArgsKey(1)) {
                Role::Waiter(w) => {
                    w.wait_blocking("fib");
                }
                Role::Leader(_) => unreachable!(),
            })
        }))
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("`fib` called itself with the same cache key"),
            "{msg}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_waiters_all_wake() {
        let flights = Arc::new(Flights::<u32>::new());
        let Role::Leader(lead) = flights.join(ArgsKey(9)) else {
            panic!()
        };
        let (joined, woke) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (flights, joined, woke) = (flights.clone(), joined.clone(), woke.clone());
            tasks.push(tokio::spawn(async move {
                let Role::Waiter(w) = flights.join(ArgsKey(9)) else {
                    panic!("must wait")
                };
                joined.fetch_add(1, Ordering::SeqCst);
                if let Waited::Settled(Settled::Value(5)) = w.wait("f").await {
                    woke.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        while joined.load(Ordering::SeqCst) < 100 {
            tokio::task::yield_now().await;
        }
        lead.complete(Settled::Value(5));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(woke.load(Ordering::SeqCst), 100);
    }
}
