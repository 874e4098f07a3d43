//! The task processor and adaptive concurrency, each figure next to its baseline measured in
//! the same run:
//!
//! 1. **Submission to start**, empty tasks on each pool: the time from `spawn` to the task's
//!    body starting (median and p99 over 2,000 tasks one after the other), and throughput
//!    (20,000 tasks submitted at once, then all joined) — against the same closures given to
//!    `rayon::spawn` and `tokio::spawn` directly.
//! 2. **Rejection**: with the CPU thread held and `pools.queue_capacity = 100`, a burst of
//!    1,000 submissions; the time each refused submission takes.
//! 3. **Adaptive concurrency**: 200 clients for 2 s against a simulated backend whose latency
//!    is 2 ms up to 16 calls at once and grows with the square of the overload beyond, so it
//!    thrashes (each call times out at 50 ms): goodput (calls that succeeded, per second) and p99 of the whole call (queueing
//!    included), with fixed limits too low (4), right (16) and too high (256), and adaptive.
//!
//! `cargo bench --bench tasks`.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use optimize::config::Config;
use optimize::task::{Task, TaskStatus};

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Submission-to-start latencies of `n` tasks, one after the other, and `spawn` is how.
async fn start_latency(
    n: usize,
    spawn: impl Fn(tokio::sync::oneshot::Sender<Instant>),
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let submitted = Instant::now();
        spawn(tx);
        let started = rx.await.unwrap();
        out.push(started.saturating_duration_since(submitted));
    }
    out.sort_unstable();
    out
}

async fn submission() {
    const N: usize = 2_000;
    const BURST: usize = 20_000;
    println!(
        "submission to start, empty tasks ({N} one after the other; throughput: {BURST} at once)"
    );
    println!("{:<22} {:>10} {:>10} {:>14}", "", "p50", "p99", "tasks/s");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let report = |name: &str, lat: Vec<Duration>, per_s: f64| {
        println!(
            "{name:<22} {:>8.1}µs {:>8.1}µs {:>14.0}",
            micros(quantile(&lat, 0.5)),
            micros(quantile(&lat, 0.99)),
            per_s
        );
    };
    for (name, task) in [
        ("optimize Task::cpu", Task::cpu()),
        ("optimize Task::io", Task::io()),
        ("optimize Task::memory", Task::memory().mem(1)),
    ] {
        let lat = start_latency(N, |tx| {
            let mut tx = Some(tx);
            let _ = task.clone().spawn(move || {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Instant::now());
                }
                Ok::<_, ()>(())
            });
        })
        .await;
        let started = Instant::now();
        let batch = task
            .clone()
            .spawn_batch((0..BURST).map(|_| || Ok::<_, ()>(())));
        assert!(batch.join_all().await.iter().all(Result::is_ok));
        report(name, lat, BURST as f64 / started.elapsed().as_secs_f64());
    }
    let lat = start_latency(N, |tx| {
        pool.spawn(move || {
            let _ = tx.send(Instant::now());
        })
    })
    .await;
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for _ in 0..BURST {
        let done = done_tx.clone();
        pool.spawn(move || {
            let _ = done.send(());
        });
    }
    for _ in 0..BURST {
        done_rx.recv().unwrap();
    }
    report(
        "rayon::spawn",
        lat,
        BURST as f64 / started.elapsed().as_secs_f64(),
    );
    let lat = start_latency(N, |tx| {
        tokio::spawn(async move {
            let _ = tx.send(Instant::now());
        });
    })
    .await;
    let started = Instant::now();
    let handles: Vec<_> = (0..BURST).map(|_| tokio::spawn(async {})).collect();
    for h in handles {
        h.await.unwrap();
    }
    report(
        "tokio::spawn",
        lat,
        BURST as f64 / started.elapsed().as_secs_f64(),
    );
}

