//! # optimize
//!
//! One attribute turns an ordinary function into a managed one: its results are cached, its
//! calls are measured, and its body runs on the pool that fits its kind.
//!
//! ```
//! #[optimize::io(ttl = "5m", capacity = 10_000)]
//! fn fetch_user(id: u64) -> Result<String, std::io::Error> {
//!     Ok(format!("user-{id}")) // imagine a remote call here
//! }
//!
//! assert_eq!(fetch_user(7).unwrap(), "user-7"); // runs the body
//! assert_eq!(fetch_user(7).unwrap(), "user-7"); // served from the cache
//! assert_eq!(fetch_user_cache().stats().hits(), 1);
//! fetch_user_invalidate(7); // the next call runs the body again
//! ```
//!
//! ## Spelling
//!
//! The attribute is always written with its crate as the path: `#[optimize::io(...)]`,
//! `#[optimize::cpu(...)]`, `#[optimize::memory(...)]`, or the general
//! `#[optimize::optimize(io, ...)]`. A bare `#[optimize]` cannot work: rustc reserves
//! `optimize` as a built-in attribute (the unstable `#[optimize(size|speed)]`), and a macro
//! imported under that name is rejected as ambiguous (E0659).
//!
//! ## Options
//!
//! | option | meaning |
//! |---|---|
//! | `ttl = "30s"` | how long a result stays valid (humantime syntax); default: until evicted |
//! | `capacity = N` | maximum entries in the in-process cache (bytes for `memory`); default 10 000 |
//! | `key = <expr>` | hash this expression instead of the arguments |
//! | `skip(arg, ...)` | leave these arguments (or `self`) out of the key |
//! | `name = "..."` | the function's name in statistics and keys; default `module::path::fn` |
//! | `version = N` | part of every key: bump it to retire old entries |
//! | `tiers = "l1,l2,l3"` | which cache tiers (default: every configured tier for serializable values) |
//! | `l2_ttl`, `l3_ttl` | expiry in one shared tier, where it differs from `ttl` |
//! | `compress_above = "4KiB"` | zstd threshold for shared-tier entries (default 1 KiB) |
//! | `level = "basic"` | this function's optimization level (default: the global level) |
//! | `priority = "high"` | where calls queue at the CPU pool, io limits or memory budget |
//! | `concurrency = N` | io: calls of this function running at once |
//! | `timeout = "2s"` | async io: deadline of each attempt |
//! | `retries = N`, `backoff = "100ms"` | io: extra attempts after an `Err`, with exponential backoff |
//! | `mem = "256MiB"` | memory: bytes each call reserves from the memory budget |
//! | `cache = false` | measure every call, never cache (no key, no `Clone` needed) |
//! | `crate = "path"` | where the `optimize` crate is, if renamed |
//!
//! Bodies run where their kind says: `io` in the caller under the io limits, `cpu` on a
//! dedicated CPU pool, `memory` once the memory budget admits them (`docs/pools.md`). See
//! `docs/macro.md` for the full reference, `docs/tiers.md` for L2 (Redis) and L3 (sled), and
//! `docs/configuration.md` for the configuration.
//!
//! ## Starting
//!
//! Install the configuration once, at the top of `main`, and keep the guard: dropping it
//! flushes queued shared-tier writes and shuts the pools down. Without an install, the first
//! managed call starts the same runtime from `optimize.toml` and `OPTIMIZE_*` variables.
//!
//! ```no_run
//! use optimize::config::{Config, Level};
//!
//! fn main() -> Result<(), optimize::InstallError> {
//!     let _optimize = optimize::install(Config::builder().level(Level::Ultra))?;
//!     // ... the application ...
//!     Ok(())
//! }
//! ```
//!
//! ## Generated companions
//!
//! For a function `f`, the attribute also generates, with `f`'s visibility:
//! `f_cache() -> &'static optimize::Site` (statistics, size, `invalidate_all()`) and
//! `f_invalidate(<f's arguments>) -> bool` (removes one entry).

// Lets generated code say `::optimize::...` even inside this crate.
extern crate self as optimize;

pub use optimize_macros::{cpu, io, main, memory, optimize};
pub use optimize_runtime::{
    cache, codec, config, flight, key, meta, monitor, policy, pool, predict, registry, spans,
    stats, task, time, warm,
};
pub use optimize_runtime::{
    flush, flush_async, functions, install, invalidate_everything, invalidate_everything_async,
    invalidate_tag, invalidate_tag_async, runtime, shutdown, shutdown_async, shutdown_within, site,
    Histogram, InstallError, Kind, Level, Outcome, PredictModel, Priority, Rejected, Runtime,
    RuntimeGuard, Site, Task, TaskError, TaskHandle, TaskStatus, Tier, TierSet, TimedOut,
    WarmProgress, Warming,
};

/// Statistics of one managed function; see [`Site::stats`].
pub use optimize_runtime::FnStats;

#[doc(hidden)]
pub use optimize_runtime::__private;

// The examples in docs/ are compiled and run as doctests, so the documentation cannot drift
// from the code.
#[cfg(doctest)]
#[doc = include_str!("../docs/macro.md")]
struct MacroDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/getting-started.md")]
struct GettingStartedDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/tiers.md")]
struct TiersDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/pools.md")]
struct PoolsDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/metrics.md")]
struct MetricsDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/alerts.md")]
struct AlertsDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/configuration.md")]
struct ConfigurationDocs;

#[cfg(doctest)]
#[doc = include_str!("../docs/resilience.md")]
struct ResilienceDocs;
