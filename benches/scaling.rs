//! Scaling of the L1 hit: aggregate hits per second with 1, 2, 4, 8 and 16 threads (each
//! thread cycling over the same 1,024 warm keys from its own offset), for the attribute and
//! the peers, and each one's throughput relative to its own single thread. The thread counts
//! past the machine's cores are printed too (they then share cores); the figure that matters
//! is up to the core count.
//!
//! `cargo bench --bench scaling`

#[path = "support/hit.rs"]
mod hit;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hit::{attribute, cached_crate, KEYS};

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
    let contenders: Vec<(&str, Lookup)> = vec![
        ("quick_cache_get", Arc::new(move |k| quick.get(&k).unwrap())),
        ("moka_get", Arc::new(move |k| moka.get(&k).unwrap())),
        ("cached_hit", Arc::new(cached_crate)),
        ("attribute_hit", Arc::new(attribute)),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let counts = [1usize, 2, 4, 8, 16];
    println!("summary (aggregate L1 hits per second, millions; x = against its own 1 thread; {cores} cores)");
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
