//! Shared-tier hits through the attribute against the raw operations they wrap, measured in
//! one run with the same key and the same ~100-byte value:
//!
//! - L2: an `async` function with `tiers = "l2"` (every call an L2 hit) vs a raw redis-rs
//!   `GET` on a multiplexed connection; beside them, the structural cost of the tiers' own
//!   runtime: an empty task spawned on a second runtime and awaited (`hand_off`), and the
//!   same raw `GET` on a connection of a second runtime, run there and awaited
//!   (`raw_get_handed_off`, what every L2 operation of the attribute does);
//! - L3: a function with `tiers = "l3"` (every call an L3 hit) vs a raw sled `get` + bincode
//!   decode;
//! - the miss path: a new key every call through a function with L1 + L2 (L1 miss, the L2
//!   read that misses, the body, the value written), with the cross-instance lease on and
//!   off, vs what users write by hand: a raw `GET`, the body, and a raw `SET … PX` awaited.
//!
//! `cargo bench --bench tiers` (starts its own redis-server; prints ratios at the end).

#[path = "../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../tests/support/skip.rs"]
mod skip;

#[path = "support/summary.rs"]
mod summary;

#[path = "support/item.rs"]
mod item;

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use item::{item, Item};
use summary::median_ns;

#[optimize::io(tiers = "l2", ttl = "1h")]
async fn from_l2(id: u64) -> Item {
    item(id)
}

/// The same without the cross-instance lease: its reads are a plain pipeline, not a script.
#[optimize::io(tiers = "l2", ttl = "1h", lease = false)]
async fn from_l2_unleased(id: u64) -> Item {
    item(id)
}

#[optimize::io(tiers = "l3", ttl = "1h")]
fn from_l3(id: u64) -> Item {
    item(id)
}

/// The bare function of the miss-path comparison.
fn compute(id: u64) -> Item {
    item(id)
}

#[optimize::io(tiers = "l1,l2", ttl = "1h")]
async fn cold_miss(id: u64) -> Item {
    compute(id)
}

/// The same without the cross-instance lease.
#[optimize::io(tiers = "l1,l2", ttl = "1h", lease = false)]
async fn cold_miss_unleased(id: u64) -> Item {
    compute(id)
}

