//! Coalescing cost: 1,000 concurrent callers of one cold key; how long after the one
//! computation finishes until every caller has the value. The attribute's single-flight
//! against moka's `get_with` (its future cache), same runtime, same work (a 20 ms sleep),
//! 25 rounds of fresh keys each; medians.
//!
//! `cargo bench --bench coalesce`

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAITERS: usize = 1_000;
const ROUNDS: u64 = 25;
const WORK: Duration = Duration::from_millis(20);

/// When the current round's computation finished.
static FINISHED: Mutex<Option<Instant>> = Mutex::new(None);
static RUNS: AtomicUsize = AtomicUsize::new(0);

async fn work(id: u64) -> u64 {
    RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(WORK).await;
    *FINISHED.lock().unwrap() = Some(Instant::now());
    id
}

#[optimize::io(capacity = 1_000)]
async fn through_attribute(id: u64) -> u64 {
    work(id).await
}

/// Runs `WAITERS` calls of `call(id)` at once; the time from the computation's end until the
/// last caller had its value.
async fn round<F, Fut>(id: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    *FINISHED.lock().unwrap() = None;
    let call = Arc::new(call);
    let start = Arc::new(tokio::sync::Barrier::new(WAITERS));
    let tasks: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (call, start) = (call.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let v = call(id).await;
                assert_eq!(v, id);
                Instant::now()
            })
        })
        .collect();
    let mut last = None;
    for t in tasks {
        let done = t.await.unwrap();
        last = Some(last.map_or(done, |l: Instant| l.max(done)));
    }
    let finished = FINISHED.lock().unwrap().expect("the computation ran");
    last.unwrap().saturating_duration_since(finished)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (attribute, moka) = rt.block_on(async {
        let mut attribute = Vec::new();
        RUNS.store(0, SeqCst);
        for id in 0..ROUNDS {
            attribute.push(round(id, through_attribute).await);
        }
        assert_eq!(
            RUNS.load(SeqCst),
            ROUNDS as usize,
            "one computation per round"
        );
        let cache = moka::future::Cache::<u64, u64>::new(1_000);
        let mut moka = Vec::new();
        RUNS.store(0, SeqCst);
        for id in 0..ROUNDS {
            let cache = cache.clone();
            moka.push(
                round(id, move |id| {
                    let cache = cache.clone();
                    async move { cache.get_with(id, work(id)).await }
                })
                .await,
            );
        }
        assert_eq!(
            RUNS.load(SeqCst),
            ROUNDS as usize,
            "one computation per round"
        );
        (median(attribute), median(moka))
    });
    println!(
        "summary ({WAITERS} waiters of one cold key: from the computation's end to the last \
         caller's value, median of {ROUNDS} rounds)"
    );
    println!(
        "  moka get_with      {:>9.1} µs   1.00x",
        moka.as_secs_f64() * 1e6
    );
    println!(
        "  attribute          {:>9.1} µs   {:>5.2}x",
        attribute.as_secs_f64() * 1e6,
        attribute.as_secs_f64() / moka.as_secs_f64()
    );
}