fn rejection() {
    // Both CPU threads held, so submissions can only queue.
    let pools = optimize::runtime().pools();
    let (release, hogs): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            (tx, Task::cpu().spawn(move || rx.recv().map_err(|_| ())))
        })
        .unzip();
    while pools.stats().cpu.active < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..1_000 {
        let started = Instant::now();
        let h = Task::cpu().spawn(|| Ok::<_, ()>(()));
        let took = started.elapsed();
        if h.status() == TaskStatus::Rejected {
            refused.push(took);
        } else {
            accepted.push(h);
        }
    }
    refused.sort_unstable();
    println!(
        "\nrejection with the CPU pool's queue bound at 100, both CPU threads held: {} accepted, {} refused; a refused submission took p50 {:.1}µs, p99 {:.1}µs, max {:.1}µs",
        accepted.len(),
        refused.len(),
        micros(quantile(&refused, 0.5)),
        micros(quantile(&refused, 0.99)),
        micros(*refused.last().unwrap()),
    );
    for (tx, hog) in release.into_iter().zip(hogs) {
        tx.send(()).unwrap();
        hog.wait().unwrap();
    }
    for h in accepted {
        h.wait().unwrap();
    }
}

/// The simulated backend: 2 ms up to 16 calls at once; beyond, it thrashes: the latency grows
/// with the square of the overload (64 at once: 32 ms; 200: 312 ms), so its throughput falls.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

async fn backend() {
    let now = IN_FLIGHT.fetch_add(1, SeqCst) + 1;
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, SeqCst);
        }
    }
    let _leave = Leave;
    let overload = now.max(16) as f64 / 16.0;
    tokio::time::sleep(Duration::from_secs_f64(0.002 * overload * overload)).await;
}

#[optimize::io(concurrency = 4, cache = false, timeout = "50ms")]
async fn too_low() -> Result<(), std::io::Error> {
    backend().await;
    Ok(())
}

#[optimize::io(concurrency = 16, cache = false, timeout = "50ms")]
async fn right() -> Result<(), std::io::Error> {
    backend().await;
    Ok(())
}

#[optimize::io(concurrency = 256, cache = false, timeout = "50ms")]
async fn too_high() -> Result<(), std::io::Error> {
    backend().await;
    Ok(())
}

#[optimize::io(concurrency = "adaptive(1..256)", cache = false, timeout = "50ms")]
async fn adaptive() -> Result<(), std::io::Error> {
    backend().await;
    Ok(())
}

async fn goodput<F, Fut>(name: &str, call: F)
where
    F: Fn() -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<(), std::io::Error>> + Send,
{
    const CLIENTS: usize = 200;
    const FOR: Duration = Duration::from_secs(2);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (ok, failed) = (ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < FOR {
                    let t = Instant::now();
                    match call().await {
                        Ok(()) => ok.fetch_add(1, SeqCst),
                        Err(_) => failed.fetch_add(1, SeqCst),
                    };
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all.sort_unstable();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:<26} {:>10.0} {:>9} {:>9.1}ms",
        ok.load(SeqCst) as f64 / secs,
        failed.load(SeqCst),
        quantile(&all, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let _guard = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l3.enabled", "false")
            .set("pools.cpu_threads", "2")
            .set("pools.queue_capacity", "0"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("summary: the task processor and adaptive concurrency (cargo bench --bench tasks)\n");
    // Unbounded queues, but for the rejection figure (the CPU pool's bound is set to 100 for
    // it alone): the burst of 20,000 and the 200 clients must fit.
    rt.block_on(submission());
    let cpu = optimize::runtime().pools().cpu().gate();
    cpu.set_queue_capacity(Some(100));
    rejection();
    cpu.set_queue_capacity(None);
    println!(
        "\nadaptive concurrency: 200 clients, 2 s each, backend 2 ms up to 16 at once (x overload² beyond), 50 ms timeout"
    );
    println!(
        "{:<26} {:>10} {:>9} {:>11}",
        "limit", "goodput/s", "failed", "p99"
    );
    rt.block_on(async {
        goodput("fixed 4 (too low)", too_low).await;
        goodput("fixed 16 (right)", right).await;
        goodput("fixed 256 (too high)", too_high).await;
        goodput("adaptive (1..256)", adaptive).await;
    });
    println!(
        "adaptive limit at the end: {:?}",
        adaptive_cache().concurrency()
    );
}
