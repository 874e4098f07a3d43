//! Under contention, waiting cpu calls start in priority order. Its own test binary: it sizes
//! the process's CPU pool to one thread before anything else uses it.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use optimize::pool::{self, PoolConfig, Priority};

static ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[optimize::cpu(cache = false)]
fn occupy(release: Arc<Mutex<mpsc::Receiver<()>>>, started: mpsc::Sender<()>) {
    started.send(()).unwrap();
    release.lock().unwrap().recv().unwrap();
}

#[optimize::cpu(priority = "batch", cache = false)]
fn batch_job() {
    ORDER.lock().unwrap().push("batch");
}

#[optimize::cpu(priority = "low", cache = false)]
fn low_job() {
    ORDER.lock().unwrap().push("low");
}

#[optimize::cpu(cache = false)]
fn normal_job() {
    ORDER.lock().unwrap().push("normal");
}

#[optimize::cpu(priority = "high", cache = false)]
fn high_job() {
    ORDER.lock().unwrap().push("high");
}

#[optimize::cpu(priority = "critical", cache = false)]
fn critical_job() {
    ORDER.lock().unwrap().push("critical");
}

#[test]
fn higher_priority_runs_first_under_contention() {
    pool::init(PoolConfig {
        cpu_threads: 1,
        ..PoolConfig::default()
    })
    .expect("first use of the pools");
    assert_eq!(batch_job_cache().priority(), Priority::Batch);

    let (release_tx, release_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel();
    let release = Arc::new(Mutex::new(release_rx));
    let blocker = std::thread::spawn(move || occupy(release, started_tx));
    started_rx.recv().unwrap();

    // Queue in the worst order: lowest priority first.
    let jobs: [fn(); 5] = [batch_job, low_job, normal_job, high_job, critical_job];
    let mut threads = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        threads.push(std::thread::spawn(job));
        while pool::stats().cpu.queued_total() < i as u64 + 1 {
            std::thread::yield_now();
        }
    }
    let queued = pool::stats().cpu.queued;
    assert_eq!(queued, [1, 1, 1, 1, 1], "one waiter per priority");

    release_tx.send(()).unwrap();
    blocker.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        *ORDER.lock().unwrap(),
        ["critical", "high", "normal", "low", "batch"]
    );
}
