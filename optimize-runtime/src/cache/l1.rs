//! L1: the in-process tier, one store per managed function.
//!
//! The store keeps each value with its own deadline instead of relying on the engine's TTL,
//! so every engine expires entries the same way, per entry, on an injectable [`Clock`].

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::budget::{BudgetMember, L1Budget};
use crate::key::ArgsKey;
use crate::time::Clock;

mod clock;

pub use clock::ClockEngine;

/// A value stored in L1 together with its deadline (see [`Clock::deadline`]).
///
/// Kept to 24 bytes besides the value (memory per entry is measured against the raw engines
/// in `benches/memory.rs`): the fail-safe window is held in 32 bits past the deadline, and
/// one size serves both the capacity weight and the byte budget.
#[derive(Clone, Debug)]
pub struct Entry<V> {
    /// The cached value.
    pub value: V,
    /// Deadline in [`Clock`] nanoseconds; 0 means it never expires.
    pub expires_at: u64,
    /// The entry's tags, as a 64-bit set of [`tag_bit`]s: invalidating a tag removes every
    /// entry whose set has its bit (and, rarely, an entry of another tag sharing it).
    pub tag_bits: u64,
    /// How long past `expires_at` the entry is kept (fail-safe), to be served only when
    /// computing it again fails: milliseconds, or with [`KEPT_IN_SECONDS`] set, seconds
    /// (windows of 2³¹ ms, about 24 days, and more); 0: removed when it expires.
    kept: u32,
    /// The value's size in bytes, measured on insert by a store that weighs values or
    /// counts them against the byte budget (0 otherwise).
    size: u32,
}

impl<A: std::ops::Deref<Target = dyn std::any::Any + Send + Sync>> Entry<A> {
    /// The entry of a type-erased engine (moka's, clock's) with its value cloned out as a
    /// `V`; `None` never happens, as one engine holds one type.
    #[inline]
    fn typed<V: Clone + 'static>(&self) -> Option<Entry<V>> {
        let value = std::ops::Deref::deref(&self.value)
            .downcast_ref::<V>()?
            .clone();
        Some(Entry {
            value,
            expires_at: self.expires_at,
            tag_bits: self.tag_bits,
            kept: self.kept,
            size: self.size,
        })
    }
}

impl<V> Entry<V> {
    /// The same entry holding `f(value)`.
    #[inline]
    fn map_value<U>(self, f: impl FnOnce(V) -> U) -> Entry<U> {
        Entry {
            value: f(self.value),
            expires_at: self.expires_at,
            tag_bits: self.tag_bits,
            kept: self.kept,
            size: self.size,
        }
    }

    /// An entry with no tags, no fail-safe window and no measured size.
    pub fn new(value: V, expires_at: u64) -> Self {
        Self {
            value,
            expires_at,
            tag_bits: 0,
            kept: 0,
            size: 0,
        }
    }

    /// Until when fail-safe keeps the entry past its deadline ([`Clock`] nanoseconds); 0
    /// when it is removed as it expires.
    #[inline]
    pub fn keep_until(&self) -> u64 {
        let (amount, unit) = match self.kept {
            0 => return 0,
            k if k & KEPT_IN_SECONDS != 0 => (k & !KEPT_IN_SECONDS, 1_000_000_000),
            ms => (ms, 1_000_000),
        };
        self.expires_at.saturating_add(u64::from(amount) * unit)
    }

    /// The value's size in bytes as measured on insert (0 when the store measures none).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// What the entry counts against the capacity: its size in a store [weighed by
    /// size](L1Store::weighed), else 1.
    #[inline]
    fn weight(&self, by_size: bool) -> u32 {
        if by_size {
            self.size.max(1)
        } else {
            1
        }
    }

    /// Kept until `keep_until` (0: not kept), rounded up to the millisecond, or to the
    /// second for a window of about 24 days or more (at most 68 years).
    fn kept_until(mut self, keep_until: u64) -> Self {
        let past = keep_until.saturating_sub(self.expires_at);
        let ms = past.div_ceil(1_000_000);
        self.kept = match (keep_until, self.expires_at) {
            (0, _) | (_, 0) => 0,
            _ if ms < u64::from(KEPT_IN_SECONDS) => ms as u32,
            _ => {
                let seconds = past.div_ceil(1_000_000_000);
                seconds.min(u64::from(!KEPT_IN_SECONDS)) as u32 | KEPT_IN_SECONDS
            }
        };
        self
    }
}

/// The bit of [`Entry::kept`] that says its unit is seconds.
const KEPT_IN_SECONDS: u32 = 1 << 31;

/// The bit a tag (by its hash) sets in [`Entry::tag_bits`].
#[inline]
pub fn tag_bit(tag: u64) -> u64 {
    1 << (tag % 64)
}

