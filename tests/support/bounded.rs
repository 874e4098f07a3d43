//! Bounded waiting for tests: a deadlock fails the test instead of hanging the run.

#![allow(dead_code, unreachable_pub)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The bound on any one scenario: far beyond what a working run needs (milliseconds).
pub const BOUND: Duration = Duration::from_secs(20);

/// Runs `f` on a thread with a large stack (recursive managed calls nest deeply) and returns
/// its result, or panics naming `what` if it does not finish within [`BOUND`].
pub fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(BOUND) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {BOUND:?} (deadlock?)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Polls `condition` until it holds, or panics naming `what` after [`BOUND`].
pub fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Awaits `fut`, or panics naming `what` if it does not finish within [`BOUND`] (a deadlock
/// in async code fails the test instead of hanging the run).
pub async fn within_async<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still running after {BOUND:?} (deadlock?)"),
    }
}
