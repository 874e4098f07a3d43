//! Routing through the pools (docs/pools.md), through the attribute: where bodies run, limits,
//! timeouts, retries, re-entrancy, runtimes, and the task API. Behaviour only; no timings.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use optimize::pool::Priority;
use optimize::{Task, TaskError, TaskStatus};

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

// ---- cpu ------------------------------------------------------------------------------

#[optimize::cpu(cache = false)]
fn cpu_where() -> String {
    thread_name()
}

#[optimize::cpu(cache = false)]
async fn cpu_where_async(tag: u32) -> (String, u32) {
    (thread_name(), tag)
}

#[optimize::cpu(cache = false)]
async fn cpu_sum_borrowed(values: &[u64]) -> (String, u64) {
    (thread_name(), values.iter().sum())
}

#[optimize::cpu(ttl = "1m")]
fn cpu_len(text: &str) -> usize {
    text.len()
}

#[test]
fn sync_cpu_bodies_run_on_the_cpu_pool_and_may_borrow() {
    assert!(cpu_where().starts_with("optimize-cpu-"), "{}", cpu_where());
    let owned = String::from("hello");
    assert_eq!(cpu_len(&owned), 5);
    assert_eq!(cpu_len(&owned), 5);
    assert_eq!(cpu_len_cache().stats().hits(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn async_cpu_bodies_run_on_the_pool_on_a_current_thread_runtime() {
    let (name, tag) = cpu_where_async(7).await;
    assert!(name.starts_with("optimize-cpu-"), "{name}");
    assert_eq!(tag, 7);
    let values = vec![1, 2, 3];
    let (name, sum) = cpu_sum_borrowed(&values).await;
    assert!(name.starts_with("optimize-cpu-"), "{name}");
    assert_eq!(sum, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_cpu_bodies_run_on_the_pool_on_a_multi_thread_runtime() {
    let (name, _) = cpu_where_async(1).await;
    assert!(name.starts_with("optimize-cpu-"), "{name}");
    let values = vec![4, 5];
    let (name, sum) = cpu_sum_borrowed(&values).await;
    assert!(name.starts_with("optimize-cpu-"), "{name}");
    assert_eq!(sum, 9);
}

#[optimize::cpu(cache = false)]
fn cpu_depth(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 + cpu_depth(n - 1)
    }
}

#[test]
fn cpu_recursion_deeper_than_the_pool_does_not_deadlock() {
    let depth = optimize::runtime().pools().stats().cpu_threads as u32 * 8 + 3;
    assert_eq!(cpu_depth(depth), depth);
}

static SPINNING: AtomicUsize = AtomicUsize::new(0);

#[optimize::cpu(cache = false)]
async fn spin(release: Arc<AtomicBool>) -> u32 {
    SPINNING.fetch_add(1, SeqCst);
    // Bounded, so a regression that runs this on the runtime's only thread fails the test
    // below instead of hanging it.
    let start = std::time::Instant::now();
    while !release.load(SeqCst) && start.elapsed() < Duration::from_secs(10) {
        std::hint::spin_loop();
    }
    SPINNING.fetch_sub(1, SeqCst);
    1
}

/// While cpu bodies occupy every pool thread, a ticker on the caller's one-thread runtime
/// keeps running: the callers await without holding the runtime's thread.
#[test]
fn a_saturated_cpu_pool_does_not_stall_a_one_worker_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let release = Arc::new(AtomicBool::new(false));
        let jobs = optimize::runtime().pools().stats().cpu_threads * 2;
        let handles: Vec<_> = (0..jobs)
            .map(|_| tokio::spawn(spin(release.clone())))
            .collect();
        let threads = optimize::runtime().pools().stats().cpu_threads;
        // Tick until the pool is saturated and the ticker has run a few times while it was.
        let mut ticks_while_saturated = 0;
        for _ in 0..10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if SPINNING.load(SeqCst) >= threads {
                ticks_while_saturated += 1;
                if ticks_while_saturated == 5 {
                    break;
                }
            }
        }
        release.store(true, SeqCst);
        let done: u32 = futures_join(handles).await;
        assert_eq!(done as usize, jobs);
        assert_eq!(ticks_while_saturated, 5, "the runtime stalled");
    });
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<u32>>) -> u32 {
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    sum
}

// ---- io -------------------------------------------------------------------------------

static IO_RUNNING: AtomicU32 = AtomicU32::new(0);
static IO_PEAK: AtomicU32 = AtomicU32::new(0);

