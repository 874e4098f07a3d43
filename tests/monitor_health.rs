//! `/health` with Redis down: calls keep working and the report says degraded, naming L2.

use std::time::Duration;

use optimize::monitor::HealthStatus;

#[optimize::io(ttl = "1m", tiers = "l1,l2")]
fn priced(x: u32) -> u32 {
    x * 2
}

#[test]
fn redis_down_reports_degraded_health() {
    // A port nothing listens on: Redis is down from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let guard = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &format!("redis://127.0.0.1:{port}"))
            .set("l3.enabled", "false"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = guard.runtime();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut x = 0;
    let health = loop {
        x += 1;
        assert_eq!(priced(x), x * 2, "calls keep working without Redis");
        let health = runtime.health();
        if health.status == HealthStatus::Degraded || std::time::Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(health.reasons[0].1.contains("L2"), "{health:?}");
    let snapshot = runtime.snapshot();
    assert!(snapshot
        .value("optimize_tier_errors_total", &[("tier", "l2")])
        .is_some());
}
