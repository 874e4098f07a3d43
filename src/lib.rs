//! # optimize
//!
//! One attribute turns an ordinary function into a managed one: its results are cached, its
//! calls are measured, and (as the project grows) its body runs on the pool that fits its kind.
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
//! | `capacity = N` | maximum entries in the in-process cache; default 10 000 |
//! | `key = <expr>` | hash this expression instead of the arguments |
//! | `skip(arg, ...)` | leave these arguments (or `self`) out of the key |
//! | `name = "..."` | the function's name in statistics and keys; default `module::path::fn` |
//! | `version = N` | part of every key: bump it to retire old entries |
//! | `tiers = "l1,l2,l3"` | which cache tiers (default: every configured tier for serializable values) |
//! | `l2_ttl`, `l3_ttl` | expiry in one shared tier, where it differs from `ttl` |
//! | `compress_above = "4KiB"` | zstd threshold for shared-tier entries (default 1 KiB) |
//! | `cache = false` | measure every call, never cache (no key, no `Clone` needed) |
//! | `crate = "path"` | where the `optimize` crate is, if renamed |
//!
//! Every kind currently runs its body in place, in the caller's thread or task; routing to
//! dedicated pools arrives with the pools work. See `docs/macro.md` for the full reference,
//! and `docs/tiers.md` for L2 (Redis) and L3 (sled): they are on when configured, e.g. with
//! `OPTIMIZE_REDIS_URL` and `OPTIMIZE_L3_DIR`, or with [`init`] and [`TierConfig`]. Call
//! [`shutdown`] before exiting so that no queued write is lost.
//!
//! ## Generated companions
//!
//! For a function `f`, the attribute also generates, with `f`'s visibility:
//! `f_cache() -> &'static optimize::Site` (statistics, size, `invalidate_all()`) and
//! `f_invalidate(<f's arguments>) -> bool` (removes one entry).

// Lets generated code say `::optimize::...` even inside this crate.
extern crate self as optimize;

pub use optimize_macros::{cpu, io, memory, optimize};
pub use optimize_runtime::{cache, config, flight, key, monitor, policy, pool, stats, time};
pub use optimize_runtime::{
    flush, init, namespace, shutdown, shutdown_within, site, sites, AlreadyInitialized, Histogram,
    Kind, Outcome, Priority, Site, Task, TaskError, TaskHandle, TaskStatus, TierConfig, TimedOut,
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
