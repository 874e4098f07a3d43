//! One function's typed cache: its L1 store, its in-progress computations and its view of
//! the shared tiers. The cross-tier lookup, promotion, storing and demotion happen here;
//! the call engine only decides when to ask.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::budget::{BudgetMember, L1Budget};
use crate::cache::l1::{tag_bit, EngineKind, EvictionHandler, L1Options, L1Store};
use crate::cache::lease::HeldLease;
use crate::cache::shared::{Found, L3Probe, SharedOptions, SharedStore, ValueCodec};
use crate::cache::tiered::Tiers;
use crate::cache::Tier;
use crate::codec::EnvelopeOptions;
use crate::flight::Flights;
use crate::key::{ArgsKey, KeyLayout};
use crate::meta::TierSet;
use crate::policy::CacheValue;
use crate::stats::Outcome;
use crate::time::{unix_ms, Clock};

/// What a function's store is built from: its resolved settings, nothing read later.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Which tiers the function may use.
    pub tiers: TierSet,
    /// L1 capacity (entries, or bytes when `weigh_by_size`).
    pub capacity: u64,
    /// L1 expiry.
    pub ttl: Option<Duration>,
    /// Expiry in L2.
    pub l2_ttl: Option<Duration>,
    /// Expiry in L3.
    pub l3_ttl: Option<Duration>,
    /// The L1 engine.
    pub engine: EngineKind,
    /// Weigh L1 values by their encoded size (memory functions), so capacity counts bytes.
    pub weigh_by_size: bool,
    /// Write L1 capacity evictions to L3.
    pub demote: bool,
    /// The function's own compression threshold, over the tiers' default.
    pub compress_above: Option<u32>,
    /// Schema hash checked on every read.
    pub schema: u64,
    /// Take a lease on an L2 miss (one computation per key across instances).
    pub lease: bool,
    /// Fail-safe: how long an expired entry is kept to be served when computing it again
    /// fails, and for how long such a stale value is then served before trying again.
    pub fail_safe: Option<FailSafe>,
    /// Refresh-ahead: a hit in the last `1 - ratio` of its ttl starts a background refresh.
    pub refresh_ahead: Option<f64>,
    /// Background runs of the body (refreshes, soft timeouts) at once, at most.
    pub background_limit: usize,
}

/// Fail-safe settings (docs/resilience.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailSafe {
    /// How long past its expiry an entry is kept.
    pub window: Duration,
    /// How long a stale value, once served for a failure, is served before the body is
    /// tried again.
    pub throttle: Duration,
}

impl FailSafe {
    /// The throttle when none is set.
    pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(30);
}

/// The keys whose body runs in the background (a refresh, or a call a soft timeout left
/// running): at most one per key, and at most `limit` at once.
#[derive(Debug)]
struct BackgroundRuns {
    running: std::sync::Mutex<std::collections::HashSet<ArgsKey>>,
    limit: usize,
}

impl BackgroundRuns {
    fn running(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<ArgsKey>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a background run could start.
pub enum Background<V: 'static> {
    /// Started: the run, which ends when dropped.
    Started(BackgroundRun<V>),
    /// The key's body runs in the background already.
    Running,
    /// The function has as many background runs as it may.
    Full,
}

/// A key's background run; dropping it ends the run.
pub struct BackgroundRun<V: 'static> {
    store: &'static FnStore<V>,
    key: ArgsKey,
}

impl<V> Drop for BackgroundRun<V> {
    fn drop(&mut self) {
        self.store.background.running().remove(&self.key);
    }
}

/// A value past its expiry that fail-safe still keeps.
#[derive(Clone, Debug)]
pub struct Stale<V> {
    /// The value.
    pub value: V,
    /// The [`Clock`] deadline it is kept until.
    keep_until: u64,
}

/// What a store shares with the rest of the runtime.
#[derive(Clone, Debug)]
pub struct StoreEnv<'a> {
    /// The shared tiers.
    pub tiers: &'a Arc<Tiers>,
    /// The clock of expiry.
    pub clock: Clock,
    /// The process-wide L1 byte budget, when configured.
    pub budget: Option<&'a Arc<L1Budget>>,
}

/// Called for every L1 capacity eviction (the function counts them).
pub type EvictionCounter = Arc<dyn Fn() + Send + Sync>;

