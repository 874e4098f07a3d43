//! The waiting rule on a 2-thread CPU pool (docs/pools.md): a leader queued outside a full
//! pool is not waited on by the pool's own threads, and recursive cached cpu functions called
//! from more threads than the pool has finish. Each of these deadlocked before the rule.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};

fn runtime() -> &'static optimize::Runtime {
    install::once(&[("pools.cpu_threads", "2")])
}

/// The scenarios read the pool's counters, so they take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Released by the test once the scene is set.
static GO: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn wait_for_go() {
    let (lock, cv) = &GO;
    let guard = lock.lock().unwrap();
    let (guard, timeout) = cv
        .wait_timeout_while(guard, bounded::BOUND, |go| !*go)
        .unwrap();
    assert!(*guard && !timeout.timed_out(), "never released");
}

static INNER: AtomicU32 = AtomicU32::new(0);

#[optimize::cpu]
fn outer(i: u32) -> u32 {
    wait_for_go();
    inner(0) + i
}

#[optimize::cpu]
fn inner(x: u32) -> u32 {
    INNER.fetch_add(1, SeqCst);
    x + 100
}

#[test]
fn a_leader_queued_outside_a_full_pool_is_not_waited_on_by_the_pool() {
    let _serial = serial();
    let pools = runtime().pools().clone();
    // Two outer calls occupy both CPU threads.
    let outers: Vec<_> = (1..=2)
        .map(|i| std::thread::spawn(move || outer(i)))
        .collect();
    bounded::until("both outer calls admitted", || {
        pools.cpu().gate().stats().in_use == 2
    });
    // A plain thread becomes the leader of inner(0) and queues at the full gate.
    let plain = std::thread::spawn(|| inner(0));
    bounded::until("the plain call queued", || {
        pools.cpu().gate().stats().queued_total() == 1
    });
    // The outer bodies now call inner(0) from inside the pool.
    *GO.0.lock().unwrap() = true;
    GO.1.notify_all();
    let results = bounded::within("outer and inner calls", move || {
        let outer: Vec<u32> = outers.into_iter().map(|t| t.join().unwrap()).collect();
        (outer, plain.join().unwrap())
    });
    assert_eq!(results, (vec![101, 102], 100));
    assert!(INNER.load(SeqCst) >= 1);
    // The value computed inside the pool was stored: the next call is a hit.
    let hits = inner_cache().stats().hits();
    assert_eq!(inner(0), 100);
    assert_eq!(inner_cache().stats().hits(), hits + 1);
}

#[optimize::cpu]
fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[test]
fn recursive_cached_fib_from_eight_threads_finishes() {
    let _serial = serial();
    runtime();
    let results = bounded::within("eight threads of fib", || {
        let threads: Vec<_> = (0..8u64)
            .map(|i| std::thread::spawn(move || fib(40 + i % 4)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    let expected = [102_334_155, 165_580_141, 267_914_296, 433_494_437];
    for (i, r) in results.iter().enumerate() {
        assert_eq!(*r, expected[i % 4]);
    }
}
