//! Soft timeouts and refresh-ahead through the attribute, on the mock clock (expiry) with real
//! waits only where a body must be held back: a hanging body lets its callers go with the
//! stale value and refreshes the cache when it finishes; a hot key under 200 concurrent
//! callers is refreshed once per window in the background and never makes a caller wait.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use optimize::config::FnOverride;
use optimize::time::{Clock, MockClock};
use optimize::Outcome;

/// A gate bodies wait at while it is closed (bounded: a test that forgets to open it fails
/// instead of hanging).
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    const fn new() -> Self {
        Self {
            open: Mutex::new(true),
            changed: Condvar::new(),
        }
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .changed
            .wait_timeout_while(open, Duration::from_secs(20), |o| !*o)
            .unwrap();
        assert!(*open, "the gate stayed closed for 20 s");
    }

    async fn pass_async(&'static self) {
        tokio::task::spawn_blocking(move || self.pass())
            .await
            .unwrap();
    }
}

static GATE: Gate = Gate::new();
static RUNS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10s", fail_safe = "1h", soft_timeout = "50ms")]
async fn price(id: u64) -> Result<u64, String> {
    let n = RUNS.fetch_add(1, SeqCst);
    GATE.pass_async().await;
    Ok(id * 1000 + n)
}

#[optimize::io(ttl = "10s", fail_safe = "1h", soft_timeout = "50ms")]
fn price_sync(id: u64) -> Result<u64, String> {
    let n = RUNS.fetch_add(1, SeqCst);
    GATE.pass();
    Ok(id * 1000 + n)
}

static HOT_RUNS: AtomicU64 = AtomicU64::new(0);
static HOT_GATE: Gate = Gate::new();

#[optimize::io(ttl = "10s", refresh_ahead = 0.8)]
async fn hot(id: u64) -> u64 {
    let n = HOT_RUNS.fetch_add(1, SeqCst);
    HOT_GATE.pass_async().await;
    id * 1000 + n
}

/// Refresh-ahead turned off by a table.
#[optimize::io(ttl = "10s", refresh_ahead = 0.5)]
fn calm(id: u64) -> u64 {
    id + HOT_RUNS.fetch_add(1, SeqCst)
}

/// The order cpu bodies started in, and a gate that holds the one CPU thread.
static CPU_ORDER: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static HOG_GATE: Gate = Gate::new();

#[optimize::cpu(ttl = "10s", refresh_ahead = 0.8)]
fn crunch(id: u64) -> u64 {
    CPU_ORDER.lock().unwrap().push(id);
    id
}

#[optimize::cpu(cache = false)]
fn hog() {
    HOG_GATE.pass();
}

