//! `#[optimize::main]`: a program on the lazy default (no install guard) that returns from
//! `main` right after queuing thousands of L3 writes loses none of them.
//!
//! The program is this test binary run as a child, configured only by the environment.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::cpu(tiers = "l1,l3")]
fn square(x: u64) -> u64 {
    EXECUTIONS.fetch_add(1, SeqCst);
    x * x
}

const ENTRIES: u64 = 5_000;

/// 16 threads compute 5,000 values, and the function returns at once.
fn write_all() {
    std::thread::scope(|s| {
        for t in 0..16 {
            s.spawn(move || {
                for x in (t..ENTRIES).step_by(16) {
                    assert_eq!(square(x), x * x);
                }
            });
        }
    });
}

#[test]
#[ignore = "run as a child process by the tests below"]
#[optimize::main]
fn guarded_child() {
    assert!(
        std::env::var_os("EXIT_CHILD").is_some(),
        "run as a child only"
    );
    write_all();
}

#[test]
#[ignore = "run as a child process by the tests below"]
fn unguarded_child() {
    assert!(
        std::env::var_os("EXIT_CHILD").is_some(),
        "run as a child only"
    );
    write_all();
}

#[test]
#[ignore = "run as a child process by the tests below"]
#[optimize::main]
fn reading_child() {
    assert!(
        std::env::var_os("EXIT_CHILD").is_some(),
        "run as a child only"
    );
    for x in 0..ENTRIES {
        assert_eq!(square(x), x * x);
    }
    println!("RESULT computed={}", EXECUTIONS.load(SeqCst));
}

fn run(child: &str, dir: &std::path::Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture"])
        .env("EXIT_CHILD", "1")
        .env("OPTIMIZE_L3_DIR", dir)
        .env_remove("OPTIMIZE_REDIS_URL")
        .env_remove("OPTIMIZE_L3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{child} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn recomputed_after(writer: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    run(writer, dir.path());
    let stdout = run("reading_child", dir.path());
    stdout
        .lines()
        .find_map(|l| l.split("RESULT computed=").nth(1))
        .unwrap_or_else(|| panic!("no RESULT in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn optimize_main_loses_no_queued_write_when_main_returns() {
    assert_eq!(
        recomputed_after("guarded_child"),
        0,
        "every value was on disk"
    );
    // Without it, what was still queued when the process ended is lost (how much depends on
    // timing, so it is only reported).
    println!(
        "without #[optimize::main]: {} of {ENTRIES} values had to be computed again",
        recomputed_after("unguarded_child")
    );
}
