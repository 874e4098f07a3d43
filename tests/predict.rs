//! Predictive prefetch through the attribute: a sequential scan is answered from L1 once the
//! model has seen a steady step; a repeated sequence of keys (markov) likewise, for an async
//! function; random keys make the model prefetch (almost) nothing; a table turns prediction
//! off; prefetches are counted as `prefetched`, never as callers' calls.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use optimize::site::FnOverride;
use optimize::Outcome;

static PAGE_RUNS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10m", predict = "sequential")]
fn page(n: u64) -> String {
    PAGE_RUNS.fetch_add(1, SeqCst);
    format!("page {n}")
}

#[optimize::io(ttl = "10m", predict = "markov", predict_confidence = 0.9)]
async fn step(id: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    id * 10
}

#[optimize::io(ttl = "10m", capacity = 100_000, predict = "markov")]
fn lookup(id: u64) -> u64 {
    id + 1
}

#[optimize::io(ttl = "10m", predict = "sequential(offset)")]
fn rows(table: String, offset: u32) -> Vec<String> {
    vec![format!("{table}@{offset}")]
}

#[optimize::io(ttl = "10m", predict = "sequential")]
fn switched_off(n: u64) -> u64 {
    n
}

/// Waits until `f`'s site has stored `n` prefetched values.
fn prefetched(site: &optimize::Site, n: u64) {
    bounded::until("the prefetch to store its value", || {
        site.stats().count(Outcome::Prefetched) >= n
    });
}

/// `predict` with the other options that shape the generated call.
#[optimize::io(ttl = "10m", retries = 2, backoff = "1ms", predict = "sequential")]
fn retried(mut n: u64) -> Result<u64, String> {
    n += 1;
    Ok(n)
}

#[optimize::io(ttl = "10m", key = (region.clone(), id / 10), predict = "markov")]
fn keyed(region: String, id: u64) -> String {
    format!("{region}/{}", id / 10)
}

#[optimize::cpu(ttl = "10m", tags = ["cell:{cell}"], predict = "sequential(cell)")]
async fn tagged_cell(sheet: String, cell: u32) -> String {
    format!("{sheet}!{cell}")
}

#[optimize::io(ttl = "10m")]
fn unpredicted(n: u64) -> u64 {
    n
}

/// A builder reading `file` and nothing else.
fn from_file(file: &std::path::Path) -> optimize::config::ConfigBuilder {
    optimize::config::Config::builder()
        .file(file)
        .environment(Vec::<(String, String)>::new())
        .set("l3.enabled", "false")
}

fn refusal(config: optimize::config::ConfigBuilder) -> String {
    optimize::install(config)
        .map(|_| ())
        .expect_err("refused")
        .to_string()
}

#[test]
fn predictive_prefetch() {
    refusals();
    let guard = optimize::install(install::quiet().set("monitor.enabled", "true").function(
        "predict::switched_off",
        FnOverride {
            predict: Some(None),
            ..FnOverride::default()
        },
    ))
    .unwrap_or_else(|e| panic!("{e}"));

    sequential_scans_are_answered_from_l1();
    a_named_argument_steps_and_the_others_stay();
    repeated_sequences_are_answered_from_l1();
    random_keys_prefetch_almost_nothing();
    a_table_turns_prediction_off();
    figures_are_exported();
    other_options_keep_working();

    drop(guard);
}

/// What a table cannot ask, and values out of range, name the file and key.
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(
        &file,
        r#"
        [functions."predict::unpredicted"]
        predict = "markov"
        predict_depth = 4

        [functions."predict::step"]
        predict = "sequential"
        "#,
    )
    .unwrap();
    let refused = refusal(from_file(&file));
    for (key, says) in [
        ("functions.\"predict::unpredicted\".predict", "attribute"),
        (
            "functions.\"predict::unpredicted\".predict_depth",
            "attribute",
        ),
        ("functions.\"predict::step\".predict", "sequential(arg)"),
    ] {
        assert!(
            refused.contains(key) && refused.contains(says),
            "{key}: {refused}"
        );
    }
    assert!(refused.contains("optimize.toml"), "{refused}");

    std::fs::write(&file, "[resilience]\npredict_depth = 0\n").unwrap();
    let refused = refusal(from_file(&file));
    assert!(
        refused.contains("resilience.predict_depth") && refused.contains("from 1 to 16"),
        "{refused}"
    );
    std::fs::write(&file, "[functions.\"predict::page\"]\npredict = \"lru\"\n").unwrap();
    let refused = refusal(from_file(&file));
    assert!(
        refused.contains("functions.\"predict::page\".predict")
            && refused.contains("\"markov\", \"sequential\", \"off\""),
        "{refused}"
    );
}

fn sequential_scans_are_answered_from_l1() {
    let site = page_cache();
    // Calls 0..=4 teach the step (five steps of 1 make it 5/8 sure, over the 0.6 default);
    // from call 5 on, each call prefetches the next page, which the next call finds in L1.
    for n in 0..40u64 {
        assert_eq!(page(n), format!("page {n}"));
        if n >= 5 {
            prefetched(site, n - 4);
        }
    }
    let stats = site.stats();
    assert_eq!(stats.count(Outcome::Computed), 6, "callers ran pages 0..=5");
    assert_eq!(
        stats.count(Outcome::HitL1),
        34,
        "pages 6..40 were prefetched"
    );
    assert_eq!(stats.count(Outcome::Prefetched), 35);
    assert_eq!(
        PAGE_RUNS.load(SeqCst),
        41,
        "every page ran once, page 40 ahead"
    );
    let p = site.predictions().expect("predict is on");
    assert_eq!((p.predicted, p.used, p.late, p.pending), (35, 34, 0, 1));
    assert_eq!(stats.hits() + stats.count(Outcome::Computed), 40);
}

