//! Under contention, waiting calls start in priority order. Its own test binary: it sizes the
//! process's CPU pool to one thread and the io limit to one call before anything uses them.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use optimize::Priority;

#[path = "support/bounded.rs"]
mod bounded;

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

/// One CPU thread and one io slot for the whole process, set before anything uses the pools.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The guard lives for the whole test binary.
        std::mem::forget(
            optimize::install(
                optimize::config::Config::builder()
                    .without_file()
                    .environment(Vec::<(String, String)>::new())
                    .set("l3.enabled", "false")
                    .set("pools.cpu_threads", "1")
                    .set("pools.io_concurrency", "1"),
            )
            .expect("first use of the pools"),
        );
    });
}

#[test]
fn higher_priority_runs_first_under_contention() {
    bounded::within("cpu priority order", || {
        setup();
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
            bounded::until("the job is queued", || {
                optimize::runtime().pools().stats().cpu.queued_total() > i as u64
            });
        }
        let queued = optimize::runtime().pools().stats().cpu.queued;
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
    })
}

static IO_ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[optimize::io(cache = false)]
fn io_occupy(release: Arc<Mutex<mpsc::Receiver<()>>>, started: mpsc::Sender<()>) {
    started.send(()).unwrap();
    release.lock().unwrap().recv().unwrap();
}

#[optimize::io(priority = "low", cache = false)]
fn io_low() {
    IO_ORDER.lock().unwrap().push("low");
}

#[optimize::io(priority = "critical", cache = false)]
fn io_critical() {
    IO_ORDER.lock().unwrap().push("critical");
}

#[test]
fn io_calls_queue_by_priority_at_the_io_limit() {
    bounded::within("io priority order", || {
        setup();
        let (release_tx, release_rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let release = Arc::new(Mutex::new(release_rx));
        let blocker = std::thread::spawn(move || io_occupy(release, started_tx));
        started_rx.recv().unwrap();
        let low = std::thread::spawn(io_low);
        bounded::until("the low call is queued", || {
            optimize::runtime().pools().stats().io.queued[Priority::Low.index()] > 0
        });
        let critical = std::thread::spawn(io_critical);
        bounded::until("the critical call is queued", || {
            optimize::runtime().pools().stats().io.queued[Priority::Critical.index()] > 0
        });
        release_tx.send(()).unwrap();
        for t in [blocker, low, critical] {
            t.join().unwrap();
        }
        assert_eq!(*IO_ORDER.lock().unwrap(), ["critical", "low"]);
    })
}
