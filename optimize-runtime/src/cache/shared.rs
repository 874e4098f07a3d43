//! One function's view of the shared tiers: typed lookups with promotion, writes through the
//! write-behind queue, and demotion of L1 evictions.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::cache::generations::{digest, digest_of, Generations, EVERYTHING};
use crate::cache::l2_redis::L2Result;
use crate::cache::lease::{HeldLease, Lease, LeaseState};
use crate::cache::tiered::{TierFuture, Tiers};
use crate::cache::writeback::{Bytes, WriteOp};
use crate::cache::Tier;
use crate::codec::{self, EncodeError, EnvelopeOptions, Expiry, Header, Reject};
use crate::time::unix_ms;

/// (value, schema, key hash, generation, created, expiry, options)
type Encode<V> =
    fn(&V, u64, u64, u64, u64, Expiry, &EnvelopeOptions) -> Result<Vec<u8>, EncodeError>;
/// (bytes, schema, key hash, generation, now, options)
type Decode<V> = fn(&[u8], u64, u64, u64, u64, &EnvelopeOptions) -> Result<(V, Header), Reject>;

/// How values of one type become envelope bytes and back. Exists only for types that are
/// `Serialize + DeserializeOwned`; other types stay in L1.
pub struct ValueCodec<V> {
    encode: Encode<V>,
    decode: Decode<V>,
    size: fn(&V) -> u64,
}

impl<V> Clone for ValueCodec<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for ValueCodec<V> {}

impl<V: Serialize + DeserializeOwned> ValueCodec<V> {
    /// The serde (bincode) codec.
    pub fn serde() -> Self {
        Self {
            encode: codec::encode_entry,
            decode: codec::decode_with_header,
            size: |v| bincode::serialized_size(v).unwrap_or(0),
        }
    }
}

impl<V> ValueCodec<V> {
    /// A value's encoded size in bytes (before compression): what it weighs in a memory-kind
    /// function's L1.
    pub fn size_of(&self, value: &V) -> u64 {
        (self.size)(value)
    }

    pub(crate) fn size_fn(&self) -> fn(&V) -> u64 {
        self.size
    }
}

/// Which shared tiers a function uses and with which expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedOptions {
    /// Use L2 (if the tiers have it).
    pub l2: bool,
    /// Use L3 (if the tiers have it).
    pub l3: bool,
    /// Expiry in L2.
    pub l2_ttl: Option<Duration>,
    /// Expiry in L3.
    pub l3_ttl: Option<Duration>,
    /// Envelope settings (compression threshold).
    pub envelope: EnvelopeOptions,
    /// Take a lease on an L2 miss (when the tiers run leases).
    pub lease: bool,
    /// Fail-safe window: entries are kept this long past their expiry, stale.
    pub fail_safe: Option<Duration>,
}

/// A value found in a shared tier.
pub struct Found<V> {
    /// The value.
    pub value: V,
    /// Where it was found.
    pub tier: Tier,
    /// When it stops being fresh and when it is dead.
    pub expiry: Expiry,
    /// When it was read (unix ms): its expiry was checked at this moment, and its freshness
    /// is judged at it too (one clock read per hit).
    pub read_at_ms: u64,
}

impl<V> Found<V> {
    /// Its expiry in unix milliseconds (0 = none).
    pub fn expires_at_ms(&self) -> u64 {
        self.expiry.expires_at_ms
    }

    /// When it stops being fresh, in unix milliseconds (0 = never).
    pub fn fresh_until_ms(&self) -> u64 {
        match self.expiry.fresh_until_ms {
            0 => self.expiry.expires_at_ms,
            fresh => fresh,
        }
    }

    /// Whether it is past its freshness (kept for fail-safe only).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        self.expiry.fresh_until_ms != 0 && now_ms >= self.expiry.fresh_until_ms
    }

    /// Whether it was past its freshness when it was read.
    pub fn was_stale(&self) -> bool {
        self.is_stale(self.read_at_ms)
    }
}