/// What an L1 engine must do. Values are handed out as clones, so a caller can never mutate a
/// shared entry; return an `Arc<T>` from the function to make clones cheap.
pub trait L1Engine<V>: Send + Sync {
    /// The entry for `key`, if present (expired or not).
    fn get(&self, key: ArgsKey) -> Option<Entry<V>>;
    /// Inserts or replaces the entry for `key`.
    fn insert(&self, key: ArgsKey, entry: Entry<V>);
    /// Removes the entry for `key`; whether one was present.
    fn remove(&self, key: ArgsKey) -> bool;
    /// Whether an entry for `key` is present (expired or not), without counting as a read
    /// for eviction.
    fn contains(&self, key: ArgsKey) -> bool {
        self.get(key).is_some()
    }
    /// Removes the entry for `key` and returns it.
    fn take(&self, key: ArgsKey) -> Option<Entry<V>> {
        let entry = self.get(key);
        self.remove(key).then_some(entry).flatten()
    }
    /// Removes every entry.
    fn clear(&self);
    /// Number of entries (may lag behind concurrent writes).
    fn len(&self) -> u64;
    /// Whether the store holds no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shows entries to `visit` until it returns `false` (used to choose what to give up
    /// for the byte budget). Engines that cannot enumerate entries may keep the default,
    /// which shows none.
    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<V>) -> bool) {
        let _ = visit;
    }
    /// Removes the entries `expired` says are; how many. Engines that cannot enumerate
    /// entries may keep the default, which removes none (they expire on read).
    fn purge(&self, expired: &dyn Fn(&Entry<V>) -> bool) -> u64 {
        let _ = expired;
        0
    }
}

/// Which engine stores L1 entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// quick_cache: S3-FIFO-like eviction, sharded; the fastest reads measured here (default).
    #[default]
    Quick,
    /// moka: TinyLFU admission with LRU eviction.
    Moka,
    /// CLOCK (second chance) on a lock-free map: reads write no shared memory, so hits
    /// scale with the cores ([`ClockEngine`]).
    Clock,
}

impl EngineKind {
    /// Parses `quick`, `moka` or `clock`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "quick" | "quick_cache" => Some(EngineKind::Quick),
            "moka" => Some(EngineKind::Moka),
            "clock" => Some(EngineKind::Clock),
            _ => None,
        }
    }
}

/// Options of one function's L1 store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Options {
    /// Maximum number of entries; the engine evicts beyond it.
    pub capacity: u64,
    /// How long an entry stays valid; `None` keeps it until evicted or invalidated.
    pub ttl: Option<Duration>,
    /// The engine.
    pub engine: EngineKind,
    /// Fail-safe: how long an expired entry is kept, served only when computing it again
    /// fails (`None`: removed when it expires).
    pub fail_safe: Option<Duration>,
}

impl L1Options {
    /// Capacity used when a function does not set one.
    pub const DEFAULT_CAPACITY: u64 = 10_000;
}

impl Default for L1Options {
    fn default() -> Self {
        Self {
            capacity: Self::DEFAULT_CAPACITY,
            ttl: None,
            engine: EngineKind::default(),
            fail_safe: None,
        }
    }
}

/// The engine behind a store: the built-in ones dispatched without a virtual call (this is
/// the hit path), or any other implementation of [`L1Engine`].
enum Engine<V> {
    Quick(QuickEngine<V>),
    Moka(MokaEngine<V>),
    Clock(ClockEngine<V>),
    Custom(Box<dyn L1Engine<V>>),
}

macro_rules! dispatch {
    ($engine:expr, $e:ident => $call:expr) => {
        match $engine {
            Engine::Quick($e) => $call,
            Engine::Moka($e) => $call,
            Engine::Clock($e) => $call,
            Engine::Custom($e) => $call,
        }
    };
}

impl<V: Clone + Send + Sync + 'static> Engine<V> {
    #[inline]
    fn get(&self, key: ArgsKey) -> Option<Entry<V>> {
        dispatch!(self, e => e.get(key))
    }
    fn insert(&self, key: ArgsKey, entry: Entry<V>) {
        dispatch!(self, e => e.insert(key, entry))
    }
    fn remove(&self, key: ArgsKey) -> bool {
        dispatch!(self, e => e.remove(key))
    }
    fn contains(&self, key: ArgsKey) -> bool {
        dispatch!(self, e => e.contains(key))
    }
    fn take(&self, key: ArgsKey) -> Option<Entry<V>> {
        dispatch!(self, e => e.take(key))
    }
    fn clear(&self) {
        dispatch!(self, e => e.clear())
    }
    fn len(&self) -> u64 {
        dispatch!(self, e => e.len())
    }
    fn is_empty(&self) -> bool {
        dispatch!(self, e => e.is_empty())
    }
}

/// One function's L1 store: an engine plus expiry on a clock.
pub struct L1Store<V> {
    engine: Engine<V>,
    ttl: Option<Duration>,
    fail_safe: Option<Duration>,
    clock: Clock,
    /// Size of a value, when capacity counts bytes instead of entries.
    weigher: Option<fn(&V) -> u64>,
    /// Byte accounting against the process-wide budget, when there is one.
    budgeted: Option<Budgeted<V>>,
    /// What the engine calls for a capacity eviction (the budget gives entries up through
    /// it too).
    on_evict: Option<EvictionHandler<V>>,
}

/// What a value weighs, in bytes.
type Sizer<V> = fn(&V) -> u64;

/// A store's share of the process-wide byte budget: what it weighs values with, and its
/// count (shared with its eviction handler, which gives evicted bytes back).
struct Budgeted<V> {
    size: fn(&V) -> u64,
    share: Arc<Share>,
}

/// The bytes of one store's entries, counted in the store and in the budget together.
struct Share {
    budget: Arc<L1Budget>,
    bytes: AtomicU64,
}

impl Share {
    fn charge(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Relaxed);
        self.budget.charge(bytes);
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(bytes)));
        self.budget.release(bytes);
    }

    fn release_all(&self) {
        self.budget.release(self.bytes.swap(0, Relaxed));
    }
}

