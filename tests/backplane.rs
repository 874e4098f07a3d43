//! Many instances, one Redis: invalidations made in one process reach the L1 and L3 of the
//! others (the backplane), also across a Redis restart and a restart of the instance itself.
//!
//! Each instance is this test binary run as a child (`instance`, ignored here), driven by
//! commands on its stdin, configured only by the environment, as an application would be.
//! The function's "source of truth" is a directory of files the parent rewrites, so a retired
//! value is told apart from a fresh one.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/instance.rs"]
mod instance;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bounded::BOUND;
use instance::{distinct_tag_ids, quantile, unix_micros, Instance};
use redis_cluster::RedisCluster;
use redis_server::RedisServer;

fn truth_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("BACKPLANE_TRUTH").expect("run as a child only"))
}

/// What the application computes: the current content of the id's file.
#[optimize::io(ttl = "10m")]
fn profile(id: u64) -> String {
    std::fs::read_to_string(truth_dir().join(id.to_string())).unwrap_or_default()
}

/// The same, kept in L1 only: nothing in Redis, but its invalidations still travel.
#[optimize::io(ttl = "10m", tiers = "l1")]
fn local(id: u64) -> String {
    std::fs::read_to_string(truth_dir().join(id.to_string())).unwrap_or_default()
}

/// The same, tagged.
#[optimize::io(ttl = "10m", tags = ["item:{id}"])]
fn tagged(id: u64) -> String {
    std::fs::read_to_string(truth_dir().join(id.to_string())).unwrap_or_default()
}

/// One instance: reads commands from stdin, answers each with a line starting with `@@`.
#[test]
#[ignore = "run in child processes by the tests below"]
fn instance() {
    let _ = truth_dir();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let arg = || -> u64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
        // Answers with the time the invalidation started.
        let timed = |invalidate: &dyn Fn()| {
            let at = unix_micros();
            invalidate();
            println!("@@ sent {at}");
        };
        match command {
            "get" => println!("@@ value {}", profile(arg())),
            "fill" => {
                for id in 0..arg() {
                    profile(id);
                }
                println!("@@ ok {}", profile_cache().len());
            }
            "get_tagged" => println!("@@ value {}", tagged(arg())),
            "fill_tagged" => {
                for id in 0..arg() {
                    tagged(id);
                }
                println!("@@ ok {}", tagged_cache().len());
            }
            "invalidate_everything" => timed(&optimize::invalidate_everything),
            "invalidate_tag" => timed(&|| {
                optimize::invalidate_tag(&format!("item:{}", arg()));
            }),
            "fill_local" => {
                for id in 0..arg() {
                    local(id);
                }
                println!("@@ ok {}", local_cache().len());
            }
            "watch_len" | "watch_local_len" | "watch_tagged_len" => {
                // Polls this process's L1 until another instance's invalidation empties it.
                let site = match command {
                    "watch_len" => profile_cache(),
                    "watch_tagged_len" => tagged_cache(),
                    _ => local_cache(),
                };
                let target = arg();
                println!("@@ watching");
                let deadline = Instant::now() + BOUND;
                while site.len() > target && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
                match site.len() <= target {
                    true => println!("@@ seen {}", unix_micros()),
                    false => println!("@@ timeout {}", site.len()),
                }
            }
            "invalidate_local" => timed(&|| {
                local_invalidate(arg());
            }),
            "invalidate_local_all" => timed(&|| {
                local_cache().invalidate_all();
            }),
            "invalidate_key" => timed(&|| {
                profile_invalidate(arg());
            }),
            "invalidate_fn" => timed(&|| {
                profile_cache().invalidate_all();
            }),
            "status" => {
                let tiers = optimize::runtime().tiers();
                let s = tiers.status();
                let l2_errors: u64 = optimize::cache::OPS
                    .iter()
                    .map(|op| tiers.counters(optimize::Tier::L2).errors(op))
                    .sum();
                println!(
                    "@@ status connected={} gaps={} pending={} received={} sent={} l2_errors={}",
                    s.backplane_connected as u8,
                    s.backplane_gaps,
                    s.invalidations_pending,
                    s.backplane_received,
                    s.backplane_sent,
                    l2_errors
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
    Instance::start(&["--exact", "instance", "--ignored", "--nocapture"], env)
}

fn status(i: &mut Instance, field: &str) -> u64 {
    Instance::number(&i.ask("status", "status"), field)
}

fn get(i: &mut Instance, id: u64) -> String {
    i.ask(&format!("get {id}"), "value")
}

fn write_truth(dir: &Path, ids: std::ops::Range<u64>, value: &str) {
    for id in ids {
        std::fs::write(dir.join(id.to_string()), value).unwrap();
    }
}

/// Redis: one server, or a cluster (`url` then lists its seed nodes).
#[derive(Clone, Copy)]
enum Shape {
    Node,
    Cluster,
}

fn env<'a>(url: &'a str, ns: &'a str, truth: &'a Path) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OPTIMIZE_REDIS_URL", url),
        ("OPTIMIZE_NAMESPACE", ns),
        ("BACKPLANE_TRUTH", truth.to_str().unwrap()),
    ]
}

