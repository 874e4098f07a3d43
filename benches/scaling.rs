//! Scaling of the L1 hit: aggregate hits per second with 1, 2, 4, 8 and 16 threads (each
//! thread cycling over the same 1,024 warm keys from its own offset), for the attribute and
//! the peers, and each one's throughput relative to its own single thread. The thread counts
//! past the machine's cores are printed too (they then share cores); the figure that matters
//! is up to the core count.
//!
//! `shared_map_read` is the machine's ceiling: a `HashMap` that every thread only reads (no
//! lock, no write to any shared line). `clock_get` is the `clock` L1 engine alone, whose
//! reads write no shared line either. The attribute uses the process's L1 engine: quick_cache
//! unless `OPTIMIZE_L1_ENGINE` says otherwise (`scripts/bench.sh` also runs `clock`).
//!
//! `cargo bench --bench scaling`

#[path = "support/hit.rs"]
mod hit;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hit::{attribute, cached_crate, KEYS};
use optimize::cache::l1::{ClockEngine, Entry, L1Engine};
use optimize::key::ArgsKey;

const OPS_PER_THREAD: u64 = 2_000_000;
const REPEATS: usize = 5;

type Lookup = Arc<dyn Fn(u64) -> u64 + Send + Sync>;

/// Hits per second with `threads` threads: the best of [`REPEATS`] runs (the least disturbed).
fn throughput(f: &Lookup, threads: usize) -> f64 {
    (0..REPEATS)
        .map(|_| {
            let start = Arc::new(Barrier::new(threads + 1));
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (f, start) = (f.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let mut k = (t as u64 * 97) & (KEYS - 1);
                        for _ in 0..OPS_PER_THREAD {
                            k = (k + 1) & (KEYS - 1);
                            black_box(f(black_box(k)));
                        }
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for w in workers {
                w.join().unwrap();
            }
            let elapsed = t.elapsed().max(Duration::from_nanos(1));
            (threads as u64 * OPS_PER_THREAD) as f64 / elapsed.as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let quick = quick_cache::sync::Cache::<u64, u64>::new(10_000);
    let moka = moka::sync::Cache::<u64, u64>::new(10_000);
    for k in 0..KEYS {
        attribute(k);
        cached_crate(k);
        quick.insert(k, k);
        moka.insert(k, k);
    }
    moka.run_pending_tasks();
    let map: std::collections::HashMap<u64, u64> = (0..KEYS).map(|k| (k, k)).collect();
    let clock = ClockEngine::<u64>::new(10_000);
    for k in 0..KEYS {
        clock.insert(ArgsKey(u128::from(k)), Entry::new(k, 0));
    }
    let contenders: Vec<(&str, Lookup)> = vec![
        ("shared_map_read", Arc::new(move |k| map[&k])),
        (
            "clock_get",
            Arc::new(move |k| clock.get(ArgsKey(u128::from(k))).unwrap().value),
        ),
        ("quick_cache_get", Arc::new(move |k| quick.get(&k).unwrap())),
        ("moka_get", Arc::new(move |k| moka.get(&k).unwrap())),
        ("cached_hit", Arc::new(cached_crate)),
        ("attribute_hit", Arc::new(attribute)),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let counts = [1usize, 2, 4, 8, 16];
    let engine = std::env::var("OPTIMIZE_L1_ENGINE").unwrap_or_else(|_| "default (quick)".into());
    println!("summary (aggregate L1 hits per second, millions; x = against its own 1 thread; {cores} cores; attribute on the {engine} L1 engine)");
    print!("  {:<16}", "threads");
    for n in counts {
        print!(" {n:>13}");
    }
    println!();
    for (name, f) in &contenders {
        let one = throughput(f, 1);
        print!("  {name:<16}");
        for n in counts {
            let t = if n == 1 { one } else { throughput(f, n) };
            print!(" {:>6.1} {:>5.2}x", t / 1e6, t / one);
        }
        println!();
    }
}
