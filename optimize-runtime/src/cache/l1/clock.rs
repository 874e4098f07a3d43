//! The `clock` engine: a lock-free hash map (papaya) whose reads write no shared memory, with
//! CLOCK (second-chance) eviction over the order entries were inserted in.
//!
//! quick_cache's and moka's reads each write a line other threads read too (a lock word, a
//! "hot" bit, a read buffer), so hits on two cores slow each other down. Here a read sets an
//! entry's referenced bit only when the eviction hand has cleared it, so an entry read over
//! and over is written once per pass of the hand, and hits scale with the cores
//! (docs/benchmarks.md, "scaling").
//!
//! Eviction happens on insert, under one lock (inserts are misses, which already pay for a
//! computation): the hand takes the oldest insertion; a referenced entry gets its bit cleared
//! and goes to the back, an unreferenced one is evicted. The ring of insertions may hold
//! stale records of entries since replaced or removed; they are recognised by their insertion
//! number and dropped, and the ring is compacted when stale records outnumber live entries,
//! so it stays within twice the entries (plus a constant).

use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Entry, EvictionHandler, L1Engine, PackedKey};
use crate::key::{ArgsKey, PrehashedBuild};

/// A value as the engine holds it. Boxed (not shared behind an `Arc`, whose count a read
/// would write) and type-erased, so the map and the eviction are compiled once in this crate
/// rather than once per return type in every user crate (docs/architecture.md, "Compile
/// time"); a read checks the type and clones the value out.
type AnyValue = Box<dyn Any + Send + Sync>;

/// What the erased engine hands a capacity eviction to.
type ErasedEviction = Arc<dyn Fn(ArgsKey, &Entry<AnyValue>) + Send + Sync>;

/// One stored entry and the engine's bookkeeping for it.
struct Slot {
    entry: Entry<AnyValue>,
    /// Read since the hand last passed (set by reads only when clear).
    referenced: AtomicBool,
    /// Which insertion stored it (records of older insertions of the key are stale).
    insertion: u64,
    /// What it counts against the capacity.
    weight: u64,
}

impl Slot {
    /// Marks the entry read; writes only when the hand cleared the mark, so a hot entry's
    /// line stays shared between the cores reading it.
    #[inline]
    fn touch(&self) {
        if !self.referenced.load(Relaxed) {
            self.referenced.store(true, Relaxed);
        }
    }
}

/// The CLOCK engine (see the module documentation).
pub struct ClockEngine<V> {
    clock: ErasedClock,
    _values: PhantomData<fn(V) -> V>,
}

impl<V: Clone + Send + Sync + 'static> ClockEngine<V> {
    /// An engine holding at most `capacity` entries.
    ///
    /// ```
    /// use optimize_runtime::cache::l1::{ClockEngine, Entry, L1Engine};
    /// use optimize_runtime::key::ArgsKey;
    ///
    /// let engine = ClockEngine::<u64>::new(2);
    /// for k in 0..3u128 {
    ///     engine.insert(ArgsKey(k), Entry::new(7, 0));
    /// }
    /// assert_eq!(engine.len(), 2);
    /// ```
    pub fn new(capacity: u64) -> Self {
        Self::with_eviction(capacity, None)
    }

    /// An engine that reports capacity evictions to `on_evict`.
    pub fn with_eviction(capacity: u64, on_evict: Option<EvictionHandler<V>>) -> Self {
        Self::build(capacity, on_evict, false)
    }

    /// An engine of `capacity` weight: entries' sizes with `by_size`, else entries.
    pub(super) fn build(
        capacity: u64,
        on_evict: Option<EvictionHandler<V>>,
        by_size: bool,
    ) -> Self {
        let on_evict = on_evict.map(|on_evict| -> ErasedEviction {
            Arc::new(move |key, entry: &Entry<AnyValue>| {
                if let Some(entry) = entry.typed::<V>() {
                    on_evict(key, entry);
                }
            })
        });
        Self {
            clock: ErasedClock::build(capacity, on_evict, by_size),
            _values: PhantomData,
        }
    }
}

