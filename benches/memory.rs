//! Memory per L1 entry: 1,000,000 `u64 -> u64` entries through the attribute, and the same
//! held by raw quick_cache, raw moka and the `cached` crate's `#[cached]`, in one run. Bytes
//! are counted by dhat's global allocator, which tracks live heap bytes (exact, whatever the
//! system allocator keeps around); resident memory (RSS) is shown beside it.
//!
//! `cargo bench --bench memory`

// dhat's allocator counts live heap bytes exactly (the workspace forbids `unsafe`, which a
// hand-written counting allocator needs).
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn live_bytes() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

const ENTRIES: u64 = 1_000_000;
/// Room for every entry, so none is evicted.
const CAPACITY: usize = 1_100_000;

#[optimize::io(capacity = 1_100_000)]
fn through_attribute(x: u64) -> u64 {
    x ^ 0x5555
}

#[cached::proc_macro::cached(max_size = 1_100_000)]
fn through_cached(x: u64) -> u64 {
    x ^ 0x5555
}

fn rss() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

/// Live bytes and RSS `fill` adds, per entry.
fn measure(fill: impl FnOnce()) -> (f64, f64) {
    let (live, resident) = (live_bytes(), rss());
    fill();
    (
        (live_bytes() - live) as f64 / ENTRIES as f64,
        (rss() - resident) / ENTRIES as f64,
    )
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // The runtime (pools, clock) before measuring: its own memory is not per entry.
    through_attribute(u64::MAX);
    let mut keep_quick = None;
    let mut keep_moka = None;
    let rows: Vec<(&str, (f64, f64))> = vec![
        (
            "quick_cache raw",
            measure(|| {
                let cache = quick_cache::sync::Cache::<u64, u64>::new(CAPACITY);
                for k in 0..ENTRIES {
                    cache.insert(k, k);
                }
                assert_eq!(cache.len() as u64, ENTRIES);
                keep_quick = Some(cache);
            }),
        ),
        (
            "moka raw",
            measure(|| {
                let cache = moka::sync::Cache::<u64, u64>::new(CAPACITY as u64);
                for k in 0..ENTRIES {
                    cache.insert(k, k);
                }
                cache.run_pending_tasks();
                assert_eq!(cache.entry_count(), ENTRIES);
                keep_moka = Some(cache);
            }),
        ),
        (
            "cached #[cached]",
            measure(|| {
                for k in 0..ENTRIES {
                    through_cached(k);
                }
            }),
        ),
        (
            "attribute",
            measure(|| {
                for k in 0..ENTRIES {
                    through_attribute(k);
                }
                assert_eq!(through_attribute_cache().len(), ENTRIES + 1);
            }),
        ),
    ];
    let quick = rows[0].1 .0;
    println!("summary (bytes per entry for {ENTRIES} u64 -> u64 entries; ratio to raw quick_cache, allocated)");
    for (name, (allocated, resident)) in &rows {
        println!(
            "  {name:<18} allocated {allocated:>7.1} B   resident {resident:>7.1} B   {:>5.2}x",
            allocated / quick
        );
    }
    drop((keep_quick, keep_moka));
}
