//! The one owner of process state: the resolved configuration, the clock, the registry of
//! managed functions, the shared tiers, the pools and the monitor.
//!
//! It is created once, by [`install`] or lazily by the first managed call, and nothing below
//! it looks it up: each part is handed what it needs when the runtime builds it (sites get
//! the clock, tiers and pools; the memory budget gets a purge hook; the monitor gets its
//! sources). docs/architecture.md draws the layers.
//!
//! ```
//! use optimize::config::{Config, Level};
//!
//! let guard = optimize::install(Config::builder().without_file().level(Level::Basic))
//!     .expect("valid configuration, installed once before any managed call");
//! assert_eq!(guard.runtime().config().level, Level::Basic);
//! // Dropping the guard at the end of `main` flushes queued writes and stops the pools.
//! ```

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use crate::cache::backplane::{Remote, RemoteHook};
use crate::cache::tiered::Tiers;
use crate::cache::writeback::WriteOp;
use crate::config::{Config, ConfigBuilder, ConfigError, Problem};
use crate::monitor::alert::Rule;
use crate::monitor::{Health, Monitor, MonitorError, Snapshot, Sources};
use crate::pool::{Pools, ShutdownReport};
use crate::registry::{self, Registry, FUNCTIONS};
use crate::site::{Settings, Site, SiteEnv};
use crate::time::Clock;

/// The process's optimize runtime. Reach it with [`runtime`] or [`Runtime::current`].
pub struct Runtime {
    config: Config,
    l1_budget: Option<Arc<crate::cache::budget::L1Budget>>,
    registry: Arc<Registry>,
    tiers: Arc<Tiers>,
    pools: Arc<Pools>,
    monitor: Option<Arc<Monitor>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .field("tiers", &self.tiers)
            .field("monitor", &self.monitor)
            .finish_non_exhaustive()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
/// Serialises the two ways of creating the runtime (install and the lazy default), so the
/// tiers, pools and monitor are started once.
static STARTING: Mutex<()> = Mutex::new(());

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The configuration is invalid (every problem, each naming its source and key).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The runtime exists already: installed before, or started lazily by a managed call.
    #[error("optimize is already running (installed earlier, or started lazily by the first managed call); install once, at start-up, before any managed function runs")]
    AlreadyInstalled,
    /// The monitor could not start (its HTTP address is taken, say).
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    /// The CPU pool's threads cannot be started (`pools.cpu_threads` beyond what the system
    /// allows, say).
    #[error(
        "cannot start the CPU pool's threads (pools.cpu_threads): {0}; lower pools.cpu_threads"
    )]
    Pools(rayon::ThreadPoolBuildError),
}

/// Resolves `builder` (defaults ← level ← file ← environment ← builder), checks it against
/// every managed function, and starts the runtime with it: the shared tiers, the pools and,
/// when configured, the monitor. Once per process, before any managed function runs.
///
/// Returns a guard: dropping it flushes queued shared-tier writes and shuts the pools and
/// monitor down (as [`shutdown`] does), so keep it alive for the life of `main`.
///
/// ```no_run
/// use optimize::config::{Config, Level};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _optimize = optimize::install(Config::builder().level(Level::Ultra))?;
///     // ... the application ...
///     Ok(())
/// }
/// ```
pub fn install(builder: ConfigBuilder) -> Result<RuntimeGuard, InstallError> {
    let _one = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if RUNTIME.get().is_some() {
        return Err(InstallError::AlreadyInstalled);
    }
    let config = builder.resolve()?;
    let problems = unknown_functions(&config);
    if !problems.is_empty() {
        return Err(ConfigError(problems).into());
    }
    let runtime = Runtime::start(config, true)?;
    if RUNTIME.set(runtime).is_err() {
        unreachable!("the runtime is only set while STARTING is held, and was checked unset");
    }
    Ok(RuntimeGuard { _private: () })
}

