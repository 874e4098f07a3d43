//! Shared tiers across real process boundaries: this test binary runs itself as a child,
//! configured only by the environment, as an application would be.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use optimize::Outcome;
use redis_server::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Quote {
    id: u64,
    price: u64,
}

static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

#[optimize::io(ttl = "10m")]
async fn quote(id: u64) -> Quote {
    EXECUTIONS.fetch_add(1, SeqCst);
    Quote { id, price: id * 3 }
}

const KEYS: u64 = 50;

/// The child process's work (hence ignored: the tests below run it in children).
#[test]
#[ignore = "run in child processes by the tests below"]
fn child() {
    assert!(
        std::env::var_os("TIERS_PROCESS_CHILD").is_some(),
        "run as a child only"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for id in 0..KEYS {
        assert_eq!(rt.block_on(quote(id)), Quote { id, price: id * 3 });
    }
    optimize::shutdown();
    let s = quote_cache().stats();
    println!(
        "RESULT executions={} hit_l2={} hit_l3={} engine={:?}",
        EXECUTIONS.load(SeqCst),
        s.count(Outcome::HitL2),
        s.count(Outcome::HitL3),
        optimize::runtime().config().l1_engine
    );
}

#[derive(Debug, PartialEq)]
struct ChildResult {
    executions: u64,
    hit_l2: u64,
    hit_l3: u64,
    engine: String,
}

fn result(executions: u64, hit_l2: u64, hit_l3: u64) -> ChildResult {
    ChildResult {
        executions,
        hit_l2,
        hit_l3,
        engine: "Quick".into(),
    }
}

fn run_child(env: &[(&str, &str)]) -> ChildResult {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env("TIERS_PROCESS_CHILD", "1")
        .env_remove("OPTIMIZE_REDIS_URL")
        .env_remove("OPTIMIZE_L3_DIR")
        .env_remove("OPTIMIZE_L3")
        .env_remove("OPTIMIZE_L1_ENGINE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints `test child ... ` on the same line, before the child's output.
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    let field = |name: &str| -> &str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
    };
    let number = |name: &str| -> u64 { field(name).parse().unwrap() };
    ChildResult {
        executions: number("executions"),
        hit_l2: number("hit_l2"),
        hit_l3: number("hit_l3"),
        engine: field("engine").to_owned(),
    }
}

#[test]
fn a_value_computed_in_one_process_is_an_l2_hit_in_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let env = [
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "proc-l2"),
    ];
    let first = run_child(&env);
    assert_eq!(first, result(KEYS, 0, 0));
    let second = run_child(&env);
    assert_eq!(second, result(0, KEYS, 0));
}

#[test]
fn l3_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let env = [("OPTIMIZE_L3_DIR", path)];
    let first = run_child(&env);
    assert_eq!(first, result(KEYS, 0, 0));
    let second = run_child(&env);
    assert_eq!(second, result(0, 0, KEYS));
}

#[test]
fn without_configuration_nothing_persists() {
    assert_eq!(run_child(&[]).executions, KEYS);
    assert_eq!(run_child(&[]).executions, KEYS);
}

#[test]
fn the_l1_engine_is_chosen_by_the_environment() {
    assert_eq!(run_child(&[]).engine, "Quick", "quick_cache is the default");
    let moka = run_child(&[("OPTIMIZE_L1_ENGINE", "moka")]);
    assert_eq!(moka.engine, "Moka");
    assert_eq!(moka.executions, KEYS, "and it caches as usual");
    let clock = run_child(&[("OPTIMIZE_L1_ENGINE", "clock")]);
    assert_eq!(clock.engine, "Clock");
    assert_eq!(clock.executions, KEYS, "and it caches as usual");
}
