//! Tags and generations against a real `redis-server` and a real L3 directory: invalidating a
//! tag or a whole function retires its entries in every tier by raising one generation, and
//! leaves every other entry alone.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use optimize::cache::Tier;
use optimize::codec::Reject;
use redis::Commands;
use redis_server::RedisServer;

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10m", tags = ["item:{id}", "org:{org}"])]
fn item(id: u64, org: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    format!("item {id} of {org}")
}

fn executions_of(f: impl FnOnce()) -> u64 {
    let before = EXECUTIONS.load(SeqCst);
    f();
    EXECUTIONS.load(SeqCst) - before
}

#[test]
fn tags_and_functions_are_retired_in_every_tier_by_one_generation() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &redis.url())
            .set("l3.dir", &dir.path().display().to_string())
            .set("namespace", "tags"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiers = guard.runtime().tiers();
    let all = || {
        item(1, 10);
        item(2, 10);
        item(3, 20);
    };
    assert_eq!(executions_of(all), 3);
    optimize::flush();
    // From L2 and L3 after a restart-like L1 clear: nothing runs.
    item_cache().clear_l1();
    assert_eq!(executions_of(all), 0);

    // One item: only it runs again, and its shared-tier copies were refused as retired.
    optimize::invalidate_tag("item:1");
    assert_eq!(executions_of(|| item(1, 10).truncate(0)), 1);
    assert_eq!(executions_of(all), 0);
    assert!(tiers.counters(Tier::L2).rejected(Reject::Retired) >= 1);

    // Every entry of one org, whichever tier holds it.
    optimize::flush();
    item_cache().clear_l1();
    optimize::invalidate_tag("org:10");
    assert_eq!(executions_of(|| item(1, 10).truncate(0)), 1);
    assert_eq!(executions_of(|| item(2, 10).truncate(0)), 1);
    assert_eq!(executions_of(|| item(3, 20).truncate(0)), 0);

    // A tag nothing carries changes nothing.
    optimize::invalidate_tag("org:99");
    assert_eq!(executions_of(all), 0);

    // The whole function: one generation raised in Redis, whatever the number of entries.
    optimize::flush();
    item_cache().invalidate_all();
    let mut conn = redis.client();
    let generation: u64 = conn
        .get(format!("tags:gen:{{tags}}:fn:{}", item_cache().path()))
        .unwrap();
    assert_eq!(generation, 1);
    let tag_generation: u64 = conn
        .get(format!(
            "tags:gen:{{tags}}:tag:{:016x}",
            optimize::cache::generations::tag_hash("org:10")
        ))
        .unwrap();
    assert_eq!(tag_generation, 1);
    assert_eq!(executions_of(all), 3);

    // Everything: one namespace generation, and every tier refuses what was written before.
    optimize::flush();
    optimize::invalidate_everything();
    assert_eq!(item_cache().len(), 0);
    let everything: u64 = conn.get("tags:gen:{tags}:all").unwrap();
    assert_eq!(everything, 1);
    assert_eq!(executions_of(all), 3);
}
