//! What the monitor reads: handed to it by the runtime, never looked up.

use std::sync::Arc;

use crate::cache::tiered::Tiers;
use crate::pool::Pools;
use crate::registry::Registry;
use crate::time::Clock;

/// The runtime's parts the monitor reads metrics from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// Every managed function.
    pub registry: Arc<Registry>,
    /// The shared tiers.
    pub tiers: Arc<Tiers>,
    /// The pools.
    pub pools: Arc<Pools>,
    /// The runtime's clock: snapshots are taken at its time.
    pub clock: Clock,
    /// The process-wide L1 byte budget, when configured.
    pub l1_budget: Option<Arc<crate::cache::budget::L1Budget>>,
}
