//! An ACL user limited to the namespace's keys and channels, with exactly the commands
//! docs/tiers.md lists, runs every L2 feature against a real `redis-server`; a user missing a
//! right is reported at start-up (health, metric, one log line naming it), never a crash.
//!
//! Each user runs in a child process configured by the environment.

#[path = "support/child.rs"]
mod child;
#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use redis_cluster::RedisCluster;
use redis_server::RedisServer;

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10m", tiers = "l1,l2", tags = ["item:{id}"])]
fn item(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    format!("item {id}")
}

/// The rights docs/tiers.md ("ACL users") documents, for the namespace `acl`.
const RIGHTS: &str = "resetkeys ~acl:* resetchannels &acl:* -@all +get +getrange +set +del +unlink +mget +incr +exists +scan +pttl +xadd +xread +xinfo +eval +evalsha +script|load +publish +subscribe +unsubscribe +ping";

#[test]
#[ignore = "run in child processes by the tests below"]
fn child() {
    assert!(
        std::env::var_os("ACL_CHILD").is_some(),
        "run as a child only"
    );
    child::log_warnings_to_stderr();
    let connected = child::wait_for_l2(true);
    assert!(
        connected || std::env::var_os("ACL_MAY_NOT_CONNECT").is_some(),
        "connected within 5 s"
    );
    let rt = optimize::runtime();
    for id in 0..10 {
        item(id);
    }
    optimize::flush();
    item_cache().clear_l1();
    for id in 0..10 {
        assert_eq!(item(id), format!("item {id}"));
    }
    let hits = item_cache().stats().count(optimize::Outcome::HitL2);
    item_invalidate(1);
    optimize::invalidate_tag("item:2");
    item_cache().invalidate_all();
    optimize::invalidate_everything();
    let s = rt.tiers().status();
    let l2_errors: u64 = optimize::cache::OPS
        .iter()
        .map(|op| rt.tiers().counters(optimize::Tier::L2).errors(op))
        .sum();
    println!(
        "RESULT hits={hits} missing={} errors={l2_errors} health={:?} sent={}",
        s.l2_missing_rights.len(),
        rt.health().status,
        s.backplane_sent,
    );
    for m in &s.l2_missing_rights {
        println!("MISSING {m}");
    }
}

/// What docs/tiers.md adds for a Redis Cluster: the client reads the slot map, and follows
/// `ASK` redirections while slots move.
const CLUSTER_RIGHTS: &str = "+cluster|slots +asking";

fn run(url: &str) -> (String, String) {
    child::run(
        "child",
        "ACL_CHILD",
        &[("OPTIMIZE_REDIS_URL", url), ("OPTIMIZE_NAMESPACE", "acl")],
    )
}

fn field(stdout: &str, name: &str) -> String {
    child::result_field(stdout, name)
}

fn add_user(redis: &RedisServer, name: &str, rights: &str) -> String {
    let mut raw = redis.client();
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(name).arg("on").arg(">secret-pw");
    for right in rights.split_whitespace() {
        cmd.arg(right);
    }
    let _: () = cmd.query(&mut raw).unwrap();
    format!("redis://{name}:secret-pw@127.0.0.1:{}", redis.port())
}

/// The child used every L2 feature without an error or a missing right.
fn ran_everything(stdout: &str, stderr: &str) {
    assert_eq!(field(stdout, "missing"), "0", "{stdout}\n{stderr}");
    assert_eq!(field(stdout, "errors"), "0", "{stdout}\n{stderr}");
    assert_eq!(field(stdout, "hits"), "10", "{stdout}\n{stderr}");
    assert_eq!(field(stdout, "health"), "Healthy", "{stdout}\n{stderr}");
    assert_eq!(field(stdout, "sent"), "4", "{stdout}\n{stderr}");
}

#[test]
fn a_user_with_the_documented_rights_runs_every_l2_feature() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = add_user(&redis, "app", RIGHTS);
    let (stdout, stderr) = run(&url);
    ran_everything(&stdout, &stderr);
}

#[test]
fn a_user_without_the_channels_is_reported_at_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = add_user(&redis, "nochannels", &RIGHTS.replace("&acl:*", ""));
    let (stdout, stderr) = run(&url);
    assert_ne!(field(&stdout, "missing"), "0", "{stdout}\n{stderr}");
    assert_eq!(field(&stdout, "health"), "Degraded", "{stdout}\n{stderr}");
    assert!(
        stdout.contains("MISSING PUBLISH on the namespace's channels"),
        "the missing right is named: {stdout}"
    );
    assert!(
        stderr.contains("lacks rights") && stderr.contains("channel"),
        "one log line says so: {stderr}"
    );
    assert_eq!(
        stderr.matches("lacks rights").count(),
        1,
        "once, not on every call: {stderr}"
    );
}

/// ACL users are per node: the user is created on each; the child's result.
fn run_on_cluster(cluster: &RedisCluster, rights: &str, env: &[(&str, &str)]) -> (String, String) {
    let url: Vec<String> = cluster
        .running()
        .map(|node| add_user(node, "app", rights))
        .collect();
    let url = url.join(",");
    let mut env = env.to_vec();
    env.extend([
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_L2_CLUSTER", "true"),
        ("OPTIMIZE_NAMESPACE", "acl"),
    ]);
    child::run("child", "ACL_CHILD", &env)
}

#[test]
fn a_user_with_the_documented_rights_runs_every_l2_feature_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let (stdout, stderr) = run_on_cluster(&cluster, &format!("{RIGHTS} {CLUSTER_RIGHTS}"), &[]);
    ran_everything(&stdout, &stderr);
}

/// Without the right to read the slot map nothing connects: reported as a missing right
/// (degraded health, naming it), never a crash or an error reaching the caller.
#[test]
fn a_cluster_user_without_the_slot_map_is_reported() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let (stdout, stderr) = run_on_cluster(&cluster, RIGHTS, &[("ACL_MAY_NOT_CONNECT", "1")]);
    assert_eq!(field(&stdout, "health"), "Degraded", "{stdout}\n{stderr}");
    assert!(
        stdout.contains("MISSING") && stdout.contains("cluster|slots"),
        "the missing right is named: {stdout}"
    );
}
