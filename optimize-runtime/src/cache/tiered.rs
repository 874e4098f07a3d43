//! [`Tiers`]: the shared tiers (L2, L3) and the write-behind queue, on a small background
//! runtime of their own so that sync functions on plain threads can use Redis too.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::cache::backplane::{BackplaneStats, Channel, Listener, RemoteHook};
use crate::cache::generations::Generations;
use crate::cache::l2_redis::{lease_channel, L2Result, RedisOptions, RedisTier, RedisUrl};
use crate::cache::l3_sled::SledTier;
use crate::cache::lease::{LeaseState, LeaseStats, LeaseWaiters};
use crate::cache::redis_conn::Endpoint;
use crate::cache::writeback::{Announcer, WriteBack, WriteOp};
use crate::cache::{Tier, TierCounters};
use crate::codec::EnvelopeOptions;
use crate::time::{block_on, unix_ms, Clock};

/// What the tiers' Redis operations return. Boxed here, so the generic code that awaits them
/// (each function's store) does not compile their state machines and the tokio task code
/// they spawn again in every user crate: rustc builds an upstream `async fn`'s body in each
/// crate that awaits it from generic code (docs/architecture.md, "Compile time"). One
/// allocation beside a Redis round trip.
pub type TierFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Spawns `task` on `handle` as a boxed future, so the tokio task code is compiled once here
/// and not once per spawning closure in generic code (see [`TierFuture`]).
#[inline]
pub(crate) fn spawn_boxed(
    handle: &tokio::runtime::Handle,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    spawn_dyn(handle, Box::pin(task));
}

fn spawn_dyn(handle: &tokio::runtime::Handle, task: TierFuture<'static, ()>) {
    handle.spawn(task);
}

/// An L2 value's bytes (if any) and the generations read beside it (if they could be).
pub type Stamped = (Option<Vec<u8>>, Option<Vec<u64>>);

/// [`Stamped`] and the key's lease, taken in the same round trip when the value is absent.
pub type StampedLeased = (Option<Vec<u8>>, Option<Vec<u64>>, LeaseState);

/// Settings of the L3 tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L3Options {
    /// Directory of the sled database.
    pub dir: PathBuf,
    /// Size cap enforced by the sweeper (keys + values).
    pub max_bytes: u64,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// Warm restart: entries per function copied from L3 into L1 when the function's cache
    /// is created (its first call), newest first; 0: none.
    pub warm_l1: usize,
}

/// Settings of the shared tiers.
#[derive(Clone, Debug)]
pub struct TierConfig {
    /// Prefix of every shared-tier key.
    pub namespace: String,
    /// L2; `None` leaves it off.
    pub redis: Option<RedisOptions>,
    /// L3; `None` leaves it off.
    pub l3: Option<L3Options>,
    /// Which shared tier a miss in L1 asks first.
    pub order: [Tier; 2],
    /// Puts the write-behind queue holds before it drops new ones.
    pub writeback_capacity: usize,
    /// Envelope limits and compression.
    pub envelope: EnvelopeOptions,
    /// Announce invalidations to, and apply those of, every instance sharing the namespace in
    /// Redis (only with L2).
    pub backplane: bool,
}

impl TierConfig {
    /// Default L3 size cap: 1 GiB.
    pub const DEFAULT_L3_MAX_BYTES: u64 = 1 << 30;
    /// Default prefix of shared-tier keys.
    pub const DEFAULT_NAMESPACE: &'static str = "optimize";
    /// Default capacity of the write-behind queue (puts).
    pub const DEFAULT_WRITEBACK_CAPACITY: usize = 10_000;
    /// Default interval of the L3 sweeper.
    pub const DEFAULT_L3_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

    /// Only L1: no shared tiers.
    pub fn l1_only() -> Self {
        Self {
            namespace: Self::DEFAULT_NAMESPACE.into(),
            redis: None,
            l3: None,
            order: [Tier::L2, Tier::L3],
            writeback_capacity: Self::DEFAULT_WRITEBACK_CAPACITY,
            envelope: EnvelopeOptions::default(),
            backplane: true,
        }
    }

