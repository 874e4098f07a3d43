//! An L3 hit of a function whose only shared tier is L3 is read before the key's flight is
//! joined (docs/architecture.md, "L3 hits skip the flight"): hits from many threads at once
//! are all served from disk without running the body, and a miss reads L3 once, not twice.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::cache::Tier;

#[path = "support/install.rs"]
mod install;

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(tiers = "l3", ttl = "1h")]
fn from_disk(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    format!("value {id}")
}

#[test]
fn l3_hits_skip_the_flight_and_a_miss_reads_l3_once() {
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(install::with_l3(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    let l3 = guard.runtime().tiers().counters(Tier::L3);

    // A miss: one L3 read (the probe's; the leader's lookup does not read again).
    let reads = l3.timing("get").0;
    assert_eq!(from_disk(1), "value 1");
    assert_eq!(l3.timing("get").0 - reads, 1, "a miss reads L3 once");
    assert_eq!(EXECUTIONS.load(SeqCst), 1);
    optimize::flush();

    // Hits from 8 threads at once, each bounded by the join timeout below.
    let (done, results) = std::sync::mpsc::channel();
    for _ in 0..8 {
        let done = done.clone();
        std::thread::spawn(move || {
            let all = (0..200).all(|_| from_disk(1) == "value 1");
            let _ = done.send(all);
        });
    }
    for _ in 0..8 {
        let all = results
            .recv_timeout(Duration::from_secs(60))
            .expect("every thread finished within 60 s");
        assert!(all, "every hit returned the stored value");
    }
    assert_eq!(EXECUTIONS.load(SeqCst), 1, "all 1,600 calls were L3 hits");
    let stats = from_disk_cache().stats();
    assert_eq!(stats.calls(), 1_601);
    assert_eq!(stats.executions(), 1);
}