/// What [`SharedStore::probe_l3_alone`] found.
#[derive(Debug)]
pub enum L3Probe<T> {
    /// Not read, or read but needing the full lookup.
    Skipped,
    /// L3 has no entry for the key: the full lookup need not read it again.
    Missed,
    /// A fresh, valid entry.
    Hit(T),
}

/// What a shared-tier lookup returns.
pub struct Lookup<V> {
    /// The fresh value found.
    pub found: Option<Found<V>>,
    /// The generation digest a value computed now must be stamped with.
    pub generation: u64,
    /// The key's lease, when this process took it.
    pub lease: Option<HeldLease>,
    /// A value past its freshness that fail-safe keeps, found instead of a fresh one.
    pub stale: Option<Found<V>>,
}

/// One function's shared tiers: what does not depend on the value's type ([`SharedCore`],
/// reached through `Deref`) and the codec of its values.
pub struct SharedStore<V> {
    core: SharedCore,
    codec: ValueCodec<V>,
}

/// The half of a [`SharedStore`] that does not depend on the value's type: the generations,
/// the queueing of writes, the read choice. Compiled once in the runtime instead of once per
/// return type in every user crate (docs/architecture.md, "Compile time").
pub struct SharedCore {
    tiers: Arc<Tiers>,
    options: SharedOptions,
    schema: u64,
    /// The function's generation's Redis key.
    generation_key: String,
    /// The function's generation as this process knows it (one atomic load per read).
    generation_cell: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a value that could not be written was reported at `warn` already.
    warned: std::sync::atomic::AtomicBool,
    /// How the function's L2 reads went lately, to choose how to read next (see
    /// [`ReadPredictor`]).
    l2_reads: ReadPredictor,
}

impl<V> std::ops::Deref for SharedStore<V> {
    type Target = SharedCore;

    fn deref(&self) -> &SharedCore {
        &self.core
    }
}

/// Chooses, per function, between two ways of reading L2 when leases are on, each best for
/// one outcome: a plain pipeline (`GETRANGE` and the generations) costs a hit nothing extra
/// but a miss a second round trip to take the lease; the `LOOKUP` script takes the lease in
/// the same round trip but costs every hit a Lua call. Measured in `benches/tiers.rs`
/// (issue 20): the script made a hit 1.26x a raw `GET` against 1.0x for the pipeline, and the
/// pipeline made a miss 1.9x the hand-written `GET`, body, `SET` against 1.1x for the script.
/// A 4-bit saturating count of recent reads, up on a hit and down on a miss, like a branch
/// predictor: mostly hits, the pipeline; mostly misses (and at first), the script. Either
/// way is correct; a wrong guess costs one script call or one round trip.
#[derive(Default)]
struct ReadPredictor(std::sync::atomic::AtomicU8);

impl ReadPredictor {
    const MAX: u8 = 15;
    /// From this count up, reads expect a hit.
    const HITS_FROM: u8 = 8;

    fn expects_hit(&self) -> bool {
        self.0.load(Relaxed) >= Self::HITS_FROM
    }

    fn record(&self, hit: bool) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |n| match hit {
            true => (n < Self::MAX).then_some(n + 1),
            false => n.checked_sub(1),
        });
    }
}

impl SharedCore {
    /// The tiers this store writes to.
    pub fn tiers(&self) -> &Arc<Tiers> {
        &self.tiers
    }

    fn order(&self) -> [Tier; 2] {
        self.tiers.config().order
    }

    /// Whether L3 is the function's only shared tier.
    #[inline]
    pub fn reads_l3_alone(&self) -> bool {
        self.options.l3 && !self.options.l2
    }

    /// The Redis keys of the function's generation and of each tag's.
    fn generation_keys(&self, tags: &[u64]) -> Vec<String> {
        [
            self.generation_key.clone(),
            self.tiers.everything_generation_key(),
        ]
        .into_iter()
        .chain(tags.iter().map(|t| self.tiers.tag_generation_key(*t)))
        .collect()
    }

