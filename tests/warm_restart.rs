//! Warm restart: a process fills L3 and exits; the next one, with `l3.warm_l1 = 20`, has the
//! 20 newest entries of a function in L1 from its first call on — served as L1 hits without
//! running the body — and the older ones still in L3.

#[path = "support/child.rs"]
mod child;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use optimize::Outcome;

static RUNS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "1h", tiers = "l1,l3")]
fn report(id: u64) -> String {
    RUNS.fetch_add(1, SeqCst);
    format!("report {id}")
}

#[test]
#[ignore = "run in child processes by the test below"]
fn child() {
    assert!(
        std::env::var_os("WARM_CHILD").is_some(),
        "run as a child only"
    );
    if std::env::var_os("WARM_FILL").is_some() {
        for id in 0..50 {
            report(id);
            // Distinct creation times, so "newest" is well defined.
            std::thread::sleep(Duration::from_millis(3));
        }
        optimize::shutdown();
        println!("RESULT runs={}", RUNS.load(SeqCst));
        return;
    }
    // The first call (an old entry, read from L3: it writes nothing newer) creates the
    // function's cache, which starts the prefill.
    report(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while report_cache().len() < 21 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let prefilled = report_cache().len();
    let runs = RUNS.load(SeqCst);
    for id in 30..50 {
        assert_eq!(report(id), format!("report {id}"));
    }
    let l1_hits = report_cache().stats().count(Outcome::HitL1);
    let newest_ran = RUNS.load(SeqCst) - runs;
    assert_eq!(report(1), "report 1");
    // The first call's and this one.
    let older = report_cache().stats().count(Outcome::HitL3);
    println!(
        "RESULT prefilled={prefilled} l1_hits={l1_hits} newest_ran={newest_ran} older_from_l3={older}"
    );
}

#[test]
fn the_newest_l3_entries_are_in_l1_from_the_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let l3 = dir.path().display().to_string();
    let env = [
        ("OPTIMIZE_L3", "on"),
        ("OPTIMIZE_L3_DIR", l3.as_str()),
        ("OPTIMIZE_NAMESPACE", "warm-restart"),
    ];
    let mut fill = env.to_vec();
    fill.push(("WARM_FILL", "1"));
    let (out, _) = child::run("child", "WARM_CHILD", &fill);
    assert_eq!(child::result_field(&out, "runs"), "50");

    let mut warm = env.to_vec();
    warm.push(("OPTIMIZE_L3_WARM_L1", "20"));
    let (out, err) = child::run("child", "WARM_CHILD", &warm);
    let field = |name: &str| child::result_field(&out, name);
    assert_eq!(
        field("prefilled"),
        "21",
        "the first call's own value and 20 prefilled: {out}\n{err}"
    );
    assert_eq!(field("l1_hits"), "20", "the 20 newest are L1 hits: {out}");
    assert_eq!(field("newest_ran"), "0", "their body did not run: {out}");
    assert_eq!(
        field("older_from_l3"),
        "2",
        "older ones are still read from L3: {out}"
    );
}
