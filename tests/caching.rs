//! Options, invalidation, statistics and keys, through the attribute.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

// TTL expiry is tested on a mock clock in tests/runtime_install.rs.

static CAP: AtomicUsize = AtomicUsize::new(0);

#[optimize::cpu(capacity = 50)]
fn bounded(x: u32) -> u32 {
    CAP.fetch_add(1, SeqCst);
    x
}

#[test]
fn capacity_bounds_the_store() {
    for i in 0..1000 {
        bounded(i);
    }
    assert_eq!(bounded_cache().capacity(), 50);
    assert!(bounded_cache().len() <= 50, "len {}", bounded_cache().len());
}

static INV: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
fn invalidated(x: u32) -> u32 {
    INV.fetch_add(1, SeqCst);
    x
}

#[test]
fn invalidate_one_key_or_all() {
    invalidated(1);
    invalidated(2);
    assert_eq!(INV.load(SeqCst), 2);
    assert!(invalidated_invalidate(1));
    assert!(!invalidated_invalidate(1), "already gone");
    invalidated(1);
    invalidated(2);
    assert_eq!(INV.load(SeqCst), 3, "only key 1 was recomputed");
    invalidated_cache().invalidate_all();
    assert_eq!(invalidated_cache().len(), 0);
    invalidated(1);
    invalidated(2);
    assert_eq!(INV.load(SeqCst), 5);
}

struct Account {
    id: u64,
    reads: AtomicUsize,
}

impl Account {
    #[optimize::io(key = self.id)]
    fn balance(&self) -> u64 {
        self.reads.fetch_add(1, SeqCst);
        self.id * 100
    }
}

#[test]
fn invalidate_a_method_entry() {
    let a = Account {
        id: 4,
        reads: AtomicUsize::new(0),
    };
    a.balance();
    a.balance();
    assert!(a.balance_invalidate());
    a.balance();
    assert_eq!(a.reads.load(SeqCst), 2);
    Account::balance_cache().invalidate_all();
    a.balance();
    assert_eq!(a.reads.load(SeqCst), 3);
}

#[optimize::optimize(io, name = "billing::quote", version = 3)]
fn named(x: u64) -> u64 {
    x
}

#[test]
fn name_and_version_shape_the_full_key() {
    named(1);
    let site = named_cache();
    assert_eq!(site.path(), "billing::quote");
    assert_eq!(site.version(), 3);
    assert_eq!(site.kind(), optimize::Kind::Io);
    let mut h = optimize::key::KeyHasher::new();
    h.push(&7u64);
    let key = site.full_key(h.finish().unwrap());
    // Pinned independently of the crate: xxh3-128 of the argument's 8 little-endian bytes.
    // A change here would orphan every persisted entry, so it must be deliberate.
    let args = xxhash_rust::xxh3::xxh3_128(&7u64.to_le_bytes());
    assert_eq!(
        key,
        format!(
            "optimize:billing::quote:v3:{:016x}:{args:032x}",
            site.schema()
        )
    );
    assert!(optimize::site("billing::quote").is_some());
}

mod schema_a {
    #[optimize::io]
    pub fn lookup(x: u64) -> u64 {
        x
    }
}
mod schema_b {
    #[optimize::io]
    pub fn lookup(x: u32) -> u64 {
        u64::from(x)
    }
}
mod schema_c {
    #[optimize::io]
    pub fn lookup(x: u64) -> u64 {
        x + 1
    }
}

mod alias_a {
    pub(crate) type Id = u32;
    pub(crate) struct Account {
        pub(crate) id: u64,
    }
    #[optimize::io(tiers = "l1")]
    pub(crate) fn find(id: Id) -> Option<std::sync::Arc<Account>> {
        Some(std::sync::Arc::new(Account { id: id.into() }))
    }
}
mod alias_b {
    pub(crate) type Id = u64;
    pub(crate) struct Account {
        pub(crate) id: u64,
        pub(crate) name: String,
    }
    #[optimize::io(tiers = "l1")]
    pub(crate) fn find(id: Id) -> Option<std::sync::Arc<Account>> {
        Some(std::sync::Arc::new(Account {
            id,
            name: String::new(),
        }))
    }
}

#[test]
fn schema_hash_follows_what_the_types_resolve_to() {
    // Spelled the same (`Id`, `Account`), resolved to different types: different schemas.
    assert_ne!(
        alias_a::find_cache().schema(),
        alias_b::find_cache().schema()
    );
    assert_eq!(alias_a::find(1).unwrap().id, 1);
    let b = alias_b::find(2).unwrap();
    assert_eq!((b.id, b.name.as_str()), (2, ""));
}

