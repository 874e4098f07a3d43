//! The shared tiers against a real redis-server (started per test) and real sled directories.

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../../tests/support/skip.rs"]
mod skip;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use optimize_runtime::cache::l2_redis::{L2Result, L2Write};
use optimize_runtime::cache::shared::{SharedOptions, SharedStore, ValueCodec};
use optimize_runtime::cache::tiered::{TierConfig, Tiers};
use optimize_runtime::cache::writeback::WriteOp;
use optimize_runtime::cache::Tier;
use optimize_runtime::codec::{self, EnvelopeOptions, Reject};
use optimize_runtime::config::Config;
use optimize_runtime::time::{block_on, unix_ms, Clock};
use redis::Commands;
use redis_server::RedisServer;

const SCHEMA: u64 = 0xfeed;

/// Every log line of this test binary, to check that no secret is ever printed.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(redis: Option<&RedisServer>, l3: Option<&std::path::Path>) -> TierConfig {
    let _ = logs();
    let mut c = TierConfig::l1_only();
    c.namespace = "t".into();
    if let Some(r) = redis {
        c = c.with_redis(r.url());
    }
    if let Some(d) = l3 {
        c = c.with_l3(d);
    }
    c
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connected(tiers: &Tiers) {
    wait_until("L2 is connected", || tiers.status().l2_connected);
}

/// Tiers over `redis` and `l3`, connected to Redis when it is given.
fn start(redis: Option<&RedisServer>, l3: Option<&std::path::Path>) -> Arc<Tiers> {
    let tiers = Tiers::start(config(redis, l3), Clock::new(), None);
    if redis.is_some() {
        connected(&tiers);
    }
    tiers
}

fn store(tiers: &Arc<Tiers>, l2: bool, l3: bool) -> Arc<SharedStore<String>> {
    let options = SharedOptions {
        l2,
        l3,
        l2_ttl: Some(Duration::from_secs(60)),
        l3_ttl: Some(Duration::from_secs(60)),
        envelope: EnvelopeOptions::default(),
        lease: false,
        fail_safe: None,
    };
    Arc::new(
        SharedStore::new(tiers.clone(), ValueCodec::serde(), options, SCHEMA, "t::f")
            .expect("a tier"),
    )
}

/// A valid entry for `key`.
fn envelope(key: &str, value: &str, schema: u64, expires_at_ms: u64) -> Vec<u8> {
    codec::encode(
        &value.to_string(),
        schema,
        codec::key_hash(key),
        unix_ms(),
        expires_at_ms,
        &EnvelopeOptions::default(),
    )
    .unwrap()
}

#[test]
fn l2_round_trip_and_promotion_to_l3() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tiers = start(Some(&redis), Some(dir.path()));
    let s = store(&tiers, true, false);
    s.store("t:f:1".into(), &"one".to_string(), 0, None);
    block_on(tiers.barrier());
    let raw: Vec<u8> = redis.client().get("t:f:1").unwrap();
    assert_eq!(&raw[..4], b"OPTZ");
    assert!(
        tiers.l3_get("t:f:1").is_none(),
        "an L2-only store writes only L2"
    );

    let both = store(&tiers, true, true);
    let found = both.lookup_blocking("t:f:1").expect("an L2 hit");
    assert_eq!((found.value.as_str(), found.tier), ("one", Tier::L2));
    both.promote("t:f:1", &found, 0, None);
    block_on(tiers.barrier());
    assert!(
        tiers.l3_get("t:f:1").is_some(),
        "the L2 hit was promoted to L3"
    );
    let ttl: i64 = redis.client().pttl("t:f:1").unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "L2 entries carry the TTL: {ttl}");
}