/// The runtime: the installed one, or the lazy default started now (from defaults, the
/// level, the file and the environment) when nothing was installed.
///
/// The lazy default never fails: an invalid configuration is reported (to the tracing
/// subscriber, or to stderr when none is listening) and the defaults are used. Install the
/// configuration at start-up to fail fast instead.
///
/// ```
/// #[optimize::io]
/// fn answer() -> u32 {
///     42
/// }
///
/// // Every managed function is known before its first call.
/// assert!(optimize::runtime().sites().iter().any(|s| s.path().ends_with("::answer")));
/// ```
#[inline]
pub fn runtime() -> &'static Runtime {
    match RUNTIME.get() {
        Some(rt) => rt,
        None => start_lazily(),
    }
}

#[cold]
fn start_lazily() -> &'static Runtime {
    let _one = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = RUNTIME.get() {
        return rt;
    }
    let config = ConfigBuilder::default()
        .resolve_as(false)
        .and_then(|config| match unknown_functions(&config) {
            problems if problems.is_empty() => Ok(config),
            problems => Err(ConfigError(problems)),
        })
        .unwrap_or_else(|e| {
            report_lazy_problem(&e);
            ConfigBuilder::default()
                .without_file()
                .environment(Vec::<(String, String)>::new())
                .resolve_as(false)
                .unwrap_or_default()
        });
    let runtime = match Runtime::start(config, false) {
        Ok(runtime) => runtime,
        Err(e) => unreachable!("a lazily started runtime reports its problems instead: {e}"),
    };
    RUNTIME.get_or_init(|| runtime)
}

/// An invalid configuration found by the lazy default: logged, and printed to stderr once
/// when no tracing subscriber would show it.
fn report_lazy_problem(e: &ConfigError) {
    tracing::error!(error = %e, "optimize: using the default configuration");
    if !tracing::dispatcher::has_been_set() {
        eprintln!("optimize: using the default configuration because: {e}");
    }
}

/// A `[functions."path"]` table or builder override that names no managed function, or
/// asks what the function cannot do.
fn unknown_functions(config: &Config) -> Vec<Problem> {
    let metas: Vec<_> = FUNCTIONS.iter().collect();
    let candidates: Vec<String> = metas.iter().map(|m| registry::shown_path(m)).collect();
    let mut problems = config.unknown_functions(
        |path| metas.iter().any(|m| registry::may_be_path_of(m, path)),
        &candidates,
    );
    problems.extend(config.function_misuse(|path| {
        metas
            .iter()
            .copied()
            .find(|m| registry::may_be_path_of(m, path))
    }));
    problems
}