    /// Adds L2 at `url` with default timeouts.
    pub fn with_redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisOptions::new(RedisUrl::new(url)));
        self
    }

    /// Adds L3 in `dir` with the default size cap.
    pub fn with_l3(mut self, dir: impl Into<PathBuf>) -> Self {
        self.l3 = Some(L3Options {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_L3_MAX_BYTES,
            sweep_interval: Self::DEFAULT_L3_SWEEP_INTERVAL,
            warm_l1: 0,
        });
        self
    }

    /// The default L3 directory: `$XDG_CACHE_HOME/optimize/<program>`, else
    /// `$HOME/.cache/optimize/<program>`, else `./.optimize-cache/<program>`, where `<program>`
    /// is the executable's file stem.
    pub fn default_l3_dir() -> PathBuf {
        let program = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into());
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("optimize"))
            .unwrap_or_else(|| PathBuf::from(".optimize-cache"));
        base.join(program)
    }
}

/// Point-in-time state of the shared tiers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TiersStatus {
    /// L2 configured.
    pub l2_enabled: bool,
    /// L2 connected at least once.
    pub l2_connected: bool,
    /// An L2 breaker not closed (on a cluster: the one of some slots).
    pub l2_circuit_open: bool,
    /// How many times an L2 breaker opened.
    pub l2_breaker_opened: u64,
    /// L3 configured and not disabled by an error.
    pub l3_enabled: bool,
    /// Puts waiting in the write-behind queue.
    pub writeback_depth: usize,
    /// Puts dropped because the queue was full.
    pub writeback_dropped: u64,
    /// Deletions Redis missed (outage), waiting to be replayed when it answers.
    pub invalidations_pending: usize,
    /// Deletions replayed after an outage.
    pub invalidations_replayed: u64,
    /// Missed deletions given up because too many were waiting.
    pub invalidations_dropped: u64,
    /// L2 writes Redis did not take, waiting to be written once it answers.
    pub writes_unwritten: usize,
    /// Of those, written once Redis answered again.
    pub writes_rewritten: u64,
    /// Of those, given up (too many waiting).
    pub writes_unwritten_dropped: u64,
    /// The backplane runs (L2 configured and `l2.backplane` on).
    pub backplane_enabled: bool,
    /// The backplane is reading the stream now.
    pub backplane_connected: bool,
    /// Invalidations this instance announced.
    pub backplane_sent: u64,
    /// Invalidations of other instances applied here.
    pub backplane_received: u64,
    /// Times this instance may have missed invalidations and cleared L1 and its L3.
    pub backplane_gaps: u64,
    /// What the Redis user may not do that the tiers need (empty when all is allowed).
    pub l2_missing_rights: Vec<String>,
}

/// The shared tiers and their write-behind queue.
pub struct Tiers {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// The background runtime's handle and the write-behind queue: only when a shared tier is
    /// configured, so an application with L1 alone starts no thread.
    background: Option<Background>,
    l2: Option<Arc<RedisTier>>,
    l3: Option<Arc<SledTier>>,
    config: TierConfig,
    l2_counters: TierCounters,
    l3_counters: TierCounters,
    backplane: Option<Arc<BackplaneStats>>,
    generations: Arc<Generations>,
    /// Waiters for other instances' leases (when L2 runs with leases on).
    lease_waiters: Option<Arc<LeaseWaiters>>,
    lease_stats: Arc<LeaseStats>,
}

impl std::fmt::Debug for Tiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiers")
            .field("namespace", &self.config.namespace)
            .field("l2", &self.l2)
            .field("l3", &self.l3)
            .finish_non_exhaustive()
    }
}

struct Background {
    handle: tokio::runtime::Handle,
    writeback: WriteBack,
}