#[test]
fn l3_hit_is_promoted_to_l2() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tiers = start(Some(&redis), Some(dir.path()));
    let s = store(&tiers, true, true);
    tiers.enqueue(WriteOp::Put {
        key: "t:f:2".into(),
        bytes: envelope("t:f:2", "disk", SCHEMA, 0).into(),
        l2_ttl: None,
        l2: false,
        l3: true,
        lease: None,
    });
    block_on(tiers.barrier());
    let found = s.lookup_blocking("t:f:2").expect("an L3 hit");
    assert_eq!((found.value.as_str(), found.tier), ("disk", Tier::L3));
    s.promote("t:f:2", &found, 0, None);
    block_on(tiers.barrier());
    let raw: Option<Vec<u8>> = redis.client().get("t:f:2").unwrap();
    assert!(raw.is_some(), "the L3 hit was promoted to L2");
}

#[test]
fn lookup_order_is_configurable() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Some(&redis), Some(dir.path()));
    c.order = [Tier::L3, Tier::L2];
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let _: () = redis
        .client()
        .set("t:f:3", envelope("t:f:3", "from-l2", SCHEMA, 0))
        .unwrap();
    tiers.enqueue(WriteOp::Put {
        key: "t:f:3".into(),
        bytes: envelope("t:f:3", "from-l3", SCHEMA, 0).into(),
        l2_ttl: None,
        l2: false,
        l3: true,
        lease: None,
    });
    block_on(tiers.barrier());
    let found = store(&tiers, true, true).lookup_blocking("t:f:3").unwrap();
    assert_eq!((found.value.as_str(), found.tier), ("from-l3", Tier::L3));
}

#[test]
fn corrupted_entries_written_by_a_raw_client_are_rejected_and_deleted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tiers = start(Some(&redis), None);
    let s = store(&tiers, true, false);
    let at = |name: &str| format!("t:bad:{name}");
    let good = envelope(&at("truncated"), "value", SCHEMA, 0);
    let mut flipped = envelope(&at("flipped"), "value", SCHEMA, 0);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Reject)> = vec![
        ("truncated", good[..20].to_vec(), Reject::Truncated),
        ("flipped", flipped, Reject::Checksum),
        (
            "foreign",
            b"{\"json\": \"from another program, long enough for a header\"}".to_vec(),
            Reject::Magic,
        ),
        (
            "schema",
            envelope(&at("schema"), "value", SCHEMA + 1, 0),
            Reject::Schema,
        ),
        (
            "expired",
            envelope(&at("expired"), "value", SCHEMA, unix_ms() - 1),
            Reject::Expired,
        ),
        // A valid entry of another key (of this or another function) copied here.
        (
            "copied",
            envelope("t:other:7", "1000", SCHEMA, 0),
            Reject::Key,
        ),
    ];
    let mut conn = redis.client();
    for (name, bytes, reason) in cases {
        let key = format!("t:bad:{name}");
        let _: () = conn.set(&key, bytes).unwrap();
        let before = tiers.counters(Tier::L2).rejected(reason);
        assert!(s.lookup_blocking(&key).is_none(), "{name} must be a miss");
        assert_eq!(
            tiers.counters(Tier::L2).rejected(reason),
            before + 1,
            "{name} counted as {reason}"
        );
        block_on(tiers.barrier());
        let exists: bool = conn.exists(&key).unwrap();
        assert!(!exists, "{name} was deleted");
    }
}

#[test]
fn shutdown_loses_no_queued_write() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Some(&redis), Some(dir.path()));
    c.writeback_capacity = 100_000;
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let s = store(&tiers, true, true);
    for i in 0..5_000 {
        s.store(format!("t:w:{i}"), &format!("v{i}"), 0, None);
    }
    tiers.shutdown();
    let n: u64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert_eq!(n, 5_000);
    drop(s);
    drop(tiers);
    // A new process (here: new tiers) over the same directory finds every entry.
    let reopened = Tiers::start(config(None, Some(dir.path())), Clock::new(), None);
    let s = store(&reopened, false, true);
    for i in 0..5_000 {
        let found = s
            .lookup_blocking(&format!("t:w:{i}"))
            .unwrap_or_else(|| panic!("entry {i} lost"));
        assert_eq!(found.value, format!("v{i}"));
    }
}

