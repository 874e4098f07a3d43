//! Cache tiers. Each tier lives in its own module behind a small interface, so an engine can
//! be replaced without touching the call path.
//!
//! - [`l1`]: in-process, per function;
//! - [`l2_redis`]: Redis, shared by every instance;
//! - [`l3_sled`]: sled on local disk, survives restarts;
//! - [`writeback`]: the one queue through which L2/L3 writes happen;
//! - [`tiered`]: [`Tiers`](tiered::Tiers), which owns L2, L3 and the queue.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::codec::Reject;
use crate::stats::{AtomicHistogram, Histogram};

pub mod backplane;
pub mod breaker;
pub mod budget;
pub mod generations;
pub mod l1;
pub mod l2_redis;
pub mod l3_sled;
pub mod lease;
pub mod redis_conn;
pub mod shared;
pub mod store;
pub mod tiered;
pub mod writeback;

pub use crate::meta::Tier;

/// The operations a tier counts errors and time for.
pub const OPS: [&str; 9] = [
    "get", "put", "delete", "flush", "open", "connect", "sweep", "decode", "lease",
];

struct Counters {
    tier: Tier,
    errors: [AtomicU64; OPS.len()],
    op_count: [AtomicU64; OPS.len()],
    op_nanos: [AtomicU64; OPS.len()],
    op_latency: [AtomicHistogram; OPS.len()],
    rejected: [AtomicU64; Reject::ALL.len()],
}

/// Error, timing and rejection counters of one tier (cold paths only: misses and writes).
#[derive(Clone)]
pub struct TierCounters(Arc<Counters>);

fn op_index(op: &str) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

impl TierCounters {
    /// Counters for `tier`.
    pub fn new(tier: Tier) -> Self {
        Self(Arc::new(Counters {
            tier,
            errors: [const { AtomicU64::new(0) }; OPS.len()],
            op_count: [const { AtomicU64::new(0) }; OPS.len()],
            op_nanos: [const { AtomicU64::new(0) }; OPS.len()],
            op_latency: [const { AtomicHistogram::new() }; OPS.len()],
            rejected: [const { AtomicU64::new(0) }; Reject::ALL.len()],
        }))
    }

    /// The tier counted.
    pub fn tier(&self) -> Tier {
        self.0.tier
    }

    /// Counts a failed operation.
    pub fn error(&self, op: &str) {
        self.0.errors[op_index(op)].fetch_add(1, Relaxed);
    }

    /// Counts the duration of one operation.
    pub fn time(&self, op: &str, nanos: u64) {
        let i = op_index(op);
        self.0.op_count[i].fetch_add(1, Relaxed);
        self.0.op_nanos[i].fetch_add(nanos, Relaxed);
        self.0.op_latency[i].record(nanos);
    }

    /// Counts an entry rejected when read.
    pub fn reject(&self, reason: Reject) {
        let i = Reject::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.0.rejected[i].fetch_add(1, Relaxed);
    }

    /// Failed operations of kind `op`.
    pub fn errors(&self, op: &str) -> u64 {
        self.0.errors[op_index(op)].load(Relaxed)
    }

    /// Failed operations of every kind.
    pub fn total_errors(&self) -> u64 {
        self.0.errors.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Entries rejected for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        let i = Reject::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.0.rejected[i].load(Relaxed)
    }

    /// Distribution of the durations of operations of kind `op`.
    pub fn latency(&self, op: &str) -> Histogram {
        self.0.op_latency[op_index(op)].snapshot()
    }

    /// (count, total nanoseconds) of operations of kind `op`.
    pub fn timing(&self, op: &str) -> (u64, u64) {
        let i = op_index(op);
        (
            self.0.op_count[i].load(Relaxed),
            self.0.op_nanos[i].load(Relaxed),
        )
    }
}

impl fmt::Debug for TierCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TierCounters")
            .field("tier", &self.0.tier)
            .field("errors", &self.total_errors())
            .finish()
    }
}