impl Tiers {
    /// Starts the tiers: opens L3, starts connecting to L2 in the background, starts the
    /// write-behind drainer and the L3 sweeper. Never fails: a tier that cannot start is off
    /// (and says so in the log). `clock` times operations and drives the L2 breaker; `remote`
    /// applies other instances' invalidations to L1 (the backplane runs only with it).
    pub fn start(config: TierConfig, clock: Clock, remote: Option<RemoteHook>) -> Arc<Self> {
        let l2_counters = TierCounters::new(Tier::L2);
        let l3_counters = TierCounters::new(Tier::L3);
        if config.redis.is_none() && config.l3.is_none() {
            return Arc::new(Self {
                runtime: Mutex::new(None),
                background: None,
                l2: None,
                l3: None,
                config,
                l2_counters,
                l3_counters,
                backplane: None,
                generations: Arc::default(),
                lease_waiters: None,
                lease_stats: Arc::default(),
            });
        }
        // Two workers: while one parses a large value off the bulk connection, the other
        // keeps answering small reads and writes.
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("optimize-tiers")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "optimize: the shared tiers cannot start their runtime; running with L1 only");
                let mut config = config;
                config.redis = None;
                config.l3 = None;
                return Self::start(config, clock, remote);
            }
        };
        let handle = runtime.handle().clone();
        let l2 = config.redis.clone().map(|o| {
            Arc::new(RedisTier::start(
                o,
                l2_counters.clone(),
                clock.clone(),
                config.envelope.max_entry_bytes,
                &config.namespace,
                &handle,
            ))
        });
        let l3 = config.l3.as_ref().map(|o| {
            Arc::new(SledTier::open(
                &o.dir,
                o.max_bytes,
                l3_counters.clone(),
                clock.clone(),
            ))
        });
        if let (Some(l3), Some(o)) = (&l3, &config.l3) {
            handle.spawn(sweep_periodically(l3.clone(), o.sweep_interval));
        }
        let generations: Arc<Generations> = Arc::default();
        let lease_waiters = l2
            .as_ref()
            .filter(|l2| l2.leases().is_some())
            .and_then(|_| Endpoint::new(config.redis.as_ref()?).ok())
            .map(|endpoint| {
                let waiters = Arc::new(LeaseWaiters::default());
                handle.spawn(
                    waiters
                        .clone()
                        .listen(endpoint.node_clients(), lease_channel(&config.namespace)),
                );
                waiters
            });
        let announcer = remote.filter(|_| config.backplane).and_then(|hook| {
            start_backplane(&config, l3.clone(), hook, generations.clone(), &handle)
        });
        let writeback = WriteBack::start(
            config.writeback_capacity,
            l2.clone(),
            l3.clone(),
            announcer.clone(),
            generations.clone(),
            &handle,
        );
        Arc::new(Self {
            runtime: Mutex::new(Some(runtime)),
            background: Some(Background { handle, writeback }),
            l2,
            l3,
            config,
            l2_counters,
            l3_counters,
            backplane: announcer.map(|a| a.stats),
            generations,
            lease_waiters,
            lease_stats: Arc::default(),
        })
    }

    /// The configuration the tiers were started with.
    pub fn config(&self) -> &TierConfig {
        &self.config
    }

    /// Whether a background runtime (connection, write-behind, sweeper) is running: only when
    /// a shared tier is configured, and until [`Tiers::shutdown`].
    pub fn runs_in_background(&self) -> bool {
        self.runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Whether L2 is configured.
    pub fn has_l2(&self) -> bool {
        self.l2.is_some()
    }

    /// Whether L3 is configured and working.
    pub fn has_l3(&self) -> bool {
        self.l3.as_ref().is_some_and(|l3| !l3.is_disabled())
    }

    /// Counters of a shared tier.
    pub fn counters(&self, tier: Tier) -> &TierCounters {
        match tier {
            Tier::L3 => &self.l3_counters,
            _ => &self.l2_counters,
        }
    }

    /// The L2 tier, if configured.
    pub fn l2(&self) -> Option<&Arc<RedisTier>> {
        self.l2.as_ref()
    }

    /// The L3 tier, if configured.
    pub fn l3(&self) -> Option<&Arc<SledTier>> {
        self.l3.as_ref()
    }

    /// The `n` newest L3 entries under `prefix` (raw), read on a blocking thread; none
    /// without L3.
    pub fn l3_newest(
        &self,
        prefix: String,
        n: usize,
    ) -> TierFuture<'static, Vec<(String, sled::IVec)>> {
        let l3 = self.l3.clone();
        Box::pin(async move {
            let Some(l3) = l3 else {
                return Vec::new();
            };
            tokio::task::spawn_blocking(move || l3.newest_with_prefix(&prefix, n))
                .await
                .unwrap_or_default()
        })
    }

    /// Current state, for health checks and metrics.
    pub fn status(&self) -> TiersStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let (depth, dropped, pending, replayed, gave_up) =
            self.background.as_ref().map_or((0, 0, 0, 0, 0), |bg| {
                let wb = bg.writeback.stats();
                (
                    wb.depth.load(Relaxed),
                    wb.dropped.load(Relaxed),
                    wb.invalidations_pending.load(Relaxed),
                    wb.invalidations_replayed.load(Relaxed),
                    wb.invalidations_dropped.load(Relaxed),
                )
            });
        let (unwritten, rewritten, unwritten_dropped) =
            self.background.as_ref().map_or((0, 0, 0), |bg| {
                let wb = bg.writeback.stats();
                (
                    wb.unwritten.load(Relaxed),
                    wb.rewritten.load(Relaxed),
                    wb.unwritten_dropped.load(Relaxed),
                )
            });
        TiersStatus {
            l2_enabled: self.l2.is_some(),
            l2_connected: self.l2.as_ref().is_some_and(|l2| l2.is_connected()),
            l2_circuit_open: self.l2.as_ref().is_some_and(|l2| l2.circuit_open()),
            l2_breaker_opened: self.l2.as_ref().map_or(0, |l2| l2.breaker_opened_total()),
            l3_enabled: self.has_l3(),
            writeback_depth: depth,
            writeback_dropped: dropped,
            invalidations_pending: pending,
            invalidations_replayed: replayed,
            invalidations_dropped: gave_up,
            writes_unwritten: unwritten,
            writes_rewritten: rewritten,
            writes_unwritten_dropped: unwritten_dropped,
            backplane_enabled: self.backplane.is_some(),
            backplane_connected: self.backplane.as_ref().is_some_and(|b| b.connected()),
            backplane_sent: self.backplane.as_ref().map_or(0, |b| b.sent()),
            backplane_received: self.backplane.as_ref().map_or(0, |b| b.received()),
            backplane_gaps: self.backplane.as_ref().map_or(0, |b| b.gaps()),
            l2_missing_rights: self
                .l2
                .as_ref()
                .map(|l2| l2.missing_rights())
                .unwrap_or_default(),
        }
    }

    /// The generations of functions and tags this process knows.
    pub fn generations(&self) -> &Arc<Generations> {
        &self.generations
    }

    /// The Redis key of a function's generation.
    pub fn function_generation_key(&self, path: &str) -> String {
        crate::cache::generations::function_key(&self.config.namespace, path)
    }

    /// A tag's generation kept in L3, for a process without L2 (where generations otherwise
    /// live); 0 when unknown.
    pub fn l3_tag_generation(&self, tag: u64) -> u64 {
        self.l3.as_ref().map_or(0, |l3| l3.tag_generation(tag))
    }

    /// The Redis key of the namespace's generation (raised by invalidating everything).
    pub fn everything_generation_key(&self) -> String {
        crate::cache::generations::everything_key(&self.config.namespace)
    }

    /// The Redis key of a tag's generation.
    pub fn tag_generation_key(&self, tag: u64) -> String {
        crate::cache::generations::tag_key(&self.config.namespace, tag)
    }

    /// [`Tiers::l2_get`] and the generations at `generations`, in one round trip.
    pub fn l2_get_stamped<'a>(
        &'a self,
        key: &'a str,
        generations: Vec<String>,
    ) -> TierFuture<'a, L2Result<Stamped>> {
        let key = key.to_owned();
        self.on_l2(move |l2| async move { l2.get_stamped(&key, &generations).await })
    }

    /// Whether misses take leases in Redis.
    pub fn leases_on(&self) -> bool {
        self.lease_waiters.is_some()
    }

    /// How long a lease lasts (when leases are on).
    pub fn lease_ttl(&self) -> Option<Duration> {
        self.l2.as_ref().and_then(|l2| l2.leases())
    }

    /// Counters of the write-behind queue (when a shared tier runs).
    pub fn writeback_stats(&self) -> Option<&crate::cache::writeback::WriteBackStats> {
        self.background.as_ref().map(|bg| bg.writeback.stats())
    }

    /// Counters of leases.
    pub fn lease_stats(&self) -> &LeaseStats {
        &self.lease_stats
    }

    /// [`Tiers::l2_get_stamped`] that also takes the key's lease when the value is absent.
    pub fn l2_get_leased<'a>(
        &'a self,
        key: &'a str,
        generations: Vec<String>,
        token: u64,
    ) -> TierFuture<'a, L2Result<StampedLeased>> {
        let key = key.to_owned();
        self.on_l2(move |l2| async move { l2.get_leased(&key, &generations, token).await })
    }

    /// Takes the key's lease.
    pub fn l2_acquire<'a>(
        &'a self,
        key: &'a str,
        token: u64,
    ) -> TierFuture<'a, L2Result<LeaseState>> {
        let key = key.to_owned();
        self.on_l2(move |l2| async move { l2.acquire(&key, token).await })
    }

    /// Waits (at most `bound`) until another instance announces the key's lease released.
    pub fn wait_for_lease<'a>(&'a self, key: &'a str, bound: Duration) -> TierFuture<'a, ()> {
        Box::pin(async move {
            let (Some(waiters), Some(bg)) = (self.lease_waiters.clone(), &self.background) else {
                return;
            };
            let key = key.to_owned();
            let _ = bg
                .handle
                .spawn(async move { waiters.wait(&key, bound).await })
                .await;
        })
    }

    /// The generations at `keys`, read from Redis.
    pub fn l2_generations<'a>(&'a self, keys: Vec<String>) -> TierFuture<'a, L2Result<Vec<u64>>> {
        let open = |l2: &Arc<RedisTier>| keys.first().is_some_and(|k| l2.circuit_open_for(k));
        if self.l2.as_ref().is_some_and(open) {
            return Box::pin(std::future::ready(L2Result::Skipped));
        }
        self.on_l2(move |l2| async move { l2.generations(&keys).await })
    }

    /// Runs `fut` on the tiers' own runtime (nothing when they have none: no shared tier).
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(bg) = &self.background {
            spawn_boxed(&bg.handle, fut);
        }
    }

    /// The backplane's counters, when it runs.
    pub fn backplane(&self) -> Option<&Arc<BackplaneStats>> {
        self.backplane.as_ref()
    }

    /// `GET` from L2 on the tiers' runtime, awaited from any executor.
    pub fn l2_get<'a>(&'a self, key: &'a str) -> TierFuture<'a, L2Result<Option<Vec<u8>>>> {
        let key = key.to_owned();
        self.on_l2(move |l2| async move { l2.get(&key).await })
    }

    /// Runs `op` with the Redis tier on the tiers' runtime and awaits it from any executor;
    /// `Skipped` without L2, `Failed` if the runtime dropped it.
    fn on_l2<'a, T, F>(
        &'a self,
        op: impl FnOnce(Arc<RedisTier>) -> F + Send + 'a,
    ) -> TierFuture<'a, L2Result<T>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = L2Result<T>> + Send + 'static,
    {
        Box::pin(async move {
            let (Some(l2), Some(bg)) = (self.l2.clone(), &self.background) else {
                return L2Result::Skipped;
            };
            bg.handle.spawn(op(l2)).await.unwrap_or(L2Result::Failed)
        })
    }

    /// `GET` from L2, blocking this thread (for sync callers; never inside the tiers' runtime).
    pub fn l2_get_blocking(&self, key: &str) -> L2Result<Option<Vec<u8>>> {
        block_on(self.l2_get(key))
    }

    /// Waits, once per process and bounded by the L2 connect timeout, until the backplane has
    /// applied what other instances invalidated while this one was not listening, so L3 does
    /// not serve (and promote to Redis) an entry retired meanwhile. With Redis unreachable it
    /// gives up after the bound and L3 serves what it has.
    pub fn backplane_caught_up<'a>(&'a self) -> TierFuture<'a, ()> {
        Box::pin(async move {
            if self.backplane_is_caught_up() {
                return;
            }
            let (Some(bp), Some(l2), Some(bg)) = (&self.backplane, &self.l2, &self.background)
            else {
                return;
            };
            let (bp, bound) = (bp.clone(), l2.connect_timeout());
            let _ = bg
                .handle
                .spawn(async move { bp.caught_up_within(bound).await })
                .await;
        })
    }

    /// Whether [`Tiers::backplane_caught_up`] would return at once: no backplane, caught
    /// up, or Redis away.
    pub fn backplane_is_caught_up(&self) -> bool {
        match (&self.backplane, &self.l2, &self.background) {
            (Some(bp), Some(l2), Some(_)) => bp.is_caught_up() || l2.circuit_open(),
            _ => true,
        }
    }

    /// Reads L3.
    pub fn l3_get(&self, key: &str) -> Option<sled::IVec> {
        self.l3.as_ref()?.get(key)
    }

    /// Queues a write; `false` if it was dropped (queue full).
    pub fn enqueue(&self, op: WriteOp) -> bool {
        self.background
            .as_ref()
            .is_some_and(|bg| bg.writeback.push(op))
    }

    /// Waits until every write queued so far has been applied (not necessarily on disk).
    pub async fn barrier(&self) {
        if let Some(bg) = &self.background {
            let _ = bg.writeback.flush_marker().await;
        }
    }

    /// Waits until every queued write has been applied and L3 is on disk.
    pub async fn flush(&self) {
        self.barrier().await;
        if let (Some(l3), Some(bg)) = (&self.l3, &self.background) {
            // Writing L3 to disk blocks: on the tiers' own blocking threads, not the caller's.
            let l3 = l3.clone();
            let _ = bg.handle.spawn_blocking(move || l3.flush()).await;
        }
    }

    /// [`Tiers::flush`], blocking this thread.
    pub fn flush_blocking(&self) {
        block_on(self.flush());
    }

    /// Flushes, then stops the background runtime. Later writes are dropped and counted.
    pub fn shutdown(&self) {
        self.flush_blocking();
        self.stop_runtime();
    }

    fn stop_runtime(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rt) = runtime {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Waiting for a runtime's shutdown inside another runtime panics (and so would
                // a drop there); everything queued is already applied when `shutdown` gets here.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(5));
            }
        }
    }

    /// Runs the L3 sweeper once now.
    pub fn sweep_now(&self) -> Option<crate::cache::l3_sled::SweepReport> {
        Some(self.l3.as_ref()?.sweep(unix_ms()))
    }
}

impl Drop for Tiers {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}

/// Starts reading the backplane's stream; the announcer the write-behind queue uses.
fn start_backplane(
    config: &TierConfig,
    l3: Option<Arc<SledTier>>,
    hook: RemoteHook,
    generations: Arc<Generations>,
    runtime: &tokio::runtime::Handle,
) -> Option<Announcer> {
    // An invalid URL is reported by L2 itself, which stays off too.
    let endpoint = Endpoint::new(config.redis.as_ref()?).ok()?;
    let channel = Channel::new(&config.namespace);
    let stats = Arc::new(BackplaneStats::default());
    let listener = Listener {
        channel: channel.clone(),
        endpoint,
        l3,
        hook,
        generations,
        stats: stats.clone(),
    };
    runtime.spawn(listener.run());
    Some(Announcer {
        channel: Arc::new(channel),
        stats,
    })
}

async fn sweep_periodically(l3: Arc<SledTier>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let l3 = l3.clone();
        let report = tokio::task::spawn_blocking(move || l3.sweep(unix_ms())).await;
        if let Ok(r) = report {
            tracing::debug!(
                expired = r.expired,
                invalid = r.invalid,
                evicted = r.evicted,
                bytes = r.bytes,
                "L3 sweep"
            );
        }
    }
}
