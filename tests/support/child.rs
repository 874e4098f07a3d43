//! The parent and child halves of a test that runs this binary again as a child process,
//! configured only by the environment, as an application would be.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::time::{Duration, Instant};

/// In the child: warnings and errors to stderr, without colours, for the parent to read.
pub fn log_warnings_to_stderr() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
}

/// In the child: waits (at most 5 s) until L2 — and, with `backplane`, the backplane — is
/// connected; whether it is.
pub fn wait_for_l2(backplane: bool) -> bool {
    let tiers = optimize::runtime().tiers();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = tiers.status();
        if s.l2_connected && (s.backplane_connected || !backplane) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In the parent: runs the ignored test `child` with `marker=1` and `env` (the optimize
/// variables of the parent removed); its stdout and stderr. Fails if the child fails.
pub fn run(child: &str, marker: &str, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture"])
        .env(marker, "1")
        .env_remove("OPTIMIZE_REDIS_URL")
        .env_remove("OPTIMIZE_L3_DIR")
        .env_remove("OPTIMIZE_L3")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{child} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// `name=value` from the child's `RESULT ...` line.
pub fn result_field(stdout: &str, name: &str) -> String {
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no RESULT in:\n{stdout}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .to_owned()
}
