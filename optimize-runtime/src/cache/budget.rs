//! The process-wide L1 byte budget (`l1.max_size`): every function's L1 counts the bytes of
//! its values against one limit, and when an insert takes the total over it, the function
//! holding the most bytes gives some up (its engine's own eviction order where it has one;
//! evicted entries are counted, and demoted to L3 like any capacity eviction).
//!
//! Sizes are what the function's values weigh: their encoded (bincode) size when they are
//! serializable, else their in-memory size without heap. The total is kept by the stores
//! themselves, so concurrent inserts of one key may leave it slightly off; it never drifts
//! without bound, since every store's own count is exact whenever it is quiet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// A function's L1 as the budget sees it.
pub trait BudgetMember: Send + Sync {
    /// Bytes its values weigh now.
    fn bytes(&self) -> u64;
    /// Evicts entries weighing at least `bytes` (or all it has); the bytes freed.
    fn shrink(&self, bytes: u64) -> u64;
}

/// The limit, the bytes counted against it, and the stores that count.
pub struct L1Budget {
    limit: u64,
    used: AtomicU64,
    members: Mutex<Vec<&'static dyn BudgetMember>>,
    /// Held while one caller brings the total back under the limit; others skip it.
    enforcing: Mutex<()>,
    /// Bytes evicted to stay under the limit.
    evicted: AtomicU64,
}

impl std::fmt::Debug for L1Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1Budget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl L1Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
            enforcing: Mutex::new(()),
            evicted: AtomicU64::new(0),
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Bytes evicted to stay under the limit so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    /// Adds a function's L1 (for the life of the process).
    pub fn register(&self, member: &'static dyn BudgetMember) {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(member);
    }

    /// Counts `bytes` more.
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Relaxed);
    }

    /// Counts `bytes` fewer.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(bytes)));
    }

    /// Brings the total back under the limit by shrinking the largest stores; a no-op when
    /// under it, or while another caller is at it.
    pub fn enforce(&self) {
        if self.used() <= self.limit {
            return;
        }
        let Ok(_one) = self.enforcing.try_lock() else {
            return;
        };
        let members = self
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // A few rounds at most: each frees from the then-largest store.
        for _ in 0..8 {
            let used = self.used();
            if used <= self.limit {
                return;
            }
            let Some(largest) = members.iter().max_by_key(|m| m.bytes()) else {
                return;
            };
            if largest.bytes() == 0 {
                return;
            }
            let freed = largest.shrink(used - self.limit);
            self.evicted.fetch_add(freed, Relaxed);
            if freed == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(AtomicU64, &'static L1Budget);

    impl BudgetMember for Fake {
        fn bytes(&self) -> u64 {
            self.0.load(Relaxed)
        }
        fn shrink(&self, bytes: u64) -> u64 {
            let freed = bytes.min(self.bytes());
            self.0.fetch_sub(freed, Relaxed);
            self.1.release(freed);
            freed
        }
    }

    #[test]
    fn the_largest_store_gives_up_what_is_over() {
        let budget: &'static L1Budget = Box::leak(Box::new(L1Budget::new(100)));
        let small: &'static Fake = Box::leak(Box::new(Fake(AtomicU64::new(30), budget)));
        let large: &'static Fake = Box::leak(Box::new(Fake(AtomicU64::new(90), budget)));
        budget.register(small);
        budget.register(large);
        budget.charge(120);
        budget.enforce();
        assert_eq!(budget.used(), 100);
        assert_eq!((small.bytes(), large.bytes()), (30, 70));
        assert_eq!(budget.evicted(), 20);
        budget.release(1_000);
        assert_eq!(budget.used(), 0, "never below zero");
    }
}