fn env_on<'a>(shape: Shape, url: &'a str, ns: &'a str, truth: &'a Path) -> Vec<(&'a str, &'a str)> {
    let mut env = env(url, ns, truth);
    if let Shape::Cluster = shape {
        env.push(("OPTIMIZE_L2_CLUSTER", "true"));
    }
    env
}

/// One instance invalidates by key (100 times), by function and by tag (40 times); the other
/// two see each invalidation in their L1 within 250 ms (p50/p99 printed).
#[test]
fn invalidations_reach_every_other_instance() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    propagation(Shape::Node, &redis.url(), "bp-propagation");
}

/// The same against a Redis Cluster of three masters.
#[test]
fn invalidations_reach_every_other_instance_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    propagation(Shape::Cluster, &cluster.url(), "bp-cluster");
    // The tagged entries are spread over the masters: it really ran as a cluster.
    let per_master: Vec<usize> = cluster
        .running()
        .map(|n| {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("bp-cluster:backplane::tagged:*")
                .query(&mut n.client())
                .unwrap();
            keys.len()
        })
        .collect();
    assert!(
        per_master.iter().all(|n| *n > 0),
        "entries on every master: {per_master:?}"
    );
    // The function's invalidation reclaimed its entries (and leases) on every master.
    let deadline = Instant::now() + BOUND;
    let mut left = cluster.keys("bp-cluster:backplane::profile:*");
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = cluster.keys("bp-cluster:backplane::profile:*");
    }
    assert!(
        left.is_empty(),
        "left after invalidating the function: {left:?}"
    );
}