#[test]
fn write_behind_overflow_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(None, Some(dir.path()));
    c.writeback_capacity = 10;
    let tiers = Tiers::start(c, Clock::new(), None);
    let s = store(&tiers, false, true);
    for i in 0..2_000 {
        s.store(format!("t:o:{i}"), &"x".repeat(100), 0, None);
    }
    block_on(tiers.barrier());
    let status = tiers.status();
    assert!(
        status.writeback_dropped > 0,
        "a 10-put queue under 2,000 puts must drop some"
    );
    assert_eq!(status.writeback_depth, 0);
    let kept = (0..2_000)
        .filter(|i| tiers.l3_get(&format!("t:o:{i}")).is_some())
        .count() as u64;
    assert_eq!(
        kept + status.writeback_dropped,
        2_000,
        "every put is either written or counted as dropped"
    );
}

#[test]
fn unwritable_l3_directory_disables_the_tier_without_failing() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let tiers = Tiers::start(config(None, Some(&file.join("l3"))), Clock::new(), None);
    assert!(!tiers.has_l3());
    assert_eq!(tiers.counters(Tier::L3).errors("open"), 1);
    let s = store(&tiers, false, true);
    s.store("t:f:1".into(), &"v".to_string(), 0, None);
    block_on(tiers.barrier());
    assert!(s.lookup_blocking("t:f:1").is_none());
}

#[test]
fn corrupt_l3_directory_disables_the_tier_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), vec![0xAB; 64]).unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    let tiers = Tiers::start(config(None, Some(dir.path())), Clock::new(), None);
    assert!(!tiers.has_l3());
    assert!(tiers.counters(Tier::L3).errors("open") >= 1);
    assert!(store(&tiers, false, true)
        .lookup_blocking("t:any")
        .is_none());
}

#[test]
fn redis_absent_at_start_is_used_once_it_appears() {
    let port = RedisServer::unused_port();
    if !redis_server::available() {
        return;
    }
    let mut c = config(None, None).with_redis(format!("redis://127.0.0.1:{port}"));
    if let Some(r) = c.redis.as_mut() {
        r.breaker_cooldown = Duration::from_millis(100);
    }
    let tiers = Tiers::start(c, Clock::new(), None);
    let s = store(&tiers, true, false);
    assert!(
        s.lookup_blocking("t:late").is_none(),
        "serves (as a miss) with Redis absent"
    );
    let redis = RedisServer::start_on(port).unwrap();
    connected(&tiers);
    let _: () = redis
        .client()
        .set("t:late", envelope("t:late", "arrived", SCHEMA, 0))
        .unwrap();
    wait_until("L2 serves the entry", || {
        s.lookup_blocking("t:late").is_some()
    });
}

#[test]
fn breaker_opens_while_redis_is_down_and_closes_after_it_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut c = config(Some(&redis), None);
    if let Some(r) = c.redis.as_mut() {
        r.breaker_cooldown = Duration::from_millis(200);
        r.breaker_threshold = 3;
    }
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let _: () = redis
        .client()
        .set("t:b", envelope("t:b", "v", SCHEMA, 0))
        .unwrap();
    assert!(matches!(
        tiers.l2_get_blocking("t:b"),
        L2Result::Done(Some(_))
    ));
    redis.kill();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(tiers.l2_get_blocking("t:b"));
    }
    assert!(
        outcomes.iter().all(|o| !matches!(o, L2Result::Done(_))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&L2Result::Skipped),
        "the breaker opened: {outcomes:?}"
    );
    assert!(tiers.status().l2_circuit_open);
    redis.restart();
    let _: () = redis
        .client()
        .set("t:b", envelope("t:b", "back", SCHEMA, 0))
        .unwrap();
    wait_until("L2 is used again", || {
        matches!(tiers.l2_get_blocking("t:b"), L2Result::Done(Some(_)))
    });
    assert!(!tiers.status().l2_circuit_open);
}

