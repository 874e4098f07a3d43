//! Installing a configuration from a file: process-wide settings reach the tiers and pools,
//! `[functions]` tables reach the functions, and a second install is refused.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use optimize::config::{Config, Level};
use optimize::InstallError;
use optimize::{Outcome, Priority};

static PRICED: AtomicU32 = AtomicU32::new(0);
static LEGACY: AtomicU32 = AtomicU32::new(0);

#[optimize::io(ttl = "1h")]
fn priced(x: u32) -> u32 {
    PRICED.fetch_add(1, SeqCst);
    x
}

#[optimize::cpu(priority = "low")]
fn scored(x: u64) -> u64 {
    x * 3
}

#[optimize::io(concurrency = 2)]
fn legacy(x: u32) -> u32 {
    LEGACY.fetch_add(1, SeqCst);
    x
}

#[optimize::io(level = "basic")]
fn local_only(x: u32) -> u32 {
    x
}

#[optimize::io]
fn plain(x: u32) -> u32 {
    x
}

#[test]
fn install_applies_the_file_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            level = "advanced"

            [l3]
            dir = {l3:?}

            [pools]
            cpu_threads = 3

            [metrics]
            slow_call = "2s"

            [functions."config_install::priced"]
            ttl = "5s"
            capacity = 7

            [functions."config_install::scored"]
            priority = "critical"

            [functions."config_install::legacy"]
            enabled = false
            concurrency = 9
            "#,
            l3 = dir.path().join("l3").display().to_string()
        ),
    )
    .unwrap();
    let guard = optimize::install(
        Config::builder()
            .file(&file)
            .environment(Vec::<(String, String)>::new()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = guard.runtime().config();
    assert_eq!(config.level, Level::Advanced);
    assert_eq!(
        optimize::runtime().pools().stats().cpu_threads,
        3,
        "pools.cpu_threads"
    );
    let tiers = optimize::runtime().tiers();
    assert!(tiers.has_l3(), "l3.dir turned L3 on");
    assert!(dir.path().join("l3").exists());

    // Overrides from [functions] tables, over the attribute's values.
    assert_eq!(priced(1), 1);
    assert_eq!(priced(1), 1);
    assert_eq!(PRICED.load(SeqCst), 1, "still cached");
    assert_eq!(priced_cache().ttl(), Some(Duration::from_secs(5)));
    assert_eq!(priced_cache().capacity(), 7);
    assert_eq!(scored(2), 6);
    assert_eq!(scored_cache().priority(), Priority::Critical);
    assert_eq!(plain(1), 1);
    assert_eq!(
        plain_cache().ttl(),
        None,
        "no table: the attribute's values"
    );
    assert_eq!(plain_cache().priority(), Priority::Normal);

    // enabled = false: the body runs every time, measured, never cached.
    assert_eq!(legacy(4), 4);
    assert_eq!(legacy(4), 4);
    assert_eq!(LEGACY.load(SeqCst), 2);
    let s = legacy_cache().stats();
    assert_eq!((s.count(Outcome::Executed), s.hits()), (2, 0));
    assert!(!legacy_cache().enabled());
    assert_eq!(legacy_cache().concurrency(), Some(9));

    // level = "basic" on the attribute: L1 only, though the process has L3.
    local_only(1);
    let t = local_only_cache().tiers();
    assert!(t.l1 && !t.l2 && !t.l3);
    assert_eq!(local_only_cache().level(), Level::Basic);
    assert_eq!(plain_cache().level(), Level::Advanced);

    let again = optimize::install(Config::builder().without_file());
    assert!(matches!(again, Err(InstallError::AlreadyInstalled)));
    assert!(again.unwrap_err().to_string().contains("once, at start-up"));
    let report = guard.runtime().shutdown_within(Duration::from_secs(10));
    assert!(report.drained);
}
