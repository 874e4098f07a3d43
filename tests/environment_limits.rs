//! A hostile environment never panics a call: a CPU pool larger than the address space
//! allows is an install error, and under the lazy default cpu bodies still run (in their
//! callers' threads). Each check runs in a child process (this test binary again) under
//! `ulimit -v`, so the limit is its own.

#[path = "support/bounded.rs"]
mod bounded;

use std::process::Command;

use optimize::config::Config;

const CHILD: &str = "LIMITS_CHILD";

#[optimize::cpu]
fn squared(x: u64) -> u64 {
    x * x
}

/// Runs the ignored test `name` in a child limited to 4 GiB of address space, with `env`.
/// Threads get 64 MiB stacks there (`RUST_MIN_STACK`), so the address space runs out when a
/// thread's stack is mapped (an error the pool sees) rather than inside a thread already
/// started (which std can only abort on).
fn run_limited(name: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" --exact \"$1\" --ignored --nocapture")
        .arg(exe)
        .arg(name)
        .env(CHILD, "1")
        .env("RUST_MIN_STACK", "67108864");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = bounded::within("the limited child", move || command.output().unwrap());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    text
}

#[test]
#[ignore = "run by too_many_cpu_threads_is_an_install_error in a limited child process"]
fn child_install() {
    assert!(std::env::var_os(CHILD).is_some(), "run as a child only");
    let err = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l3.enabled", "false")
            .set("pools.cpu_threads", "100000"),
    )
    .unwrap_err();
    assert!(matches!(err, optimize::InstallError::Pools(_)), "{err}");
    assert!(err.to_string().contains("pools.cpu_threads"), "{err}");
    println!("CHILD-INSTALL-OK {err}");
}

#[test]
fn too_many_cpu_threads_is_an_install_error() {
    let out = run_limited("child_install", &[]);
    assert!(out.contains("CHILD-INSTALL-OK"), "{out}");
}

#[test]
#[ignore = "run by too_many_cpu_threads_under_the_lazy_default_still_answers in a limited child"]
fn child_lazy() {
    assert!(std::env::var_os(CHILD).is_some(), "run as a child only");
    assert_eq!(squared(12), 144);
    assert_eq!(squared(12), 144);
    assert_eq!(squared_cache().stats().hits(), 1);
    println!("CHILD-LAZY-OK");
}

#[test]
fn too_many_cpu_threads_under_the_lazy_default_still_answers() {
    let out = run_limited("child_lazy", &[("OPTIMIZE_POOLS_CPU_THREADS", "100000")]);
    assert!(out.contains("CHILD-LAZY-OK"), "{out}");
}