/// Writes Redis did not take are made again once it answers — after a key's invalidation,
/// not at all — and a write made again never overwrites a value written meanwhile.
#[test]
fn writes_redis_missed_are_made_again_when_it_returns() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut c = config(Some(&redis), None);
    if let Some(r) = c.redis.as_mut() {
        r.breaker_cooldown = Duration::from_millis(200);
    }
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let s = store(&tiers, true, false);
    redis.kill();
    for i in 0..20 {
        s.store(format!("t:w:{i}"), &format!("v{i}"), 0, None);
    }
    block_on(tiers.barrier());
    assert_eq!(tiers.status().writes_unwritten, 20);
    tiers.enqueue(WriteOp::Delete {
        key: "t:w:5".into(),
        l2: true,
        l3: false,
        notice: None,
    });
    block_on(tiers.barrier());
    assert_eq!(
        tiers.status().writes_unwritten,
        19,
        "the invalidated key's write is dropped"
    );

    redis.restart();
    wait_until("the writes are made again", || {
        tiers.status().writes_unwritten == 0
    });
    assert_eq!(tiers.status().writes_rewritten, 19);
    let mut raw = redis.client();
    for i in 0..20 {
        let stored: Option<Vec<u8>> = raw.get(format!("t:w:{i}")).unwrap();
        assert_eq!(stored.is_some(), i != 5, "key {i}");
    }
    let found = s.lookup_blocking("t:w:7").expect("an L2 hit");
    assert_eq!(found.value, "v7");
    let ttl: i64 = raw.pttl("t:w:7").unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "the time it had left: {ttl}");

    // Made again with NX: a value another instance wrote meanwhile stays.
    let _: () = raw
        .set("t:w:7", envelope("t:w:7", "newer", SCHEMA, 0))
        .unwrap();
    let l2 = tiers.l2().unwrap();
    let again: L2Write = (
        "t:w:7".into(),
        envelope("t:w:7", "older", SCHEMA, 0).into(),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(l2.set_many_if_absent(&[again])),
        L2Result::Done(())
    ));
    assert_eq!(s.lookup_blocking("t:w:7").unwrap().value, "newer");
}

#[test]
fn password_never_appears_in_debug_errors_or_logs() {
    let secret = "s3cr3t-Pa55word";
    let Some(redis) = RedisServer::start_with_password(secret) else {
        return;
    };
    let _ = logs();
    // The right password: connects and works.
    let tiers = start(Some(&redis), None);
    assert!(redis.url().contains(secret));
    // A wrong password: fails, retries and logs, without printing either password.
    let wrong = "wr0ng-Pa55word";
    let bad_url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port());
    let bad = Tiers::start(config(None, None).with_redis(bad_url), Clock::new(), None);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!bad.status().l2_connected);
    assert!(bad.counters(Tier::L2).errors("connect") >= 1);
    let debug = format!("{tiers:?} {bad:?} {:?} {:?}", tiers.config(), bad.config());
    for pw in [secret, wrong] {
        assert!(!debug.contains(pw), "Debug leaks the password: {debug}");
    }
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("not reachable"), "the failure was logged");
    for pw in [secret, wrong] {
        assert!(!logs.contains(pw), "logs leak the password");
    }
    // A malformed URL in the environment is reported without its password.
    let err = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_REDIS_URL", format!("http://:{secret}@host"))])
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("OPTIMIZE_REDIS_URL"));
    assert!(!err.to_string().contains(secret), "{err}");
}