impl Runtime {
    /// The runtime if it has started (installed or lazily), without starting it.
    pub fn current() -> Option<&'static Runtime> {
        RUNTIME.get()
    }

    /// Starts every part from `config`. `strict`: a monitor that cannot start is an error
    /// (install) rather than a logged problem (the lazy default).
    fn start(config: Config, strict: bool) -> Result<Self, InstallError> {
        let clock = config.clock.clone();
        crate::stats::set_recording(config.recording);
        crate::spans::set_span_level(config.spans);
        crate::stats::set_slow_call_threshold(config.slow_call);
        // Other instances' invalidations reach L1 through the registry, which the tiers must
        // not know: it is handed to their hook once it exists (before that, L1 is empty).
        let remote_target: Arc<OnceLock<Weak<Registry>>> = Arc::default();
        let hook_registry = remote_target.clone();
        let remote: RemoteHook = Arc::new(move |remote| {
            if let Some(registry) = hook_registry.get().and_then(Weak::upgrade) {
                registry.apply_remote(remote);
            }
        });
        let tiers = Tiers::start(config.tier_config(), clock.clone(), Some(remote));
        // The memory budget purges expired entries under pressure; the registry, which it
        // must not know, is handed to its hook once it exists.
        let purge_target: Arc<OnceLock<Weak<Registry>>> = Arc::default();
        let hook_target = purge_target.clone();
        let purge: crate::pool::PurgeHook = Box::new(move || {
            hook_target
                .get()
                .and_then(Weak::upgrade)
                .map_or(0, |r| r.purge_expired())
        });
        let pools = if strict {
            match Pools::try_start(&config.pools, purge) {
                Ok(pools) => pools,
                Err(e) => {
                    tiers.shutdown();
                    return Err(InstallError::Pools(e));
                }
            }
        } else {
            Pools::start(&config.pools, purge)
        };
        let l1_budget = config
            .l1_max_size
            .map(|limit| Arc::new(crate::cache::budget::L1Budget::new(limit)));
        let env = SiteEnv {
            clock: clock.clone(),
            tiers: tiers.clone(),
            pools: pools.clone(),
            l1_budget: l1_budget.clone(),
        };
        let defaults = config.fn_defaults();
        let overrides = config.functions.clone();
        let registry = Arc::new(Registry::new(
            FUNCTIONS.iter(),
            Box::new(move |meta, path, owner| {
                // A table names a generic impl's method without its type arguments, or with.
                let o = overrides
                    .get(&path)
                    .or_else(|| overrides.get(&registry::without_generics(&path)))
                    .cloned()
                    .unwrap_or_default();
                let settings = Settings::resolve(meta, &o, &defaults);
                Site::new(meta, path, owner, settings, env.clone())
            }),
        ));
        let _ = purge_target.set(Arc::downgrade(&registry));
        let _ = remote_target.set(Arc::downgrade(&registry));
        let monitor = if config.monitor_enabled {
            let sources = Sources {
                registry: registry.clone(),
                tiers: tiers.clone(),
                pools: pools.clone(),
                clock,
                l1_budget: l1_budget.clone(),
            };
            match Monitor::start(config.monitor_config(), sources) {
                Ok(monitor) => Some(monitor),
                Err(e) if strict => {
                    pools.shutdown(Duration::ZERO);
                    tiers.shutdown();
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::error!(error = %e, "optimize: the monitor did not start");
                    None
                }
            }
        } else {
            None
        };
        Ok(Self {
            config,
            l1_budget,
            registry,
            tiers,
            pools,
            monitor,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock of expiry and timing.
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// Every managed function's site, sorted by path. Functions are known before their first
    /// call; a method with a receiver joins at its first call (its path names its type).
    pub fn sites(&self) -> Vec<&'static Site> {
        self.registry.sites()
    }

    /// The managed function with this path (see [`Site::path`]).
    pub fn site(&self, path: &str) -> Option<&'static Site> {
        self.registry.site(path)
    }

    /// The registry of managed functions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The shared tiers (L2, L3 and the write-behind queue).
    pub fn tiers(&self) -> &Arc<Tiers> {
        &self.tiers
    }

    /// The pools.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The monitor, when the configuration turns it on.
    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.as_ref()
    }

    /// What the monitor reads.
    pub fn sources(&self) -> Sources {
        Sources {
            registry: self.registry.clone(),
            tiers: self.tiers.clone(),
            pools: self.pools.clone(),
            clock: self.config.clock.clone(),
            l1_budget: self.l1_budget.clone(),
        }
    }

    /// The process-wide L1 byte budget (`l1.max_size`), when configured.
    pub fn l1_budget(&self) -> Option<&crate::cache::budget::L1Budget> {
        self.l1_budget.as_deref()
    }

    /// Every metric now: the monitor's view (with system metrics and alert states) when it
    /// runs, else functions, tiers, pools and user metrics.
    pub fn snapshot(&self) -> Snapshot {
        match &self.monitor {
            Some(m) => m.snapshot(),
            None => self.sources().snapshot(),
        }
    }

    /// Health of tiers, pools and alerts now.
    pub fn health(&self) -> Health {
        match &self.monitor {
            Some(m) => m.health(),
            None => Health::check(&self.sources(), &[]),
        }
    }

    /// The alert rules in force (none without the monitor).
    pub fn rules(&self) -> Vec<Rule> {
        self.monitor.as_ref().map(|m| m.rules()).unwrap_or_default()
    }

    /// The prefix of every shared-tier key.
    pub fn namespace(&self) -> &str {
        &self.tiers.config().namespace
    }

    /// Retires every cached entry carrying `tag` (see the `tags` option), in every tier of
    /// every instance: this process's L1 at once; L2 and L3 by raising the tag's generation
    /// (in Redis, or in L3 without Redis) so entries stamped with the old one are refused;
    /// other instances' L1 through the backplane. Returns once the generation is raised
    /// (blocking under `block_in_place` on a multi-thread tokio worker; see
    /// [`Runtime::invalidate_tag_async`]).
    pub fn invalidate_tag(&self, tag: &str) {
        if self.start_invalidate_tag(tag) {
            crate::pool::blocking(|| crate::time::block_on(self.tiers.barrier()));
        }
    }

    /// [`Runtime::invalidate_tag`] for async code: awaits instead of blocking.
    pub async fn invalidate_tag_async(&self, tag: &str) {
        if self.start_invalidate_tag(tag) {
            self.tiers.barrier().await;
        }
    }

    /// Retires every cached entry of every managed function, in every tier of every instance
    /// sharing the namespace: this process's L1 at once; L2 by raising the namespace's
    /// generation (one `INCR`); this process's L3 by removing the namespace's entries; other
    /// instances' L1 and L3 through the backplane. Returns once that is done (blocking as
    /// [`Runtime::invalidate_tag`] does).
    pub fn invalidate_everything(&self) {
        if self.start_invalidate_everything() {
            crate::pool::blocking(|| crate::time::block_on(self.tiers.barrier()));
        }
    }

    /// [`Runtime::invalidate_everything`] for async code: awaits instead of blocking.
    pub async fn invalidate_everything_async(&self) {
        if self.start_invalidate_everything() {
            self.tiers.barrier().await;
        }
    }

    fn start_invalidate_everything(&self) -> bool {
        self.registry.apply_remote(Remote::Everything);
        self.tiers.enqueue(WriteOp::InvalidateEverything {
            prefix: format!("{}:", self.namespace()),
            generation_key: self.tiers.everything_generation_key(),
        })
    }

    /// Clears L1 and queues the generation's raise; whether there is anything to wait for.
    fn start_invalidate_tag(&self, tag: &str) -> bool {
        self.registry.start_invalidate_tag(&self.tiers, tag)
    }

    /// Applies every queued shared-tier write and puts L3 on disk (under `block_in_place`
    /// on a multi-thread tokio worker; see [`Runtime::flush_async`]).
    pub fn flush(&self) {
        crate::pool::blocking(|| self.tiers.flush_blocking());
    }

    /// [`Runtime::flush`] for async code: awaits instead of blocking.
    pub async fn flush_async(&self) {
        self.tiers.flush().await;
    }

    /// Stops the pools' admission, waits up to `deadline` for admitted calls and submitted
    /// tasks, cancels the tasks still running, then flushes the shared tiers, stops their
    /// background work and stops the monitor.
    ///
    /// It blocks (under `block_in_place` on a multi-thread tokio worker); in async code on a
    /// current-thread runtime, use [`Runtime::shutdown_async`].
    pub fn shutdown_within(&self, deadline: Duration) -> ShutdownReport {
        crate::pool::blocking(|| {
            let report = self.pools.shutdown(deadline);
            self.tiers.shutdown();
            if let Some(monitor) = &self.monitor {
                monitor.stop();
            }
            report
        })
    }

    /// [`Runtime::shutdown_within`] for async code: the waiting happens on a thread of its
    /// own while the caller's task awaits, so the caller's runtime keeps running.
    pub async fn shutdown_async(&'static self, deadline: Duration) -> ShutdownReport {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("optimize-shutdown".into())
            .spawn(move || {
                let _ = tx.send(self.shutdown_within(deadline));
            });
        match spawned {
            Ok(_) => match rx.await {
                Ok(report) => report,
                Err(_) => unreachable!("the shutdown thread always reports"),
            },
            // No thread to be had: shut down here, blocking.
            Err(_) => self.shutdown_within(deadline),
        }
    }
}

