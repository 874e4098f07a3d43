//! Does predictive prefetch earn its place? Hit ratio (callers' calls answered from the
//! cache), mean call latency and backend calls of one function without prediction, with
//! `predict = "markov"` and with `predict = "sequential"`, on three access patterns measured
//! in the same run:
//!
//! - **sequential**: a reader paging through ids 0, 1, 2, … (nothing repeats, so a cache alone
//!   never hits);
//! - **markov**: 1,000 keys in one long cycle, each followed by its successor 90% of the time
//!   (else by a random key), in an L1 of 250;
//! - **zipf**: s = 1.0 over 10,000 keys in an L1 of 1,000 (the shape of most real traffic;
//!   prediction should neither help much nor hurt).
//!
//! The body is a backend round trip of 200 µs; callers think 300 µs between calls, which is
//! when a prefetch has time to land. Prefetches are reported as used (the caller found the
//! key in L1), late (asked before it landed) and wasted (never asked for).
//!
//! `cargo bench --bench predict`.

use std::time::{Duration, Instant};

use optimize::config::Config;
use optimize::{Outcome, Site};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

const CALLS: usize = 6_000;
const BACKEND: Duration = Duration::from_micros(200);
const THINK: Duration = Duration::from_micros(300);

macro_rules! variants {
    ($capacity:literal: $plain:ident, $markov:ident, $sequential:ident) => {
        #[optimize::io(ttl = "10m", capacity = $capacity, tiers = "l1")]
        fn $plain(id: u64) -> u64 {
            std::thread::sleep(BACKEND);
            id
        }
        #[optimize::io(ttl = "10m", capacity = $capacity, tiers = "l1", predict = "markov")]
        fn $markov(id: u64) -> u64 {
            std::thread::sleep(BACKEND);
            id
        }
        #[optimize::io(ttl = "10m", capacity = $capacity, tiers = "l1", predict = "sequential")]
        fn $sequential(id: u64) -> u64 {
            std::thread::sleep(BACKEND);
            id
        }
    };
}

variants!(100_000: seq_plain, seq_markov, seq_sequential);
variants!(250: markov_plain, markov_markov, markov_sequential);
variants!(1_000: zipf_plain, zipf_markov, zipf_sequential);

/// The ids of a workload, generated once so every variant sees the same sequence.
fn workload(name: &str) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(42);
    match name {
        "sequential" => (0..CALLS as u64).collect(),
        "markov" => {
            // The successors form one cycle through every key (a random order), longer than
            // L1 holds: what an LRU-like cache handles worst.
            const KEYS: u64 = 1_000;
            let mut order: Vec<u64> = (0..KEYS).collect();
            order.shuffle(&mut rng);
            let mut successor = vec![0; KEYS as usize];
            for (i, &id) in order.iter().enumerate() {
                successor[id as usize] = order[(i + 1) % order.len()];
            }
            let mut id = 0;
            (0..CALLS)
                .map(|_| {
                    id = if rng.random_bool(0.9) {
                        successor[id as usize]
                    } else {
                        rng.random_range(0..KEYS)
                    };
                    id
                })
                .collect()
        }
        "zipf" => {
            let zipf = Zipf::new(10_000.0, 1.0).unwrap();
            (0..CALLS)
                .map(|_| zipf.sample(&mut rng) as u64 - 1)
                .collect()
        }
        _ => unreachable!(),
    }
}

struct Run {
    hit_ratio: f64,
    mean: Duration,
    backend_calls: u64,
    used: u64,
    late: u64,
    wasted: u64,
    predicted: u64,
}

fn run(ids: &[u64], call: fn(u64) -> u64, site: &Site) -> Run {
    let mut spent = Duration::ZERO;
    for &id in ids {
        let started = Instant::now();
        assert_eq!(call(id), id);
        spent += started.elapsed();
        std::thread::sleep(THINK);
    }
    // Let the last prefetches land before counting.
    std::thread::sleep(Duration::from_millis(50));
    let s = site.stats();
    let p = site.predictions().unwrap_or_default();
    Run {
        hit_ratio: s.hit_ratio(),
        mean: spent / ids.len() as u32,
        backend_calls: s.count(Outcome::Computed) + s.count(Outcome::Prefetched),
        used: p.used,
        late: p.late,
        wasted: p.wasted + p.pending,
        predicted: p.predicted,
    }
}

fn main() {
    // Criterion-style arguments (`--bench`) are accepted and ignored.
    let _guard = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l3.enabled", "false"),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    type Variant = (&'static str, fn(u64) -> u64, fn() -> &'static Site);
    let table: [(&str, [Variant; 3]); 3] = [
        (
            "sequential",
            [
                ("none", seq_plain, seq_plain_cache),
                ("markov", seq_markov, seq_markov_cache),
                ("sequential", seq_sequential, seq_sequential_cache),
            ],
        ),
        (
            "markov",
            [
                ("none", markov_plain, markov_plain_cache),
                ("markov", markov_markov, markov_markov_cache),
                ("sequential", markov_sequential, markov_sequential_cache),
            ],
        ),
        (
            "zipf",
            [
                ("none", zipf_plain, zipf_plain_cache),
                ("markov", zipf_markov, zipf_markov_cache),
                ("sequential", zipf_sequential, zipf_sequential_cache),
            ],
        ),
    ];

    println!(
        "summary: predictive prefetch, {CALLS} calls per run, backend {BACKEND:?}, think {THINK:?}"
    );
    println!(
        "{:<11} {:<11} {:>9} {:>10} {:>9} {:>8} {:>6} {:>6} {:>7}",
        "workload",
        "predict",
        "hit ratio",
        "mean call",
        "backend",
        "prefetch",
        "used",
        "late",
        "wasted"
    );
    for (workload_name, variants) in table {
        let ids = workload(workload_name);
        let mut baseline = None;
        for (predict, call, site) in variants {
            let r = run(&ids, call, site());
            let base = *baseline.get_or_insert(r.hit_ratio);
            println!(
                "{:<11} {:<11} {:>9.3} {:>8.1}µs {:>9} {:>8} {:>6} {:>6} {:>7}   hit ratio {:+.3} vs none",
                workload_name,
                predict,
                r.hit_ratio,
                r.mean.as_secs_f64() * 1e6,
                r.backend_calls,
                r.predicted,
                r.used,
                r.late,
                r.wasted,
                r.hit_ratio - base,
            );
        }
    }
}