#[test]
fn sweeper_removes_expired_entries_and_holds_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(None, Some(dir.path()));
    c.l3.as_mut().unwrap().max_bytes = 20_000;
    let tiers = Tiers::start(c, Clock::new(), None);
    for i in 0..10 {
        let expired = envelope(&format!("t:e:{i}"), "old", SCHEMA, unix_ms() - 1);
        tiers.enqueue(WriteOp::Put {
            key: format!("t:e:{i}"),
            bytes: expired.into(),
            l2_ttl: None,
            l2: false,
            l3: true,
            lease: None,
        });
    }
    // 100 live entries of ~500 bytes: 50 KB, over the 20 KB cap; the oldest must go.
    for i in 0..100 {
        let bytes = codec::encode(
            &"y".repeat(400),
            SCHEMA,
            codec::key_hash(&format!("t:l:{i:03}")),
            1_000 + i,
            0,
            &EnvelopeOptions {
                compress_threshold: usize::MAX,
                ..Default::default()
            },
        )
        .unwrap();
        tiers.enqueue(WriteOp::Put {
            key: format!("t:l:{i:03}"),
            bytes: bytes.into(),
            l2_ttl: None,
            l2: false,
            l3: true,
            lease: None,
        });
    }
    block_on(tiers.barrier());
    let report = tiers.sweep_now().unwrap();
    assert_eq!(report.expired, 10);
    assert!(report.bytes <= 20_000, "{report:?}");
    assert!(report.evicted > 0);
    assert!(tiers.l3_get("t:l:000").is_none(), "oldest evicted first");
    assert!(tiers.l3_get("t:l:099").is_some(), "newest kept");
    assert!(tiers.l3_get("t:e:0").is_none());
}

#[test]
fn prefix_deletion_reaches_both_tiers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tiers = start(Some(&redis), Some(dir.path()));
    let s = store(&tiers, true, true);
    for key in ["t:f:1", "t:f:2", "t:g:1", "t:f*x:1"] {
        s.store(key.into(), &"v".to_string(), 0, None);
    }
    tiers.enqueue(WriteOp::DeletePrefix("t:f:".into()));
    block_on(tiers.barrier());
    let mut conn = redis.client();
    for (key, kept) in [
        ("t:f:1", false),
        ("t:f:2", false),
        ("t:g:1", true),
        ("t:f*x:1", true),
    ] {
        let in_l2: bool = conn.exists(key).unwrap();
        assert_eq!(in_l2, kept, "L2 {key}");
        assert_eq!(tiers.l3_get(key).is_some(), kept, "L3 {key}");
    }
}

#[test]
fn demotion_writes_to_l3_only_when_absent() {
    let dir = tempfile::tempdir().unwrap();
    let tiers = Tiers::start(config(None, Some(dir.path())), Clock::new(), None);
    let s = store(&tiers, false, true);
    s.store("t:d:kept".into(), &"original".to_string(), 0, None);
    block_on(tiers.barrier());
    s.demote("t:d:kept".into(), "from-l1".to_string(), 0, 0);
    s.demote(
        "t:d:new".into(),
        "evicted".to_string(),
        unix_ms() + 60_000,
        0,
    );
    block_on(tiers.barrier());
    assert_eq!(s.lookup_blocking("t:d:kept").unwrap().value, "original");
    let new = s.lookup_blocking("t:d:new").unwrap();
    assert_eq!(new.value, "evicted");
    assert!(
        new.expires_at_ms() > unix_ms(),
        "the L1 expiry travels with the entry"
    );
}

#[test]
fn without_shared_tiers_nothing_runs_in_the_background() {
    let tiers = Tiers::start(config(None, None), Clock::new(), None);
    assert!(!tiers.has_l2() && !tiers.has_l3());
    assert!(
        !tiers.runs_in_background(),
        "no runtime thread for L1 alone"
    );
    assert!(!tiers.enqueue(WriteOp::Delete {
        key: "t:x".into(),
        l2: true,
        l3: true,
        notice: None,
    }));
    block_on(tiers.barrier()); // returns at once
    assert_eq!(tiers.l2_get_blocking("t:x"), L2Result::Skipped);
    let dir = tempfile::tempdir().unwrap();
    assert!(Tiers::start(config(None, Some(dir.path())), Clock::new(), None).runs_in_background());
}