impl<V: Clone + Send + Sync + 'static> L1Store<V> {
    /// A store on the engine the options name.
    pub fn new(options: L1Options, clock: Clock) -> Self {
        Self::build(options, clock, None, None, None)
    }

    /// A store that hands entries evicted by capacity to `on_evict`.
    pub fn with_eviction(options: L1Options, clock: Clock, on_evict: EvictionHandler<V>) -> Self {
        Self::build(options, clock, Some(on_evict), None, None)
    }

    /// A store whose values also count against a process-wide byte budget, each weighing
    /// what `size` says; with `weigh_by_size`, its own capacity counts bytes too.
    pub fn budgeted(
        options: L1Options,
        clock: Clock,
        on_evict: Option<EvictionHandler<V>>,
        size: fn(&V) -> u64,
        weigh_by_size: bool,
        budget: Arc<L1Budget>,
    ) -> Self {
        let weigher = weigh_by_size.then_some(size);
        Self::build(options, clock, on_evict, weigher, Some((budget, size)))
    }

    /// A store whose capacity counts bytes: each entry weighs what `size` says (at least 1,
    /// at most 4 GiB). Memory-kind functions use it with the value's encoded size.
    pub fn weighed(
        options: L1Options,
        clock: Clock,
        on_evict: Option<EvictionHandler<V>>,
        size: fn(&V) -> u64,
    ) -> Self {
        Self::build(options, clock, on_evict, Some(size), None)
    }

    fn build(
        options: L1Options,
        clock: Clock,
        on_evict: Option<EvictionHandler<V>>,
        weigher: Option<fn(&V) -> u64>,
        budget: Option<(Arc<L1Budget>, Sizer<V>)>,
    ) -> Self {
        let budgeted = budget.map(|(budget, size)| Budgeted {
            size,
            share: Arc::new(Share {
                budget,
                bytes: AtomicU64::new(0),
            }),
        });
        // Capacity evictions give their bytes back before the handler sees them.
        let on_evict = match &budgeted {
            Some(b) => {
                let share = b.share.clone();
                let inner = on_evict;
                let handler: EvictionHandler<V> = Arc::new(move |key, entry: Entry<V>| {
                    share.release(u64::from(entry.size));
                    if let Some(inner) = &inner {
                        inner(key, entry);
                    }
                });
                Some(handler)
            }
            None => on_evict,
        };
        // Sizes only feed quick_cache's shard and ghost-list estimates; a weighed store
        // guesses 64 KiB per value.
        let estimated_items = match weigher {
            Some(_) => (options.capacity / (64 << 10)).clamp(64, 100_000),
            None => options.capacity,
        };
        let engine = match options.engine {
            EngineKind::Moka => Engine::Moka(MokaEngine::build(
                options.capacity,
                on_evict.clone(),
                weigher.is_some(),
            )),
            EngineKind::Clock => Engine::Clock(ClockEngine::build(
                options.capacity,
                on_evict.clone(),
                weigher.is_some(),
            )),
            EngineKind::Quick => Engine::Quick(QuickEngine::build(
                options.capacity,
                estimated_items,
                on_evict.clone(),
                weigher.is_some(),
            )),
        };
        Self {
            engine,
            ttl: options.ttl,
            fail_safe: options.fail_safe,
            clock,
            weigher,
            budgeted,
            on_evict,
        }
    }

    /// A store on any engine.
    pub fn with_engine(engine: Box<dyn L1Engine<V>>, ttl: Option<Duration>, clock: Clock) -> Self {
        Self {
            engine: Engine::Custom(engine),
            ttl,
            fail_safe: None,
            clock,
            weigher: None,
            budgeted: None,
            on_evict: None,
        }
    }

    fn put(&self, key: ArgsKey, value: V, expires_at: u64, tag_bits: u64) {
        let keep_until = match (expires_at, self.fail_safe) {
            (0, _) | (_, None) => 0,
            (deadline, Some(window)) => Clock::deadline(deadline, Some(window)),
        };
        self.put_kept(key, value, expires_at, keep_until, tag_bits);
    }

    fn put_kept(&self, key: ArgsKey, value: V, expires_at: u64, keep_until: u64, tag_bits: u64) {
        let size = self
            .weigher
            .or(self.budgeted.as_ref().map(|b| b.size))
            .map_or(0, |size| u32::try_from(size(&value)).unwrap_or(u32::MAX));
        if let Some(b) = &self.budgeted {
            if u64::from(size) > b.share.budget.limit() {
                // Larger than the whole budget: it stays out of L1 (the shared tiers and the
                // caller still have it).
                return;
            }
            if let Some(old) = self.engine.take(key) {
                b.share.release(u64::from(old.size));
            }
        }
        let mut entry = Entry::new(value, expires_at).kept_until(keep_until);
        entry.tag_bits = tag_bits;
        entry.size = size;
        self.engine.insert(key, entry);
        if let Some(b) = &self.budgeted {
            b.share.charge(u64::from(size));
            b.share.budget.enforce();
        }
    }
}

/// Receives entries evicted from L1 because it was full. Must only hand them on (e.g. over a
/// channel): it may run inside the engine's housekeeping.
pub type EvictionHandler<V> = std::sync::Arc<dyn Fn(ArgsKey, Entry<V>) + Send + Sync>;

