//! Bounded queues (`pools.queue_capacity`): with the pool held and 100 places in its queue, a
//! burst of 1,000 task submissions is refused beyond the bound at once and every accepted task
//! completes; managed calls over the bound answer by their return type — `Err(Rejected)`
//! converted into the error, `None` — and are counted `rejected`; fail-safe serves its stale
//! value instead; a return type that cannot say it waits.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::task::{Task, TaskError, TaskStatus};
use optimize::time::Clock;
use optimize::{Outcome, Priority};
use tokio::sync::Semaphore;

/// Bodies wait here until the test lets them through.
static HOLD: Semaphore = Semaphore::const_new(0);

async fn held() {
    tokio::time::timeout(bounded::BOUND, HOLD.acquire())
        .await
        .expect("released within the bound")
        .unwrap()
        .forget();
}

#[optimize::io(concurrency = 1)]
async fn fetch(id: u64) -> Result<u64, String> {
    held().await;
    Ok(id)
}

#[optimize::io(concurrency = 1)]
async fn lookup(id: u64) -> Option<u64> {
    held().await;
    Some(id)
}

#[optimize::io(concurrency = 1)]
async fn plain(id: u64) -> u64 {
    held().await;
    id
}

static QUOTE_DOWN: AtomicU64 = AtomicU64::new(0);

#[optimize::io(concurrency = 1, ttl = "1s", fail_safe = "1h")]
async fn quote(id: u64) -> Result<u64, std::io::Error> {
    if QUOTE_DOWN.load(SeqCst) == 1 {
        held().await;
    }
    Ok(id * 10)
}

#[test]
fn queues_are_bounded() {
    let (clock, mock) = Clock::mock();
    let _guard = optimize::install(
        install::quiet()
            .clock(clock)
            .set("pools.cpu_threads", "1")
            .set("pools.queue_capacity", "100"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pools = optimize::runtime().pools();
    assert_eq!(pools.stats().io.queue_capacity, Some(100));

    // --- Tasks: one holds the CPU thread; 1,000 more are submitted at once. ---
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let hog =
        Task::cpu().spawn(move || hold.recv_timeout(bounded::BOUND).map_err(|e| e.to_string()));
    bounded::until("the CPU thread held", || pools.stats().cpu.active == 1);
    let handles: Vec<_> = (0..1_000u64)
        .map(|n| {
            Task::cpu()
                .priority(Priority::Low)
                .spawn(move || Ok::<_, String>(n * 2))
        })
        .collect();
    let rejected = handles
        .iter()
        .filter(|h| h.status() == TaskStatus::Rejected)
        .count();
    assert_eq!(
        rejected, 900,
        "refused at submission, beyond the 100 places"
    );
    assert_eq!(pools.stats().cpu.queued_total(), 100);
    assert_eq!(pools.stats().cpu.refused_full, 900);
    release.send(()).unwrap();
    hog.wait().unwrap();
    let mut done = 0;
    for (n, handle) in handles.into_iter().enumerate() {
        match handle.wait() {
            Ok(v) => {
                assert_eq!(v, n as u64 * 2);
                done += 1;
            }
            Err(TaskError::Rejected) => assert!(n >= 100, "task {n} was accepted"),
            Err(e) => panic!("task {n}: {e}"),
        }
    }
    assert_eq!(done, 100, "every accepted task completed");

    // --- Managed calls: one runs (held), 100 wait, the rest are refused at once. ---
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded::within_async(
        "the managed calls over the bound",
        async {
            let calls: Vec<_> = (0..150).map(|id| tokio::spawn(fetch(id))).collect();
            bounded::until("100 calls queued behind the one running", || {
                fetch_cache()
                    .concurrency_stats()
                    .is_some_and(|g| g.queued_total() == 100 && g.refused_full == 49)
            });
            HOLD.add_permits(101);
            let mut refused = 0;
            for call in calls {
                match call.await.unwrap() {
                    Ok(_) => {}
                    Err(message) => {
                        assert!(message.contains("queue is full"), "{message}");
                        assert!(message.contains("queue_bound::fetch"), "{message}");
                        refused += 1;
                    }
                }
            }
            assert_eq!(refused, 49);
            let s = fetch_cache().stats();
            assert_eq!(s.count(Outcome::Rejected), 49, "{s:?}");
            assert_eq!(s.count(Outcome::Computed), 101, "{s:?}");
            assert_eq!(s.errors(), 49);

            // `Option`: `None`.
            let calls: Vec<_> = (0..120).map(|id| tokio::spawn(lookup(id))).collect();
            bounded::until("lookup's queue full", || {
                lookup_cache()
                    .concurrency_stats()
                    .is_some_and(|g| g.refused_full == 19)
            });
            HOLD.add_permits(101);
            let mut none = 0;
            for call in calls {
                none += usize::from(call.await.unwrap().is_none());
            }
            assert_eq!(none, 19);
            assert_eq!(lookup_cache().stats().count(Outcome::Rejected), 19);

            // A plain value cannot say it was rejected: its callers wait, however many.
            let calls: Vec<_> = (0..120).map(|id| tokio::spawn(plain(id))).collect();
            bounded::until("plain's callers all queued", || {
                plain_cache()
                    .concurrency_stats()
                    .is_some_and(|g| g.queued_total() == 119)
            });
            HOLD.add_permits(120);
            for (id, call) in calls.into_iter().enumerate() {
                assert_eq!(call.await.unwrap(), id as u64);
            }
            assert_eq!(plain_cache().stats().count(Outcome::Rejected), 0);

            // Fail-safe: a rejected call with a stale value at hand is served that value.
            for id in 0..110 {
                assert_eq!(quote(id).await.unwrap(), id * 10);
            }
            mock.increment(Duration::from_secs(2));
            QUOTE_DOWN.store(1, SeqCst);
            let calls: Vec<_> = (0..110).map(|id| tokio::spawn(quote(id))).collect();
            bounded::until("quote's queue full", || {
                quote_cache()
                    .concurrency_stats()
                    .is_some_and(|g| g.refused_full == 9)
            });
            HOLD.add_permits(101);
            for (id, call) in calls.into_iter().enumerate() {
                let value = call.await.unwrap().expect("fresh or stale, never an error");
                assert_eq!(value, id as u64 * 10);
            }
            let s = quote_cache().stats();
            assert_eq!(s.errors(), 0, "{s:?}");
            assert_eq!(s.count(Outcome::Stale), 9, "{s:?}");
        },
    ));
}
