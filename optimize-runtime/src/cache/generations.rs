//! Generations: O(1) invalidation of a whole function or of a tag.
//!
//! Each function and each tag has a generation in Redis (`{ns}:gen:{{ns}}:fn:{path}`,
//! `{ns}:gen:{{ns}}:tag:{hash}`; absent means 0), raised by `INCR` when it is invalidated. Every entry
//! written to a shared tier is stamped with a digest of the generations of its function and its
//! tags at the time its lookup started ([`digest`]); a read compares the stamp with the digest of
//! the current generations and refuses a mismatch as retired. Invalidating a function or a tag
//! therefore touches one key, whatever the number of entries, and a value computed across an
//! invalidation carries the old stamp, so it is retired as soon as it is written.
//!
//! Reads of L2 fetch the current generations in the same round trip as the value (pipelined
//! `MGET`); L3 reads use what this process knows ([`Generations`]), kept current by those reads,
//! by its own invalidations and by the backplane's announcements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

/// The digest an entry is stamped with: 0 while the function and every tag are at generation
/// 0 (so entries of functions never invalidated carry no digest), else a hash of them all.
///
/// ```
/// use optimize_runtime::cache::generations::digest;
///
/// assert_eq!(digest(0, &[(7, 0)]), 0);
/// assert_ne!(digest(1, &[]), digest(2, &[]));
/// assert_ne!(digest(0, &[(7, 1)]), digest(0, &[(8, 1)]));
/// ```
pub fn digest(function: u64, tags: &[(u64, u64)]) -> u64 {
    digest_of(function, tags.iter().copied())
}

/// [`digest`] of (tag, generation) pairs as they come, without collecting them (the L3 hit
/// path computes one per read).
pub fn digest_of(function: u64, tags: impl Iterator<Item = (u64, u64)> + Clone) -> u64 {
    if function == 0 && tags.clone().all(|(_, g)| g == 0) {
        return 0;
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&function.to_le_bytes());
    for (tag, generation) in tags {
        hasher.update(&tag.to_le_bytes());
        hasher.update(&generation.to_le_bytes());
    }
    // Never 0, which means "no generation".
    hasher.digest().max(1)
}

/// The hash a tag is known by in Redis and in entries.
///
/// ```
/// use optimize_runtime::cache::generations::tag_hash;
///
/// assert_eq!(tag_hash("user:42"), tag_hash("user:42"));
/// assert_ne!(tag_hash("user:42"), tag_hash("user:43"));
/// ```
pub fn tag_hash(tag: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(tag.as_bytes())
}

/// [`tag_hash`] of a formatted tag, without building the string (generated code hashes each
/// call's tags this way).
///
/// ```
/// use optimize_runtime::cache::generations::{tag_hash, tag_hash_fmt};
///
/// let id = 42;
/// assert_eq!(tag_hash_fmt(format_args!("user:{id}")), tag_hash("user:42"));
/// ```
pub fn tag_hash_fmt(tag: std::fmt::Arguments<'_>) -> u64 {
    if let Some(text) = tag.as_str() {
        return tag_hash(text);
    }
    struct Streaming(xxhash_rust::xxh3::Xxh3);
    impl std::fmt::Write for Streaming {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut hasher = Streaming(xxhash_rust::xxh3::Xxh3::new());
    // Writing into a hasher cannot fail; a `Display` impl that fails leaves a partial hash,
    // which only means that tag matches nothing.
    let _ = std::fmt::write(&mut hasher, tag);
    hasher.0.digest()
}

/// The Redis key of a function's generation. Every generation key of a namespace carries the
/// hash tag `{namespace}`, so a read fetches them all from one cluster slot with one `MGET`.
///
/// ```
/// use optimize_runtime::cache::generations::function_key;
///
/// assert_eq!(function_key("app", "users::fetch"), "app:gen:{app}:fn:users::fetch");
/// ```
pub fn function_key(namespace: &str, path: &str) -> String {
    format!("{namespace}:gen:{{{namespace}}}:fn:{path}")
}

/// The Redis key of the namespace's own generation, raised by invalidating everything.
pub fn everything_key(namespace: &str) -> String {
    format!("{namespace}:gen:{{{namespace}}}:all")
}

/// What the namespace's generation counts as in a [`digest`]: a tag every entry carries.
pub const EVERYTHING: u64 = 0;

/// The Redis key of a tag's generation.
pub fn tag_key(namespace: &str, tag: u64) -> String {
    format!("{namespace}:gen:{{{namespace}}}:tag:{tag:016x}")
}

/// How many tags' generations a process remembers; beyond, the least recently used are
/// forgotten (and read from Redis again when needed).
pub const TAGS_REMEMBERED: usize = 100_000;

/// The generations this process knows. Generations only grow while Redis keeps its data, so a
/// newer value always wins; when Redis lost its data (the backplane sees a new epoch) they are
/// all forgotten.
pub struct Generations {
    /// One cell per function, shared with its store so a read is one atomic load.
    functions: RwLock<HashMap<String, Arc<AtomicU64>>>,
    everything: AtomicU64,
    tags: quick_cache::sync::Cache<u64, u64>,
}

/// A cell's value while the generation is not known.
const UNKNOWN: u64 = u64::MAX;

fn known(cell: &AtomicU64) -> Option<u64> {
    Some(cell.load(Relaxed)).filter(|g| *g != UNKNOWN)
}

/// Stores `generation` in `cell` unless a newer one is there.
fn raise(cell: &AtomicU64, generation: u64) {
    let _ = cell.fetch_update(Relaxed, Relaxed, |current| {
        (current == UNKNOWN || current < generation).then_some(generation)
    });
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("tags", &self.tags.len())
            .finish_non_exhaustive()
    }
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            functions: RwLock::default(),
            everything: AtomicU64::new(UNKNOWN),
            tags: quick_cache::sync::Cache::new(TAGS_REMEMBERED),
        }
    }
}

