//! `promtool` from Debian's `prometheus` package, for checking exported metrics and rules.
//!
//! Without it, a test that needs it fails (`scripts/test.sh` installs it), unless the run sets
//! `SKIP_SERVICE_TESTS=1` on purpose.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether promtool can run; a test fails when it cannot (see `skip::service_or_skip`).
pub fn available() -> bool {
    let present = Command::new("promtool").arg("--version").output().is_ok();
    crate::skip::service_or_skip(present, "promtool")
}

/// Runs `promtool check metrics` on `text`; its output on failure.
pub fn check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `promtool check rules` on a rule file's text.
pub fn check_rules(yaml: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "promtool check rules failed:\n{text}\n--- file ---\n{yaml}"
        ))
    }
}
