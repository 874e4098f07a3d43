//! The lazy default with an invalid configuration and no tracing subscriber: the problem
//! still reaches stderr, once, and calls keep working on the defaults.
//!
//! The check runs in a child process (this test binary again) so that its environment and
//! its runtime are its own.

use std::process::Command;
use std::time::{Duration, Instant};

#[optimize::io]
fn answer(x: u32) -> u32 {
    x + 1
}

const CHILD: &str = "OPTIMIZE_TEST_LAZY_REPORT_CHILD";

/// Run only as the child of `bad_configuration_reaches_stderr_once` (hence ignored).
#[test]
#[ignore = "run by bad_configuration_reaches_stderr_once in a child process"]
fn child() {
    assert!(std::env::var_os(CHILD).is_some(), "run as a child only");
    assert_eq!(answer(1), 2);
    assert_eq!(answer(1), 2);
    assert_eq!(answer_cache().stats().hits(), 1);
}

#[test]
fn bad_configuration_reaches_stderr_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(&file, "levle = \"ultra\"\n").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env("OPTIMIZE_CONFIG", &file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the child did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child's calls work: {stderr}");
    assert_eq!(
        stderr
            .matches("optimize: using the default configuration")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("levle"), "{stderr}");
    assert!(stderr.contains("did you mean `level`"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}
