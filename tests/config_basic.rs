//! Level `basic` from the environment (as an operator would set it): L1 only, counters only.

use optimize::config::{Config, Level};
use optimize::stats::{recording, Recording};

#[optimize::io(ttl = "1m")]
fn lookup(x: u32) -> u32 {
    x
}

#[test]
fn basic_keeps_l1_and_counters_only() {
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(
        Config::builder()
            .without_file()
            .environment([
                ("OPTIMIZE_LEVEL", "basic"),
                ("OPTIMIZE_REDIS_URL", "redis://127.0.0.1:1"),
            ])
            .set("l3.dir", &dir.path().display().to_string())
            .set("l3.enabled", "false"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = guard.runtime().config();
    assert_eq!(config.level, Level::Basic);
    assert_eq!(recording(), Recording::Counters);
    let tiers = optimize::runtime().tiers();
    assert!(!tiers.has_l2(), "basic leaves Redis off even with a URL");
    assert!(!tiers.has_l3());
    lookup(1);
    lookup(1);
    let s = lookup_cache().stats();
    assert_eq!((s.calls(), s.hits()), (2, 1));
    assert_eq!(s.latency.count(), 0, "counters only: no timings");
}
