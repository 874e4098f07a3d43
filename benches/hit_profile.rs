//! Instructions per L1 hit, counted by callgrind (repeatable, unlike timings on a shared
//! machine): `scripts/bench.sh` runs this under `valgrind --tool=callgrind` once per
//! contender, counting only inside [`hits`] (`--collect-atstart=no
//! --toggle-collect=hit_profile::hits`: start-up and the runtime's background threads vary
//! from run to run), and divides by the hits. Run alone, it just does the hits.
//!
//! `target/release/deps/hit_profile-* <attribute|cached|quick_cache|none> [hits]`

#[path = "support/hit.rs"]
mod hit;

use std::hint::black_box;

use hit::{attribute, cached_crate, KEYS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Under `cargo bench` (arguments like --bench): nothing to profile.
    let Some(which) = args.get(1).filter(|a| !a.starts_with('-')) else {
        return;
    };
    let hits: u64 = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let quick = quick_cache::sync::Cache::<u64, u64>::new(10_000);
    for k in 0..KEYS {
        attribute(k);
        cached_crate(k);
        quick.insert(k, k);
    }
    let f: &dyn Fn(u64) -> u64 = match which.as_str() {
        "attribute" => &attribute,
        "cached" => &cached_crate,
        "quick_cache" => &|k| quick.get(&k).unwrap(),
        // The loop alone: subtracted from the others.
        "none" => &|k| k,
        other => panic!("unknown contender {other}"),
    };
    self::hits(f, hits);
}

/// The measured loop.
#[inline(never)]
fn hits(f: &dyn Fn(u64) -> u64, n: u64) {
    let mut k = 0;
    for _ in 0..n {
        k = (k + 1) & (KEYS - 1);
        black_box(f(black_box(k)));
    }
}