    /// Records generations read from Redis (the function's, the namespace's, then one per
    /// tag, as [`SharedCore::generation_keys`] lists them); their digest.
    fn learn(&self, tags: &[u64], gens: &[u64]) -> u64 {
        let generations = self.tiers.generations();
        let at = |i: usize| gens.get(i).copied().unwrap_or_default();
        let (function, everything) = (at(0), at(1));
        Generations::learn_in(&self.generation_cell, function);
        generations.learn_everything(everything);
        let stamped: Vec<(u64, u64)> = std::iter::once((EVERYTHING, everything))
            .chain(tags.iter().enumerate().map(|(i, t)| {
                let g = at(i + 2);
                generations.learn_tag(*t, g);
                (*t, g)
            }))
            .collect();
        digest(function, &stamped)
    }

    /// Before a background refresh: the key's lease, so that one instance refreshes a key at a
    /// time. `Err(())` when another instance holds it (it is refreshing); `Ok(None)` when
    /// there are no leases (off, or Redis away): refresh without one.
    pub fn refresh_lease<'a>(
        &'a self,
        key: &'a str,
    ) -> TierFuture<'a, Result<Option<HeldLease>, ()>> {
        Box::pin(async move {
            if !(self.options.l2 && self.options.lease && self.tiers.leases_on()) {
                return Ok(None);
            }
            let lease = Lease::new(key);
            match self.tiers.l2_acquire(key, lease.token).await {
                L2Result::Done(LeaseState::Acquired) => {
                    Ok(Some(HeldLease::new(lease, self.tiers.clone())))
                }
                L2Result::Done(LeaseState::Held(_)) => Err(()),
                _ => Ok(None),
            }
        })
    }

    /// The digest of the generations this process knows, asking Redis for those it does not
    /// (when L2 is used and answers; else they count as 0).
    pub fn known_generation<'a>(
        &'a self,
        tags: &'a [u64],
    ) -> impl std::future::Future<Output = u64> + Send + 'a {
        // Known locally after the first read: no allocation, no await. Only asking Redis is
        // boxed (see `TierFuture`).
        let known = self.locally_known_generation(tags);
        async move {
            match known {
                Some(g) => g,
                None => self.ask_generation(tags).await,
            }
        }
    }

    /// [`SharedCore::known_generation`] when this process does not know them all.
    fn ask_generation<'a>(&'a self, tags: &'a [u64]) -> TierFuture<'a, u64> {
        Box::pin(async move {
            if self.options.l2 {
                if let L2Result::Done(gens) =
                    self.tiers.l2_generations(self.generation_keys(tags)).await
                {
                    return self.learn(tags, &gens);
                }
            }
            self.generation_or_zero(tags)
        })
    }

    /// The digest of the generations this process knows, those it does not counting as 0
    /// (what a function that does not read L2 stamps and checks with).
    fn generation_or_zero(&self, tags: &[u64]) -> u64 {
        let generations = self.tiers.generations();
        let function = Generations::function_in(&self.generation_cell).unwrap_or(0);
        digest_of(
            function,
            std::iter::once((EVERYTHING, generations.everything().unwrap_or(0)))
                .chain(tags.iter().map(|t| (*t, generations.tag(*t).unwrap_or(0)))),
        )
    }

    /// The digest, when this process knows every generation it needs (without L2 there are
    /// none: generations live in Redis).
    pub(crate) fn locally_known_generation(&self, tags: &[u64]) -> Option<u64> {
        if !self.tiers.has_l2() {
            // Without Redis, functions are invalidated by removing their L3 entries, and tags
            // keep their generations in L3 itself.
            return Some(digest_of(
                0,
                tags.iter().map(|t| (*t, self.tiers.l3_tag_generation(*t))),
            ));
        }
        let generations = self.tiers.generations();
        let function = Generations::function_in(&self.generation_cell)?;
        let everything = generations.everything()?;
        if tags.is_empty() {
            return Some(digest_of(
                function,
                std::iter::once((EVERYTHING, everything)),
            ));
        }
        let stamped = std::iter::once(Some((EVERYTHING, everything)))
            .chain(tags.iter().map(|t| generations.tag(*t).map(|g| (*t, g))))
            .collect::<Option<Vec<_>>>()?;
        Some(digest(function, &stamped))
    }

    /// A value that cannot be written: an oversized one is counted as rejected
    /// (`oversized`) in each tier it was meant for; the first refusal of each kind is a
    /// warning, later ones are debug events (one per miss would flood the log).
    fn refused(&self, e: &crate::codec::EncodeError, key: &str) {
        if e.is_oversized() {
            for (tier, wanted) in [(Tier::L2, self.options.l2), (Tier::L3, self.options.l3)] {
                if wanted {
                    self.tiers.counters(tier).reject(Reject::Oversized);
                }
            }
        }
        if self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(error = %e, key, "value not written to the shared tiers");
        } else {
            tracing::warn!(error = %e, key, "value not written to the shared tiers (reported once per function; counted as rejected, reason oversized, when too large)");
        }
    }

    /// The expiry of an entry written at `now` (unix ms) to a tier with `ttl`: fresh for the
    /// ttl, then kept stale for the fail-safe window.
    fn expiry(&self, now: u64, ttl: Option<Duration>) -> Expiry {
        let after =
            |d: Duration| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match (ttl, self.options.fail_safe) {
            (None, _) => Expiry::default(),
            (Some(ttl), None) => Expiry {
                fresh_until_ms: 0,
                expires_at_ms: after(ttl),
            },
            (Some(ttl), Some(window)) => Expiry {
                fresh_until_ms: after(ttl),
                expires_at_ms: after(ttl + window),
            },
        }
    }

    /// Queues one put; with a lease, the L2 write is fenced by it and releases it (a put the
    /// full queue drops leaves the lease with its guard, which releases it).
    fn put(
        &self,
        key: String,
        bytes: Bytes,
        l2_ttl: Option<Duration>,
        (l2, l3): (bool, bool),
        lease: Option<&mut HeldLease>,
    ) {
        let token = lease.as_ref().and_then(|l| l.token());
        let queued = self.tiers.enqueue(WriteOp::Put {
            key,
            bytes,
            l2_ttl,
            l2,
            l3,
            lease: token,
        });
        if let (true, Some(lease)) = (queued, lease) {
            lease.handed_over();
        }
    }
}