impl<V: Clone + Send + Sync + 'static> L1Engine<V> for ClockEngine<V> {
    #[inline]
    fn get(&self, key: ArgsKey) -> Option<Entry<V>> {
        let map = &self.clock.map;
        let guard = map.guard();
        let slot = map.get(&PackedKey::from(key), &guard)?;
        slot.touch();
        slot.entry.typed()
    }

    fn insert(&self, key: ArgsKey, entry: Entry<V>) {
        self.clock
            .insert(key.into(), entry.map_value(|v| Box::new(v) as AnyValue));
    }

    fn remove(&self, key: ArgsKey) -> bool {
        self.clock.remove(key.into())
    }

    fn contains(&self, key: ArgsKey) -> bool {
        self.clock.map.pin().contains_key(&PackedKey::from(key))
    }

    fn take(&self, key: ArgsKey) -> Option<Entry<V>> {
        let map = self.clock.map.pin();
        let slot = map.remove(&PackedKey::from(key))?;
        self.clock.release(slot.weight);
        slot.entry.typed()
    }

    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<V>) -> bool) {
        self.clock
            .visit(&mut |key, entry| match entry.typed::<V>() {
                Some(entry) => visit(key, &entry),
                None => true,
            });
    }

    fn clear(&self) {
        self.clock.clear();
    }

    fn len(&self) -> u64 {
        self.clock.map.len() as u64
    }

    fn purge(&self, expired: &dyn Fn(&Entry<V>) -> bool) -> u64 {
        self.clock
            .purge(&|entry| entry.typed::<V>().is_some_and(|entry| expired(&entry)))
    }
}

/// The map, the ring and the hand behind every [`ClockEngine`], whatever its value type.
struct ErasedClock {
    map: papaya::HashMap<PackedKey, Slot, PrehashedBuild>,
    /// Insertions in order: (key, insertion number). The hand works from the front.
    ring: Mutex<VecDeque<(PackedKey, u64)>>,
    /// Total weight of the entries in `map` (entries, or bytes with `by_size`).
    weight: AtomicU64,
    capacity: u64,
    by_size: bool,
    next_insertion: AtomicU64,
    on_evict: Option<ErasedEviction>,
}