fn a_named_argument_steps_and_the_others_stay() {
    let site = rows_cache();
    for offset in (0..100u32).step_by(10) {
        assert_eq!(rows("t".into(), offset), vec![format!("t@{offset}")]);
        if offset >= 50 {
            prefetched(site, u64::from(offset / 10 - 4));
        }
    }
    // The step of 10 was learned; the next offset was prefetched for the same table.
    assert_eq!(site.stats().count(Outcome::HitL1), 4, "offsets 60..=90");
}

fn repeated_sequences_are_answered_from_l1() {
    let site = step_cache();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cycle = [5u32, 17, 3, 42, 8];
    rt.block_on(bounded::within_async("the async calls", async {
        // Rounds 0 and 1 teach each transition twice (votes 2 of 2, over the 0.9 asked).
        for _ in 0..2 {
            for id in cycle {
                assert_eq!(step(id).await, id * 10);
            }
        }
        site.invalidate_all();
        site.reset_stats();
        let mut expected = 0;
        for _ in 0..3 {
            for id in cycle {
                assert_eq!(step(id).await, id * 10);
                // Each call prefetches its successor until the cycle is cached: 17, 3, 42
                // and 8 (5 ran in its caller's call).
                expected += 1;
                let wanted = expected.min(4);
                bounded::until("the prefetch to store its value", || {
                    site.stats().count(Outcome::Prefetched) >= wanted
                });
            }
        }
    }));
    let stats = site.stats();
    // The first call of 5 ran its body; every later call found its key prefetched.
    assert_eq!(stats.count(Outcome::Computed), 1, "{stats:?}");
    assert_eq!(stats.count(Outcome::HitL1), 14);
    assert_eq!(stats.count(Outcome::Prefetched), 4, "17, 3, 42 and 8");
    let p = site.predictions().unwrap();
    assert_eq!((p.used, p.late), (4, 0), "{p:?}");
}

fn random_keys_prefetch_almost_nothing() {
    let site = lookup_cache();
    // A fixed pseudo-random sequence over 500 keys: no key has a steady successor.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..5_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = x % 500;
        assert_eq!(lookup(id), id + 1);
    }
    let p = site.predictions().unwrap();
    assert!(p.predicted <= 25, "{p:?}");
    let stats = site.stats();
    assert_eq!(
        stats.count(Outcome::Computed) + stats.hits() + stats.count(Outcome::Coalesced),
        5_000
    );
}

fn a_table_turns_prediction_off() {
    for n in 0..30 {
        assert_eq!(switched_off(n), n);
    }
    assert_eq!(switched_off_cache().predictions(), None);
    assert_eq!(switched_off_cache().stats().count(Outcome::Prefetched), 0);
    assert_eq!(switched_off_cache().settings().predict, None);
}

fn figures_are_exported() {
    let p = page_cache().predictions().unwrap();
    let text = optimize::monitor::export::prometheus_text(std::sync::Arc::new(
        optimize::runtime().snapshot(),
    ));
    let line = |result: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("optimize_predictions_total")
                    && l.contains("fn=\"predict::page\"")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .unwrap_or_else(|| panic!("no {result} predictions in /metrics:\n{text}"))
            .to_owned()
    };
    assert!(line("used").ends_with(&format!(" {}.0", p.used)));
    assert!(line("predicted").ends_with(&format!(" {}.0", p.predicted)));
    assert!(text.lines().any(|l| l.starts_with("optimize_calls_total")
        && l.contains("fn=\"predict::page\"")
        && l.contains("outcome=\"prefetched\"")
        && l.ends_with(" 35.0")));
    assert!(
        !text.contains("optimize_predictions_total{fn=\"predict::switched_off\""),
        "a function with prediction off exports none"
    );

    let report = optimize::runtime().monitor().expect("monitor on").stats();
    let page = report
        .functions
        .iter()
        .find(|f| f.path == "predict::page")
        .unwrap();
    assert_eq!((page.prefetched, page.predictions), (35, Some(p)));
    let json = serde_json::to_value(page).unwrap();
    assert_eq!(json["predictions"]["used"], 34);
}

fn other_options_keep_working() {
    for n in 0..12 {
        assert_eq!(retried(n), Ok(n + 1));
    }
    prefetched(retried_cache(), 1);
    assert!(retried_cache().predictions().unwrap().predicted >= 1);

    // The key is `(region, id / 10)`: ids 0..10 share one entry.
    for _ in 0..3 {
        for id in [5u64, 25, 45] {
            assert_eq!(keyed("eu".into(), id), format!("eu/{}", id / 10));
        }
    }
    assert_eq!(keyed_cache().len(), 3);

    // A multi-thread runtime: an async prefetch is a task on the caller's runtime, which
    // must go on running it after the caller's last call.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded::within_async("the async calls", async {
        for cell in 0..10 {
            assert_eq!(tagged_cell("s".into(), cell).await, format!("s!{cell}"));
        }
    }));
    // Cell 9 prefetched cell 10, which carries its tag.
    bounded::until("cell 10 prefetched", || tagged_cell_cache().len() == 11);
    optimize::invalidate_tag("cell:10");
    assert_eq!(tagged_cell_cache().len(), 10);
}
