//! Concurrent misses share one execution; panics and cancellation never leave waiters hanging.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

static SLOW: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn slow_lookup(id: u64) -> u64 {
    SLOW.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    id * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_cold_calls_run_the_body_once() {
    let calls: Vec<_> = (0..1000).map(|_| tokio::spawn(slow_lookup(7))).collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 70);
    }
    assert_eq!(SLOW.load(SeqCst), 1);
    let s = slow_lookup_cache().stats();
    assert_eq!(s.calls(), 1000);
    assert_eq!(s.executions(), 1);
    assert_eq!(s.count(optimize::Outcome::Computed), 1);
}

static SLOW_SYNC: AtomicUsize = AtomicUsize::new(0);

#[optimize::cpu]
fn slow_sync(id: u64) -> u64 {
    SLOW_SYNC.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    id + 1
}

#[test]
fn concurrent_sync_callers_share_one_execution() {
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                slow_sync(1)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 2);
    }
    assert_eq!(SLOW_SYNC.load(SeqCst), 1);
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn panics_once_slowly(id: u64) -> u64 {
    let n = PANICS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    if n == 0 {
        panic!("first execution fails");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_reaches_every_waiter_and_is_not_cached() {
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(panics_once_slowly(3)))
        .collect();
    let mut panicked = 0;
    for call in calls {
        // Bounded so that a hang fails the test instead of stalling the suite.
        let joined = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a waiter hung after the leader panicked");
        if joined.is_err() {
            panicked += 1;
        }
    }
    assert_eq!(panicked, 50, "the leader and all 49 waiters see the panic");
    assert_eq!(PANICS.load(SeqCst), 1);
    // Nothing was cached: the next call runs the body, which now succeeds.
    assert_eq!(panics_once_slowly(3).await, 3);
    assert_eq!(PANICS.load(SeqCst), 2);
    assert_eq!(
        panics_once_slowly_cache()
            .stats()
            .count(optimize::Outcome::Panicked),
        50
    );
}

static SYNC_PANICS: AtomicUsize = AtomicUsize::new(0);

#[optimize::cpu]
fn sync_panics(x: u32) -> u32 {
    SYNC_PANICS.fetch_add(1, SeqCst);
    if x == 0 {
        panic!("zero");
    }
    x
}

#[test]
fn a_sync_panic_reaches_the_caller_and_is_not_cached() {
    assert!(std::panic::catch_unwind(|| sync_panics(0)).is_err());
    assert!(std::panic::catch_unwind(|| sync_panics(0)).is_err());
    assert_eq!(SYNC_PANICS.load(SeqCst), 2);
    assert_eq!(sync_panics(1), 1);
}

static CANCELLED: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn cancellable(id: u64) -> u64 {
    CANCELLED.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_takes_over_when_the_leader_is_cancelled() {
    let leader = tokio::spawn(cancellable(5));
    // Let the leader start, then queue a waiter behind it.
    tokio::time::timeout(Duration::from_secs(20), async {
        while CANCELLED.load(SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the leader starts");
    let waiter = tokio::spawn(cancellable(5));
    tokio::time::sleep(Duration::from_millis(20)).await;
    leader.abort();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter hung after its leader was cancelled")
        .unwrap();
    assert_eq!(got, 5);
    assert_eq!(CANCELLED.load(SeqCst), 2, "the waiter ran the body itself");
}

static ERRS: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn fails_slowly(id: u64) -> Result<u64, String> {
    ERRS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    Err(format!("no {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_not_shared_each_waiter_gets_its_own() {
    let calls: Vec<_> = (0..10).map(|_| tokio::spawn(fails_slowly(1))).collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Err("no 1".to_string()));
    }
    let runs = ERRS.load(SeqCst);
    assert!(
        runs >= 2,
        "waiters run their own call after an Err (ran {runs})"
    );
    assert!(runs <= 10);
}