impl<V: Clone + Send + Sync + 'static> L1Store<V> {
    /// The clock deadlines are measured on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The live value for `key`, reading the clock only if the entry has a deadline. An
    /// expired entry is removed, unless fail-safe keeps it (see [`L1Store::get_stale`]).
    #[inline]
    pub fn get_live(&self, key: ArgsKey) -> Option<V> {
        let entry = self.engine.get(key)?;
        if entry.expires_at != 0 {
            let now = self.clock.now_nanos();
            if Clock::is_expired(entry.expires_at, now) {
                if entry.keep_until() != 0 && !Clock::is_expired(entry.keep_until(), now) {
                    return None;
                }
                self.remove(key);
                return None;
            }
        }
        Some(entry.value)
    }

    /// [`L1Store::get_live`], and whether the entry expires within `due_within` nanoseconds
    /// (refresh-ahead refreshes such an entry in the background).
    #[inline]
    pub fn get_live_due(&self, key: ArgsKey, due_within: u64) -> Option<(V, bool)> {
        let entry = self.engine.get(key)?;
        if entry.expires_at == 0 {
            return Some((entry.value, false));
        }
        let now = self.clock.now_nanos();
        if Clock::is_expired(entry.expires_at, now) {
            if entry.keep_until() == 0 || Clock::is_expired(entry.keep_until(), now) {
                self.remove(key);
            }
            return None;
        }
        Some((entry.value, entry.expires_at - now <= due_within))
    }

    /// An expired value fail-safe still keeps for `key`, and the deadline it is kept until.
    pub fn get_stale(&self, key: ArgsKey) -> Option<(V, u64)> {
        let entry = self.engine.get(key)?;
        let now = self.clock.now_nanos();
        let keep_until = entry.keep_until();
        (entry.expires_at != 0
            && Clock::is_expired(entry.expires_at, now)
            && keep_until != 0
            && !Clock::is_expired(keep_until, now))
        .then_some((entry.value, keep_until))
    }

    /// Keeps a value that is already stale (read from a shared tier past its freshness) for
    /// `kept_for`, for fail-safe to serve if computing it again fails.
    pub fn insert_stale(&self, key: ArgsKey, value: V, kept_for: Duration, tag_bits: u64) {
        let now = self.clock.now_nanos();
        self.put_kept(
            key,
            value,
            now.max(1),
            Clock::deadline(now, Some(kept_for)),
            tag_bits,
        );
    }

    /// Serves a stale value as fresh again for `fresh_for` (fail-safe's throttle: the body
    /// is not tried again meanwhile), still kept no later than `keep_until`.
    pub fn throttle(&self, key: ArgsKey, value: V, fresh_for: Duration, keep_until: u64) {
        let now = self.clock.now_nanos();
        let expires_at = Clock::deadline(now, Some(fresh_for)).min(keep_until).max(1);
        self.put_kept(key, value, expires_at, keep_until, 0);
    }

    /// The live value for `key`. An expired entry is removed and reported as absent.
    #[inline]
    pub fn get(&self, key: ArgsKey, now: u64) -> Option<V> {
        let entry = self.engine.get(key)?;
        if Clock::is_expired(entry.expires_at, now) {
            // A fresher value inserted between the get and this remove would be lost; that is
            // only an extra miss, never a stale read.
            self.remove(key);
            return None;
        }
        Some(entry.value)
    }

    /// Stores `value` for `key` with the store's TTL counted from `now`.
    pub fn insert(&self, key: ArgsKey, value: V, now: u64) {
        self.insert_tagged(key, value, now, 0);
    }

    /// [`L1Store::insert`] for an entry with tags (see [`Entry::tag_bits`]).
    pub fn insert_tagged(&self, key: ArgsKey, value: V, now: u64, tag_bits: u64) {
        self.put(key, value, Clock::deadline(now, self.ttl), tag_bits);
    }

    /// Stores `value` for at most `remaining` (an entry copied from a shared tier keeps that
    /// tier's expiry if it comes sooner than the store's TTL).
    pub fn insert_within(
        &self,
        key: ArgsKey,
        value: V,
        now: u64,
        remaining: Option<Duration>,
        tag_bits: u64,
    ) {
        let own = Clock::deadline(now, self.ttl);
        let theirs = Clock::deadline(now, remaining);
        let expires_at = match (own, theirs) {
            (0, t) | (t, 0) => t,
            (a, b) => a.min(b),
        };
        self.put(key, value, expires_at, tag_bits);
    }

    /// The store's TTL.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Removes the entry for `key`; whether one was present.
    pub fn remove(&self, key: ArgsKey) -> bool {
        match &self.budgeted {
            Some(b) => self
                .engine
                .take(key)
                .map(|e| b.share.release(u64::from(e.size)))
                .is_some(),
            None => self.engine.remove(key),
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.engine.clear();
        if let Some(b) = &self.budgeted {
            b.share.release_all();
        }
    }

    /// Removes the entries `doomed` says, giving their bytes back to the budget; how many.
    fn purge_where(&self, doomed: &dyn Fn(&Entry<V>) -> bool) -> u64 {
        let freed = AtomicU64::new(0);
        let n = dispatch!(&self.engine, e => e.purge(&|entry: &Entry<V>| {
            let gone = doomed(entry);
            if gone {
                freed.fetch_add(u64::from(entry.size), Relaxed);
            }
            gone
        }));
        if let Some(b) = &self.budgeted {
            b.share.release(freed.into_inner());
        }
        n
    }

    /// Removes every expired entry now (they are otherwise removed when read), but those
    /// fail-safe still keeps; how many.
    pub fn purge_expired(&self) -> u64 {
        let now = self.clock.now_nanos();
        self.purge_where(&|entry: &Entry<V>| {
            entry.expires_at != 0
                && Clock::is_expired(entry.expires_at, now)
                && (entry.keep_until() == 0 || Clock::is_expired(entry.keep_until(), now))
        })
    }

    /// Removes every entry carrying a tag whose bit is in `bits`; how many. An engine that
    /// cannot enumerate its entries is cleared instead.
    pub fn purge_tags(&self, bits: u64) -> u64 {
        if let Engine::Custom(_) = self.engine {
            let n = self.engine.len();
            self.clear();
            return n;
        }
        self.purge_where(&|entry: &Entry<V>| entry.tag_bits & bits != 0)
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.engine.len()
    }

    /// Whether an entry for `key` is present (expired or not; not counted as a read).
    pub fn contains(&self, key: ArgsKey) -> bool {
        self.engine.contains(key)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.engine.is_empty()
    }
}