fn propagation(shape: Shape, url: &str, ns: &str) {
    let truth = tempfile::tempdir().unwrap();
    const KEYS: u64 = 100;
    write_truth(truth.path(), 0..KEYS, "v1");
    let env = env_on(shape, url, ns, truth.path());
    let mut a = spawn(&env);
    let mut others = [spawn(&env), spawn(&env)];
    for other in &mut others {
        assert_eq!(other.ask(&format!("fill {KEYS}"), "ok"), KEYS.to_string());
        other.wait_status("connected", |c| c == 1);
    }
    a.wait_status("connected", |c| c == 1);

    let mut lags_ms = Vec::new();
    let mut measure = |a: &mut Instance, others: &mut [Instance; 2], command: &str, left: u64| {
        for other in others.iter_mut() {
            other.ask(&format!("watch_len {left}"), "watching");
        }
        let sent: u128 = a.ask(command, "sent").parse().unwrap();
        for other in others.iter_mut() {
            let seen: u128 = other.expect("seen").parse().unwrap();
            lags_ms.push(seen.saturating_sub(sent) as f64 / 1000.0);
        }
    };
    for id in 0..KEYS {
        measure(
            &mut a,
            &mut others,
            &format!("invalidate_key {id}"),
            KEYS - id - 1,
        );
    }
    for other in &mut others {
        assert_eq!(other.ask(&format!("fill {KEYS}"), "ok"), KEYS.to_string());
    }
    measure(&mut a, &mut others, "invalidate_fn", 0);

    // Tags: ids whose tags fall on distinct bits of L1's tag set, so each invalidation removes
    // exactly one entry there.
    let tagged_ids = distinct_tag_ids("item:", 40);
    for id in &tagged_ids {
        write_truth(truth.path(), *id..*id + 1, "v1");
    }
    for other in &mut others {
        for id in &tagged_ids {
            other.ask(&format!("get_tagged {id}"), "value");
        }
    }
    let tags = tagged_ids.len() as u64;
    for (n, id) in tagged_ids.iter().enumerate() {
        let left = tags - n as u64 - 1;
        for other in others.iter_mut() {
            other.ask(&format!("watch_tagged_len {left}"), "watching");
        }
        let sent: u128 = a
            .ask(&format!("invalidate_tag {id}"), "sent")
            .parse()
            .unwrap();
        for other in others.iter_mut() {
            let seen: u128 = other.expect("seen").parse().unwrap();
            lags_ms.push(seen.saturating_sub(sent) as f64 / 1000.0);
        }
    }

    lags_ms.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        quantile(&lags_ms, 0.5),
        quantile(&lags_ms, 0.99),
        lags_ms[lags_ms.len() - 1],
    );
    println!(
        "backplane propagation ({ns}) over {} observations: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        lags_ms.len()
    );
    assert!(p99 < 250.0, "p99 {p99} ms");
    assert_eq!(status(&mut a, "sent"), KEYS + 1 + tags);
    assert_eq!(status(&mut a, "l2_errors"), 0);
    for other in &mut others {
        assert_eq!(status(other, "received"), KEYS + 1 + tags);
        assert_eq!(status(other, "l2_errors"), 0);
    }
    a.quit();
    for other in others {
        other.quit();
    }
}

/// A function kept in L1 (nothing of it in Redis) is invalidated everywhere too.
#[test]
fn invalidations_of_an_l1_only_function_reach_other_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let truth = tempfile::tempdir().unwrap();
    write_truth(truth.path(), 0..3, "v1");
    let env = env(&url, "bp-local", truth.path());
    let mut a = spawn(&env);
    let mut b = spawn(&env);
    assert_eq!(b.ask("fill_local 3", "ok"), "3");
    b.wait_status("connected", |c| c == 1);
    b.ask("watch_local_len 2", "watching");
    a.ask("invalidate_local 0", "sent");
    b.expect("seen");
    b.ask("watch_local_len 0", "watching");
    a.ask("invalidate_local_all", "sent");
    b.expect("seen");
    assert_eq!(status(&mut b, "received"), 2);
    a.quit();
    b.quit();
}

/// A tag invalidated in one instance: the others drop their L1 copies at once, and nobody
/// reads the retired value from Redis.
#[test]
fn a_tag_is_invalidated_in_every_instance() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    tag_and_everything(Shape::Node, &redis.url(), "bp-tags");
}

/// The same against a Redis Cluster of three masters.
#[test]
fn a_tag_is_invalidated_in_every_instance_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    tag_and_everything(Shape::Cluster, &cluster.url(), "bp-cluster-tags");
}