#[test]
fn schema_hash_follows_the_types() {
    assert_ne!(
        schema_a::lookup_cache().schema(),
        schema_b::lookup_cache().schema()
    );
    assert_eq!(
        schema_a::lookup_cache().schema(),
        schema_c::lookup_cache().schema()
    );
    assert_ne!(
        schema_a::lookup_cache().path(),
        schema_c::lookup_cache().path()
    );
}

#[optimize::memory]
fn timed(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn stats_record_calls_hits_and_times() {
    timed(20);
    timed(20);
    timed(20);
    let s = timed_cache().stats();
    assert_eq!((s.calls(), s.hits(), s.misses(), s.errors()), (3, 2, 1, 0));
    assert!(
        s.compute_time >= Duration::from_millis(20),
        "{:?}",
        s.compute_time
    );
    assert!(s.total_time >= s.compute_time);
    assert!(
        s.latency.quantile(1.0) >= Duration::from_millis(17),
        "p100 {:?}",
        s.latency.quantile(1.0)
    );
    assert!((s.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
    timed_cache().reset_stats();
    assert_eq!(timed_cache().stats().calls(), 0);
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

#[optimize::io(skip(trace_id))]
fn with_skip(user: u64, trace_id: u64) -> u64 {
    SKIPPED.fetch_add(1, SeqCst);
    user + trace_id
}

#[test]
fn skipped_arguments_do_not_change_the_key() {
    assert_eq!(with_skip(1, 100), 101);
    assert_eq!(
        with_skip(1, 200),
        101,
        "served from the entry keyed by user only"
    );
    assert_eq!(SKIPPED.load(SeqCst), 1);
}

mod renamed {
    // `crate = "..."` points the generated code at the facade under another path.
    pub(crate) use optimize as opt;

    #[optimize::cpu(crate = "crate::renamed::opt")]
    pub fn through_renamed(x: u8) -> u8 {
        x
    }
}

#[test]
fn crate_option_is_honoured() {
    assert_eq!(renamed::through_renamed(3), 3);
    assert_eq!(renamed::through_renamed_cache().stats().calls(), 1);
}

static MEASURED: AtomicUsize = AtomicUsize::new(0);

/// Not serializable and not `Clone`: fine, nothing is cached.
struct Handle(u64);

#[optimize::io(cache = false, name = "audit::write")]
fn measured_only(handle: &Handle, line: &str) -> Result<usize, String> {
    MEASURED.fetch_add(1, SeqCst);
    if line.is_empty() {
        return Err("empty".into());
    }
    Ok(line.len() + handle.0 as usize)
}

struct Logger;

impl Logger {
    // A method needs no `key` when nothing is cached.
    #[optimize::cpu(cache = false)]
    async fn first_word<'a>(&self, text: &'a str) -> &'a str {
        text.split(' ').next().unwrap_or("")
    }
}

#[test]
fn cache_false_measures_every_call_and_caches_nothing() {
    let h = Handle(1);
    assert_eq!(measured_only(&h, "abc"), Ok(4));
    assert_eq!(measured_only(&h, "abc"), Ok(4));
    assert!(measured_only(&h, "").is_err());
    assert_eq!(MEASURED.load(SeqCst), 3, "the body runs on every call");
    let s = measured_only_cache().stats();
    assert_eq!(
        (s.calls(), s.hits(), s.executions(), s.errors()),
        (3, 0, 3, 1)
    );
    assert_eq!(measured_only_cache().path(), "audit::write");
    assert_eq!(measured_only_cache().len(), 0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(Logger.first_word("hello world")), "hello");
    assert_eq!(Logger::first_word_cache().stats().calls(), 1);
}

#[optimize::cpu(capacity = "2KiB")]
fn sized_blob(id: u32) -> Vec<u8> {
    vec![id as u8; 500]
}

#[test]
fn a_size_capacity_bounds_l1_in_bytes_for_any_kind() {
    let site = sized_blob_cache();
    assert_eq!(site.capacity(), 2048);
    assert!(site.settings().weigh_by_size);
    for id in 0..20 {
        sized_blob(id);
    }
    // Each value weighs ~508 encoded bytes: about four fit, never twenty.
    assert!(
        site.len() <= 4,
        "{} entries of ~500 bytes in 2 KiB",
        site.len()
    );
    assert!(!site.is_empty());
}
