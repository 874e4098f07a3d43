//! Fail-safe through the attribute, on the mock clock: once a value exists, a body that fails
//! half the time never shows a failure to a caller; the stale value is served for the
//! throttle before the body is tried again; without a value, or past the window, the failure
//! reaches the caller. A `[functions]` table turns fail-safe on for a function, and one that
//! asks it of a function whose entries never expire is refused.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::config::FnOverride;
use optimize::time::{Clock, MockClock};
use optimize::Outcome;

static CALLS: AtomicU64 = AtomicU64::new(0);
/// When set, every other call of the body fails.
static FLAKY: AtomicBool = AtomicBool::new(false);
/// When set, every call of the body fails.
static DOWN: AtomicBool = AtomicBool::new(false);

fn upstream(id: u64) -> Result<u64, String> {
    let n = CALLS.fetch_add(1, SeqCst);
    if DOWN.load(SeqCst) || (FLAKY.load(SeqCst) && n.is_multiple_of(2)) {
        return Err(format!("upstream failed on call {n}"));
    }
    Ok(id * 10 + n)
}

#[optimize::io(ttl = "10s", fail_safe = "1h", fail_safe_throttle = "5s", tiers = "l1")]
fn quote(id: u64) -> Result<u64, String> {
    upstream(id)
}

/// Fail-safe comes from the configuration's table only.
#[optimize::io(ttl = "10s", tiers = "l1")]
fn rate(id: u64) -> Option<u64> {
    upstream(id).ok()
}

/// Never expires: a table asking fail-safe of it is refused.
#[optimize::io(tiers = "l1")]
fn forever(id: u64) -> u64 {
    id
}

static BUSY_RUNS: AtomicU64 = AtomicU64::new(0);
static BUSY_OPEN: std::sync::Mutex<bool> = std::sync::Mutex::new(true);
static BUSY_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

fn busy_gate(open: bool) {
    *BUSY_OPEN.lock().unwrap() = open;
    BUSY_CHANGED.notify_all();
}

/// One call at a time; with one call waiting already, a stale value is served instead.
#[optimize::io(
    ttl = "10s",
    fail_safe = "1h",
    concurrency = 1,
    stale_if_busy = 1,
    tiers = "l1"
)]
fn busy(id: u64) -> Result<u64, String> {
    let n = BUSY_RUNS.fetch_add(1, SeqCst);
    let open = BUSY_OPEN.lock().unwrap();
    let (open, _) = BUSY_CHANGED
        .wait_timeout_while(open, Duration::from_secs(20), |o| !*o)
        .unwrap();
    assert!(*open, "the gate stayed closed for 20 s");
    Ok(id * 10 + n)
}

/// The message of an install refused because of `o` in the table of `path`.
fn refusal(path: &str, o: FnOverride) -> String {
    optimize::install(install::quiet().function(path, o))
        .map(|_| ())
        .expect_err("refused")
        .to_string()
}