impl ErasedClock {
    fn build(capacity: u64, on_evict: Option<ErasedEviction>, by_size: bool) -> Self {
        let expected = usize::try_from(capacity).unwrap_or(usize::MAX);
        // A weighed store's capacity is in bytes: it says little about the entry count.
        let expected = if by_size { 64 } else { expected.min(1 << 16) };
        Self {
            map: papaya::HashMap::builder()
                .capacity(expected)
                .hasher(PrehashedBuild::default())
                .build(),
            ring: Mutex::new(VecDeque::with_capacity(expected)),
            weight: AtomicU64::new(0),
            capacity: capacity.max(1),
            by_size,
            next_insertion: AtomicU64::new(0),
            on_evict,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<(PackedKey, u64)>> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, weight: u64) {
        let _ = self
            .weight
            .fetch_update(Relaxed, Relaxed, |w| Some(w.saturating_sub(weight)));
    }

    fn insert(&self, key: PackedKey, entry: Entry<AnyValue>) {
        let weight = u64::from(entry.weight(self.by_size));
        let insertion = self.next_insertion.fetch_add(1, Relaxed);
        let mut ring = self.ring();
        let slot = Slot {
            entry,
            referenced: AtomicBool::new(false),
            insertion,
            weight,
        };
        // Counted before it can be seen, so a removal racing in cannot release it first.
        self.weight.fetch_add(weight, Relaxed);
        if let Some(old) = self.map.pin().insert(key, slot) {
            self.release(old.weight);
        }
        ring.push_back((key, insertion));
        self.evict_to_capacity(&mut ring);
        self.compact(&mut ring);
    }

    fn remove(&self, key: PackedKey) -> bool {
        match self.map.pin().remove(&key) {
            Some(slot) => {
                self.release(slot.weight);
                true
            }
            None => false,
        }
    }

    /// Moves the hand until the entries fit the capacity again (or none is left).
    fn evict_to_capacity(&self, ring: &mut VecDeque<(PackedKey, u64)>) {
        let map = self.map.pin();
        // Each step evicts, clears a bit or drops a stale record, so two passes suffice.
        let mut steps = ring.len().saturating_mul(2) + 1;
        while self.weight.load(Relaxed) > self.capacity && steps > 0 {
            steps -= 1;
            let Some((key, insertion)) = ring.pop_front() else {
                return;
            };
            let Some(slot) = map.get(&key).filter(|s| s.insertion == insertion) else {
                continue; // stale: replaced or removed since
            };
            if slot.referenced.swap(false, Relaxed) {
                ring.push_back((key, insertion));
                continue;
            }
            if let Ok(Some((_, slot))) = map.remove_if(&key, |_, s| s.insertion == insertion) {
                self.release(slot.weight);
                if let Some(on_evict) = &self.on_evict {
                    on_evict(key.into(), &slot.entry);
                }
            }
        }
    }

    /// Drops stale records once they outnumber the live entries.
    fn compact(&self, ring: &mut VecDeque<(PackedKey, u64)>) {
        if ring.len() <= 2 * self.map.len() + 64 {
            return;
        }
        let map = self.map.pin();
        ring.retain(|(key, insertion)| map.get(key).is_some_and(|s| s.insertion == *insertion));
    }

    fn visit(&self, visit: &mut dyn FnMut(ArgsKey, &Entry<AnyValue>) -> bool) {
        for (key, slot) in self.map.pin().iter() {
            if !visit((*key).into(), &slot.entry) {
                return;
            }
        }
    }

    fn clear(&self) {
        let mut ring = self.ring();
        self.map.pin().clear();
        ring.clear();
        self.weight.store(0, Relaxed);
    }

    fn purge(&self, expired: &dyn Fn(&Entry<AnyValue>) -> bool) -> u64 {
        let map = self.map.pin();
        let doomed: Vec<(PackedKey, u64)> = map
            .iter()
            .filter(|(_, s)| expired(&s.entry))
            .map(|(k, s)| (*k, s.insertion))
            .collect();
        doomed
            .into_iter()
            .filter(
                |(key, insertion)| match map.remove_if(key, |_, s| s.insertion == *insertion) {
                    Ok(Some((_, slot))) => {
                        self.release(slot.weight);
                        true
                    }
                    _ => false,
                },
            )
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(k: u128) -> ArgsKey {
        ArgsKey(k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
    }

    #[test]
    fn stays_within_capacity_and_reports_evictions() {
        let evicted = Arc::new(AtomicU64::new(0));
        let counter = evicted.clone();
        let handler: EvictionHandler<u64> = Arc::new(move |_, _| {
            counter.fetch_add(1, Relaxed);
        });
        let engine = ClockEngine::with_eviction(100, Some(handler));
        for k in 0..1_000 {
            engine.insert(key(k), Entry::new(k as u64, 0));
        }
        assert_eq!(engine.len(), 100);
        assert_eq!(evicted.load(Relaxed), 900);
        assert!(
            engine.clock.ring().len() <= 2 * 100 + 64,
            "the ring stays bounded"
        );
    }

    #[test]
    fn a_read_entry_survives_a_pass_of_the_hand() {
        let engine = ClockEngine::new(10);
        for k in 0..10 {
            engine.insert(key(k), Entry::new(k as u64, 0));
        }
        assert!(engine.get(key(0)).is_some());
        engine.insert(key(10), Entry::new(10, 0));
        assert!(
            engine.contains(key(0)),
            "read since inserted: second chance"
        );
        assert!(!engine.contains(key(1)), "the oldest unread entry went");
    }

    #[test]
    fn replacing_and_removing_keep_the_weight_and_ring_exact() {
        let engine = ClockEngine::new(4);
        for round in 0..1_000u64 {
            engine.insert(key(1), Entry::new(round, 0));
            engine.insert(key(2), Entry::new(round, 0));
            assert!(engine.remove(key(2)));
        }
        assert_eq!(engine.len(), 1);
        assert_eq!(engine.clock.weight.load(Relaxed), 1);
        assert!(
            engine.clock.ring().len() <= 2 + 64,
            "stale records are compacted"
        );
        assert_eq!(engine.get(key(1)).map(|e| e.value), Some(999));
        engine.insert(key(3), Entry::new(3, 0));
        assert_eq!(engine.purge(&|e| e.value == 3), 1);
        assert_eq!(engine.len(), 1);
        engine.clear();
        assert!(engine.is_empty());
        assert_eq!(engine.clock.weight.load(Relaxed), 0);
    }

    #[test]
    fn weighs_by_size() {
        let engine = ClockEngine::<u64>::build(1_000, None, true);
        for k in 0..100 {
            let mut entry = Entry::new(k as u64, 0);
            entry.size = 100;
            engine.insert(key(k), entry);
        }
        assert_eq!(engine.len(), 10, "1,000 bytes hold ten 100-byte entries");
    }

    #[test]
    fn concurrent_readers_and_writers_stay_bounded() {
        let engine = Arc::new(ClockEngine::<u64>::new(64));
        let threads: Vec<_> = (0..4u128)
            .map(|t| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u128 {
                        let k = key((i * 7 + t) % 256);
                        if engine.get(k).is_none() {
                            engine.insert(k, Entry::new(i as u64, 0));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert!(engine.len() <= 64);
        assert_eq!(engine.clock.weight.load(Relaxed), engine.len());
    }
}