#[test]
fn a_value_over_the_entry_limit_is_counted_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let tiers = Tiers::start(config(None, Some(dir.path())), Clock::new(), None);
    let options = SharedOptions {
        l2: false,
        l3: true,
        l2_ttl: None,
        l3_ttl: None,
        envelope: EnvelopeOptions {
            max_entry_bytes: 1024,
            ..EnvelopeOptions::default()
        },
        lease: false,
        fail_safe: None,
    };
    let s = SharedStore::new(tiers.clone(), ValueCodec::serde(), options, SCHEMA, "t::f").unwrap();
    for i in 0..3 {
        s.store(format!("t:big:{i}"), &"x".repeat(4096), 0, None);
    }
    s.store("t:small".into(), &"x".repeat(16), 0, None);
    block_on(tiers.flush());
    assert_eq!(tiers.counters(Tier::L3).rejected(Reject::Oversized), 3);
    assert!(tiers.l3_get("t:big:0").is_none(), "nothing written");
    assert!(tiers.l3_get("t:small").is_some());
}

/// Deterministic noise for damaging files.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_damaged_l3_never_reaches_a_caller() {
    use std::io::{Seek, SeekFrom};
    for trial in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let l3 = dir.path().join("l3");
        {
            let tiers = Tiers::start(config(None, Some(&l3)), Clock::new(), None);
            let s = store(&tiers, false, true);
            for i in 0..2_000 {
                s.store(
                    format!("t:d:{i}"),
                    &format!("value {i} {}", "x".repeat(200)),
                    0,
                    None,
                );
            }
            tiers.shutdown();
        }
        let db = l3.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        match trial % 3 {
            // 4 KiB of noise in the middle of the file.
            0 => {
                let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                f.seek(SeekFrom::Start(len / 2)).unwrap();
                f.write_all(&noise(trial, 4096)).unwrap();
            }
            // 64 KiB of noise over the start.
            1 => {
                let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                f.write_all(&noise(trial, 65_536)).unwrap();
            }
            // Truncated.
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(len / 3)
                .unwrap(),
        }
        // Opening, reading, writing and sweeping: whatever sled does, nothing panics here.
        let tiers = Tiers::start(config(None, Some(&l3)), Clock::new(), None);
        let s = store(&tiers, false, true);
        for i in 0..50 {
            let _ = s.lookup_blocking(&format!("t:d:{i}"));
        }
        s.store("t:after".into(), &"fresh".to_owned(), 0, None);
        block_on(tiers.flush());
        let _ = tiers.sweep_now();
        if tiers.has_l3() {
            let got = s.lookup_blocking("t:after").map(|f| f.value);
            assert_eq!(
                got.as_deref(),
                Some("fresh"),
                "trial {trial}: a working L3 works"
            );
        } else {
            assert!(
                tiers.counters(Tier::L3).total_errors() > 0,
                "trial {trial}: a disabled L3 was counted"
            );
        }
        tiers.shutdown();
    }
}

#[test]
fn an_oversized_redis_value_is_read_bounded_and_rejected() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tiers = Tiers::start(config(Some(&redis), None), Clock::new(), None);
    connected(&tiers);
    let huge = vec![b'x'; 40 << 20];
    let _: () = redis::cmd("SET")
        .arg("t:huge")
        .arg(&huge[..])
        .query(&mut redis.client())
        .unwrap();
    drop(huge);
    let limit = EnvelopeOptions::default().max_entry_bytes + codec::HEADER_LEN;
    match tiers.l2_get_blocking("t:huge") {
        L2Result::Done(Some(bytes)) => assert_eq!(bytes.len(), limit + 1, "read bounded"),
        other => panic!("expected a bounded read, got {other:?}"),
    }
    let s = store(&tiers, true, false);
    assert!(s.lookup_blocking("t:huge").is_none());
    assert_eq!(
        tiers.counters(Tier::L2).rejected(Reject::Magic),
        1,
        "40 MiB of 'x' is no entry"
    );
    // An entry whose header declares more than the limit is refused as oversized, unread.
    let mut forged = envelope("t:forged", "small", SCHEMA, 0);
    forged[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    let _: () = redis::cmd("SET")
        .arg("t:forged")
        .arg(&forged[..])
        .query(&mut redis.client())
        .unwrap();
    assert!(s.lookup_blocking("t:forged").is_none());
    assert_eq!(tiers.counters(Tier::L2).rejected(Reject::Oversized), 1);
}