fn install() -> (optimize::RuntimeGuard, MockClock) {
    let (clock, mock) = Clock::mock();
    let config = install::quiet().set("pools.cpu_threads", "1");
    let guard = optimize::install(config.clock(clock).function(
        "freshness::calm",
        FnOverride {
            refresh_ahead: Some(0.0),
            ..FnOverride::default()
        },
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    (guard, mock)
}

#[test]
fn slow_bodies_and_hot_keys() {
    let (guard, mock) = install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // --- Soft timeout, async. ---
    let first = rt.block_on(price(1)).unwrap();
    mock.increment(Duration::from_secs(11));
    GATE.set(false);
    let runs = RUNS.load(SeqCst);
    // The body hangs at the gate: only the soft timeout can return this call.
    assert_eq!(
        rt.block_on(price(1)),
        Ok(first),
        "the stale value, within the soft timeout"
    );
    bounded::until("the body started", || RUNS.load(SeqCst) == runs + 1);
    // While it runs in the background, callers get the stale value at once; no second run.
    for _ in 0..20 {
        assert_eq!(rt.block_on(price(1)), Ok(first));
    }
    assert_eq!(RUNS.load(SeqCst), runs + 1, "one background run per key");
    // No stale value for this key: the caller waits for its body (opened from elsewhere).
    let opener = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        GATE.set(true);
    });
    let fresh_key = rt.block_on(price(2)).unwrap();
    opener.join().unwrap();
    assert_eq!(fresh_key / 1000, 2, "its own body's value");
    // The background run finished once the gate opened: the cache has the new value.
    bounded::until("the refreshed value served", || {
        rt.block_on(price(1)).is_ok_and(|v| v != first)
    });
    // The run stores its value before it records its outcome: wait for the record too.
    bounded::until("the background run recorded", || {
        price_cache().stats().count(Outcome::Refreshed) >= 1
    });
    let s = price_cache().stats();
    assert!(s.count(Outcome::Stale) >= 21, "{s:?}");
    assert_eq!(s.count(Outcome::Refreshed), 1, "{s:?}");
    assert_eq!(s.errors(), 0);

    // --- Soft timeout, sync: the same. ---
    let first = price_sync(3).unwrap();
    mock.increment(Duration::from_secs(11));
    GATE.set(false);
    assert_eq!(
        price_sync(3),
        Ok(first),
        "the stale value, within the soft timeout"
    );
    assert_eq!(
        price_sync(3),
        Ok(first),
        "still running: the stale value at once"
    );
    GATE.set(true);
    bounded::until("the refreshed value served (sync)", || {
        price_sync(3).is_ok_and(|v| v != first)
    });
    bounded::until("the background run recorded (sync)", || {
        price_sync_cache().stats().count(Outcome::Refreshed) >= 1
    });
    assert_eq!(price_sync_cache().stats().count(Outcome::Refreshed), 1);

    // --- Refresh-ahead: 200 concurrent callers of a hot key. ---
    let value = rt.block_on(hot(7));
    assert_eq!(HOT_RUNS.load(SeqCst), 1);
    for window in 1..=3u64 {
        // Past 80% of the ttl, with the body held back: every caller gets the current value
        // at once (none waits for the body), and one refresh starts.
        mock.increment(Duration::from_millis(8_500));
        HOT_GATE.set(false);
        let served = rt.block_on(async {
            let callers: Vec<_> = (0..200).map(|_| tokio::spawn(hot(7))).collect();
            let mut served = Vec::new();
            for c in callers {
                served.push(c.await.unwrap());
            }
            served
        });
        let expected = if window == 1 { value } else { served[0] };
        assert!(
            served.iter().all(|v| *v == expected),
            "window {window}: {served:?}"
        );
        bounded::until("the refresh started", || HOT_RUNS.load(SeqCst) > window);
        HOT_GATE.set(true);
        bounded::until("the refresh stored", || {
            hot_cache().stats().count(Outcome::Refreshed) == window
        });
        assert_eq!(
            HOT_RUNS.load(SeqCst),
            1 + window,
            "one refresh in window {window}"
        );
        assert_ne!(
            rt.block_on(hot(7)),
            expected,
            "window {window}: the refreshed value"
        );
    }
    let s = hot_cache().stats();
    assert_eq!(
        s.count(Outcome::HitL1),
        s.calls() - 1 - 3,
        "every call but the fill hit: {s:?}"
    );

    // A refresh waits for admission behind callers: with the one CPU thread held, a refresh
    // of `crunch(1)` and a caller's `crunch(2)` queue; the caller's runs first.
    crunch(1);
    HOG_GATE.set(false);
    let holder = std::thread::spawn(hog);
    let cpu = || optimize::runtime().pools().stats().cpu;
    bounded::until("the CPU thread held", || cpu().active == 1);
    mock.increment(Duration::from_millis(8_500));
    assert_eq!(crunch(1), 1, "a hit, refreshed in the background");
    bounded::until("the refresh queued", || {
        cpu().queued[optimize::Priority::Batch.index()] == 1
    });
    let caller = std::thread::spawn(|| crunch(2));
    bounded::until("the caller queued", || {
        cpu().queued[optimize::Priority::Normal.index()] == 1
    });
    HOG_GATE.set(true);
    holder.join().unwrap();
    assert_eq!(caller.join().unwrap(), 2);
    bounded::until("the refresh ran", || {
        crunch_cache().stats().count(Outcome::Refreshed) == 1
    });
    assert_eq!(
        *CPU_ORDER.lock().unwrap(),
        [1, 2, 1],
        "fill, caller, refresh"
    );

    // A table turned refresh-ahead off for `calm`: a late hit refreshes nothing.
    calm(1);
    let runs = HOT_RUNS.load(SeqCst);
    mock.increment(Duration::from_secs(8));
    calm(1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(HOT_RUNS.load(SeqCst), runs, "no refresh");
    drop(guard);
}