impl<V: Send + 'static> SharedStore<V> {
    /// A store for one function; `None` when neither tier is both wanted and available.
    pub fn new(
        tiers: Arc<Tiers>,
        codec: ValueCodec<V>,
        mut options: SharedOptions,
        schema: u64,
        path: &str,
    ) -> Option<Self> {
        options.l2 &= tiers.has_l2();
        options.l3 &= tiers.l3().is_some();
        (options.l2 || options.l3).then(|| Self {
            core: SharedCore {
                generation_key: tiers.function_generation_key(path),
                generation_cell: tiers.generations().function_cell(path),
                tiers,
                options,
                schema,
                warned: std::sync::atomic::AtomicBool::new(false),
                l2_reads: ReadPredictor::default(),
            },
            codec,
        })
    }

    /// Decodes an entry read from `tier`, checked against `generation`; why not, if not.
    fn decode(
        &self,
        tier: Tier,
        key: &str,
        bytes: &[u8],
        generation: u64,
    ) -> Result<Found<V>, Reject> {
        let bound_to = codec::key_hash(key);
        let now = unix_ms();
        (self.codec.decode)(
            bytes,
            self.schema,
            bound_to,
            generation,
            now,
            &self.options.envelope,
        )
        .map(|(value, header)| Found {
            value,
            tier,
            expiry: Expiry {
                fresh_until_ms: header.fresh_until_ms,
                expires_at_ms: header.expires_at_ms,
            },
            read_at_ms: now,
        })
    }

    /// Warm restart: the function's newest L3 entries (at most `n`) that are valid and fresh
    /// now, for L1. Entries that do not check are left alone (a tagged one, whose tags this
    /// process does not know yet, is read normally later).
    pub async fn newest_in_l3(&self, prefix: String, n: usize) -> Vec<(String, Found<V>)> {
        if !self.options.l3 || self.tiers.l3().is_none() {
            return Vec::new();
        }
        // What was invalidated while this instance was away must not come back.
        self.tiers.backplane_caught_up().await;
        let generation = self.known_generation(&[]).await;
        let read = self.tiers.l3_newest(prefix, n).await;
        let now = unix_ms();
        read.into_iter()
            .filter_map(|(key, bytes)| {
                let found = self.decode(Tier::L3, &key, &bytes, generation).ok()?;
                (!found.is_stale(now)).then_some((key, found))
            })
            .collect()
    }

    fn accept(&self, tier: Tier, key: &str, bytes: &[u8], generation: u64) -> Option<Found<V>> {
        match self.decode(tier, key, bytes, generation) {
            Ok(found) => Some(found),
            Err(reason) => {
                self.tiers.counters(tier).reject(reason);
                tracing::debug!(%tier, %reason, key, "rejected a stored entry; deleting it");
                self.tiers.enqueue(WriteOp::Delete {
                    key: key.to_owned(),
                    l2: tier == Tier::L2,
                    l3: tier == Tier::L3,
                    notice: None,
                });
                None
            }
        }
    }

    /// Looks the key up in the shared tiers, in the configured order, checking each entry's
    /// generation stamp against the current generations of the function and of `tags` (tag
    /// hashes). Returns what was found and the generation digest a value computed now must be
    /// stamped with. Sync callers use [`block_on`](crate::time::block_on), which costs nothing
    /// extra when no L2 round trip is needed.
    pub async fn lookup(&self, key: &str, tags: &[u64]) -> Lookup<V> {
        self.lookup_after(key, tags, false).await
    }

    /// [`SharedStore::lookup`], not reading L3 again when `l3_missed` (a
    /// [probe](SharedStore::probe_l3_alone) just found nothing there).
    pub async fn lookup_after(&self, key: &str, tags: &[u64], l3_missed: bool) -> Lookup<V> {
        // Known once L2 answered (with the current generations) or L3 was checked.
        let mut current: Option<u64> = None;
        let mut lease: Option<HeldLease> = None;
        let mut stale: Option<Found<V>> = None;
        for tier in self.order() {
            match tier {
                Tier::L2 if self.options.l2 => {
                    let (found, generation, held, kept) = self.lookup_l2(key, tags).await;
                    lease = held;
                    stale = stale.or(kept);
                    if let Some(g) = generation {
                        current = Some(g);
                    }
                    if let (Some(found), Some(generation)) = (found, generation) {
                        self.promote(key, &found, generation, None);
                        return Lookup {
                            found: Some(found),
                            generation,
                            lease,
                            stale: None,
                        };
                    }
                }
                Tier::L3 if self.options.l3 => {
                    self.tiers.backplane_caught_up().await;
                    let generation = match current {
                        Some(g) => g,
                        None => self.known_generation(tags).await,
                    };
                    current = Some(generation);
                    let found = (!l3_missed)
                        .then(|| self.tiers.l3_get(key))
                        .flatten()
                        .and_then(|b| self.accept(Tier::L3, key, &b, generation));
                    match found {
                        Some(found) if found.was_stale() => stale = stale.or(Some(found)),
                        Some(found) => {
                            // Promoted to L2 under the lease, which the write releases.
                            self.promote(key, &found, generation, lease.as_mut());
                            return Lookup {
                                found: Some(found),
                                generation,
                                lease,
                                stale: None,
                            };
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
        let generation = match current {
            Some(g) => g,
            None => self.known_generation(tags).await,
        };
        Lookup {
            found: None,
            generation,
            lease,
            stale,
        }
    }

    /// The L2 step of a lookup: the value (checked against the current generations, which
    /// come in the same round trip), and on a miss the key's lease — taken, or waited for
    /// while another instance holds it, until it writes the value (served from here), gives
    /// the lease up or dies (then taken over). Bounded by twice the lease's duration; after
    /// that, or with Redis away, the caller computes without a lease.
    async fn lookup_l2(
        &self,
        key: &str,
        tags: &[u64],
    ) -> (
        Option<Found<V>>,
        Option<u64>,
        Option<HeldLease>,
        Option<Found<V>>,
    ) {
        let leases = self.options.lease && self.tiers.leases_on();
        let lease_ttl = self.tiers.lease_ttl().unwrap_or_default();
        let deadline = std::time::Instant::now() + lease_ttl * 2;
        let stats = self.tiers.lease_stats();
        let mut waited = false;
        let mut generation = None;
        let mut stale = None;
        loop {
            let keys = self.generation_keys(tags);
            let token = Lease::new(key).token;
            // With leases, the script when misses are expected (the lease in the same round
            // trip), else the plain read (see `ReadPredictor`).
            let read = match leases && !self.l2_reads.expects_hit() {
                true => self.tiers.l2_get_leased(key, keys, token).await,
                false => self
                    .tiers
                    .l2_get_stamped(key, keys)
                    .await
                    .map(|(v, g)| (v, g, LeaseState::NotAsked)),
            };
            let L2Result::Done((bytes, gens, state)) = read else {
                return (None, generation, None, stale);
            };
            // Generations not read (their cluster node is away): those this process knows,
            // if it knows them all; else no value can be checked, and none is served.
            let current = match gens {
                Some(gens) => Some(self.learn(tags, &gens)),
                None => self.locally_known_generation(tags),
            };
            generation = current.or(generation);
            if let Some(bytes) = bytes {
                let found = current.and_then(|current| self.accept(Tier::L2, key, &bytes, current));
                match found {
                    // Past its freshness: kept to stand in for a failure, computed again
                    // like a miss (under the lease).
                    Some(found) if found.was_stale() => stale = Some(found),
                    Some(found) => {
                        if waited {
                            stats.served.fetch_add(1, Relaxed);
                        }
                        self.l2_reads.record(true);
                        return (Some(found), generation, None, None);
                    }
                    // Only a retired or damaged value: computing it again is a miss like any.
                    None => {}
                }
            }
            self.l2_reads.record(false);
            // No fresh value, and the lease not asked for in the read: taken now.
            let state = match (leases, state) {
                (true, LeaseState::NotAsked) => match self.tiers.l2_acquire(key, token).await {
                    L2Result::Done(s) => s,
                    _ => LeaseState::NotAsked,
                },
                (_, state) => state,
            };
            match state {
                LeaseState::Acquired => {
                    stats.acquired.fetch_add(1, Relaxed);
                    if waited {
                        stats.taken_over.fetch_add(1, Relaxed);
                    }
                    let lease = HeldLease::new(
                        Lease {
                            key: key.to_owned(),
                            token,
                        },
                        self.tiers.clone(),
                    );
                    return (None, generation, Some(lease), stale);
                }
                LeaseState::Held(left) if std::time::Instant::now() < deadline => {
                    if !waited {
                        stats.waited.fetch_add(1, Relaxed);
                        waited = true;
                    }
                    // Woken by the holder's release; else read again when the lease would
                    // have expired (its holder may have died).
                    let bound = (left + Duration::from_millis(10))
                        .min(deadline.saturating_duration_since(std::time::Instant::now()));
                    self.tiers.wait_for_lease(key, bound).await;
                }
                _ => return (None, generation, None, stale),
            }
        }
    }

    /// L3 read before the key's flight is joined, for a function whose only shared tier is
    /// L3: a local read with nothing to coordinate (no lease, no promotion), so concurrent
    /// callers may all make it, and a hit skips the flight and the async lookup (most of an
    /// L3 hit's cost, `benches/l3_profile.rs`). Only a fresh, valid entry checked against
    /// generations this process knows is a hit; whatever else needs the full lookup (a
    /// stale or damaged entry, a backplane catching up) is
    /// [`L3Probe::Skipped`] and left to the flight's leader, which counts and handles it.
    pub fn probe_l3_alone(&self, key: &str, tags: &[u64]) -> L3Probe<Found<V>> {
        if !self.reads_l3_alone() || !self.tiers.backplane_is_caught_up() {
            return L3Probe::Skipped;
        }
        // What `known_generation` settles on without reading L2 (this function does not).
        let generation = self
            .locally_known_generation(tags)
            .unwrap_or_else(|| self.generation_or_zero(tags));
        let Some(bytes) = self.tiers.l3_get(key) else {
            return L3Probe::Missed;
        };
        match self.decode(Tier::L3, key, &bytes, generation) {
            Ok(found) if !found.was_stale() => L3Probe::Hit(found),
            _ => L3Probe::Skipped,
        }
    }

    /// [`SharedStore::lookup`] of an untagged entry, blocking this thread.
    pub fn lookup_blocking(&self, key: &str) -> Option<Found<V>> {
        crate::time::block_on(self.lookup(key, &[])).found
    }

    /// Copies a value found in one shared tier to the other, keeping its expiry and stamp.
    pub fn promote(
        &self,
        key: &str,
        found: &Found<V>,
        generation: u64,
        lease: Option<&mut HeldLease>,
    ) {
        let to_l2 = found.tier == Tier::L3 && self.options.l2;
        let to_l3 = found.tier == Tier::L2 && self.options.l3;
        if !(to_l2 || to_l3) {
            return;
        }
        let now = unix_ms();
        let expires_at_ms = found.expires_at_ms();
        if expires_at_ms != 0 && expires_at_ms <= now {
            return;
        }
        // Re-encoded rather than copied, so a promoted entry gets a fresh checksum for its own
        // tier; the expiry is the original one.
        let Ok(bytes) = (self.codec.encode)(
            &found.value,
            self.schema,
            codec::key_hash(key),
            generation,
            now,
            found.expiry,
            &self.options.envelope,
        ) else {
            return;
        };
        let remaining = (expires_at_ms != 0).then(|| Duration::from_millis(expires_at_ms - now));
        self.put(
            key.to_owned(),
            bytes.into(),
            remaining,
            (to_l2, to_l3),
            lease,
        );
    }

    /// Queues the writes of a freshly computed value to every shared tier of the function,
    /// stamped with `generation` (what its lookup returned).
    pub fn store(&self, key: String, value: &V, generation: u64, lease: Option<HeldLease>) {
        let now = unix_ms();
        let bound_to = codec::key_hash(&key);
        let encode = |ttl: Option<Duration>| -> Option<Bytes> {
            let expiry = self.expiry(now, ttl);
            match (self.codec.encode)(
                value,
                self.schema,
                bound_to,
                generation,
                now,
                expiry,
                &self.options.envelope,
            ) {
                Ok(b) => Some(b.into()),
                Err(e) => {
                    self.refused(&e, &key);
                    None
                }
            }
        };
        let SharedOptions {
            l2,
            l3,
            l2_ttl,
            l3_ttl,
            ..
        } = self.options;
        // The lease is handed to the L2 write (which releases it); a value that is not
        // written to L2 drops it, which releases it.
        let mut lease = lease;
        // Redis keeps an entry as long as fail-safe may need it.
        let kept =
            |ttl: Option<Duration>| ttl.map(|t| t + self.options.fail_safe.unwrap_or_default());
        if l2 && l3 && l2_ttl == l3_ttl {
            if let Some(bytes) = encode(l2_ttl) {
                self.put(key, bytes, kept(l2_ttl), (true, true), lease.as_mut());
            }
            return;
        }
        if l2 {
            if let Some(bytes) = encode(l2_ttl) {
                self.put(
                    key.clone(),
                    bytes,
                    kept(l2_ttl),
                    (true, false),
                    lease.as_mut(),
                );
            }
        }
        if l3 {
            if let Some(bytes) = encode(l3_ttl) {
                self.put(key, bytes, None, (false, true), None);
            }
        }
    }

    /// Queues an L1 eviction for L3 (written only if L3 lacks the key). Encoding happens in the
    /// drainer, not in the L1 engine's eviction callback.
    pub fn demote(self: &Arc<Self>, key: String, value: V, expires_at_ms: u64, generation: u64) {
        if !self.options.l3 {
            return;
        }
        let this = self.clone();
        self.tiers.enqueue(WriteOp::Demote(Box::new(move || {
            let now = unix_ms();
            let expiry = if expires_at_ms != 0 {
                let window = this
                    .options
                    .fail_safe
                    .map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
                Expiry {
                    fresh_until_ms: if window == 0 { 0 } else { expires_at_ms },
                    expires_at_ms: expires_at_ms.saturating_add(window),
                }
            } else {
                this.expiry(now, this.options.l3_ttl)
            };
            let bound_to = codec::key_hash(&key);
            let bytes = (this.codec.encode)(
                &value,
                this.schema,
                bound_to,
                generation,
                now,
                expiry,
                &this.options.envelope,
            )
            .ok()?;
            Some((key, bytes.into()))
        })));
    }
}

/// A type that can be stored in L2 and L3.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in L2/L3: it must implement `serde::Serialize` and `serde::Deserialize`",
    label = "this type is written to the shared tiers",
    note = "derive `Serialize` and `Deserialize` for it, or keep the function in memory with `tiers = \"l1\"`"
)]
pub trait SharedValue: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> SharedValue for T {}

/// Type-level carrier of a cached type, for codec selection (see `policy` for the technique).
pub struct CodecProbe<T>(std::marker::PhantomData<fn() -> T>);

/// The codec probe for a policy's cached type.
pub fn codec_probe<P: crate::policy::ReturnPolicy>(_: &P) -> CodecProbe<P::Cached> {
    CodecProbe(std::marker::PhantomData)
}

/// Selects the serde codec for serializable types.
pub trait SerdeCodecProbe {
    /// The cached type.
    type Value;
    /// The codec.
    fn codec(&self) -> Option<ValueCodec<Self::Value>>;
}
impl<T: Serialize + DeserializeOwned> SerdeCodecProbe for CodecProbe<T> {
    type Value = T;
    fn codec(&self) -> Option<ValueCodec<T>> {
        Some(ValueCodec::serde())
    }
}

/// Selects no codec (L1 only) for every other type.
pub trait NoCodecProbe {
    /// The cached type.
    type Value;
    /// No codec.
    fn codec(&self) -> Option<ValueCodec<Self::Value>>;
}
impl<T> NoCodecProbe for &CodecProbe<T> {
    type Value = T;
    fn codec(&self) -> Option<ValueCodec<T>> {
        None
    }
}

/// Fails to compile, with [`SharedValue`]'s message, when L2/L3 were asked for explicitly and
/// the cached type is not serializable. Generated code spans it on the return type.
pub fn require_shared<P: crate::policy::ReturnPolicy>(policy: P) -> P
where
    P::Cached: SharedValue,
{
    policy
}

#[cfg(test)]
mod tests {
    use super::ReadPredictor;

    #[test]
    fn reads_expect_a_hit_after_mostly_hits_and_a_miss_after_mostly_misses() {
        let p = ReadPredictor::default();
        assert!(
            !p.expects_hit(),
            "at first, misses (the script takes the lease)"
        );
        (0..7).for_each(|_| p.record(true));
        assert!(!p.expects_hit());
        p.record(true);
        assert!(p.expects_hit(), "after 8 hits, the plain read");
        (0..100).for_each(|_| p.record(true));
        // Saturated at 15: eight misses turn it back, not a hundred.
        (0..7).for_each(|_| p.record(false));
        assert!(p.expects_hit());
        p.record(false);
        assert!(!p.expects_hit());
        (0..100).for_each(|_| p.record(false));
        p.record(true);
        assert!(!p.expects_hit(), "saturated at 0: one hit does not flip it");
    }
}