#[optimize::io(concurrency = 2, cache = false)]
async fn limited(_n: u32) {
    let now = IO_RUNNING.fetch_add(1, SeqCst) + 1;
    IO_PEAK.fetch_max(now, SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    IO_RUNNING.fetch_sub(1, SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_concurrency_limits_running_calls() {
    let handles: Vec<_> = (0..12).map(|n| tokio::spawn(limited(n))).collect();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(IO_PEAK.load(SeqCst), 2);
}

#[optimize::io(timeout = "50ms", cache = false)]
async fn slow_result() -> Result<u32, std::io::Error> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(1)
}

#[optimize::io(timeout = "50ms")]
async fn slow_option(n: u32) -> Option<u32> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Some(n)
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_returns_the_error_type_or_none() {
    let err = slow_result().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        err.to_string()
            .contains("slow_result` timed out after 50ms"),
        "{err}"
    );
    assert_eq!(slow_result_cache().stats().timeouts, 1);

    assert_eq!(slow_option(3).await, None);
    // Not cached: the next call runs (and times out) again.
    assert_eq!(slow_option(3).await, None);
    assert_eq!(slow_option_cache().stats().timeouts, 2);
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[optimize::io(retries = 3, backoff = "1ms")]
async fn flaky(mut label: String) -> Result<String, String> {
    let n = FLAKY_CALLS.fetch_add(1, SeqCst);
    label.push('!');
    if n < 2 {
        Err(format!("attempt {n} failed"))
    } else {
        Ok(label)
    }
}

#[tokio::test]
async fn err_results_are_retried_and_the_success_is_cached() {
    assert_eq!(flaky("a".into()).await.unwrap(), "a!");
    assert_eq!(FLAKY_CALLS.load(SeqCst), 3);
    assert_eq!(flaky("a".into()).await.unwrap(), "a!");
    assert_eq!(FLAKY_CALLS.load(SeqCst), 3, "the second call was a hit");
    let stats = flaky_cache().stats();
    assert_eq!((stats.retries, stats.hits()), (2, 1));
}

static ALWAYS_CALLS: AtomicU32 = AtomicU32::new(0);

#[optimize::io(retries = 2, backoff = "1ms", cache = false)]
fn always_fails(x: u32) -> Result<u32, String> {
    ALWAYS_CALLS.fetch_add(1, SeqCst);
    Err(format!("no {x}"))
}

#[test]
fn sync_retries_stop_at_the_limit_and_return_the_last_error() {
    assert_eq!(always_fails(4), Err("no 4".to_owned()));
    assert_eq!(ALWAYS_CALLS.load(SeqCst), 3);
}

#[optimize::io(cache = false)]
fn sync_io_where() -> String {
    thread_name()
}

#[tokio::test(flavor = "current_thread")]
async fn sync_bodies_work_on_a_current_thread_runtime() {
    // No block_in_place panic: on a current-thread runtime sync bodies run in place.
    assert_eq!(sync_io_where(), thread_name());
    assert!(cpu_where().starts_with("optimize-cpu-"));
    assert_eq!(cpu_depth(3), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn sync_bodies_work_on_a_multi_thread_runtime() {
    // In place (under block_in_place): the body runs on the worker that called it.
    let (caller, body) = tokio::spawn(async { (thread_name(), sync_io_where()) })
        .await
        .unwrap();
    assert_eq!(caller, body);
    assert!(cpu_where().starts_with("optimize-cpu-"));
}

// ---- memory ---------------------------------------------------------------------------

/// Tests that fill or count the memory budget's queue take turns, so each sees only its own
/// calls there.
static MEMORY_BUDGET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[optimize::memory(mem = "1TiB", cache = false)]
fn memory_outer() -> u32 {
    // Weighs the whole budget (the weight is capped at it): a nested call that waited on the
    // budget would wait forever.
    memory_inner() + 1
}

#[optimize::memory(mem = "1TiB", cache = false)]
fn memory_inner() -> u32 {
    41
}

#[optimize::memory(mem = "1TiB", cache = false)]
async fn memory_outer_async() -> u32 {
    tokio::task::yield_now().await;
    memory_inner() + memory_inner_async().await
}

#[optimize::memory(mem = "1TiB", cache = false)]
async fn memory_inner_async() -> u32 {
    1
}

#[test]
fn a_nested_memory_call_does_not_wait_on_its_callers_budget() {
    let _turn = MEMORY_BUDGET.blocking_lock();
    assert_eq!(memory_outer(), 42);
}

#[tokio::test]
async fn a_nested_async_memory_call_does_not_wait_either() {
    let _turn = MEMORY_BUDGET.lock().await;
    assert_eq!(memory_outer_async().await, 42);
}

#[optimize::memory(mem = "64MiB", ttl = "10m")]
fn big_table(n: usize) -> Vec<u64> {
    (0..n as u64).collect()
}

#[test]
fn memory_calls_cache_like_any_other() {
    let _turn = MEMORY_BUDGET.blocking_lock();
    assert_eq!(big_table(1000).len(), 1000);
    assert_eq!(big_table(1000).len(), 1000);
    assert_eq!(big_table_cache().stats().hits(), 1);
    assert_eq!(big_table_cache().mem(), 64 << 20);
}

// ---- tasks ----------------------------------------------------------------------------

#[tokio::test]
async fn tasks_run_on_their_pools_with_retries() {
    let _turn = MEMORY_BUDGET.lock().await;
    let handle = Task::cpu()
        .priority(Priority::High)
        .spawn(|| Ok::<_, String>(thread_name()));
    assert!(handle.join().await.unwrap().starts_with("optimize-cpu-"));

    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let handle = Task::io()
        .retries(4)
        .backoff(Duration::from_millis(1))
        .spawn_async(move || {
            let n = a.fetch_add(1, SeqCst);
            async move {
                if n < 2 {
                    Err(n)
                } else {
                    Ok(n)
                }
            }
        });
    assert_eq!(handle.join().await.unwrap(), 2);
    assert_eq!(attempts.load(SeqCst), 3);

    let handle = Task::memory()
        .mem(1 << 20)
        .spawn(|| Err::<(), _>("out of luck"));
    match handle.join().await {
        Err(TaskError::Failed(e)) => assert_eq!(e, "out of luck"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_that_times_out_reports_it() {
    let handle = Task::io()
        .timeout(Duration::from_millis(20))
        .spawn_async(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, ()>(())
        });
    match handle.join().await {
        Err(TaskError::TimedOut(t)) => assert_eq!(t.after, Duration::from_millis(20)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tasks_can_be_awaited_from_plain_threads_and_report_panics() {
    let handle = Task::cpu().spawn(|| -> Result<(), ()> { panic!("kaboom") });
    match handle.wait() {
        Err(TaskError::Panicked(msg)) => assert_eq!(msg, "kaboom"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_future_stops_it() {
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let handle = Task::io().spawn_async(move || {
        let (s, f) = (s.clone(), f.clone());
        async move {
            s.notify_one();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            f.store(true, SeqCst);
            Ok::<_, ()>(())
        }
    });
    started.notified().await;
    assert_eq!(handle.status(), TaskStatus::Running);
    assert!(handle.cancel());
    assert_eq!(handle.status(), TaskStatus::Cancelled);
    assert!(!handle.cancel(), "already ended");
    assert!(matches!(handle.join().await, Err(TaskError::Cancelled)));
    assert!(!finished.load(SeqCst));
}

#[test]
fn pool_state_is_readable() {
    let before = optimize::runtime().pools().stats();
    assert_eq!(cpu_depth(2), 2);
    let after = optimize::runtime().pools().stats();
    assert!(after.cpu.completed > before.cpu.completed);
    assert_eq!(after.cpu.capacity, after.cpu_threads as u64);
    assert!(after.memory.capacity > 0);
    assert!((0.0..=1.0).contains(&after.memory_pressure));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_task_means_it_never_runs() {
    let _turn = MEMORY_BUDGET.lock().await;
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    // Takes the whole memory budget (weights are capped at it) until released.
    let holder = Task::memory().mem(u64::MAX).spawn(move || {
        release_rx.lock().unwrap().recv().unwrap();
        Ok::<_, ()>(())
    });
    tokio::time::timeout(Duration::from_secs(20), async {
        while holder.status() != TaskStatus::Running {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the holder starts running");
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let queued = Task::memory().mem(u64::MAX).spawn(move || {
        r.store(true, SeqCst);
        Ok::<_, ()>(())
    });
    tokio::time::timeout(Duration::from_secs(20), async {
        while optimize::runtime().pools().stats().memory.queued_total() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the second task is queued");
    assert_eq!(queued.status(), TaskStatus::Queued);
    assert!(queued.cancel());
    assert!(matches!(queued.join().await, Err(TaskError::Cancelled)));
    release_tx.send(()).unwrap();
    holder.join().await.unwrap();
    assert!(!ran.load(SeqCst));
    assert_eq!(optimize::runtime().pools().stats().memory.queued_total(), 0);
}

#[optimize::memory(capacity = "1KiB", tiers = "l1")]
fn blob(n: u32) -> Vec<u8> {
    vec![n as u8; 400]
}

#[test]
fn memory_values_are_weighed_by_size_in_l1() {
    assert_eq!(blob_cache().capacity(), 1024);
    for n in 0..6 {
        assert_eq!(blob(n).len(), 400);
    }
    // About 408 encoded bytes each: at most two fit in 1 KiB, though six were inserted.
    let len = blob_cache().len();
    assert!((1..=2).contains(&len), "len {len}");
}
