//! The lazy default: no install, no file, no OPTIMIZE_* variables. The first managed call
//! resolves the configuration; nothing persists to disk; a later install is refused.

use optimize::config::{Config, Level};
use optimize::{InstallError, Runtime};

#[optimize::io]
fn hello(x: u32) -> u32 {
    x
}

#[test]
fn the_first_call_configures_with_defaults() {
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
}