impl Generations {
    /// The cell holding a function's generation (`u64::MAX` while unknown), for a store to
    /// read without a lookup.
    pub fn function_cell(&self, path: &str) -> Arc<AtomicU64> {
        if let Some(cell) = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return cell.clone();
        }
        self.functions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_owned())
            .or_insert_with(|| Arc::new(AtomicU64::new(UNKNOWN)))
            .clone()
    }

    /// A function's generation, if known.
    pub fn function(&self, path: &str) -> Option<u64> {
        self.functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .and_then(|cell| known(cell))
    }

    /// A function's generation from its cell (see [`Generations::function_cell`]).
    pub fn function_in(cell: &AtomicU64) -> Option<u64> {
        known(cell)
    }

    /// Records a function's generation in its cell (kept if newer).
    pub fn learn_in(cell: &AtomicU64, generation: u64) {
        raise(cell, generation);
    }

    /// The namespace's generation (see [`everything_key`]), if known.
    pub fn everything(&self) -> Option<u64> {
        known(&self.everything)
    }

    /// Records the namespace's generation (kept if newer).
    pub fn learn_everything(&self, generation: u64) {
        raise(&self.everything, generation);
    }

    /// A tag's generation, if known.
    pub fn tag(&self, tag: u64) -> Option<u64> {
        self.tags.get(&tag)
    }

    /// Records a function's generation (kept if newer).
    pub fn learn_function(&self, path: &str, generation: u64) {
        raise(&self.function_cell(path), generation);
    }

    /// Records a tag's generation (kept if newer).
    pub fn learn_tag(&self, tag: u64, generation: u64) {
        let newer = self.tags.get(&tag).is_none_or(|g| g < generation);
        if newer {
            self.tags.insert(tag, generation);
        }
    }

    /// Forgets everything (Redis lost its data: its generations start again from 0).
    pub fn forget(&self) {
        for cell in self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            cell.store(UNKNOWN, Relaxed);
        }
        self.everything.store(UNKNOWN, Relaxed);
        self.tags.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_generations_win() {
        let g = Generations::default();
        assert_eq!(g.function("f"), None);
        g.learn_function("f", 3);
        g.learn_function("f", 2);
        assert_eq!(g.function("f"), Some(3));
        g.learn_tag(9, 1);
        g.learn_tag(9, 0);
        assert_eq!(g.tag(9), Some(1));
        g.forget();
        assert_eq!((g.function("f"), g.tag(9)), (None, None));
    }

    #[test]
    fn digests_depend_on_every_generation() {
        assert_eq!(digest(0, &[]), 0);
        let a = digest(1, &[(5, 0)]);
        assert_ne!(a, 0);
        assert_ne!(a, digest(1, &[(5, 1)]));
        assert_ne!(a, digest(2, &[(5, 0)]));
    }
}
