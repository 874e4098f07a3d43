//! One saturated function does not starve the others (docs/pools.md, the waiting rule): a
//! call queued behind a function's own `concurrency` limit holds no global io permit.

#[path = "support/bounded.rs"]
mod bounded;

use std::time::Duration;

use optimize::config::Config;

#[optimize::io(concurrency = 1, cache = false)]
async fn saturated(i: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    i
}

#[optimize::io(cache = false)]
async fn unrelated() -> u32 {
    7
}

#[test]
fn a_saturated_function_holds_at_most_one_global_permit() {
    let guard = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l3.enabled", "false")
            .set("pools.io_concurrency", "4"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let global = guard.runtime().pools().io().gate().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..10).map(|i| rt.spawn(saturated(i))).collect();
    bounded::until("nine calls queued on the function's limit", || {
        saturated_cache()
            .concurrency_stats()
            .is_some_and(|s| s.queued_total() == 9)
    });
    let g = global.stats();
    assert_eq!(
        g.in_use, 1,
        "only the running call holds a global permit: {g:?}"
    );
    assert_eq!(g.queued_total(), 0, "{g:?}");
    // The unrelated call is admitted at once, while the saturated ones still queue.
    assert_eq!(rt.block_on(unrelated()), 7);
    let queued = saturated_cache()
        .concurrency_stats()
        .unwrap()
        .queued_total();
    assert!(
        queued >= 8,
        "the unrelated call waited for the saturated ones ({queued} left)"
    );
    let done = bounded::within("the saturated calls", move || {
        rt.block_on(async {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    });
    assert_eq!(done, (0..10).collect::<Vec<_>>());
}
