//! Level `ultra` installed from the builder: the monitor starts with the shipped rules plus
//! the file's, serves HTTP, and calls record full metrics.

use std::io::Write;

use optimize::config::{Config, Level};
use optimize::stats::{recording, Recording};

#[optimize::io]
fn lookup(x: u32) -> u32 {
    x
}

#[test]
fn ultra_starts_the_monitor_with_every_rule() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(
        file,
        r#"
        [monitor]
        addr = "127.0.0.1:0"
        interval = "1h"

        [[alerts]]
        name = "TooManyLookups"
        kind = "rate"
        metric = "optimize_calls_total"
        window = "1m"
        when = ">"
        threshold = 1000
        "#
    )
    .unwrap();
    let guard = optimize::install(
        Config::builder()
            .file(file.path())
            .environment(Vec::<(String, String)>::new())
            .level(Level::Ultra),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = guard.runtime().config();
    assert_eq!(config.level, Level::Ultra);
    assert_eq!(recording(), Recording::Full);
    let monitor = optimize::runtime()
        .monitor()
        .expect("ultra runs the monitor");
    assert!(monitor.http_addr().is_some(), "monitor.addr");
    let rules: Vec<String> = monitor.rules().into_iter().map(|r| r.name).collect();
    assert!(
        rules.contains(&"OptimizeLowHitRatio".to_owned()),
        "{rules:?}"
    );
    assert!(rules.contains(&"TooManyLookups".to_owned()), "{rules:?}");
    lookup(1);
    let snapshot = monitor.tick();
    assert!(
        snapshot
            .value("optimize_system_memory_total_bytes", &[])
            .is_some(),
        "system metrics at ultra"
    );
    optimize::shutdown();
}
