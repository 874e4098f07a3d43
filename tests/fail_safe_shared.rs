//! Fail-safe across the shared tiers, against a real `redis-server` and a real L3: an entry is
//! written fresh for its ttl and kept (Redis `PX`, L3 expiry) for the fail-safe window after;
//! another instance — here, this one with its L1 emptied, as after a restart — that finds it
//! past its freshness runs the body, and serves it when the body fails.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::config::Config;
use optimize::Outcome;
use redis_server::RedisServer;

static DOWN: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicU64 = AtomicU64::new(0);

fn upstream(id: u64) -> Result<u64, String> {
    let n = CALLS.fetch_add(1, SeqCst);
    match DOWN.load(SeqCst) {
        true => Err("down".into()),
        false => Ok(id * 1000 + n),
    }
}

#[optimize::io(
    ttl = "1s",
    fail_safe = "1h",
    fail_safe_throttle = "500ms",
    tiers = "l1,l2"
)]
fn in_redis(id: u64) -> Result<u64, String> {
    upstream(id)
}

#[optimize::io(ttl = "1s", fail_safe = "1h", tiers = "l1,l3")]
fn on_disk(id: u64) -> Result<u64, String> {
    upstream(id)
}

#[optimize::io(ttl = "1s", tiers = "l1,l2")]
fn without(id: u64) -> Result<u64, String> {
    upstream(id)
}

#[test]
fn a_stale_entry_in_a_shared_tier_stands_in_for_a_failure() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("level", "advanced")
            .set("l2.url", &redis.url())
            .set("l3.enabled", "true")
            .set("l3.dir", &dir.path().display().to_string())
            .set("namespace", "fail-safe-shared"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = guard.runtime();
    let first = (
        in_redis(1).unwrap(),
        on_disk(2).unwrap(),
        without(3).unwrap(),
    );
    runtime.flush();

    // Redis keeps the entry for the ttl and the window; without fail-safe, for the ttl.
    let mut raw = redis.client();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("fail-safe-shared:*")
        .query(&mut raw)
        .unwrap();
    let mut pttl = |name: &str| -> i64 {
        let key = keys.iter().find(|k| k.contains(name)).unwrap();
        redis::cmd("PTTL").arg(key).query(&mut raw).unwrap()
    };
    assert!(pttl("::in_redis:") > 3_600_000, "kept for the window");
    assert!(pttl("::without:") <= 1_000, "kept for the ttl only");

    // Past the ttl, as another instance would (nothing in L1), with the upstream down.
    std::thread::sleep(Duration::from_millis(1_100));
    in_redis_cache().clear_l1();
    on_disk_cache().clear_l1();
    without_cache().clear_l1();
    DOWN.store(true, SeqCst);
    let calls = CALLS.load(SeqCst);
    assert_eq!(in_redis(1), Ok(first.0), "stale from Redis");
    assert_eq!(on_disk(2), Ok(first.1), "stale from L3");
    assert!(without(3).is_err(), "no fail-safe: the failure");
    assert_eq!(
        CALLS.load(SeqCst),
        calls + 3,
        "each body ran: stale is not a hit"
    );
    assert_eq!(in_redis_cache().stats().count(Outcome::Stale), 1);
    assert_eq!(on_disk_cache().stats().count(Outcome::Stale), 1);

    // Back up: once the throttle is over, a fresh value replaces the stale one everywhere.
    DOWN.store(false, SeqCst);
    std::thread::sleep(Duration::from_millis(1_100));
    let fresh = in_redis(1).unwrap();
    assert_ne!(fresh, first.0);
    runtime.flush();
    in_redis_cache().clear_l1();
    assert_eq!(in_redis(1), Ok(fresh), "a hit in Redis");
    assert_eq!(in_redis_cache().stats().count(Outcome::HitL2), 1);
    drop(guard);
}
