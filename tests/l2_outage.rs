//! Redis killed in the middle of concurrent load: every call still succeeds (from L1, L3, or
//! by computing), and L2 is used again once Redis is back.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use optimize::cache::Tier;
use redis::Commands;
use redis_server::RedisServer;

static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

// A small L1, so that part of the traffic must come from L2/L3 (and evictions are demoted).
#[optimize::io(capacity = 50, ttl = "10m")]
async fn price(id: u64) -> u64 {
    EXECUTIONS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(1)).await;
    id * 7
}

#[test]
fn calls_survive_a_redis_outage_and_l2_is_used_again_after_it() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &redis.url())
            .set("l3.dir", &dir.path().display().to_string())
            .set("namespace", "outage")
            .set("l2.timeout", "50ms")
            .set("l2.breaker_cooldown", "200ms"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiers = guard.runtime().tiers();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let load_until = Instant::now() + Duration::from_millis(2_500);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let calls = calls.clone();
            rt.spawn(async move {
                // xorshift over 400 ids with an L1 of 50: most calls miss L1, so the shared
                // tiers carry real traffic through the outage.
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1);
                while Instant::now() < load_until {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let id = state % 400;
                    // The assertion is the point: a wrong or failed value would panic the task.
                    assert_eq!(price(id).await, id * 7);
                    calls.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(600));
    redis.kill();
    std::thread::sleep(Duration::from_millis(900));
    assert!(
        tiers.status().l2_circuit_open,
        "the breaker opened during the outage"
    );
    redis.restart();
    for w in workers {
        rt.block_on(w).expect("a call failed during the outage");
    }
    let stats = price_cache().stats();
    assert_eq!(stats.calls(), calls.load(SeqCst));
    assert_eq!(stats.errors(), 0);
    assert!(
        stats.count(optimize::Outcome::HitL3) > 0,
        "L3 served while Redis was down"
    );
    assert!(
        tiers.counters(Tier::L2).total_errors() > 0,
        "the outage was seen and counted"
    );

    // After Redis returns (empty), new values reach it again and are read back from it.
    let mut conn = redis.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 10_000;
    loop {
        assert!(
            Instant::now() < deadline,
            "L2 was not used again after Redis came back"
        );
        rt.block_on(price(id));
        optimize::flush();
        let key = price_cache().full_key(key_of(id));
        let stored: bool = conn.exists(&key).unwrap();
        if stored {
            price_cache().clear_l1();
            let before = price_cache().stats().count(optimize::Outcome::HitL2);
            assert_eq!(rt.block_on(price(id)), id * 7);
            assert_eq!(
                price_cache().stats().count(optimize::Outcome::HitL2),
                before + 1
            );
            break;
        }
        id += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    optimize::shutdown();
}

fn key_of(id: u64) -> optimize::key::ArgsKey {
    let mut h = optimize::key::KeyHasher::new();
    h.push(&id);
    h.finish().unwrap()
}
