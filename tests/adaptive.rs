//! Adaptive concurrency against a simulated backend whose latency grows with its
//! concurrency (on tokio's paused clock, so the latencies are exact): the limit grows while
//! the backend keeps its latency, shrinks when the backend slows under load, and grows again
//! when it recovers; the io pool's own limit adapts the same way.

#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// Calls the backend is running now.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// Whether the backend slows down beyond 8 calls at once (else it keeps 2 ms whatever the load).
static CONGESTED: AtomicBool = AtomicBool::new(false);

async fn backend() {
    let now = IN_FLIGHT.fetch_add(1, SeqCst) + 1;
    let load = if CONGESTED.load(SeqCst) {
        now.max(8) as u32
    } else {
        8
    };
    tokio::time::sleep(Duration::from_millis(2) * load / 8).await;
    IN_FLIGHT.fetch_sub(1, SeqCst);
}

#[optimize::io(concurrency = "adaptive(1..64)", cache = false)]
async fn query(id: u64) -> u64 {
    backend().await;
    id
}

/// 100 clients call `f` 10 times each.
async fn load(f: impl Fn(u64) -> tokio::task::JoinHandle<u64>) {
    let mut clients = Vec::new();
    for c in 0..100u64 {
        let calls: Vec<_> = (0..10).map(|i| c * 10 + i).collect();
        clients.push(async {
            for id in calls {
                assert_eq!(f(id).await.unwrap(), id);
            }
        });
    }
    futures_util::future::join_all(clients).await;
}

#[test]
fn the_limit_follows_the_backend() {
    let _guard = optimize::install(install::quiet()).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let site = query_cache();
    assert_eq!(site.adaptive_concurrency(), Some((1, 64)));
    assert_eq!(site.concurrency(), Some(16), "it starts at 16");
    rt.block_on(async {
        let spawn = |id| tokio::spawn(query(id));
        load(spawn).await;
        let healthy = site.concurrency().unwrap();
        assert_eq!(
            healthy, 64,
            "a backend that keeps its latency: up to the bound"
        );

        CONGESTED.store(true, SeqCst);
        load(spawn).await;
        let congested = site.concurrency().unwrap();
        assert!(
            (8..=32).contains(&congested),
            "the backend slows beyond 8 at once: the limit comes down near it ({congested})"
        );

        CONGESTED.store(false, SeqCst);
        load(spawn).await;
        let recovered = site.concurrency().unwrap();
        assert!(
            recovered >= 2 * congested,
            "recovered: the limit grows again ({congested} -> {recovered})"
        );
    });
    let text = optimize::monitor::export::prometheus_text(std::sync::Arc::new(
        optimize::runtime().snapshot(),
    ));
    assert!(
        text.lines()
            .any(|l| l.starts_with("optimize_concurrency_limit{fn=\"adaptive::query\"}")),
        "{text}"
    );
}