/// Returned by [`install`]: dropping it flushes queued writes and shuts the runtime down
/// (the convention of `tracing-appender`'s `WorkerGuard`). Keep it alive for as long as the
/// application runs: `let _guard = ...`, not `let _ = ...`.
#[must_use = "dropping the guard shuts optimize down at once; bind it: `let _optimize = optimize::install(..)?;`"]
#[derive(Debug)]
pub struct RuntimeGuard {
    _private: (),
}

impl RuntimeGuard {
    /// The runtime this guard shuts down.
    pub fn runtime(&self) -> &'static Runtime {
        runtime()
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        shutdown();
    }
}

/// What `#[optimize::main]` holds for the function it is on: dropping it shuts optimize down
/// (as [`shutdown`] does) if it has started. Not for direct use; keep the [`install`] guard
/// instead when installing.
#[doc(hidden)]
#[derive(Debug)]
pub struct ExitGuard {
    _private: (),
}

impl ExitGuard {
    /// A guard for the function now starting.
    pub fn new() -> Self {
        Self { _private: () }
    }
}

impl Default for ExitGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if RUNTIME.get().is_some() {
            shutdown();
        }
    }
}

/// Applies every queued shared-tier write and puts L3 on disk. A no-op before the runtime
/// has started.
///
/// ```
/// optimize::flush();
/// ```
pub fn flush() {
    if let Some(rt) = RUNTIME.get() {
        rt.flush();
    }
}

