//! Instructions per L3 hit, counted by callgrind (see `hit_profile.rs`): the attribute with
//! `tiers = "l3"` (every call an L3 hit) against a raw sled `get` and bincode decode of the
//! same ~100-byte value. `scripts/bench.sh` runs it once per contender, counting only inside
//! [`hits`] (`--collect-atstart=no --toggle-collect=l3_profile::hits`): start-up and the
//! background threads vary from run to run.
//!
//! `target/release/deps/l3_profile-* <attribute|raw_sled|none> [hits]`

#[path = "support/item.rs"]
mod item;

use std::hint::black_box;

use item::{item, Item};

#[optimize::io(tiers = "l3", ttl = "1h")]
fn from_l3(id: u64) -> Item {
    item(id)
}

/// The measured loop.
#[inline(never)]
fn hits(f: &dyn Fn(), n: u64) {
    for _ in 0..n {
        f();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Under `cargo bench` (arguments like --bench): nothing to profile.
    let Some(which) = args.get(1).filter(|a| !a.starts_with('-')) else {
        return;
    };
    let hits: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let _optimize = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l3.dir", &dir.path().join("l3").display().to_string())
            .set("namespace", "bench"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    from_l3(7);
    optimize::flush();
    let sled_db = sled::open(dir.path().join("raw")).expect("a sled database");
    let raw = bincode::serialize(&item(7)).expect("encodable");
    sled_db.insert("raw:7", raw).expect("inserted");
    let f: &dyn Fn() = match which.as_str() {
        "attribute" => &|| {
            black_box(from_l3(black_box(7)));
        },
        "raw_sled" => &|| {
            let bytes = sled_db.get(black_box("raw:7")).unwrap().unwrap();
            black_box(bincode::deserialize::<Item>(&bytes).unwrap());
        },
        "none" => &|| {},
        other => panic!("unknown contender {other}"),
    };
    self::hits(f, hits);
    assert_eq!(
        from_l3_cache().stats().executions(),
        1,
        "every call was an L3 hit"
    );
}
