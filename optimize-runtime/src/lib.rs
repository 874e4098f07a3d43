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
pub mod flight;
pub mod key;
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

/// Flushes the shared tiers and stops their background work; call it before the process
/// exits so that no queued write is lost. Managed functions keep working afterwards, with
/// shared-tier writes dropped (and counted).
///
/// ```
/// optimize::shutdown();
/// ```
pub fn shutdown() {
    if let Some(tiers) = cache::tiered::global_if_started() {
        tiers.shutdown();
    }
}
pub use site::{Kind, Site};
pub use stats::{FnStats, Histogram, Outcome};

/// What generated code calls. Not part of the public API: no semver promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::cache::shared::{codec_probe, require_shared, NoCodecProbe, SerdeCodecProbe};
    pub use crate::key::{ArgsKey, KeyHasher, KeyPart};
    pub use crate::policy::{OptionProbe, Probe, ResultProbe, ValueProbe};
    pub use crate::site::{Kind, Site, SiteMeta, SiteSlot, TierSet};
    pub use core::time::Duration;
}
