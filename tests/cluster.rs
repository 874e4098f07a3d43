//! A Redis Cluster under failure: 16 callers for 10 s while a master is killed with SIGKILL.
//! Without replicas its slots are simply unavailable (misses, never caller errors) and the
//! other masters stay in use; with a replica per master, the replica is promoted and L2 is
//! used again. Also: a cluster node configured as a single server is reported, not fatal.
//!
//! The application is this test binary run as a child (`instance`, ignored here), configured
//! by the environment and driven by commands on its stdin.

#[path = "support/child.rs"]
mod child;
#[path = "support/instance.rs"]
mod instance;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use instance::Instance;
use redis_cluster::RedisCluster;

/// Distinct keys the callers read.
const KEYS: u64 = 300;

/// Kept in Redis only, so every call reads the cluster.
#[optimize::io(ttl = "10m", tiers = "l2")]
async fn price(id: u64) -> Result<u64, String> {
    Ok(id * 3)
}

/// What the callers saw, counted as they go.
#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    slowest_us: AtomicU64,
}

#[test]
#[ignore = "run in child processes by the tests below"]
fn instance() {
    assert!(
        std::env::var_os("CLUSTER_CHILD").is_some(),
        "run as a child only"
    );
    child::log_warnings_to_stderr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match words.next().unwrap_or_default() {
            "ready" => {
                assert!(child::wait_for_l2(true), "connected within 5 s");
                rt.block_on(async {
                    for id in 0..KEYS {
                        assert_eq!(price(id).await, Ok(id * 3));
                    }
                });
                optimize::flush();
                println!("@@ ready");
            }
            "load" => {
                let secs: u64 = words.next().unwrap().parse().unwrap();
                println!("@@ loading");
                let report = rt.block_on(load(Duration::from_secs(secs)));
                println!("@@ done {report}");
            }
            "quit" => {
                optimize::shutdown();
                println!("@@ bye");
                return;
            }
            other => panic!("unknown command {other}"),
        }
    }
}

