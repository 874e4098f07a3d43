//! The lazy default: no install, no file, no OPTIMIZE_* variables. The first managed call
//! resolves the configuration; nothing persists to disk; a later install is refused.

use optimize::config::{self, Config, InstallError, Level};

#[optimize::io]
fn hello(x: u32) -> u32 {
    x
}

#[test]
fn the_first_call_configures_with_defaults() {
    assert!(config::global_if_resolved().is_none());
    assert_eq!(hello(1), 1);
    let c = config::global_if_resolved().expect("resolved by the first call");
    assert_eq!(c.level, Level::Advanced);
    assert!(!c.l3_enabled, "nothing on disk without configuration");
    assert!(!optimize::cache::tiered::global().has_l3());
    assert!(matches!(
        Config::builder().install(),
        Err(InstallError::AlreadyInstalled)
    ));
}