fn install() -> (optimize::RuntimeGuard, MockClock) {
    let (clock, mock) = Clock::mock();
    let guard = optimize::install(install::quiet().clock(clock).function(
        "fail_safe::rate",
        FnOverride {
            fail_safe: Some(Duration::from_secs(60)),
            ..FnOverride::default()
        },
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    (guard, mock)
}

#[test]
fn fail_safe_serves_the_stale_value_when_the_body_fails() {
    // A table asking fail-safe of a function without expiry is refused, naming the key.
    let refused = refusal(
        "fail_safe::forever",
        FnOverride {
            fail_safe: Some(Duration::from_secs(60)),
            ..FnOverride::default()
        },
    );
    assert!(
        refused.contains("functions.\"fail_safe::forever\".fail_safe")
            && refused.contains("never expire"),
        "{refused}"
    );
    // So is one for a function that keeps nothing in L1.
    let refused = refusal(
        "fail_safe::rate",
        FnOverride {
            fail_safe: Some(Duration::from_secs(60)),
            tiers: Some(optimize::TierSet {
                l1: false,
                l2: true,
                l3: false,
            }),
            ..FnOverride::default()
        },
    );
    assert!(
        refused.contains("functions.\"fail_safe::rate\".fail_safe") && refused.contains("L1"),
        "{refused}"
    );

    // And one setting soft_timeout or refresh_ahead for a function whose attribute has none.
    let refused = refusal(
        "fail_safe::quote",
        FnOverride {
            soft_timeout: Some(Duration::from_millis(100)),
            refresh_ahead: Some(0.8),
            ..FnOverride::default()
        },
    );
    for key in ["soft_timeout", "refresh_ahead"] {
        assert!(
            refused.contains(&format!("functions.\"fail_safe::quote\".{key}"))
                && refused.contains("attribute"),
            "{refused}"
        );
    }

    let (guard, mock) = install();
    assert_eq!(forever(3), 3);

    // No value yet: the failure reaches the caller.
    DOWN.store(true, SeqCst);
    assert!(quote(1).is_err(), "nothing stale to serve");
    DOWN.store(false, SeqCst);
    let first = quote(1).expect("the first value");
    assert_eq!(quote(1), Ok(first), "a hit");

    // Past the ttl, the body fails every other call: no caller ever sees a failure.
    FLAKY.store(true, SeqCst);
    let mut served = Vec::new();
    for _ in 0..400 {
        mock.increment(Duration::from_secs(6));
        match quote(1) {
            Ok(v) => served.push(v),
            Err(e) => panic!("a caller saw a failure with a stale value at hand: {e}"),
        }
    }
    FLAKY.store(false, SeqCst);
    let s = quote_cache().stats();
    assert!(s.count(Outcome::Stale) > 50, "{s:?}");
    assert!(
        s.count(Outcome::Computed) > 50,
        "fresh values still replace it: {s:?}"
    );
    assert_eq!(
        s.errors(),
        1,
        "only the call before any value failed: {s:?}"
    );
    assert!(
        served.windows(2).any(|w| w[0] != w[1]),
        "values were refreshed"
    );
    let text = optimize::monitor::export::prometheus_text(std::sync::Arc::new(
        optimize::runtime().snapshot(),
    ));
    let stale_line = text
        .lines()
        .find(|l| l.contains("fail_safe::quote") && l.contains("outcome=\"stale\""))
        .unwrap_or_else(|| panic!("no stale outcome in /metrics:\n{text}"));
    assert!(
        stale_line.ends_with(&format!(" {}.0", s.count(Outcome::Stale))),
        "{stale_line}"
    );

    // The throttle: once the stale value is served for a failure, it is served for 5 s
    // without calling the body again; then the body is tried once more.
    mock.increment(Duration::from_secs(11));
    DOWN.store(true, SeqCst);
    let stale = quote(1).expect("stale");
    let calls = CALLS.load(SeqCst);
    for _ in 0..10 {
        mock.increment(Duration::from_millis(400));
        assert_eq!(quote(1), Ok(stale));
    }
    assert_eq!(
        CALLS.load(SeqCst),
        calls,
        "within the throttle: the body is not called"
    );
    mock.increment(Duration::from_secs(2));
    assert_eq!(quote(1), Ok(stale));
    assert_eq!(
        CALLS.load(SeqCst),
        calls + 1,
        "after it: tried again (and failed)"
    );

    // Past the fail-safe window (1 h after the ttl), the failure reaches the caller.
    mock.increment(Duration::from_secs(3700));
    assert!(quote(1).is_err(), "past the window");

    // The table's fail-safe: `None` is a failure too, and the stale value stands in for it.
    DOWN.store(false, SeqCst);
    let value = rate(2).expect("a value");
    mock.increment(Duration::from_secs(11));
    DOWN.store(true, SeqCst);
    assert_eq!(rate(2), Some(value), "stale for None");
    assert_eq!(rate_cache().stats().count(Outcome::Stale), 1);
    DOWN.store(false, SeqCst);

    // Stale if busy: one call holds the function's only slot, one more waits for it; a call
    // with a stale value at hand is then answered with it at once, without queueing.
    let first = busy(1).unwrap();
    mock.increment(Duration::from_secs(11));
    busy_gate(false);
    let holder = std::thread::spawn(|| busy(2));
    bounded::until("the first call holds the slot", || {
        BUSY_RUNS.load(SeqCst) == 2
    });
    let queued = std::thread::spawn(|| busy(3));
    bounded::until("a second call waits", || {
        busy_cache()
            .concurrency_stats()
            .is_some_and(|s| s.queued_total() == 1)
    });
    assert_eq!(busy(1), Ok(first), "stale, without queueing");
    assert_eq!(BUSY_RUNS.load(SeqCst), 2, "its body did not run");
    assert_eq!(busy_cache().stats().count(Outcome::Stale), 1);
    busy_gate(true);
    assert!(holder.join().unwrap().is_ok() && queued.join().unwrap().is_ok());
    // Not busy any more: the body runs.
    assert_ne!(busy(1), Ok(first));

    // Invalidation removes the value: nothing stale survives it.
    quote_invalidate(1);
    DOWN.store(true, SeqCst);
    assert!(quote(1).is_err(), "invalidated: nothing to serve");
    DOWN.store(false, SeqCst);
    drop(guard);
}