pub use crate::key::PrehashedKey;

use crate::key::PrehashedBuild;

/// An [`ArgsKey`] as the built-in engines store it: two `u64`s are aligned to 8 bytes where a
/// `u128` is aligned to 16, which pads every stored pair (8 bytes per entry for `u64`
/// values, measured in `benches/memory.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedKey([u64; 2]);

impl From<ArgsKey> for PackedKey {
    #[inline]
    fn from(key: ArgsKey) -> Self {
        Self([key.0 as u64, (key.0 >> 64) as u64])
    }
}

impl From<PackedKey> for ArgsKey {
    #[inline]
    fn from(key: PackedKey) -> Self {
        ArgsKey(u128::from(key.0[0]) | (u128::from(key.0[1]) << 64))
    }
}

impl std::hash::Hash for PackedKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same fold as `PrehashedKey::write_u128`: the key is already a uniform hash.
        state.write_u64(self.0[0] ^ self.0[1]);
    }
}

/// A value as the moka engine holds it: one moka cache type for every function, compiled
/// once in this crate rather than once per return type in each user crate (moka was most of
/// what a return type instantiated; docs/architecture.md, "L1 engines").
type AnyValue = Arc<dyn std::any::Any + Send + Sync>;

/// The moka engine (TinyLFU admission, LRU eviction).
///
/// Values are held type-erased ([`AnyValue`]): a hit clones the `Arc` (as moka clones any
/// value it returns), checks the type and clones the value out.
pub struct MokaEngine<V> {
    cache: ErasedMoka,
    _values: std::marker::PhantomData<fn(V) -> V>,
}

impl<V: Clone + Send + Sync + 'static> MokaEngine<V> {
    /// An engine holding at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        Self::with_eviction(capacity, None)
    }

    /// An engine that reports capacity evictions to `on_evict`.
    pub fn with_eviction(capacity: u64, on_evict: Option<EvictionHandler<V>>) -> Self {
        Self::build(capacity, on_evict, false)
    }

    /// An engine whose capacity counts entries' sizes (`by_size`) or entries.
    fn build(capacity: u64, on_evict: Option<EvictionHandler<V>>, by_size: bool) -> Self {
        let on_evict = on_evict.map(|on_evict| -> EvictionHandler<AnyValue> {
            Arc::new(move |key, entry: Entry<AnyValue>| {
                if let Some(entry) = entry.typed() {
                    on_evict(key, entry);
                }
            })
        });
        Self {
            cache: ErasedMoka::build(capacity, on_evict, by_size),
            _values: std::marker::PhantomData,
        }
    }

    /// Applies pending evictions now (moka does it lazily); used by tests and `len`.
    pub fn sync(&self) {
        self.cache.sync();
    }
}

impl<V: Clone + Send + Sync + 'static> L1Engine<V> for MokaEngine<V> {
    #[inline]
    fn get(&self, key: ArgsKey) -> Option<Entry<V>> {
        self.cache.get(key)?.typed()
    }

    fn insert(&self, key: ArgsKey, entry: Entry<V>) {
        self.cache
            .insert(key, entry.map_value(|v| Arc::new(v) as AnyValue));
    }

    fn remove(&self, key: ArgsKey) -> bool {
        self.cache.take(key).is_some()
    }

    fn contains(&self, key: ArgsKey) -> bool {
        self.cache.contains(key)
    }

    fn take(&self, key: ArgsKey) -> Option<Entry<V>> {
        self.cache.take(key)?.typed()
    }

    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<V>) -> bool) {
        self.cache
            .visit(&mut |key, entry| match entry.typed::<V>() {
                Some(entry) => visit(key, &entry),
                None => true,
            });
    }

    fn clear(&self) {
        self.cache.clear();
    }

    fn len(&self) -> u64 {
        self.cache.len()
    }

    fn purge(&self, expired: &dyn Fn(&Entry<V>) -> bool) -> u64 {
        self.cache
            .purge(&|entry| entry.typed::<V>().is_some_and(|entry| expired(&entry)))
    }
}

/// The moka cache behind every [`MokaEngine`], whatever its value type.
struct ErasedMoka {
    cache: moka::sync::Cache<PackedKey, Entry<AnyValue>, PrehashedBuild>,
}

