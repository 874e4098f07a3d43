//! One computation per key across instances: three processes of one application, each with
//! 100 concurrent cold callers of one key, against one `redis-server` — one execution in all;
//! and a lease holder killed mid-computation is taken over by another instance.
//!
//! Each instance is this test binary run as a child (`instance`, ignored here), driven by
//! commands on its stdin.

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
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use instance::Instance;
use redis_cluster::RedisCluster;
use redis_server::RedisServer;

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

/// A slow computation; how slow is this process's `LEASE_BODY_MS`.
#[optimize::io(ttl = "10m")]
async fn report(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    println!("@@ computing");
    let ms = std::env::var("LEASE_BODY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("report {id} by {}", std::process::id())
}

/// The same without a lease.
#[optimize::io(ttl = "10m", lease = false)]
async fn report_unleased(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("report {id} by {}", std::process::id())
}

static BOARD_RUNS: AtomicU64 = AtomicU64::new(0);

/// A hot key refreshed ahead of its expiry; the refresh is slow enough to overlap the other
/// instance's hit.
#[optimize::io(ttl = "3s", refresh_ahead = 0.5)]
async fn board(id: u64) -> String {
    BOARD_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    format!(
        "board {id} by {} at {}",
        std::process::id(),
        BOARD_RUNS.load(SeqCst)
    )
}

#[test]
#[ignore = "run in child processes by the tests below"]
fn instance() {
    assert!(
        std::env::var_os("LEASE_CHILD").is_some(),
        "run as a child only"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        match line.trim() {
            "ready" => {
                // Connected to Redis (the first L2 read waits for it) and to the backplane.
                assert!(child::wait_for_l2(true), "connected within 5 s");
                println!("@@ ready");
            }
            cmd @ ("go" | "go_unleased") => {
                let leased = cmd == "go";
                let values = rt.block_on(async {
                    let callers: Vec<_> = (0..100)
                        .map(|_| {
                            tokio::spawn(async move {
                                match leased {
                                    true => report(7).await,
                                    false => report_unleased(7).await,
                                }
                            })
                        })
                        .collect();
                    let mut values = Vec::new();
                    for c in callers {
                        values.push(c.await.unwrap());
                    }
                    values
                });
                let mut distinct = values.clone();
                distinct.dedup();
                let l = optimize::runtime().tiers().lease_stats();
                println!(
                    "@@ done executions={} values={} value={} acquired={} waited={} served={} taken_over={}",
                    EXECUTIONS.load(SeqCst),
                    distinct.len(),
                    distinct[0].replace(' ', "_"),
                    l.acquired.load(SeqCst),
                    l.waited.load(SeqCst),
                    l.served.load(SeqCst),
                    l.taken_over.load(SeqCst),
                );
            }
            "board" => {
                let value = rt.block_on(board(1));
                optimize::flush();
                println!(
                    "@@ board value={} runs={}",
                    value.replace(' ', "_"),
                    BOARD_RUNS.load(SeqCst)
                );
            }
            "board_runs" => {
                let s = board_cache().stats();
                println!(
                    "@@ board_runs runs={} refreshed={}",
                    BOARD_RUNS.load(SeqCst),
                    s.count(optimize::Outcome::Refreshed)
                );
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

fn spawn(env: &[(&str, &str)]) -> Instance {
    let mut env = env.to_vec();
    env.push(("LEASE_CHILD", "1"));
    Instance::start(&["--exact", "instance", "--ignored", "--nocapture"], &env)
}

fn field(done: &str, name: &str) -> String {
    Instance::field(done, name)
}

fn number(done: &str, name: &str) -> u64 {
    Instance::number(done, name)
}

fn start_three(env: &[(&str, &str)]) -> Vec<Instance> {
    let mut all: Vec<Instance> = (0..3).map(|_| spawn(env)).collect();
    for i in &mut all {
        i.send("ready");
        i.expect("ready");
    }
    all
}

#[test]
fn a_cold_key_is_computed_once_across_three_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    computed_once(&[
        ("OPTIMIZE_REDIS_URL", &redis.url()),
        ("OPTIMIZE_NAMESPACE", "lease-once"),
    ]);
}

/// The same against a Redis Cluster of three masters.
#[test]
fn a_cold_key_is_computed_once_across_three_instances_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    computed_once(&[
        ("OPTIMIZE_REDIS_URL", &cluster.url()),
        ("OPTIMIZE_L2_CLUSTER", "true"),
        ("OPTIMIZE_NAMESPACE", "lease-once-cluster"),
    ]);
}

fn computed_once(env: &[(&str, &str)]) {
    let mut all = start_three(env);
    for i in &mut all {
        i.send("go");
    }
    let done: Vec<String> = all.iter_mut().map(|i| i.expect_skipping("done")).collect();
    let executions: u64 = done.iter().map(|d| number(d, "executions")).sum();
    assert_eq!(executions, 1, "{done:#?}");
    for d in &done {
        assert_eq!(
            number(d, "values"),
            1,
            "every caller got the one value: {d}"
        );
    }
    let values: Vec<String> = done.iter().map(|d| field(d, "value")).collect();
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
    let acquired: u64 = done.iter().map(|d| number(d, "acquired")).sum();
    let served: u64 = done.iter().map(|d| number(d, "served")).sum();
    assert_eq!((acquired, served), (1, 2), "{done:#?}");
    println!("3 instances x 100 cold callers of one key: {executions} execution");

    // The control: without a lease, each instance computes the key itself.
    for i in &mut all {
        i.send("go_unleased");
    }
    let done: Vec<String> = all.iter_mut().map(|i| i.expect_skipping("done")).collect();
    let executions: u64 = done.iter().map(|d| number(d, "executions")).sum();
    assert!(executions >= 2, "lease = false: {done:#?}");
    for i in all {
        i.quit();
    }
}

#[test]
fn a_killed_lease_holder_is_taken_over() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    taken_over(&[
        ("OPTIMIZE_REDIS_URL", &redis.url()),
        ("OPTIMIZE_NAMESPACE", "lease-kill"),
    ]);
}

/// The same against a Redis Cluster of three masters.
#[test]
fn a_killed_lease_holder_is_taken_over_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    taken_over(&[
        ("OPTIMIZE_REDIS_URL", &cluster.url()),
        ("OPTIMIZE_L2_CLUSTER", "true"),
        ("OPTIMIZE_NAMESPACE", "lease-kill-cluster"),
    ]);
}

fn taken_over(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("OPTIMIZE_L2_LEASE_TTL", "1s"));
    let mut holder_env = env.to_vec();
    holder_env.push(("LEASE_BODY_MS", "60000"));
    let mut holder = spawn(&holder_env);
    holder.send("ready");
    holder.expect("ready");
    let mut other_env = env.to_vec();
    other_env.push(("LEASE_BODY_MS", "50"));
    let mut other = spawn(&other_env);
    other.send("ready");
    other.expect("ready");

    holder.send("go");
    holder.expect_skipping("computing");
    other.send("go");
    // Let the other instance find the lease held and start waiting, then kill the holder.
    std::thread::sleep(Duration::from_millis(200));
    holder.kill();
    let done = other.expect_skipping("done");
    assert_eq!(number(&done, "executions"), 1, "{done}");
    assert_eq!(number(&done, "values"), 1, "{done}");
    assert_eq!(number(&done, "waited"), 1, "{done}");
    assert_eq!(number(&done, "taken_over"), 1, "{done}");
    other.quit();
}