#[test]
fn signed_entries_refuse_forgeries_and_survive_a_key_roll() {
    use optimize_runtime::codec::SigningKeys;
    let dir = tempfile::tempdir().unwrap();
    let signed = |current: &str, previous: Option<&str>| {
        let mut c = config(None, Some(dir.path()));
        c.envelope.signing =
            Some(SigningKeys::new(current.as_bytes(), previous.map(str::as_bytes)).interned());
        c
    };
    // An L3 store with the tiers' own envelope options (and so their signing keys).
    let l3_store = |tiers: &Arc<Tiers>| {
        let options = SharedOptions {
            l2: false,
            l3: true,
            l2_ttl: None,
            l3_ttl: None,
            envelope: tiers.config().envelope,
            lease: false,
            fail_safe: None,
        };
        SharedStore::<String>::new(tiers.clone(), ValueCodec::serde(), options, SCHEMA, "t::f")
            .unwrap()
    };
    let lookup =
        |tiers: &Arc<Tiers>, key: &str| l3_store(tiers).lookup_blocking(key).map(|f| f.value);
    {
        let tiers = Tiers::start(signed("old secret 0123456789", None), Clock::new(), None);
        l3_store(&tiers).store("t:s:1".into(), &"genuine".to_owned(), 0, None);
        // A well-formed but unsigned entry, as someone with write access could put there.
        tiers.enqueue(WriteOp::Put {
            key: "t:s:forged".into(),
            bytes: envelope("t:s:forged", "forged", SCHEMA, 0).into(),
            l2_ttl: None,
            l2: false,
            l3: true,
            lease: None,
        });
        block_on(tiers.flush());
        assert_eq!(lookup(&tiers, "t:s:1").as_deref(), Some("genuine"));
        assert_eq!(lookup(&tiers, "t:s:forged"), None);
        assert_eq!(tiers.counters(Tier::L3).rejected(Reject::Signature), 1);
        tiers.shutdown();
    }
    {
        // Rolling: the new secret signs, the previous one is still accepted.
        let tiers = Tiers::start(
            signed("new secret 0123456789", Some("old secret 0123456789")),
            Clock::new(),
            None,
        );
        assert_eq!(lookup(&tiers, "t:s:1").as_deref(), Some("genuine"));
        tiers.shutdown();
    }
    {
        // After the roll, entries signed with the dropped secret are refused.
        let tiers = Tiers::start(signed("new secret 0123456789", None), Clock::new(), None);
        assert_eq!(lookup(&tiers, "t:s:1"), None);
        assert_eq!(tiers.counters(Tier::L3).rejected(Reject::Signature), 1);
        tiers.shutdown();
    }
}

#[test]
fn invalidating_a_function_spares_functions_whose_path_extends_it_and_reaches_every_key() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(Some(&redis), Some(dir.path()));
    // Every SCAN + UNLINK round must fit this timeout on its own; the whole walk cannot.
    if let Some(r) = c.redis.as_mut() {
        r.op_timeout = Duration::from_millis(20);
    }
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let users = optimize_runtime::key::KeyLayout::new("t", "app::users", 0, SCHEMA);
    let fetch = optimize_runtime::key::KeyLayout::new("t", "app::users::fetch", 0, SCHEMA);
    let s = store(&tiers, true, true);
    let key = |layout: &optimize_runtime::key::KeyLayout, i: u128| {
        layout.key(optimize_runtime::key::ArgsKey(i))
    };
    for i in 0..10 {
        s.store(key(&users, i), &format!("user {i}"), 0, None);
        s.store(key(&fetch, i), &format!("fetched {i}"), 0, None);
    }
    block_on(tiers.flush());
    // A large keyspace under the invalidated function, written directly.
    let mut conn = redis.client();
    for chunk in 0..20u128 {
        let mut pipe = redis::pipe();
        for i in 0..5_000u128 {
            pipe.cmd("SET")
                .arg(key(&users, 1_000 + chunk * 5_000 + i))
                .arg("x")
                .ignore();
        }
        let _: () = pipe.query(&mut conn).unwrap();
    }
    tiers.enqueue(WriteOp::DeletePrefix(users.function_prefix().to_owned()));
    block_on(tiers.flush());
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", users.function_prefix()))
        .query(&mut conn)
        .unwrap();
    assert!(
        left.is_empty(),
        "{} of app::users's keys survived",
        left.len()
    );
    for i in 0..10 {
        let k = key(&fetch, i);
        let exists: bool = conn.exists(&k).unwrap();
        assert!(exists, "app::users::fetch lost {k} in L2");
        assert!(
            tiers.l3_get(&k).is_some(),
            "app::users::fetch lost {k} in L3"
        );
        assert!(tiers.l3_get(&key(&users, i)).is_none());
    }
}

