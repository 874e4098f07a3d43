//! The lazy default with an invalid configuration and no tracing subscriber: the problem
//! still reaches stderr, once, and calls keep working on the defaults; and an environment
//! that is not UTF-8 does not panic the first managed call.
//!
//! The check runs in a child process (this test binary again) so that its environment and
//! its runtime are its own.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

#[optimize::io]
fn answer(x: u32) -> u32 {
    x + 1
}

const CHILD: &str = "LAZY_REPORT_CHILD";

/// Run only as the child of `bad_configuration_reaches_stderr_once` (hence ignored).
#[test]
#[ignore = "run by bad_configuration_reaches_stderr_once in a child process"]
fn child() {
    assert!(std::env::var_os(CHILD).is_some(), "run as a child only");
    assert_eq!(answer(1), 2);
    assert_eq!(answer(1), 2);
    assert_eq!(answer_cache().stats().hits(), 1);
}

/// Runs the child test with `env` added; returns its stderr after checking it succeeded.
fn run_child(env: &[(&OsStr, &OsStr)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the child did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the child's calls work: {stderr}");
    stderr
}

/// Environment variables that are not UTF-8 (ours or anyone's) do not panic a managed call.
#[cfg(unix)]
#[test]
fn non_utf8_environment_does_not_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"\xff\xfe");
    run_child(&[
        (OsStr::new("OPTIMIZE_LEVEL"), bad),
        (OsStr::new("SOMEONE_ELSES_VARIABLE"), bad),
    ]);
}

#[test]
fn bad_configuration_reaches_stderr_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(&file, "levle = \"ultra\"\n").unwrap();
    let stderr = run_child(&[(OsStr::new("OPTIMIZE_CONFIG"), file.as_os_str())]);
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