/// Refresh-ahead across instances: two processes hit the same key late in its ttl at once;
/// one refreshes it (the lease), the other leaves it to the first.
#[test]
fn a_hot_key_is_refreshed_once_across_two_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let env = [
        ("OPTIMIZE_REDIS_URL", redis.url()),
        ("OPTIMIZE_NAMESPACE", "refresh-once".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a = spawn(&env);
    let mut b = spawn(&env);
    for i in [&mut a, &mut b] {
        i.send("ready");
        i.expect("ready");
    }
    // A computes the value; B reads it from Redis: both hold it, expiring together.
    let filled = a.ask("board", "board");
    assert_eq!(number(&filled, "runs"), 1);
    let read = b.ask("board", "board");
    assert_eq!(number(&read, "runs"), 0, "B read A's value: {read}");
    // Past half the ttl, both hit at once: each returns at once, and one refresh runs.
    std::thread::sleep(Duration::from_millis(1_700));
    a.send("board");
    b.send("board");
    let (hit_a, hit_b) = (a.expect("board"), b.expect("board"));
    assert_eq!(
        field(&hit_a, "value"),
        field(&filled, "value"),
        "A served at once"
    );
    assert_eq!(
        field(&hit_b, "value"),
        field(&filled, "value"),
        "B served at once"
    );
    // Wait (bounded) for the refresh, then count the runs of both.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (runs, refreshed) = loop {
        let (ra, rb) = (
            a.ask("board_runs", "board_runs"),
            b.ask("board_runs", "board_runs"),
        );
        let refreshed = number(&ra, "refreshed") + number(&rb, "refreshed");
        if refreshed >= 1 || std::time::Instant::now() > deadline {
            break (number(&ra, "runs") + number(&rb, "runs"), refreshed);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refreshed, 1, "one refresh");
    assert_eq!(runs, 2, "the fill and one refresh, across both instances");
    a.quit();
    b.quit();
}