/// What a miss remembers until its value is stored: the shared-tier key built for the lookup,
/// the store's invalidation count when the lookup started, the generation digest to stamp
/// the value with, and the call's tags.
#[derive(Debug, Default)]
pub struct Miss {
    full_key: Option<String>,
    /// `None`: not known (a call that did not look up first); the value is stored anyway.
    invalidations: Option<u64>,
    /// `None`: not known; the shared tiers get the value only if this process knows the
    /// current generations.
    generation: Option<u64>,
    tag_bits: u64,
    /// The key's lease, when this process took it: released by the value's write, or when
    /// the miss is dropped without one.
    lease: Option<HeldLease>,
}

impl Miss {
    /// A miss that did not look up first, for a call with these tags (their hashes).
    pub fn without_lookup(tags: &[u64]) -> Self {
        Self {
            tag_bits: bits_of(tags),
            ..Self::default()
        }
    }
}

/// The [`tag_bit`]s of `tags`.
fn bits_of(tags: &[u64]) -> u64 {
    tags.iter().fold(0, |bits, t| bits | tag_bit(*t))
}

/// One function's cache for values of type `V`.
pub struct FnStore<V> {
    l1: Option<L1Store<V>>,
    /// Invalidations of this store so far (here or, through the backplane, elsewhere): a
    /// value computed across one is not stored, since it may come from before it.
    invalidations: AtomicU64,
    /// Whether an entry with tags was ever stored in L1 (a tag's invalidation scans only then).
    tagged: AtomicBool,
    flights: Flights<V>,
    shared: Option<Arc<SharedStore<V>>>,
    keys: Arc<KeyLayout>,
    clock: Clock,
    fail_safe: Option<FailSafe>,
    /// Refresh-ahead: a hit expiring within this many nanoseconds is refreshed (0: off).
    refresh_within: u64,
    background: BackgroundRuns,
}

/// A found value and the outcome it counts as.
pub type Served<V> = (V, Outcome);

impl<V: CacheValue> FnStore<V> {
    /// Builds the store: L1 when wanted, shared tiers when wanted, configured and `codec`
    /// exists (the value type is serializable).
    pub fn new(
        path: &str,
        options: &StoreOptions,
        codec: Option<ValueCodec<V>>,
        keys: Arc<KeyLayout>,
        env: StoreEnv<'_>,
        on_evict: EvictionCounter,
    ) -> Self {
        let StoreEnv {
            tiers,
            clock,
            budget,
        } = env;
        let wanted = options.tiers;
        let shared = codec
            .filter(|_| wanted.l2 || wanted.l3)
            .and_then(|codec| {
                let mut envelope: EnvelopeOptions = tiers.config().envelope;
                if let Some(threshold) = options.compress_above {
                    envelope.compress_threshold = threshold as usize;
                }
                let shared = SharedOptions {
                    l2: wanted.l2,
                    l3: wanted.l3,
                    l2_ttl: options.l2_ttl,
                    l3_ttl: options.l3_ttl,
                    envelope,
                    lease: options.lease,
                    fail_safe: options.fail_safe.map(|f| f.window),
                };
                SharedStore::new(tiers.clone(), codec, shared, options.schema, path)
            })
            .map(Arc::new);
        let l1 = wanted.l1.then(|| {
            let l1_options = L1Options {
                capacity: options.capacity,
                ttl: options.ttl,
                engine: options.engine,
                fail_safe: options.fail_safe.map(|f| f.window),
            };
            let handler = eviction_handler(
                on_evict,
                shared.clone().filter(|_| options.demote),
                keys.clone(),
                clock.clone(),
            );
            let size = codec.map_or(stack_size::<V> as fn(&V) -> u64, |c| c.size_fn());
            match budget {
                Some(budget) => L1Store::budgeted(
                    l1_options,
                    clock.clone(),
                    Some(handler),
                    size,
                    options.weigh_by_size,
                    budget.clone(),
                ),
                None if options.weigh_by_size => {
                    L1Store::weighed(l1_options, clock.clone(), Some(handler), size)
                }
                None => L1Store::with_eviction(l1_options, clock.clone(), handler),
            }
        });
        Self {
            l1,
            invalidations: AtomicU64::new(0),
            tagged: AtomicBool::new(false),
            flights: Flights::new(),
            shared,
            keys,
            clock,
            fail_safe: options.fail_safe,
            refresh_within: match (options.refresh_ahead, options.ttl) {
                (Some(ratio), Some(ttl)) => {
                    let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
                    (ttl as f64 * (1.0 - ratio.clamp(0.0, 1.0))) as u64
                }
                _ => 0,
            },
            background: BackgroundRuns {
                running: std::sync::Mutex::default(),
                limit: options.background_limit.max(1),
            },
        }
    }

