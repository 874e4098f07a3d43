//! L1 hits through the attribute against the peers users compare it with, measured in one run
//! with the same keys (1,024 warm u64 keys, cycled) and the same values (u64):
//! a bare `HashMap` get (the floor), raw quick_cache and moka gets, and the `cached` crate's
//! `#[cached]` hit, and the `clock` engine's raw get. On one thread, and on two threads at once (time per operation per thread).
//! Also counts executions for 1,000 concurrent cold calls (single-flight).
//! `attribute_monitor_on` is the same hit while a monitor evaluates every 100 ms and writes
//! its history to disk (what persisting history costs a hit, if anything).
//!
//! The attribute uses the process's L1 engine: quick_cache unless `OPTIMIZE_L1_ENGINE` says
//! otherwise (`scripts/bench.sh` runs this a second time with `clock`).
//!
//! `cargo bench --bench compare` (prints ratios at the end; `scripts/bench.sh` runs everything).

#[path = "support/hit.rs"]
mod hit;
#[path = "support/summary.rs"]
mod summary;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hit::{attribute, cached_crate, KEYS};
use optimize::cache::l1::{ClockEngine, Entry, L1Engine};
use optimize::key::ArgsKey;
use optimize::stats::{set_recording, Recording};
use summary::median_ns;

static COLD: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn cold(id: u64) -> u64 {
    COLD.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    id
}

/// One compared operation: a `fn(key) -> value` over warm state.
type Lookup = Arc<dyn Fn(u64) -> u64 + Send + Sync>;

/// The operations compared.
fn contenders() -> Vec<(&'static str, Lookup)> {
    let map: HashMap<u64, u64> = (0..KEYS).map(|k| (k, attribute(k))).collect();
    let quick = quick_cache::sync::Cache::<u64, u64>::new(10_000);
    let moka = moka::sync::Cache::<u64, u64>::new(10_000);
    for k in 0..KEYS {
        quick.insert(k, k);
        moka.insert(k, k);
        cached_crate(k);
    }
    moka.run_pending_tasks();
    let clock = ClockEngine::<u64>::new(10_000);
    for k in 0..KEYS {
        clock.insert(ArgsKey(u128::from(k)), Entry::new(k, 0));
    }
    vec![
        ("hashmap_get", Arc::new(move |k| *map.get(&k).unwrap())),
        ("quick_cache_get", Arc::new(move |k| quick.get(&k).unwrap())),
        (
            "clock_get",
            Arc::new(move |k| clock.get(ArgsKey(u128::from(k))).unwrap().value),
        ),
        ("moka_get", Arc::new(move |k| moka.get(&k).unwrap())),
        ("cached_hit", Arc::new(cached_crate)),
        ("attribute_hit", Arc::new(attribute)),
        // The same hit with less recorded (see `recording_for`): what metrics cost.
        ("attribute_counters", Arc::new(attribute)),
        ("attribute_no_metrics", Arc::new(attribute)),
        ("attribute_monitor_on", Arc::new(attribute)),
    ]
}

/// For `attribute_monitor_on`: a monitor evaluating every 100 ms (the shortest interval),
/// sampling the system and persisting its history in a temporary directory.
fn monitor_for(name: &str) -> Option<(Arc<optimize::monitor::Monitor>, tempfile::TempDir)> {
    if name != "attribute_monitor_on" {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = optimize::monitor::MonitorConfig::default()
        .interval(Duration::from_millis(100))
        .persist(
            dir.path().join("history"),
            Duration::from_secs(3600),
            64 << 20,
        );
    let monitor = optimize::monitor::Monitor::start(config, optimize::runtime().sources()).unwrap();
    assert!(monitor.history_persisted());
    Some((monitor, dir))
}

/// The recording level a contender runs under: full metrics unless its name says otherwise.
fn recording_for(name: &str) -> Recording {
    match name {
        "attribute_counters" => Recording::Counters,
        "attribute_no_metrics" => Recording::Off,
        _ => Recording::Full,
    }
}

fn main() {
    for k in 0..KEYS {
        attribute(k);
    }
    let contenders = contenders();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();

    let mut g = c.benchmark_group("l1_hit_1_thread");
    for (name, f) in &contenders {
        set_recording(recording_for(name));
        let monitor = monitor_for(name);
        g.bench_function(*name, |b| {
            let mut k = 0u64;
            b.iter(|| {
                k = (k + 1) & (KEYS - 1);
                black_box(f(black_box(k)))
            })
        });
        if let Some((monitor, _dir)) = monitor {
            monitor.stop();
        }
    }
    g.finish();

    let mut g = c.benchmark_group("l1_hit_2_threads");
    for (name, f) in &contenders {
        set_recording(recording_for(name));
        let monitor = monitor_for(name);
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let start = std::sync::Barrier::new(2);
                let run = |offset: u64| {
                    start.wait();
                    let t = Instant::now();
                    let mut k = offset;
                    for _ in 0..iters {
                        k = (k + 1) & (KEYS - 1);
                        black_box(f(black_box(k)));
                    }
                    t.elapsed()
                };
                std::thread::scope(|s| {
                    let other = s.spawn(|| run(512));
                    let mine = run(0);
                    mine.max(other.join().unwrap())
                })
            })
        });
        if let Some((monitor, _dir)) = monitor {
            monitor.stop();
        }
    }
    g.finish();
    set_recording(Recording::Full);
    c.final_summary();

    // Single-flight: executions for 1,000 concurrent cold calls of one key.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let calls: Vec<_> = (0..1000).map(|_| tokio::spawn(cold(42))).collect();
        for call in calls {
            call.await.unwrap();
        }
    });

    println!(
        "\nsummary (median ns per call per thread; ratio to the `cached` crate's #[cached] hit; \
         attribute on the {} L1 engine)",
        std::env::var("OPTIMIZE_L1_ENGINE").unwrap_or_else(|_| "default (quick)".into())
    );
    for group in ["l1_hit_1_thread", "l1_hit_2_threads"] {
        let cached = median_ns(group, "cached_hit");
        println!("  {group}");
        for (name, _) in &contenders {
            match (median_ns(group, name), cached) {
                (Some(ns), Some(base)) => {
                    println!("    {name:<20} {ns:>8.1} ns   {:>5.2}x", ns / base)
                }
                _ => println!("    {name:<20} (no estimate: run without a filter)"),
            }
        }
    }
    println!(
        "  single-flight: 1,000 concurrent cold calls -> {} execution(s)",
        COLD.load(SeqCst)
    );
}
