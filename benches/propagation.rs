//! Invalidation propagation between instances: one process invalidates (by key, by function,
//! by tag), two others watch their L1 and note when the entry is gone; the delay from the
//! start of the invalidation call to that moment, over 300 invalidations, as p50/p99/max.
//!
//! `cargo bench --bench propagation` (starts its own redis-server; the instances are this
//! binary run again).

#[path = "../tests/support/child.rs"]
mod child;
#[path = "../tests/support/instance.rs"]
mod instance;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../tests/support/skip.rs"]
mod skip;

use std::io::BufRead;
use std::time::{Duration, Instant};

use instance::{distinct_tag_ids, quantile, unix_micros, Instance};

#[optimize::io(ttl = "10m")]
fn entry(id: u64) -> u64 {
    id
}

#[optimize::io(ttl = "10m", tags = ["item:{id}"])]
fn tagged(id: u64) -> u64 {
    id
}

/// The child: fills, watches and invalidates on command.
fn instance() {
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let n: u64 = words.next().map_or(0, |w| w.parse().unwrap());
        match command {
            "ready" => {
                assert!(child::wait_for_l2(true), "connected within 5 s");
                println!("@@ ready");
            }
            "fill" => {
                (0..n).for_each(|id| {
                    entry(id);
                });
                println!("@@ ok");
            }
            "fill_tagged" => {
                // One id per bit of L1's tag set, so each tag removes one entry.
                for id in distinct_tag_ids("item:", n as usize) {
                    tagged(id);
                }
                println!("@@ ok");
            }
            "watch" | "watch_tagged" => {
                let site = match command {
                    "watch" => entry_cache(),
                    _ => tagged_cache(),
                };
                println!("@@ watching");
                let deadline = Instant::now() + Duration::from_secs(20);
                while site.len() > n && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                println!("@@ seen {}", unix_micros());
            }
            "key" | "function" | "tag" => {
                let at = unix_micros();
                match command {
                    "key" => {
                        entry_invalidate(n);
                    }
                    "function" => entry_cache().invalidate_all(),
                    _ => optimize::invalidate_tag(&format!("item:{n}")),
                }
                println!("@@ sent {at}");
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

fn main() {
    if std::env::var_os("PROPAGATION_CHILD").is_some() {
        return instance();
    }
    // `cargo bench` passes `--bench`; the children are started without it.
    let Some(redis) = redis_server::RedisServer::start() else {
        eprintln!("redis-server is required for this benchmark");
        std::process::exit(1);
    };
    let url = redis.url();
    let env = [
        ("PROPAGATION_CHILD", "1"),
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "propagation"),
    ];
    let mut a = Instance::start(&[], &env);
    let mut watchers = [Instance::start(&[], &env), Instance::start(&[], &env)];
    for i in std::iter::once(&mut a).chain(watchers.iter_mut()) {
        i.ask("ready", "ready");
    }
    const KEYS: u64 = 200;
    const TAGS: u64 = 40;
    let mut lags: Vec<(&str, f64)> = Vec::new();
    let mut round = |a: &mut Instance,
                     watchers: &mut [Instance; 2],
                     kind: &'static str,
                     watch: &str,
                     command: String| {
        for w in watchers.iter_mut() {
            w.ask(watch, "watching");
        }
        let sent: u128 = a.ask(&command, "sent").parse().unwrap();
        for w in watchers.iter_mut() {
            let seen: u128 = w.expect("seen").parse().unwrap();
            lags.push((kind, seen.saturating_sub(sent) as f64 / 1000.0));
        }
    };
    for w in &mut watchers {
        w.ask(&format!("fill {KEYS}"), "ok");
    }
    for id in 0..KEYS {
        round(
            &mut a,
            &mut watchers,
            "key",
            &format!("watch {}", KEYS - id - 1),
            format!("key {id}"),
        );
    }
    for _ in 0..10 {
        for w in &mut watchers {
            w.ask(&format!("fill {KEYS}"), "ok");
        }
        round(
            &mut a,
            &mut watchers,
            "function",
            "watch 0",
            "function 0".into(),
        );
    }
    for w in &mut watchers {
        w.ask(&format!("fill_tagged {TAGS}"), "ok");
    }
    for (n, id) in distinct_tag_ids("item:", TAGS as usize)
        .into_iter()
        .enumerate()
    {
        let left = TAGS - n as u64 - 1;
        round(
            &mut a,
            &mut watchers,
            "tag",
            &format!("watch_tagged {left}"),
            format!("tag {id}"),
        );
    }
    println!("\nsummary (invalidation in one process -> gone from the L1 of two others, ms)");
    for kind in ["key", "function", "tag", "all"] {
        let mut ms: Vec<f64> = lags
            .iter()
            .filter(|(k, _)| kind == "all" || *k == kind)
            .map(|(_, ms)| *ms)
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "  {kind:<9} n {:>4}   p50 {:>6.2}   p99 {:>6.2}   max {:>6.2}",
            ms.len(),
            quantile(&ms, 0.5),
            quantile(&ms, 0.99),
            ms[ms.len() - 1]
        );
    }
    a.quit();
    for w in watchers {
        w.quit();
    }
}
