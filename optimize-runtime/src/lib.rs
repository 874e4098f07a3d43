//! Runtime of the `optimize` attribute: keys, cache tiers, single-flight and statistics.
//!
//! Applications depend on the `optimize` crate, which re-exports this one together with the
//! attribute macros. Everything here is usable and testable without the macros.
//!
//! ```
//! use optimize_runtime::key::KeyHasher;
//!
//! let mut h = KeyHasher::new();
//! h.push(&7u64);
//! assert!(h.finish().is_some());
//! ```

pub mod cache;
pub mod codec;
pub mod config;
pub mod flight;
pub mod key;
pub mod monitor;
pub mod policy;
pub mod pool;
mod registry;
pub mod site;
pub mod stats;
pub mod time;

pub use cache::tiered::{init, AlreadyInitialized, TierConfig};
pub use registry::{namespace, site, sites};

/// Applies every queued shared-tier write and puts L3 on disk. A no-op when no managed
/// function has used the shared tiers.
///
/// ```
/// optimize::flush();
/// ```
pub fn flush() {
    if let Some(tiers) = cache::tiered::global_if_started() {
        tiers.flush_blocking();
    }
}

/// [`shutdown_within`] with a 10-second deadline.
///
/// ```
/// optimize::shutdown();
/// ```
pub fn shutdown() -> pool::ShutdownReport {
    shutdown_within(std::time::Duration::from_secs(10))
}

/// Stops the pools' admission, waits up to `deadline` for admitted calls and submitted tasks,
/// cancels the tasks still running, then flushes the shared tiers and stops their background
/// work. Call it before the process exits so that no queued write is lost.
///
/// Managed functions keep working afterwards: their bodies run in place in the caller, and
/// shared-tier writes are dropped (and counted). New tasks are rejected.
///
/// ```
/// let report = optimize::shutdown_within(std::time::Duration::from_secs(1));
/// assert!(report.drained);
/// ```
pub fn shutdown_within(deadline: std::time::Duration) -> pool::ShutdownReport {
    let report = match pool::global_if_started() {
        Some(pools) => pools.shutdown(deadline),
        None => pool::ShutdownReport {
            drained: true,
            cancelled_tasks: 0,
            waited: std::time::Duration::ZERO,
        },
    };
    if let Some(tiers) = cache::tiered::global_if_started() {
        tiers.shutdown();
    }
    if let Some(monitor) = monitor::global() {
        monitor.stop();
    }
    report
}
pub use pool::io::TimedOut;
pub use pool::task::{Task, TaskError, TaskHandle, TaskStatus};
pub use pool::Priority;
pub use site::{Kind, Site};
pub use stats::{FnStats, Histogram, Outcome};

/// What generated code calls. Not part of the public API: no semver promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::cache::shared::{codec_probe, require_shared, NoCodecProbe, SerdeCodecProbe};
    pub use crate::config::Level;
    pub use crate::key::{ArgsKey, KeyHasher, KeyPart};
    pub use crate::policy::{OptionProbe, Probe, ResultProbe, ValueProbe};
    pub use crate::pool::io::{RetryOutput, TimeoutOutput};
    pub use crate::pool::Priority;
    pub use crate::site::{Kind, Site, SiteMeta, SiteSlot, TierSet};
    pub use core::time::Duration;
}