fn main() {
    let Some(redis) = redis_server::RedisServer::start() else {
        eprintln!("redis-server is required for this benchmark");
        std::process::exit(1);
    };
    let dir = tempfile::tempdir().unwrap();
    let _optimize = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &redis.url())
            .set("l3.dir", &dir.path().display().to_string())
            .set("namespace", "bench"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // Warm both tiers with the entry for id 7.
    rt.block_on(from_l2(7));
    rt.block_on(from_l2_unleased(7));
    from_l3(7);
    optimize::flush();

    // Baselines with the same bytes.
    let raw_value = bincode::serialize(&item(7)).unwrap();
    let mut raw_redis = rt.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("raw:7")
            .arg(&raw_value)
            .query_async(&mut conn)
            .await
            .unwrap();
        conn
    });
    // The tiers' arrangement: a connection driven by a second runtime, reached by a spawn.
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let other_redis = other.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    });
    let sled_dir = tempfile::tempdir().unwrap();
    let sled_db = sled::open(sled_dir.path()).unwrap();
    sled_db.insert("raw:7", raw_value.as_slice()).unwrap();

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();

    let mut g = c.benchmark_group("l2_hit");
    g.bench_function("raw_redis_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw_redis.clone();
            async move {
                let bytes: Vec<u8> = redis::cmd("GET")
                    .arg("raw:7")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(bytes)
            }
        })
    });
    g.bench_function("attribute", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(from_l2(black_box(7)).await) })
    });
    g.bench_function("attribute_without_lease", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(from_l2_unleased(black_box(7)).await) })
    });
    // What the attribute's read sends: the value's range and the generations, pipelined.
    g.bench_function("raw_pipeline_with_generations", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw_redis.clone();
            async move {
                let (bytes, gens): (Vec<u8>, Vec<Option<u64>>) = redis::pipe()
                    .cmd("GETRANGE")
                    .arg("raw:7")
                    .arg(0)
                    .arg(65_535)
                    .cmd("MGET")
                    .arg("raw:gen:f")
                    .arg("raw:gen:all")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box((bytes, gens))
            }
        })
    });
    g.bench_function("hand_off", |b| {
        b.to_async(&rt)
            .iter(|| async { other.spawn(async {}).await.unwrap() })
    });
    g.bench_function("raw_get_handed_off", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = other_redis.clone();
            let task = other.spawn(async move {
                let bytes: Vec<u8> = redis::cmd("GET")
                    .arg("raw:7")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                bytes
            });
            async move { black_box(task.await.unwrap()) }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("miss_path");
    // Criterion calls each routine once per sample: the key counters live outside, so every
    // measured call really uses a new key.
    let next_missing = std::sync::atomic::AtomicU64::new(1_000_000);
    let next_cold = std::sync::atomic::AtomicU64::new(2_000_000);
    g.bench_function("get_compute_set", |b| {
        b.to_async(&rt).iter(|| {
            let id = next_missing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut conn = raw_redis.clone();
            let key = format!("raw:missing:{id}");
            async move {
                let bytes: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(bytes);
                let value = compute(black_box(id));
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(bincode::serialize(&value).unwrap())
                    .arg("PX")
                    .arg(3_600_000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(value)
            }
        })
    });
    g.bench_function("attribute", |b| {
        b.to_async(&rt).iter(|| {
            let id = next_cold.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { black_box(cold_miss(black_box(id)).await) }
        })
    });
    let next_unleased = std::sync::atomic::AtomicU64::new(3_000_000);
    g.bench_function("attribute_without_lease", |b| {
        b.to_async(&rt).iter(|| {
            let id = next_unleased.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { black_box(cold_miss_unleased(black_box(id)).await) }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("l3_hit");
    g.bench_function("raw_sled_get_decode", |b| {
        b.iter(|| {
            let bytes = sled_db.get(black_box("raw:7")).unwrap().unwrap();
            black_box(bincode::deserialize::<Item>(&bytes).unwrap())
        })
    });
    g.bench_function("attribute", |b| b.iter(|| black_box(from_l3(black_box(7)))));
    g.finish();
    c.final_summary();

    // The attribute functions must really have been served by their tier.
    let l2 = from_l2_cache().stats();
    let l3 = from_l3_cache().stats();
    assert_eq!(
        l2.executions(),
        1,
        "every measured from_l2 call was an L2 hit"
    );
    assert_eq!(
        l3.executions(),
        1,
        "every measured from_l3 call was an L3 hit"
    );
    let miss = cold_miss_cache().stats();
    assert_eq!(
        miss.executions(),
        miss.calls(),
        "every measured cold_miss call was a miss"
    );
    let _ = &mut raw_redis;

    let unleased = cold_miss_unleased_cache().stats();
    assert_eq!(unleased.executions(), unleased.calls());

    println!("\nsummary (median ns per call; ratio to the baseline of the same run; target)");
    for (group, ours, baseline, label, target) in [
        ("l2_hit", "attribute", "raw_redis_get", "L2 hit", 1.05),
        ("l3_hit", "attribute", "raw_sled_get_decode", "L3 hit", 1.5),
        (
            "miss_path",
            "attribute_without_lease",
            "get_compute_set",
            "miss, lease off",
            1.1,
        ),
        (
            "miss_path",
            "attribute",
            "get_compute_set",
            "miss, lease on",
            1.2,
        ),
    ] {
        match (median_ns(group, baseline), median_ns(group, ours)) {
            (Some(base), Some(ours)) => println!(
                "  {label:<16} attribute {ours:>10.0} ns   {baseline:<20} {base:>10.0} ns   ratio {:.2}x   target <= {target:.2}x",
                ours / base
            ),
            _ => println!("  {label}: no estimates found (run without a filter)"),
        }
    }
    match (
        median_ns("l2_hit", "raw_redis_get"),
        median_ns("l2_hit", "raw_get_handed_off"),
        median_ns("l2_hit", "hand_off"),
    ) {
        (Some(raw), Some(handed), Some(hand_off)) => println!(
            "  L2 structure     raw GET handed off {handed:>10.0} ns   ratio to raw GET {:.2}x   (an empty hand-off alone {hand_off:.0} ns)",
            handed / raw
        ),
        _ => println!("  hand-off: no estimates found (run without a filter)"),
    }
    if let (Some(raw), Some(pipelined)) = (
        median_ns("l2_hit", "raw_redis_get"),
        median_ns("l2_hit", "raw_pipeline_with_generations"),
    ) {
        println!(
            "  L2 read shape    raw GETRANGE + MGET of the generations {pipelined:>10.0} ns   ratio to raw GET {:.2}x",
            pipelined / raw
        );
    }
    drop(other);
    optimize::shutdown();
}
