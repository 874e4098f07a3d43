//! The lazy default: no install, no file, no OPTIMIZE_* variables. The first managed call
//! resolves the configuration; nothing persists to disk; a later install is refused.
//!
//! The check runs in a child process (this test binary again) with every `OPTIMIZE_*`
//! variable removed and an empty working directory, so whatever the environment of the run
//! holds (an `OPTIMIZE_L3`, an `./optimize.toml`) cannot change what the lazy default sees.

#[path = "support/bounded.rs"]
mod bounded;

use std::process::Command;

use optimize::config::{Config, Level};
use optimize::{InstallError, Runtime};

const CHILD: &str = "LAZY_DEFAULT_CHILD";

#[optimize::io]
fn hello(x: u32) -> u32 {
    x
}

#[test]
#[ignore = "run by the_first_call_configures_with_defaults in a clean child process"]
fn child() {
    assert!(std::env::var_os(CHILD).is_some(), "run as a child only");
    assert!(Runtime::current().is_none());
    assert_eq!(hello(1), 1);
    let c = Runtime::current()
        .expect("started by the first call")
        .config();
    assert_eq!(c.level, Level::Advanced);
    assert!(!c.l3_enabled, "nothing on disk without configuration");
    assert!(!optimize::runtime().tiers().has_l3());
    assert!(matches!(
        optimize::install(Config::builder()),
        Err(InstallError::AlreadyInstalled)
    ));
    println!("CHILD-LAZY-DEFAULT-OK");
}

#[test]
fn the_first_call_configures_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .current_dir(dir.path())
        .env(CHILD, "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPTIMIZE_") {
            command.env_remove(name);
        }
    }
    let out = bounded::within("the clean child", move || command.output().unwrap());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("CHILD-LAZY-DEFAULT-OK"), "{text}");
}