/// 16 callers for `length`; the counts, and the L2 hit ratio of each half second.
async fn load(length: Duration) -> String {
    let seen = Arc::new(Seen::default());
    let end = Instant::now() + length;
    let callers: Vec<_> = (0..16u64)
        .map(|n| {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (n + 1);
                while Instant::now() < end {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = x % KEYS;
                    let started = Instant::now();
                    let got = price(id).await;
                    let us = started.elapsed().as_micros() as u64;
                    seen.slowest_us.fetch_max(us, Relaxed);
                    seen.calls.fetch_add(1, Relaxed);
                    match got {
                        Ok(v) if v == id * 3 => {}
                        Ok(_) => {
                            seen.wrong.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            seen.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let stats = price_cache().stats();
    let mut timeline = Vec::new();
    let (mut calls, mut hits) = (
        seen.calls.load(Relaxed),
        stats.count(optimize::Outcome::HitL2),
    );
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = price_cache().stats();
        let (c, h) = (
            seen.calls.load(Relaxed),
            stats.count(optimize::Outcome::HitL2),
        );
        let ratio = (h - hits) as f64 / (c - calls).max(1) as f64;
        timeline.push(format!("{:.2}", ratio));
        (calls, hits) = (c, h);
    }
    let mut panicked = 0;
    for c in callers {
        if c.await.is_err() {
            panicked += 1;
        }
    }
    let tiers = optimize::runtime().tiers();
    let l2_errors: u64 = optimize::cache::OPS
        .iter()
        .map(|op| tiers.counters(optimize::Tier::L2).errors(op))
        .sum();
    format!(
        "calls={} errors={} wrong={} panicked={panicked} slowest_ms={} l2_errors={l2_errors} breaker_opened={} timeline={}",
        seen.calls.load(Relaxed),
        seen.errors.load(Relaxed),
        seen.wrong.load(Relaxed),
        seen.slowest_us.load(Relaxed) / 1000,
        tiers.status().l2_breaker_opened,
        timeline.join(","),
    )
}

fn spawn(cluster: &RedisCluster, ns: &str) -> Instance {
    let url = cluster.url();
    let mut i = Instance::start(
        &["--exact", "instance", "--ignored", "--nocapture"],
        &[
            ("CLUSTER_CHILD", "1"),
            ("OPTIMIZE_REDIS_URL", &url),
            ("OPTIMIZE_L2_CLUSTER", "true"),
            ("OPTIMIZE_NAMESPACE", ns),
        ],
    );
    i.send("ready");
    i.expect("ready");
    i
}

fn timeline(done: &str) -> Vec<f64> {
    Instance::field(done, "timeline")
        .split(',')
        .map(|r| r.parse().unwrap())
        .collect()
}

fn mean(ratios: &[f64]) -> f64 {
    ratios.iter().sum::<f64>() / ratios.len() as f64
}

/// The hardest master to lose: the one holding the namespace's generations (every read
/// checks them).
fn generations_master(cluster: &RedisCluster, ns: &str) -> usize {
    cluster.master_of(&optimize::cache::generations::everything_key(ns))
}

#[test]
fn a_killed_master_costs_misses_not_errors() {
    let Some(mut cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let mut child = spawn(&cluster, "cluster-kill");
    let victim = generations_master(&cluster, "cluster-kill");
    child.ask("load 10", "loading");
    std::thread::sleep(Duration::from_secs(3));
    cluster.node(victim).kill();
    let done = child.expect_skipping("done");
    println!("16 callers, 10 s, the generations' master killed at 3 s (no replicas): {done}");
    assert_eq!(Instance::number(&done, "errors"), 0, "{done}");
    assert_eq!(Instance::number(&done, "wrong"), 0, "{done}");
    assert_eq!(Instance::number(&done, "panicked"), 0, "{done}");
    assert!(Instance::number(&done, "calls") > 1000, "{done}");
    assert!(
        Instance::number(&done, "breaker_opened") >= 1,
        "the dead master's slots open their breakers: {done}"
    );
    // Before the kill every key hits (but for concurrent callers of one key, which share
    // one read). After it, the dead master's keys can only miss; those of the two live
    // masters usually still hit (about 0.62), but the `redis` crate's cluster client can
    // hold every request while it repairs its connection to the dead node (redis-rs #2092),
    // so the ratio after the kill is a reported figure, not a guarantee: what is guaranteed is
    // that no caller sees an error or a wrong value.
    let ratios = timeline(&done);
    let (before, after) = (mean(&ratios[1..5]), mean(&ratios[ratios.len() - 4..]));
    assert!(before > 0.85, "before the kill: {ratios:?}");
    assert!(after < 0.8, "the dead master's keys cannot hit: {ratios:?}");
    println!("L2 hit ratio: {before:.2} before the kill, {after:.2} over its last 2 s");
    child.quit();
}

#[test]
fn a_replica_takes_over_a_killed_master() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let mut child = spawn(&cluster, "cluster-failover");
    let victim = generations_master(&cluster, "cluster-failover");
    child.ask("load 14", "loading");
    std::thread::sleep(Duration::from_secs(3));
    cluster.node(victim).kill();
    let promoted = cluster.wait_until("a replica promoted", RedisCluster::serves_every_slot);
    let done = child.expect_skipping("done");
    println!(
        "16 callers, 14 s, a master killed at 3 s (one replica each): every slot served again after {:.1} s; {done}",
        promoted.as_secs_f64()
    );
    assert_eq!(Instance::number(&done, "errors"), 0, "{done}");
    assert_eq!(Instance::number(&done, "wrong"), 0, "{done}");
    assert_eq!(Instance::number(&done, "panicked"), 0, "{done}");
    // L2 is used again for every key: the last seconds hit as before the kill.
    let ratios = timeline(&done);
    let (before, after) = (mean(&ratios[1..5]), mean(&ratios[ratios.len() - 3..]));
    assert!(before > 0.85, "before the kill: {ratios:?}");
    assert!(after > before - 0.05, "after the failover: {ratios:?}");
    let back = ratios
        .iter()
        .enumerate()
        .skip(6)
        .find(|(_, r)| **r > before - 0.05)
        .map(|(i, _)| i as f64 * 0.5 + 0.5 - 3.0);
    println!("hit ratio back to its level before the kill about {back:?} s after it");
    child.quit();
}

/// A cluster node given as `l2.url` without `l2.cluster`: one log line says what to set, and
/// calls still return their values.
#[test]
fn a_cluster_node_configured_as_a_single_server_is_reported() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let node = cluster.running().next().unwrap().url();
    let (stdout, stderr) = child::run(
        "single",
        "CLUSTER_SINGLE_CHILD",
        &[
            ("OPTIMIZE_REDIS_URL", &node),
            ("OPTIMIZE_NAMESPACE", "cluster-single"),
            ("OPTIMIZE_L2_BACKPLANE", "false"),
        ],
    );
    assert_eq!(child::result_field(&stdout, "ok"), "300", "{stdout}");
    let told: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("set l2.cluster = true"))
        .collect();
    assert_eq!(told.len(), 1, "once: {stderr}");
}

#[test]
#[ignore = "run in a child process by the test above"]
fn single() {
    assert!(std::env::var_os("CLUSTER_SINGLE_CHILD").is_some());
    child::log_warnings_to_stderr();
    assert!(child::wait_for_l2(false), "connected within 5 s");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let mut ok = 0;
        for id in 0..KEYS {
            if price(id).await == Ok(id * 3) {
                ok += 1;
            }
        }
        ok
    });
    println!("RESULT ok={ok}");
}