impl ErasedMoka {
    fn build(capacity: u64, on_evict: Option<EvictionHandler<AnyValue>>, by_size: bool) -> Self {
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |_: &PackedKey, e: &Entry<AnyValue>| e.weight(by_size));
        if let Some(on_evict) = on_evict {
            builder =
                builder.eviction_listener(move |key: std::sync::Arc<PackedKey>, entry, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        on_evict((*key).into(), entry);
                    }
                });
        }
        Self {
            cache: builder.build_with_hasher(PrehashedBuild::default()),
        }
    }

    fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    fn get(&self, key: ArgsKey) -> Option<Entry<AnyValue>> {
        self.cache.get(&PackedKey::from(key))
    }

    fn insert(&self, key: ArgsKey, entry: Entry<AnyValue>) {
        self.cache.insert(key.into(), entry);
    }

    fn contains(&self, key: ArgsKey) -> bool {
        self.cache.contains_key(&PackedKey::from(key))
    }

    fn take(&self, key: ArgsKey) -> Option<Entry<AnyValue>> {
        self.cache.remove(&PackedKey::from(key))
    }

    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<AnyValue>) -> bool) {
        for (key, entry) in self.cache.iter() {
            if !visit((*key).into(), &entry) {
                return;
            }
        }
    }

    fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn purge(&self, expired: &dyn Fn(&Entry<AnyValue>) -> bool) -> u64 {
        let keys: Vec<PackedKey> = self
            .cache
            .iter()
            .filter(|(_, e)| expired(e))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter(|k| self.cache.remove(*k).is_some())
            .count() as u64
    }
}

/// Forwards quick_cache evictions to the handler (only hands them on; see `EvictionHandler`).
struct Evictions<V>(Option<EvictionHandler<V>>);

impl<V> Clone for Evictions<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V> quick_cache::Lifecycle<PackedKey, Entry<V>> for Evictions<V> {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), key: PackedKey, entry: Entry<V>) {
        if let Some(on_evict) = &self.0 {
            on_evict(key.into(), entry);
        }
    }
}

/// Weighs each entry by the size measured on insert (`by_size`), or as 1.
#[derive(Clone, Copy)]
struct EntryWeighter {
    by_size: bool,
}

impl<V> quick_cache::Weighter<PackedKey, Entry<V>> for EntryWeighter {
    fn weight(&self, _: &PackedKey, entry: &Entry<V>) -> u64 {
        u64::from(entry.weight(self.by_size))
    }
}

type QuickCache<V> =
    quick_cache::sync::Cache<PackedKey, Entry<V>, EntryWeighter, PrehashedBuild, Evictions<V>>;

/// The quick_cache engine (sharded, S3-FIFO-like eviction).
pub struct QuickEngine<V> {
    cache: QuickCache<V>,
}

impl<V: Clone + Send + Sync + 'static> QuickEngine<V> {
    /// An engine holding at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        Self::with_eviction(capacity, None)
    }

    /// An engine that reports capacity evictions to `on_evict`.
    pub fn with_eviction(capacity: u64, on_evict: Option<EvictionHandler<V>>) -> Self {
        Self::build(capacity, capacity, on_evict, false)
    }

    /// An engine of `capacity` weight (entries' sizes with `by_size`, else entries)
    /// expected to hold about `estimated_items` entries.
    fn build(
        capacity: u64,
        estimated_items: u64,
        on_evict: Option<EvictionHandler<V>>,
        by_size: bool,
    ) -> Self {
        let items = usize::try_from(estimated_items)
            .unwrap_or(usize::MAX)
            .max(1);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity.max(1))
            .build()
            .expect("valid quick_cache options");
        Self {
            cache: quick_cache::sync::Cache::with_options(
                options,
                EntryWeighter { by_size },
                PrehashedBuild::default(),
                Evictions(on_evict),
            ),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> L1Engine<V> for QuickEngine<V> {
    #[inline]
    fn get(&self, key: ArgsKey) -> Option<Entry<V>> {
        self.cache.get(&PackedKey::from(key))
    }

    fn insert(&self, key: ArgsKey, entry: Entry<V>) {
        self.cache.insert(key.into(), entry);
    }

    fn remove(&self, key: ArgsKey) -> bool {
        self.cache.remove(&PackedKey::from(key)).is_some()
    }

    fn contains(&self, key: ArgsKey) -> bool {
        self.cache.contains_key(&PackedKey::from(key))
    }

    fn take(&self, key: ArgsKey) -> Option<Entry<V>> {
        self.cache.remove(&PackedKey::from(key)).map(|(_, e)| e)
    }

    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<V>) -> bool) {
        for (key, entry) in self.cache.iter() {
            if !visit(key.into(), &entry) {
                return;
            }
        }
    }

    fn clear(&self) {
        self.cache.clear();
    }

    fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    fn purge(&self, expired: &dyn Fn(&Entry<V>) -> bool) -> u64 {
        let before = self.cache.len();
        self.cache.retain(|_, e| !expired(e));
        before.saturating_sub(self.cache.len()) as u64
    }
}

