//! The waiting rule through io limits (docs/pools.md): recursion under a `concurrency` limit
//! and beyond the global io limit finishes, sync and async; a waiter that ran its own body
//! after a leader's `Err` stores its success. Each recursion hung before the rule.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

fn runtime() -> &'static optimize::Runtime {
    install::once(&[("pools.io_concurrency", "8")])
}

#[optimize::io(concurrency = 2)]
fn fib_limited(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_limited(n - 1) + fib_limited(n - 2)
    }
}

#[optimize::io(concurrency = 2)]
async fn fib_limited_async(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        Box::pin(fib_limited_async(n - 1)).await + Box::pin(fib_limited_async(n - 2)).await
    }
}

#[test]
fn recursion_through_a_concurrency_limit_finishes() {
    runtime();
    assert_eq!(
        bounded::within("sync fib", || fib_limited(60)),
        1_548_008_755_920
    );
    let out = bounded::within("async fib", || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fib_limited_async(60))
    });
    assert_eq!(out, 1_548_008_755_920);
    let limit = fib_limited_cache().concurrency_stats().unwrap();
    assert_eq!(limit.in_use, 0, "every permit was given back");
}

#[optimize::io]
fn depth(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        depth(n - 1) + 1
    }
}

#[optimize::io]
async fn depth_async(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        Box::pin(depth_async(n - 1)).await + 1
    }
}

#[test]
fn recursion_deeper_than_the_global_io_limit_finishes() {
    runtime();
    assert_eq!(runtime().pools().io().gate().stats().capacity, 8);
    assert_eq!(bounded::within("sync depth", || depth(200)), 200);
    let out = bounded::within("async depth", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(depth_async(200))
    });
    assert_eq!(out, 200);
}

static FLAKY: AtomicU32 = AtomicU32::new(0);
static LEADER_IN: Mutex<()> = Mutex::new(());

/// The first call (the leader) fails after the others joined; the rest succeed.
#[optimize::io]
fn flaky(x: u32) -> Result<u32, String> {
    let n = FLAKY.fetch_add(1, SeqCst);
    if n == 0 {
        let _hold = LEADER_IN.lock().unwrap();
        Err("the first attempt fails".into())
    } else {
        Ok(x)
    }
}

#[test]
fn a_waiters_success_after_the_leaders_error_is_stored() {
    runtime();
    let held = LEADER_IN.lock().unwrap();
    let leader = std::thread::spawn(|| flaky(7));
    bounded::until("the leader running", || FLAKY.load(SeqCst) == 1);
    let waiter = std::thread::spawn(|| flaky(7));
    // Give the waiter time to join the flight; it is correct either way, but joined it
    // exercises the waiter's path.
    std::thread::sleep(Duration::from_millis(50));
    drop(held);
    let (l, w) = bounded::within("leader and waiter", move || {
        (leader.join().unwrap(), waiter.join().unwrap())
    });
    assert!(l.is_err());
    assert_eq!(w, Ok(7));
    let runs = FLAKY.load(SeqCst);
    assert_eq!(flaky(7), Ok(7));
    assert_eq!(FLAKY.load(SeqCst), runs, "the waiter's success was stored");
    let s = flaky_cache().stats();
    assert_eq!(s.hits(), 1, "{s:?}");
}
