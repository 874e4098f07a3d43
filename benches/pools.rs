//! p99 latency of concurrent io calls while cpu calls saturate the machine: cpu bodies routed
//! to the CPU pool by `#[optimize::cpu]` against the naive way (the same body run on a tokio
//! worker), each as a ratio against the unloaded p99 measured in the same run.
//!
//! `cargo bench --bench pools` (plain main: a percentile over a fixed window is not what
//! criterion's per-iteration model measures).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wall time of each phase.
const WINDOW: Duration = Duration::from_secs(3);
/// Tasks issuing io calls back to back.
const IO_TASKS: usize = 4;
/// CPU work per cpu call (spin).
const BURN: Duration = Duration::from_millis(5);

#[optimize::io(cache = false)]
async fn io_call() {
    tokio::time::sleep(Duration::from_micros(200)).await;
}

fn burn(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

#[optimize::cpu(cache = false)]
async fn cpu_routed(d: Duration) -> u64 {
    burn(d)
}

async fn cpu_naive(d: Duration) -> u64 {
    burn(d)
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    None,
    Routed,
    Naive,
}

async fn phase(load: Load, cpu_tasks: usize) -> (Duration, Duration, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    if load != Load::None {
        for _ in 0..cpu_tasks {
            let stop = stop.clone();
            loaders.push(tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Relaxed) {
                    match load {
                        Load::Routed => cpu_routed(BURN).await,
                        _ => cpu_naive(BURN).await,
                    };
                    n += 1;
                    tokio::task::yield_now().await;
                }
                n
            }));
        }
    }
    let mut probes = Vec::new();
    for _ in 0..IO_TASKS {
        let stop = stop.clone();
        probes.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Relaxed) {
                let t = Instant::now();
                io_call().await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    tokio::time::sleep(WINDOW).await;
    stop.store(true, Relaxed);
    let mut samples = Vec::new();
    for p in probes {
        samples.extend(p.await.unwrap());
    }
    let mut cpu_calls = 0;
    for l in loaders {
        cpu_calls += l.await.unwrap();
    }
    samples.sort();
    let q = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (q(0.50), q(0.99), samples.len(), cpu_calls)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let cpu_tasks = cores * 2;
    rt.block_on(async {
        println!(
            "io p99 under cpu load: {cores} cores, {cores} tokio workers, {} CPU pool threads, \
             {IO_TASKS} io tasks, {cpu_tasks} cpu tasks of {BURN:?} each, {WINDOW:?} per phase",
            optimize::runtime().pools().stats().cpu_threads
        );
        let (p50_0, p99_0, n0, _) = phase(Load::None, cpu_tasks).await;
        let (p50_r, p99_r, nr, cr) = phase(Load::Routed, cpu_tasks).await;
        let (p50_n, p99_n, nn, cn) = phase(Load::Naive, cpu_tasks).await;
        println!("summary");
        println!(
            "{:<34} {:>10} {:>10} {:>9} {:>10} {:>12}",
            "phase", "p50", "p99", "io calls", "cpu calls", "p99 / idle"
        );
        let row = |name: &str, p50: Duration, p99: Duration, n: usize, c: usize| {
            println!(
                "{name:<34} {:>10.2?} {:>10.2?} {n:>9} {c:>10} {:>11.2}x",
                p50,
                p99,
                p99.as_secs_f64() / p99_0.as_secs_f64()
            );
        };
        row("unloaded", p50_0, p99_0, n0, 0);
        row("cpu load routed to the CPU pool", p50_r, p99_r, nr, cr);
        row("cpu load on tokio workers (naive)", p50_n, p99_n, nn, cn);
    });
}