#[test]
fn an_invalidation_during_an_outage_reaches_redis_when_it_returns() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut c = config(Some(&redis), None);
    if let Some(r) = c.redis.as_mut() {
        r.op_timeout = Duration::from_millis(100);
        r.breaker_threshold = 1;
        r.breaker_cooldown = Duration::from_millis(200);
    }
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let s = store(&tiers, true, false);
    s.store("t:out:1".into(), &"old".to_owned(), 0, None);
    s.store("t:out:2".into(), &"old".to_owned(), 0, None);
    block_on(tiers.flush());
    let mut conn = redis.client();
    let exists = |conn: &mut redis::Connection, key: &str| -> bool { conn.exists(key).unwrap() };
    assert!(exists(&mut conn, "t:out:1"));
    // Redis stops answering; the invalidations cannot reach it now.
    redis.pause();
    tiers.enqueue(WriteOp::Delete {
        key: "t:out:1".into(),
        l2: true,
        l3: false,
        notice: None,
    });
    tiers.enqueue(WriteOp::DeletePrefix("t:out:2".into()));
    block_on(tiers.flush());
    assert_eq!(tiers.status().invalidations_pending, 2);
    // When it answers again, they are replayed without anything else being written.
    redis.resume();
    wait_until("the missed deletions are replayed", || {
        tiers.status().invalidations_pending == 0
    });
    assert!(!exists(&mut conn, "t:out:1"));
    assert!(!exists(&mut conn, "t:out:2"));
    assert_eq!(tiers.status().invalidations_replayed, 2);
}

#[test]
fn a_large_read_does_not_hold_up_small_ones() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Entries up to 64 MiB, and one that large: read whole on the connection the small reads
    // use, it would hold each of them up for longer than their 100 ms timeout.
    let mut c = config(Some(&redis), None);
    c.envelope.max_entry_bytes = 64 << 20;
    let tiers = Tiers::start(c, Clock::new(), None);
    connected(&tiers);
    let mut raw = redis.client();
    let _: () = redis::cmd("SET")
        .arg("t:big")
        .arg(vec![b'x'; 64 << 20])
        .query(&mut raw)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("t:small")
        .arg("s")
        .query(&mut raw)
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let big_reads = {
        let (tiers, stop) = (tiers.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(matches!(
                    tiers.l2_get_blocking("t:big"),
                    L2Result::Done(Some(_))
                ));
                n += 1;
            }
            n
        })
    };
    let mut slowest = Duration::ZERO;
    let mut failed = 0;
    for _ in 0..200 {
        let started = std::time::Instant::now();
        if !matches!(tiers.l2_get_blocking("t:small"), L2Result::Done(Some(_))) {
            failed += 1;
        }
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let big = big_reads.join().unwrap();
    println!("200 small reads beside {big} reads of 64 MiB: slowest {slowest:?}, {failed} failed");
    assert!(big > 0);
    assert_eq!(failed, 0, "small reads timed out behind large ones");
}