/// Retires every cached entry carrying `tag`, in every tier of every instance (see
/// [`Runtime::invalidate_tag`]). Starts the runtime's lazy default if nothing was installed.
///
/// ```
/// #[optimize::io(tags = ["user:{id}"])]
/// fn profile(id: u64) -> String {
///     format!("profile {id}")
/// }
///
/// profile(42);
/// assert_eq!(profile_cache().len(), 1);
/// optimize::invalidate_tag("user:42");
/// assert_eq!(profile_cache().len(), 0);
/// ```
pub fn invalidate_tag(tag: &str) {
    runtime().invalidate_tag(tag);
}

/// Retires every cached entry of every managed function, in every tier of every instance
/// (see [`Runtime::invalidate_everything`]). Starts the runtime's lazy default if nothing was
/// installed.
///
/// ```
/// #[optimize::io]
/// fn greeting(name: String) -> String {
///     format!("hello {name}")
/// }
///
/// greeting("ada".into());
/// optimize::invalidate_everything();
/// assert_eq!(greeting_cache().len(), 0);
/// ```
pub fn invalidate_everything() {
    runtime().invalidate_everything();
}

/// [`invalidate_everything`] for async code.
pub async fn invalidate_everything_async() {
    runtime().invalidate_everything_async().await;
}

/// [`invalidate_tag`] for async code.
pub async fn invalidate_tag_async(tag: &str) {
    runtime().invalidate_tag_async(tag).await;
}

/// [`Runtime::flush_async`] on the runtime, if it has started.
pub async fn flush_async() {
    if let Some(rt) = RUNTIME.get() {
        rt.flush_async().await;
    }
}

/// [`Runtime::shutdown_async`] on the runtime, if it has started.
pub async fn shutdown_async(deadline: Duration) -> ShutdownReport {
    match RUNTIME.get() {
        Some(rt) => rt.shutdown_async(deadline).await,
        None => ShutdownReport::NOTHING_RUNNING,
    }
}

/// [`shutdown_within`] with a 10-second deadline.
///
/// ```
/// optimize::shutdown();
/// ```
pub fn shutdown() -> ShutdownReport {
    shutdown_within(Duration::from_secs(10))
}

/// Stops the pools' admission, waits up to `deadline` for admitted calls and submitted tasks,
/// cancels the tasks still running, then flushes the shared tiers and stops their background
/// work and the monitor. Call it (or drop the [`install`] guard) before the process exits so
/// that no queued write is lost. A no-op before the runtime has started.
///
/// Managed functions keep working afterwards: their bodies run in place in the caller, and
/// shared-tier writes are dropped (and counted). New tasks are rejected.
///
/// ```
/// let report = optimize::shutdown_within(std::time::Duration::from_secs(1));
/// assert!(report.drained);
/// ```
pub fn shutdown_within(deadline: Duration) -> ShutdownReport {
    match RUNTIME.get() {
        Some(rt) => rt.shutdown_within(deadline),
        None => ShutdownReport::NOTHING_RUNNING,
    }
}
