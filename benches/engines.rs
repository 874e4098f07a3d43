//! Which L1 engine to pick: the hit ratio of each selectable engine (`l1.engine = "quick"`,
//! quick_cache's S3-FIFO-like policy, and `"moka"`, TinyLFU admission with LRU eviction)
//! against a plain LRU (the `lru` crate), on the same access traces at two cache sizes:
//!
//! - Zipf(0.99) over 100,000 keys: skewed, stable popularity (most caches' home ground);
//! - scan-heavy: that Zipf traffic, with one request in three from long sequential scans of
//!   keys never seen again (a report or a crawler), which flush a plain LRU;
//! - loop: keys 0..N in order, over and over, N a quarter larger than the cache: every LRU
//!   access misses; a policy that keeps part of the loop hits on that part.
//!
//! `cargo bench --bench engines` (no criterion: hit ratios are counts, not timings).

use std::num::NonZeroUsize;

use optimize::cache::l1::{ClockEngine, Entry, L1Engine, MokaEngine, QuickEngine};
use optimize::key::ArgsKey;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::Zipf;

const ACCESSES: usize = 1_000_000;

fn entry(v: u64) -> Entry<u64> {
    Entry::new(v, 0)
}

fn zipf(seed: u64) -> impl Iterator<Item = u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Zipf::new(100_000.0, 0.99).unwrap();
    std::iter::repeat_with(move || rng.sample(dist) as u64)
}

/// The traces, by name, for a cache of `capacity` entries.
fn traces(capacity: usize) -> Vec<(&'static str, Vec<u64>)> {
    let zipf_trace: Vec<u64> = zipf(1).take(ACCESSES).collect();
    // Scans: runs of 5 x capacity fresh keys (never repeated), interleaved with Zipf traffic
    // so one request in three is part of a scan.
    let mut scan_trace = Vec::with_capacity(ACCESSES);
    let mut hot = zipf(2);
    let mut fresh = 1u64 << 40;
    while scan_trace.len() < ACCESSES {
        for _ in 0..(capacity * 10) {
            scan_trace.push(hot.next().unwrap());
        }
        for _ in 0..(capacity * 5) {
            scan_trace.push(fresh);
            fresh += 1;
        }
    }
    scan_trace.truncate(ACCESSES);
    let n = (capacity as u64 * 5) / 4;
    let loop_trace: Vec<u64> = (0..ACCESSES as u64).map(|i| i % n).collect();
    vec![
        ("zipf", zipf_trace),
        ("scan-heavy", scan_trace),
        ("loop", loop_trace),
    ]
}

/// Hit ratio of an engine on `trace`: a get, and an insert on each miss.
fn run_engine(engine: &dyn L1Engine<u64>, trace: &[u64], sync: &dyn Fn()) -> f64 {
    let mut hits = 0usize;
    for (i, &k) in trace.iter().enumerate() {
        let key = ArgsKey(u128::from(k) * 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        if engine.get(key).is_some() {
            hits += 1;
        } else {
            engine.insert(key, entry(k));
        }
        if i % 512 == 0 {
            sync();
        }
    }
    hits as f64 / trace.len() as f64
}

fn run_lru(capacity: usize, trace: &[u64]) -> f64 {
    let mut lru = lru::LruCache::new(NonZeroUsize::new(capacity).unwrap());
    let mut hits = 0usize;
    for &k in trace {
        if lru.get(&k).is_some() {
            hits += 1;
        } else {
            lru.put(k, k);
        }
    }
    hits as f64 / trace.len() as f64
}

fn main() {
    // Criterion's arguments (--bench) are not for this program.
    println!("hit ratio by engine ({ACCESSES} accesses per trace)");
    println!(
        "summary\n  {:<12} {:>8}  {:>9} {:>9} {:>9} {:>9}  {:>12} {:>12} {:>12}",
        "trace",
        "capacity",
        "lru",
        "quick",
        "moka",
        "clock",
        "quick - lru",
        "moka - lru",
        "clock - lru"
    );
    for capacity in [1_000usize, 10_000] {
        for (name, trace) in traces(capacity) {
            let lru = run_lru(capacity, &trace);
            let quick = QuickEngine::<u64>::new(capacity as u64);
            let quick = run_engine(&quick, &trace, &|| {});
            let moka_engine = MokaEngine::<u64>::new(capacity as u64);
            let moka = run_engine(&moka_engine, &trace, &|| moka_engine.sync());
            let clock = ClockEngine::<u64>::new(capacity as u64);
            let clock = run_engine(&clock, &trace, &|| {});
            println!(
                "  {name:<12} {capacity:>8}  {lru:>9.3} {quick:>9.3} {moka:>9.3} {clock:>9.3}  {:>+12.3} {:>+12.3} {:>+12.3}",
                quick - lru,
                moka - lru,
                clock - lru
            );
        }
    }
}