    /// The L1 store as the process-wide byte budget sees it.
    pub fn budget_member(&'static self) -> Option<&'static dyn BudgetMember> {
        self.l1.as_ref().map(|l1| l1 as &'static dyn BudgetMember)
    }

    /// The in-progress computations.
    #[inline]
    pub fn flights(&self) -> &Flights<V> {
        &self.flights
    }

    /// Whether a miss asks a shared tier (and so may wait for Redis or the disk).
    pub fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// A live L1 entry.
    #[inline]
    pub fn l1_hit(&self, key: ArgsKey) -> Option<V> {
        self.l1.as_ref()?.get_live(key)
    }

    /// Warm restart: copies the function's newest L3 entries (at most `n`) into L1, in the
    /// background, once the backplane has caught up (so nothing invalidated meanwhile comes
    /// back). Called once, when the store is created.
    pub fn warm_from_l3(&'static self, n: usize) {
        let (Some(shared), Some(_)) = (&self.shared, &self.l1) else {
            return;
        };
        if n == 0 {
            return;
        }
        let (shared, prefix) = (shared.clone(), self.keys.prefix().to_owned());
        shared.tiers().clone().spawn(async move {
            let mut warmed = 0;
            for (key, found) in shared.newest_in_l3(prefix.clone(), n).await {
                if let Some(args) = self.keys.args_of(&key) {
                    // A value a call stored meanwhile is newer: kept.
                    if self.l1_hit(args).is_none() {
                        self.accept(args, found, 0);
                        warmed += 1;
                    }
                }
            }
            tracing::debug!(prefix, warmed, "L1 prefilled from L3");
        });
    }

    /// A live L1 entry, and whether refresh-ahead wants it refreshed (it is in the last part
    /// of its ttl).
    #[inline]
    pub fn l1_hit_due(&self, key: ArgsKey) -> Option<(V, bool)> {
        let l1 = self.l1.as_ref()?;
        if self.refresh_within == 0 {
            return l1.get_live(key).map(|v| (v, false));
        }
        l1.get_live_due(key, self.refresh_within)
    }

    /// Starts a background run of `key`'s body, unless one runs already or the function's
    /// limit of them do.
    pub fn start_background(&'static self, key: ArgsKey) -> Background<V> {
        let mut running = self.background.running();
        if running.contains(&key) {
            return Background::Running;
        }
        if running.len() >= self.background.limit {
            return Background::Full;
        }
        running.insert(key);
        Background::Started(BackgroundRun { store: self, key })
    }

    /// Whether `key`'s body runs in the background now.
    pub fn in_background(&self, key: ArgsKey) -> bool {
        self.background.running().contains(&key)
    }

    /// What storing a background refresh's value needs (as a lookup would have returned),
    /// with the key's lease when L2 runs leases; `None` when another instance holds the
    /// lease, i.e. refreshes the key already.
    pub async fn refresh_miss(&self, key: ArgsKey, tags: &[u64]) -> Option<Miss> {
        let mut miss = Miss {
            full_key: None,
            invalidations: Some(self.invalidations.load(Acquire)),
            generation: None,
            tag_bits: bits_of(tags),
            lease: None,
        };
        if let Some(shared) = &self.shared {
            let full = self.keys.key(key);
            miss.lease = shared.refresh_lease(&full).await.ok()?;
            miss.generation = Some(shared.known_generation(tags).await);
            miss.full_key = Some(full);
        }
        Some(miss)
    }

    /// With fail-safe on, the expired value still kept for `key` (in L1, where a shared
    /// tier's stale entry is put by the lookup that found it).
    pub fn stale(&self, key: ArgsKey) -> Option<Stale<V>> {
        self.fail_safe?;
        let (value, keep_until) = self.l1.as_ref()?.get_stale(key)?;
        Some(Stale { value, keep_until })
    }

    /// A stale value was served for a failure: it is served as fresh for the throttle, so
    /// the body is not tried again on every call meanwhile.
    pub fn throttle(&self, key: ArgsKey, stale: &Stale<V>) {
        if let (Some(l1), Some(fail_safe)) = (&self.l1, self.fail_safe) {
            l1.throttle(
                key,
                stale.value.clone(),
                fail_safe.throttle,
                stale.keep_until,
            );
        }
    }

    /// An L3 hit served before the key's flight is joined, for a function whose only shared
    /// tier is L3 (see [`SharedStore::probe_l3_alone`]); filled into L1 like any L3 hit.
    /// [`L3Probe::Missed`] tells [`FnStore::lookup`] not to read L3 again.
    pub fn probe_l3(&self, key: ArgsKey, tags: &[u64]) -> L3Probe<Served<V>> {
        let Some(shared) = self.shared.as_ref().filter(|s| s.reads_l3_alone()) else {
            return L3Probe::Skipped;
        };
        match self
            .keys
            .with_key(key, |full| shared.probe_l3_alone(full, tags))
        {
            L3Probe::Hit(found) => L3Probe::Hit(self.accept(key, found, bits_of(tags))),
            L3Probe::Missed => L3Probe::Missed,
            L3Probe::Skipped => L3Probe::Skipped,
        }
    }

    /// What a new leader finds before running the body: a value in L1 (put there by a leader
    /// that finished just before this one joined) or in a shared tier (checked against the
    /// current generations of the function and of `tags`, the call's tag hashes), promoted to
    /// the other shared tier and to L1. Also returns what storing a computed value needs.
    /// With `l3_missed` (a [probe](FnStore::probe_l3) just found nothing there), L3 is not
    /// read again.
    pub async fn lookup(
        &self,
        key: ArgsKey,
        tags: &[u64],
        l3_missed: bool,
    ) -> (Option<Served<V>>, Miss) {
        let mut miss = Miss {
            full_key: None,
            invalidations: Some(self.invalidations.load(Acquire)),
            generation: None,
            tag_bits: bits_of(tags),
            lease: None,
        };
        if let Some(v) = self.l1_hit(key) {
            return (Some((v, Outcome::HitL1)), miss);
        }
        let Some(shared) = &self.shared else {
            return (None, miss);
        };
        let full = self.keys.key(key);
        // Boxed: the shared-tier lookup's state is large, and a caller's future (and, in
        // debug builds, each poll's stack frame) would otherwise carry it on every call path,
        // which deep recursion through managed async functions cannot afford.
        let lookup = Box::pin(shared.lookup_after(&full, tags, l3_missed)).await;
        if let Some(stale) = lookup.stale {
            self.keep_stale(key, stale, miss.tag_bits);
        }
        let served = lookup.found.map(|f| self.accept(key, f, miss.tag_bits));
        miss.full_key = Some(full);
        miss.generation = Some(lookup.generation);
        miss.lease = lookup.lease;
        (served, miss)
    }

    /// Keeps a shared tier's stale value in L1 until its expiry, for fail-safe to serve if
    /// computing the value again fails (unless L1 has a value of its own already).
    fn keep_stale(&self, key: ArgsKey, stale: Found<V>, tag_bits: u64) {
        let (Some(l1), Some(_)) = (&self.l1, self.fail_safe) else {
            return;
        };
        if l1.get_stale(key).is_some() {
            return;
        }
        let left = stale.expires_at_ms().saturating_sub(unix_ms());
        if left == 0 {
            return;
        }
        self.note_tags(tag_bits);
        l1.insert_stale(key, stale.value, Duration::from_millis(left), tag_bits);
    }

    /// Fills L1 from a shared-tier hit (the shared store promoted it to the other tier).
    fn accept(&self, key: ArgsKey, found: Found<V>, tag_bits: u64) -> Served<V> {
        if let Some(l1) = &self.l1 {
            // L1 keeps it fresh as long as the shared tier would (and, with fail-safe, keeps
            // it stale for its own window after that).
            let fresh_until = found.fresh_until_ms();
            let remaining = (fresh_until != 0)
                .then(|| Duration::from_millis(fresh_until.saturating_sub(found.read_at_ms)));
            self.note_tags(tag_bits);
            l1.insert_within(
                key,
                found.value.clone(),
                self.clock.now_nanos(),
                remaining,
                tag_bits,
            );
        }
        let outcome = match found.tier {
            Tier::L3 => Outcome::HitL3,
            _ => Outcome::HitL2,
        };
        (found.value, outcome)
    }

    fn note_tags(&self, tag_bits: u64) {
        if tag_bits != 0 && !self.tagged.load(Relaxed) {
            self.tagged.store(true, Relaxed);
        }
    }

    /// Stores a computed value: queued for the shared tiers, then in L1 (before the flight
    /// completes, so callers arriving after it hit L1). `miss` is what [`FnStore::lookup`]
    /// returned, or [`Miss::without_lookup`]. Nothing is stored when the function was
    /// invalidated since the lookup: the value may have been computed from what the
    /// invalidation retired.
    pub fn store(&self, key: ArgsKey, mut miss: Miss, value: &V) {
        if miss
            .invalidations
            .is_some_and(|seen| seen != self.invalidations.load(Acquire))
        {
            return;
        }
        if let Some(shared) = &self.shared {
            // Without a lookup, only untagged values of a function whose generation is known
            // here can be stamped; the others stay in L1.
            let generation = miss.generation.or_else(|| {
                (miss.tag_bits == 0)
                    .then(|| shared.locally_known_generation(&[]))
                    .flatten()
            });
            if let Some(generation) = generation {
                let full_key = miss.full_key.take().unwrap_or_else(|| self.keys.key(key));
                shared.store(full_key, value, generation, miss.lease.take());
            }
        }
        if let Some(l1) = &self.l1 {
            self.note_tags(miss.tag_bits);
            l1.insert_tagged(key, value.clone(), self.clock.now_nanos(), miss.tag_bits);
        }
    }
}

/// Counts L1 capacity evictions and, with shared tiers and demotion on, writes the entries to
/// L3 (through the write-behind queue; never from inside the engine's callback itself).
fn eviction_handler<V: Send + 'static>(
    count: EvictionCounter,
    demote_to: Option<Arc<SharedStore<V>>>,
    keys: Arc<KeyLayout>,
    clock: Clock,
) -> EvictionHandler<V> {
    Arc::new(move |key, entry| {
        count();
        let Some(shared) = &demote_to else {
            return;
        };
        // A demoted entry is stamped with the generation known now; a tagged one's tags are
        // not kept in L1 (only their bits), so it is not demoted.
        let generation = match entry.tag_bits {
            0 => shared.locally_known_generation(&[]),
            _ => None,
        };
        let Some(generation) = generation else {
            return;
        };
        let expires_at_ms = match entry.expires_at {
            0 => 0,
            deadline => {
                let left = deadline.saturating_sub(clock.now_nanos()) / 1_000_000;
                unix_ms().saturating_add(left)
            }
        };
        shared.demote(keys.key(key), entry.value, expires_at_ms, generation);
    })
}

fn stack_size<V>(_: &V) -> u64 {
    std::mem::size_of::<V>() as u64
}

/// What a function's handle needs from its store without knowing the value type.
pub trait AnyStore: Send + Sync {
    /// Removes one L1 entry; whether it was there.
    fn remove(&self, key: ArgsKey) -> bool;
    /// Empties L1.
    fn clear(&self);
    /// L1 entries.
    fn len(&self) -> u64;
    /// Whether L1 holds an entry for `key` (expired or not; not counted as a read).
    fn contains(&self, key: ArgsKey) -> bool;
    /// Whether L1 is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes expired L1 entries; how many.
    fn purge_expired(&self) -> u64;
    /// Removes the L1 entries that may carry a tag (by its hash); how many.
    fn purge_tag(&self, tag: u64) -> u64;
}

impl<V: CacheValue> AnyStore for FnStore<V> {
    fn remove(&self, key: ArgsKey) -> bool {
        self.invalidations.fetch_add(1, AcqRel);
        self.l1.as_ref().is_some_and(|l1| l1.remove(key))
    }
    fn clear(&self) {
        self.invalidations.fetch_add(1, AcqRel);
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }
    fn len(&self) -> u64 {
        self.l1.as_ref().map_or(0, L1Store::len)
    }
    fn contains(&self, key: ArgsKey) -> bool {
        self.l1.as_ref().is_some_and(|l1| l1.contains(key))
    }
    fn purge_expired(&self) -> u64 {
        self.l1.as_ref().map_or(0, L1Store::purge_expired)
    }
    fn purge_tag(&self, tag: u64) -> u64 {
        if !self.tagged.load(Relaxed) {
            return 0;
        }
        self.invalidations.fetch_add(1, AcqRel);
        self.l1.as_ref().map_or(0, |l1| l1.purge_tags(tag_bit(tag)))
    }
}
