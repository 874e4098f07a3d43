//! Shutdown: admission stops, running work drains or is cancelled at the deadline, queued
//! shared-tier writes are flushed, and managed functions keep answering. Its own binary,
//! because shutdown is process-wide.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use optimize::{Task, TaskError, TaskStatus};

#[path = "support/bounded.rs"]
mod bounded;

static CALLS: AtomicU32 = AtomicU32::new(0);

#[optimize::cpu(ttl = "1m")]
fn square(n: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    n * n
}

#[test]
fn shutdown_drains_then_cancels_and_calls_keep_working() {
    bounded::within("shutdown", || {
        let dir = tempfile::tempdir().unwrap();
        let _guard = optimize::install(
            optimize::config::Config::builder()
                .without_file()
                .environment(Vec::<(String, String)>::new())
                .set("l3.dir", &dir.path().display().to_string()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(square(3), 9);

        // A quick task drains; a stuck one is cancelled at the deadline.
        let quick = Task::cpu().spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            Ok::<_, ()>(1)
        });
        let stuck = Task::io().spawn_async(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, ()>(())
        });
        bounded::until("both tasks are running", || {
            stuck.status() == TaskStatus::Running && quick.status() == TaskStatus::Running
        });
        let report = optimize::shutdown_within(Duration::from_millis(300));
        assert!(!report.drained);
        assert_eq!(report.cancelled_tasks, 1);
        assert_eq!(quick.wait().unwrap(), 1);
        assert_eq!(stuck.status(), TaskStatus::Cancelled);
        assert!(matches!(stuck.wait(), Err(TaskError::Cancelled)));

        // New tasks are refused; managed functions still answer, in place.
        let refused = Task::cpu().spawn(|| Ok::<_, ()>(()));
        assert_eq!(refused.status(), TaskStatus::Rejected);
        assert!(matches!(refused.wait(), Err(TaskError::Rejected)));
        assert_eq!(square(3), 9, "cached");
        assert_eq!(square(4), 16, "computed in place");
        assert_eq!(CALLS.load(SeqCst), 2);

        // The queued L3 write of the first call was applied before shutdown returned.
        let l3 = optimize::runtime().tiers().l3().expect("L3 configured");
        assert!(l3.contains(&square_cache().full_key(square_key(3))));
    })
}

fn square_key(n: u64) -> optimize::key::ArgsKey {
    let mut h = optimize::key::KeyHasher::new();
    h.push(&n);
    h.finish().expect("a u64 always hashes")
}
