//! The one way a test may run without a service it needs: on purpose, and counted.

#![allow(dead_code, unreachable_pub)]

/// Whether `service` can be used; when it cannot, the test fails — unless the run opted out
/// explicitly with `SKIP_SERVICE_TESTS=1`, in which case the skip is printed and
/// appended to `$SKIP_SERVICE_TESTS_LOG` (scripts/test.sh counts them at the end).
pub fn service_or_skip(present: bool, service: &str) -> bool {
    if present {
        return true;
    }
    let why = format!("{service} is not installed (scripts/test.sh installs it)");
    assert!(
        std::env::var_os("SKIP_SERVICE_TESTS").is_some(),
        "{why}; set SKIP_SERVICE_TESTS=1 to skip such tests on purpose"
    );
    eprintln!("SKIPPED (SKIP_SERVICE_TESTS): {why}");
    if let Some(log) = std::env::var_os("SKIP_SERVICE_TESTS_LOG") {
        use std::io::Write as _;
        let thread = std::thread::current();
        let line = format!("{}: {why}\n", thread.name().unwrap_or("a test"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        let _ = file.and_then(|mut f| f.write_all(line.as_bytes()));
    }
    false
}