impl<V: Clone + Send + Sync + 'static> BudgetMember for L1Store<V> {
    fn bytes(&self) -> u64 {
        self.budgeted
            .as_ref()
            .map_or(0, |b| b.share.bytes.load(Relaxed))
    }

    fn shrink(&self, bytes: u64) -> u64 {
        let Some(b) = &self.budgeted else {
            return 0;
        };
        let before = b.share.bytes.load(Relaxed);
        if before == 0 {
            return 0;
        }
        // In the engine's iteration order (neither exposes its eviction order); what is given
        // up goes through the eviction handler, so it is counted and demoted to L3 like any
        // capacity eviction, and its bytes are given back.
        let mut chosen = Vec::new();
        let mut counted = 0u64;
        dispatch!(&self.engine, e => e.visit(&mut |key, entry: &Entry<V>| {
            if counted >= bytes {
                return false;
            }
            counted += u64::from(entry.size);
            chosen.push(key);
            true
        }));
        for key in chosen {
            if let Some(entry) = self.engine.take(key) {
                match &self.on_evict {
                    Some(handler) => handler(key, entry),
                    None => b.share.release(u64::from(entry.size)),
                }
            }
        }
        before.saturating_sub(b.share.bytes.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_safe_keeps_an_expired_entry_for_its_window_only() {
        let (clock, mock) = Clock::mock();
        let options = L1Options {
            ttl: Some(Duration::from_secs(10)),
            fail_safe: Some(Duration::from_secs(60)),
            ..L1Options::default()
        };
        let store = L1Store::new(options, clock.clone());
        let key = ArgsKey(1);
        store.insert(key, 7u64, clock.now_nanos());
        assert_eq!((store.get_live(key), store.get_stale(key)), (Some(7), None));
        mock.increment(Duration::from_secs(11));
        assert_eq!(store.get_live(key), None, "expired: no longer a hit");
        let (stale, keep_until) = store.get_stale(key).expect("kept for fail-safe");
        assert_eq!(stale, 7);
        assert_eq!(store.purge_expired(), 0, "the sweep keeps it too");
        // Served again as fresh for the throttle, never past the window.
        store.throttle(key, stale, Duration::from_secs(30), keep_until);
        assert_eq!(store.get_live(key), Some(7));
        mock.increment(Duration::from_secs(31));
        assert_eq!(
            (store.get_live(key), store.get_stale(key).map(|s| s.0)),
            (None, Some(7))
        );
        mock.increment(Duration::from_secs(30));
        assert_eq!(store.get_stale(key), None, "past the window");
        assert_eq!(store.purge_expired(), 1);
        // Without fail-safe, an expired entry is gone at once.
        let plain = L1Store::new(
            L1Options {
                fail_safe: None,
                ..options
            },
            clock.clone(),
        );
        plain.insert(key, 7u64, clock.now_nanos());
        mock.increment(Duration::from_secs(11));
        assert_eq!((plain.get_live(key), plain.get_stale(key)), (None, None));
        assert_eq!(plain.len(), 0);
    }

    #[test]
    fn an_entry_keeps_its_fail_safe_deadline_to_the_millisecond() {
        let at = 5_000_000_123;
        let kept = |until| Entry::new((), at).kept_until(until).keep_until();
        assert_eq!(
            kept(at + 60_000_000_000),
            at + 60_000_000_000,
            "whole ms: exact"
        );
        assert_eq!(kept(at + 1), at + 1_000_000, "a part of a ms: rounded up");
        assert_eq!(kept(at), 0, "kept until its deadline: not kept");
        assert_eq!(kept(0), 0);
        assert_eq!(
            Entry::new((), 0).kept_until(at).keep_until(),
            0,
            "never expires"
        );
        let days = |n: u64| n * 86_400_000_000_000;
        assert_eq!(
            kept(at + days(3650)),
            at + days(3650),
            "the longest window: exact"
        );
        assert_eq!(
            kept(at + days(30) + 1),
            at + days(30) + 1_000_000_000,
            "a long window: rounded up to the second"
        );
        assert_eq!(
            kept(u64::MAX),
            at + u64::from(!KEPT_IN_SECONDS) * 1_000_000_000
        );
        // What the engines store per entry besides a `u64` value (benches/memory.rs).
        assert_eq!(std::mem::size_of::<(PackedKey, Entry<u64>)>(), 48);
    }

    #[test]
    fn a_packed_key_round_trips_and_hashes_like_the_key() {
        use std::hash::BuildHasher;
        let build = PrehashedBuild::default();
        for raw in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let key = ArgsKey(raw);
            let packed = PackedKey::from(key);
            assert_eq!(ArgsKey::from(packed), key);
            assert_eq!(build.hash_one(key), build.hash_one(packed));
        }
    }

    fn engines<V: Clone + Send + Sync + 'static>(
        capacity: u64,
        on_evict: Option<EvictionHandler<V>>,
    ) -> Vec<(&'static str, Box<dyn L1Engine<V>>)> {
        vec![
            (
                "moka",
                Box::new(MokaEngine::with_eviction(capacity, on_evict.clone())),
            ),
            (
                "clock",
                Box::new(ClockEngine::with_eviction(capacity, on_evict.clone())),
            ),
            (
                "quick",
                Box::new(QuickEngine::with_eviction(capacity, on_evict)),
            ),
        ]
    }

    #[test]
    fn every_engine_bounds_capacity_and_reports_evictions() {
        for kind in ["moka", "clock", "quick"] {
            let evicted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = evicted.clone();
            let handler: EvictionHandler<u64> = std::sync::Arc::new(move |_, _| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            let (_, engine) = engines(100, Some(handler))
                .into_iter()
                .find(|(k, _)| *k == kind)
                .unwrap();
            for i in 0..1_000u64 {
                engine.insert(ArgsKey(i as u128 * 0x9E37_79B9_7F4A_7C15), Entry::new(i, 0));
            }
            let len = engine.len();
            assert!(len <= 110, "{kind}: len {len}");
            assert!(
                evicted.load(std::sync::atomic::Ordering::SeqCst) as u64 >= 1_000 - 110,
                "{kind}"
            );
            engine.clear();
            assert_eq!(engine.len(), 0, "{kind}");
        }
    }

    fn store(capacity: u64, ttl: Option<Duration>) -> (L1Store<String>, crate::time::MockClock) {
        let (clock, mock) = Clock::mock();
        let options = L1Options {
            capacity,
            ttl,
            engine: EngineKind::Moka,
            fail_safe: None,
        };
        (L1Store::new(options, clock), mock)
    }

    #[test]
    fn every_built_in_engine_expires_and_purges_through_the_store() {
        for engine in [EngineKind::Quick, EngineKind::Moka, EngineKind::Clock] {
            let (clock, mock) = Clock::mock();
            let options = L1Options {
                capacity: 10,
                ttl: Some(Duration::from_secs(30)),
                engine,
                fail_safe: None,
            };
            let s = L1Store::<String>::new(options, clock);
            let now = s.clock().now_nanos();
            s.insert(ArgsKey(1), "one".into(), now);
            s.insert(ArgsKey(2), "two".into(), now);
            assert_eq!(s.get(ArgsKey(1), now).as_deref(), Some("one"), "{engine:?}");
            mock.increment(Duration::from_secs(31));
            assert_eq!(s.purge_expired(), 2, "{engine:?}");
            assert!(s.is_empty(), "{engine:?}");
        }
    }

    #[test]
    fn get_returns_what_was_inserted() {
        let (s, _) = store(10, None);
        s.insert(ArgsKey(1), "one".into(), 0);
        assert_eq!(s.get(ArgsKey(1), 0).as_deref(), Some("one"));
        assert_eq!(s.get(ArgsKey(2), 0), None);
    }

    #[test]
    fn entries_expire_on_the_mock_clock() {
        let (s, mock) = store(10, Some(Duration::from_secs(30)));
        let now = s.clock().now_nanos();
        s.insert(ArgsKey(1), "one".into(), now);
        mock.increment(Duration::from_secs(29));
        assert!(s.get(ArgsKey(1), s.clock().now_nanos()).is_some());
        mock.increment(Duration::from_secs(1));
        assert!(s.get(ArgsKey(1), s.clock().now_nanos()).is_none());
        // The expired entry was removed, not just hidden.
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn without_ttl_entries_never_expire() {
        let (s, mock) = store(10, None);
        s.insert(ArgsKey(1), "one".into(), 0);
        mock.increment(Duration::from_secs(1_000_000));
        assert!(s.get(ArgsKey(1), s.clock().now_nanos()).is_some());
    }

    #[test]
    fn capacity_is_enforced() {
        let engine = MokaEngine::<u64>::new(100);
        for i in 0..1_000u64 {
            engine.insert(ArgsKey(i as u128 * 0x9E37_79B9_7F4A_7C15), Entry::new(i, 0));
        }
        engine.sync();
        assert!(engine.len() <= 100, "len {}", engine.len());
    }

    #[test]
    fn capacity_evictions_reach_the_handler_and_removals_do_not() {
        let evicted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = evicted.clone();
        let engine = MokaEngine::<u64>::with_eviction(
            10,
            Some(std::sync::Arc::new(move |k: ArgsKey, e: Entry<u64>| {
                sink.lock().unwrap().push((k, e.value))
            })),
        );
        engine.insert(ArgsKey(u128::MAX), Entry::new(1, 0));
        engine.remove(ArgsKey(u128::MAX));
        for i in 0..200u64 {
            engine.insert(ArgsKey(i as u128 * 0x9E37_79B9_7F4A_7C15), Entry::new(i, 0));
        }
        engine.sync();
        let evicted = evicted.lock().unwrap();
        assert!(evicted.len() >= 190 - 10, "evicted {}", evicted.len());
        assert!(
            evicted.iter().all(|(k, _)| *k != ArgsKey(u128::MAX)),
            "explicit removal is not an eviction"
        );
    }

    #[test]
    fn insert_within_keeps_the_sooner_deadline() {
        let (s, mock) = store(10, Some(Duration::from_secs(60)));
        s.insert_within(ArgsKey(1), "a".into(), 0, Some(Duration::from_secs(5)), 0);
        s.insert_within(ArgsKey(2), "b".into(), 0, Some(Duration::from_secs(500)), 0);
        mock.increment(Duration::from_secs(6));
        let now = s.clock().now_nanos();
        assert!(s.get(ArgsKey(1), now).is_none());
        assert!(s.get(ArgsKey(2), now).is_some());
        mock.increment(Duration::from_secs(60));
        assert!(s.get(ArgsKey(2), s.clock().now_nanos()).is_none());
    }

    #[test]
    fn remove_and_clear() {
        let (s, _) = store(10, None);
        s.insert(ArgsKey(1), "a".into(), 0);
        s.insert(ArgsKey(2), "b".into(), 0);
        assert!(s.remove(ArgsKey(1)));
        assert!(!s.remove(ArgsKey(1)));
        assert_eq!(s.get(ArgsKey(2), 0).as_deref(), Some("b"));
        s.clear();
        assert!(s.is_empty());
    }
}