fn tag_and_everything(shape: Shape, url: &str, ns: &str) {
    let truth = tempfile::tempdir().unwrap();
    write_truth(truth.path(), 0..3, "v1");
    let env = env_on(shape, url, ns, truth.path());
    let mut a = spawn(&env);
    let mut b = spawn(&env);
    assert_eq!(b.ask("fill_tagged 3", "ok"), "3");
    assert_eq!(a.ask("fill_tagged 3", "ok"), "3");
    b.wait_status("connected", |c| c == 1);

    write_truth(truth.path(), 0..1, "v2");
    b.ask("watch_tagged_len 2", "watching");
    a.ask("invalidate_tag 0", "sent");
    b.expect("seen");
    assert_eq!(b.ask("get_tagged 0", "value"), "v2");
    assert_eq!(a.ask("get_tagged 0", "value"), "v2");
    assert_eq!(b.ask("get_tagged 1", "value"), "v1", "other tags untouched");

    // Everything, from one instance: gone from the other's L1, and not read back from Redis.
    write_truth(truth.path(), 0..3, "v3");
    b.ask("watch_tagged_len 0", "watching");
    a.ask("invalidate_everything", "sent");
    b.expect("seen");
    assert_eq!(b.ask("get_tagged 1", "value"), "v3");
    assert_eq!(status(&mut a, "l2_errors"), 0);
    assert_eq!(status(&mut b, "l2_errors"), 0);
    a.quit();
    b.quit();
}

/// Redis dies, an invalidation is made meanwhile, Redis comes back empty: the instance that
/// held the value in L1 serves the fresh one once it has reconnected.
#[test]
fn no_retired_value_after_a_redis_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let truth = tempfile::tempdir().unwrap();
    write_truth(truth.path(), 0..1, "v1");
    let env = env(&url, "bp-restart", truth.path());
    let mut a = spawn(&env);
    let mut b = spawn(&env);
    assert_eq!(get(&mut b, 0), "v1");
    b.wait_status("connected", |c| c == 1);

    redis.kill();
    write_truth(truth.path(), 0..1, "v2");
    a.ask("invalidate_key 0", "sent");
    assert_eq!(get(&mut b, 0), "v1", "cut off, b still serves its L1 copy");
    redis.restart();

    a.wait_status("pending", |p| p == 0);
    b.wait_status("gaps", |g| g >= 1);
    assert_eq!(get(&mut b, 0), "v2");
    a.quit();
    b.quit();
}

/// An instance down while another invalidates a key its L3 holds: restarted, it neither
/// serves the retired value nor promotes it back into Redis. With the backplane off, both
/// happen (the control, showing the test can fail).
#[test]
fn a_restarted_instance_does_not_resurrect_a_retired_value_from_l3() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    for (backplane, ns) in [("true", "bp-l3-on"), ("false", "bp-l3-off")] {
        let truth = tempfile::tempdir().unwrap();
        let disk = tempfile::tempdir().unwrap();
        write_truth(truth.path(), 0..1, "v1");
        let mut env = env(&url, ns, truth.path());
        env.push(("OPTIMIZE_L2_BACKPLANE", backplane));
        let mut a = spawn(&env);
        let mut b_env = env.clone();
        b_env.push(("OPTIMIZE_L3_DIR", disk.path().to_str().unwrap()));
        let mut b = spawn(&b_env);
        assert_eq!(get(&mut b, 0), "v1");
        if backplane == "true" {
            b.wait_status("connected", |c| c == 1);
        }
        b.quit(); // flushes L3

        write_truth(truth.path(), 0..1, "v2");
        a.ask("invalidate_key 0", "sent");
        a.wait_status("pending", |p| p == 0);

        let mut b = spawn(&b_env);
        let from_b = get(&mut b, 0);
        b.quit();
        let from_a = get(&mut a, 0);
        a.quit();
        match backplane {
            "true" => assert_eq!((from_b.as_str(), from_a.as_str()), ("v2", "v2")),
            _ => assert_eq!(
                (from_b.as_str(), from_a.as_str()),
                ("v1", "v1"),
                "without the backplane the L3 copy is served and promoted back to Redis"
            ),
        }
    }
}
