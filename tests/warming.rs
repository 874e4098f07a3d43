//! Warming and prefetching through a function's site: 10,000 argument sets with 1% failing —
//! 9,900 cached, 100 counted, none stopping the rest; the handle reports progress while it
//! runs; async warming; a prefetch returns at once and fills the cache; warming and prefetch
//! calls that ran the body count as `prefetched`, not as callers' calls.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::Outcome;

static RUNS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10m", capacity = 20_000)]
fn price(id: u64) -> Result<u64, String> {
    RUNS.fetch_add(1, SeqCst);
    if id % 100 == 42 {
        return Err(format!("no price for {id}"));
    }
    if id == 7_777 {
        panic!("a panicking body is counted as a failure too");
    }
    Ok(id * 2)
}

#[optimize::io(ttl = "10m")]
async fn stock(id: u64) -> Option<u64> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    (!id.is_multiple_of(10)).then_some(id)
}

#[test]
fn warming_and_prefetching() {
    let guard = optimize::install(install::quiet()).unwrap_or_else(|e| panic!("{e}"));

    // 10,000 argument sets, 1% failing (one of them by panicking): the rest are cached.
    let report = bounded::within("warming 10,000 argument sets", || {
        price_cache().warm(0..10_000u64, |id| price(id).is_ok())
    });
    assert_eq!(
        (report.done, report.failed, report.finished),
        (10_000, 101, true)
    );
    assert_eq!(price_cache().len(), 9_899);
    let s = price_cache().stats();
    assert_eq!(s.count(Outcome::Prefetched), 9_899, "{s:?}");
    assert_eq!(s.count(Outcome::Computed), 0, "nobody's calls: {s:?}");
    assert_eq!(s.count(Outcome::Uncached), 100, "{s:?}");
    // What callers get next is a hit.
    let runs = RUNS.load(SeqCst);
    assert_eq!(price(5), Ok(10));
    assert_eq!(RUNS.load(SeqCst), runs);
    assert_eq!(price_cache().stats().count(Outcome::HitL1), 1);

    // In the background: the handle reports progress, then the end.
    price_cache().invalidate_all();
    let warming = price_cache().warm_in_background(0..2_000u64, |id| price(id).is_ok());
    let waiting = warming.clone();
    let report = bounded::within("the background warming", move || waiting.wait());
    assert_eq!(
        (report.done, report.failed, report.finished),
        (2_000, 20, true)
    );
    assert_eq!(warming.progress(), report);

    // Async.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let warming =
            stock_cache().warm_async(0..500u64, |id| async move { stock(id).await.is_some() });
        tokio::time::timeout(bounded::BOUND, warming)
            .await
            .expect("the async warming within the bound")
    });
    assert_eq!((report.done, report.failed), (500, 50));
    assert_eq!(stock_cache().len(), 450);

    // A prefetch returns at once and fills the cache.
    let runs = RUNS.load(SeqCst);
    price_cache().prefetch(|| {
        let _ = price(50_001);
    });
    bounded::until("the prefetched value cached", || {
        price_cache().stats().count(Outcome::Prefetched) == 9_899 + 1_980 + 1
    });
    assert_eq!(price(50_001), Ok(100_002));
    assert_eq!(
        RUNS.load(SeqCst),
        runs + 1,
        "the caller hit what the prefetch stored"
    );
    rt.block_on(async {
        stock_cache().prefetch_async(async {
            let _ = stock(9_999).await;
        });
    });
    bounded::until("the async prefetch cached", || stock_cache().len() == 451);
    drop(guard);
}
