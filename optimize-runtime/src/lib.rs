//! Runtime of the `optimize` attribute: keys, cache tiers, single-flight, pools, the monitor
//! and the configuration, owned by one [`Runtime`].
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
//!
//! Layers, from the top (docs/architecture.md): the call engine (`call`) and [`task`] →
//! [`runtime`](mod@runtime) → [`config`] → [`monitor`] → [`registry`] → [`site`](mod@site) → [`cache`], [`pool`] →
//! [`flight`], [`stats`], [`codec`], [`key`], [`policy`], [`predict`] → [`meta`], [`time`]. A module uses
//! only modules below it.

pub mod cache;
mod call;
pub mod codec;
pub mod config;
pub mod flight;
#[cfg(test)]
mod fuzz;
pub mod key;
pub mod meta;
pub mod monitor;
pub mod policy;
pub mod pool;
pub mod predict;
pub mod registry;
pub mod runtime;
pub mod site;
pub mod spans;
pub mod stats;
pub mod task;
pub mod time;
pub mod warm;

pub use meta::{Kind, Level, PredictModel, Priority, Tier, TierSet};
pub use pool::io::TimedOut;
pub use pool::Rejected;
pub use runtime::{
    flush, flush_async, install, invalidate_everything, invalidate_everything_async,
    invalidate_tag, invalidate_tag_async, runtime, shutdown, shutdown_async, shutdown_within,
    InstallError, Runtime, RuntimeGuard,
};
pub use site::Site;
pub use stats::{FnStats, Histogram, Outcome};
pub use task::{Task, TaskError, TaskHandle, TaskStatus};
pub use warm::{WarmProgress, Warming};

/// Every managed function's site, sorted by path (see [`Runtime::sites`]). Starts the
/// runtime's lazy default when nothing was installed, as a managed call would.
///
/// ```
/// #[optimize::cpu]
/// fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// // Listed before its first call.
/// assert!(optimize::functions().iter().any(|s| s.path().ends_with("::double")));
/// ```
pub fn functions() -> Vec<&'static Site> {
    runtime().sites()
}

/// The managed function with this path (see [`Site::path`]).
pub fn site(path: &str) -> Option<&'static Site> {
    runtime().site(path)
}

/// What generated code calls. Not part of the public API: no semver promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::cache::generations::tag_hash_fmt;
    pub use crate::cache::shared::{codec_probe, require_shared, NoCodecProbe, SerdeCodecProbe};
    pub use crate::call::SiteSlot;
    pub use crate::key::{
        type_schema, type_schema_of, ArgsKey, JsonArgs, JsonArgsDecode, JsonArgsRefuse, JsonKeyFn,
        KeyHasher, KeyPart,
    };
    pub use crate::meta::{Kind, Level, PredictModel, Priority, SiteMeta};
    pub use crate::policy::{OptionProbe, Probe, ResultProbe, ValueProbe};
    pub use crate::pool::io::{RetryOutput, TimeoutOutput};
    pub use crate::pool::{CanReject, RejectProbe, WaitsInstead};
    pub use crate::predict::{Step, Stepper};
    pub use crate::registry::FUNCTIONS;
    pub use crate::runtime::ExitGuard;
    pub use core::time::Duration;
    pub use linkme;
    pub use serde_json::Value as JsonValue;
}
