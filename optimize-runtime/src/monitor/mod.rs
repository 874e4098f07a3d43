//! The runtime monitor (docs/metrics.md): metrics of every managed function, tier and pool, system
//! metrics, user metrics and alert rules, exported as Prometheus text and JSON over HTTP.
//!
//! - Metrics are always recorded (see [`crate::stats::set_recording`]); [`Sources::snapshot`]
//!   reads them at any time, with or without a running monitor.
//! - [`Monitor::start`] runs the monitor: a thread that, every [`MonitorConfig::interval`], samples the
//!   system, evaluates the alert rules, tells the handlers of each change and keeps a
//!   history; and, when [`MonitorConfig::http`] is set, an HTTP endpoint (see [`http`]).
//!
//! The runtime starts the monitor when the configuration turns it on:
//!
//! ```
//! use optimize::config::Config;
//!
//! let optimize = optimize::install(
//!     Config::builder()
//!         .without_file()
//!         .set("l3.enabled", "false")
//!         .set("monitor.enabled", "true")
//!         .set("monitor.interval", "5s")
//!         .set("monitor.addr", "127.0.0.1:0"),
//! )
//! .unwrap();
//! let monitor = optimize.runtime().monitor().unwrap();
//! println!("metrics at http://{}/metrics", monitor.http_addr().unwrap());
//! ```

pub mod alert;
mod collect;
pub mod export;
pub mod history;
pub mod http;
pub mod metrics;
mod report;
mod snapshot;
mod sources;
mod system;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

pub use history::{HistoryAnswer, HistoryPoint, HistoryQuery, PersistConfig, Trends};
pub use report::{FnReport, Health, HealthStatus, PoolReport, StatsReport, TierRatios};
pub use snapshot::{
    Family, HistogramValue, Labels, MetricType, Series, Snapshot, Value, DURATION_BOUNDS,
};
pub use sources::Sources;
pub use system::{DiskStats, SystemSampler, SystemStats};

use alert::{Alert, AlertEngine, AlertHandler, Rule, RuleError, TracingHandler};
use snapshot::SnapshotBuilder;

/// Settings of the HTTP endpoint.
#[derive(Clone)]
pub struct HttpConfig {
    /// Where to listen; `127.0.0.1:9464` by default. Port 0 picks a free port.
    pub addr: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
        }
    }
}

/// How the monitor runs. Built with [`MonitorConfig::default`] and the methods below.
#[derive(Clone)]
pub struct MonitorConfig {
    /// Time between evaluations (system sample, alert rules, history entry). Default 15 s.
    pub interval: Duration,
    /// Points `/history` keeps in memory. Default 240 (an hour at the default interval).
    pub history: usize,
    /// Where history is persisted, when it is (see [`history`]). Default: not persisted;
    /// the runtime persists it next to L3 unless `monitor.history_persist = false`.
    pub persist: Option<PersistConfig>,
    /// Whether to sample system metrics. Default on.
    pub system: bool,
    /// Paths whose volumes' free space is reported; the L3 directory is added when L3 runs.
    pub watched_paths: Vec<PathBuf>,
    /// Alert rules. Default [`alert::default_rules`].
    pub rules: Vec<Rule>,
    /// Told of every alert state change. Default: [`TracingHandler`] only.
    pub handlers: Vec<Arc<dyn AlertHandler>>,
    /// The HTTP endpoint; off unless set.
    pub http: Option<HttpConfig>,
}

impl std::fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("interval", &self.interval)
            .field("history", &self.history)
            .field("persist", &self.persist)
            .field("system", &self.system)
            .field("rules", &self.rules.len())
            .field("handlers", &self.handlers.len())
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            history: Self::DEFAULT_HISTORY,
            persist: None,
            system: true,
            watched_paths: Vec::new(),
            rules: alert::default_rules(),
            handlers: vec![Arc::new(TracingHandler)],
            http: None,
        }
    }
}

impl MonitorConfig {
    /// Default time between evaluations.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
    /// Default number of `/history` entries (an hour at the default interval).
    pub const DEFAULT_HISTORY: usize = 240;

    /// Sets the evaluation interval.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Adds an alert rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Replaces the alert rules.
    pub fn rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self
    }

    /// Adds an alert handler (the tracing handler stays).
    pub fn handler(mut self, handler: impl AlertHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Serves HTTP on `addr`, without a token.
    pub fn serve(mut self, addr: SocketAddr) -> Self {
        self.http = Some(HttpConfig { addr, token: None });
        self
    }

    /// Requires `Authorization: Bearer <token>` on the HTTP endpoint.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.http.get_or_insert_with(HttpConfig::default).token = Some(token.into());
        self
    }

    /// Turns system sampling on or off.
    pub fn system(mut self, on: bool) -> Self {
        self.system = on;
        self
    }

    /// Keeps `n` history points in memory.
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// Persists history in `dir`, kept for `retention` and at most `max_bytes`.
    pub fn persist(mut self, dir: impl Into<PathBuf>, retention: Duration, max_bytes: u64) -> Self {
        self.persist = Some(PersistConfig {
            dir: dir.into(),
            retention,
            max_bytes,
        });
        self
    }
}

/// Why the monitor did not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A rule is invalid.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The monitor's thread cannot be started.
    #[error("cannot start the monitor's thread: {0}")]
    Thread(std::io::Error),
    /// The HTTP address cannot be bound.
    #[error("cannot serve monitor HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The running monitor.
pub struct Monitor {
    interval: Duration,
    handlers: Vec<Arc<dyn AlertHandler>>,
    pub(crate) sources: Sources,
    engine: Mutex<AlertEngine>,
    sampler: Option<Mutex<SystemSampler>>,
    last_system: Mutex<Option<SystemStats>>,
    history: history::History,
    /// The cumulative figures the last history point was measured from.
    baseline: Mutex<history::Baseline>,
    started_unix_ms: u64,
    http_addr: OnceLock<SocketAddr>,
    stop: (Mutex<bool>, Condvar),
    ticks: std::sync::atomic::AtomicU64,
    /// One evaluation at a time: a snapshot taken earlier must never be evaluated after a
    /// later one (an alert would step back from firing to pending).
    ticking: Mutex<()>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("interval", &self.interval)
            .field("http_addr", &self.http_addr.get())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Starts the monitor over `sources`: its evaluation thread and, when configured, its
    /// HTTP endpoint. The runtime starts one when the configuration turns it on; stop it with
    /// [`Monitor::stop`].
    pub fn start(config: MonitorConfig, sources: Sources) -> Result<Arc<Self>, MonitorError> {
        let engine = AlertEngine::new(config.rules)?;
        let sampler = config.system.then(|| {
            let mut paths = config.watched_paths.clone();
            if let Some(l3) = sources.tiers.config().l3.as_ref() {
                paths.push(l3.dir.clone());
            }
            Mutex::new(SystemSampler::new(paths))
        });
        let monitor = Arc::new(Self {
            interval: config.interval,
            handlers: config.handlers,
            sources,
            engine: Mutex::new(engine),
            sampler,
            last_system: Mutex::new(None),
            history: history::History::new(config.history, config.persist.as_ref()),
            baseline: Mutex::new(history::Baseline::default()),
            started_unix_ms: crate::time::unix_ms(),
            http_addr: OnceLock::new(),
            stop: (Mutex::new(false), Condvar::new()),
            ticks: Default::default(),
            ticking: Mutex::new(()),
        });
        if let Some(http) = config.http {
            let addr = http::serve(monitor.clone(), http)?;
            let _ = monitor.http_addr.set(addr);
        }
        let runner = monitor.clone();
        std::thread::Builder::new()
            .name("optimize-monitor".into())
            .spawn(move || runner.run())
            .map_err(MonitorError::Thread)?;
        Ok(monitor)
    }

    fn run(&self) {
        loop {
            self.tick();
            let (stopped, wake) = &self.stop;
            let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
            let (guard, _) = wake
                .wait_timeout_while(guard, self.interval, |s| !*s)
                .unwrap_or_else(PoisonError::into_inner);
            if *guard {
                return;
            }
        }
    }

    /// Samples, evaluates the rules and records a history entry now, outside the interval.
    /// Returns the snapshot the rules saw.
    pub fn tick(&self) -> Arc<Snapshot> {
        let _one = self.ticking.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sampler) = &self.sampler {
            let stats = sampler
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sample();
            *self
                .last_system
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(stats);
        }
        let snapshot = Arc::new(self.snapshot());
        let events = self
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .evaluate(snapshot.clone());
        for event in &events {
            for handler in &self.handlers {
                // A panicking handler must not stop the monitor.
                let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.handle(event)
                }));
                if told.is_err() {
                    tracing::error!(alert = %event.alert.rule, "optimize: an alert handler panicked");
                }
            }
        }
        self.record_point();
        self.ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        snapshot
    }

    /// Evaluations so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every metric now, with the last system sample and the alert states.
    pub fn snapshot(&self) -> Snapshot {
        let firing = self
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .firing_counts();
        build_snapshot(
            &self.sources,
            self.sources.clock.now_nanos(),
            self.system().as_ref(),
            Some(&firing),
        )
    }

    /// The last system sample.
    pub fn system(&self) -> Option<SystemStats> {
        self.last_system
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Pending, firing and recently resolved alert instances.
    pub fn alerts(&self) -> Vec<Alert> {
        self.engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .alerts()
    }

    /// The rules.
    pub fn rules(&self) -> Vec<Rule> {
        self.engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rules()
            .to_vec()
    }

    fn firing(&self) -> usize {
        self.alerts()
            .iter()
            .filter(|a| a.state == alert::AlertState::Firing)
            .count()
    }

    fn record_point(&self) {
        let point = self
            .baseline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(
                &self.sources,
                self.system().as_ref(),
                self.firing(),
                crate::time::unix_ms(),
                self.started_unix_ms,
            );
        self.history.record(point);
    }

    /// History over a range (what `/history` answers): the points recorded at each
    /// evaluation, from disk when persisted, merged `step` at a time.
    ///
    /// ```
    /// use optimize::monitor::{HistoryQuery, MonitorConfig, Monitor};
    ///
    /// let sources = optimize::runtime().sources();
    /// let monitor = Monitor::start(MonitorConfig::default().system(false), sources).unwrap();
    /// monitor.tick();
    /// let answer = monitor.history(&HistoryQuery::default());
    /// assert_eq!(answer.source, "memory");
    /// assert!(!answer.points.is_empty());
    /// monitor.stop();
    /// ```
    pub fn history(&self, query: &HistoryQuery) -> HistoryAnswer {
        self.history.query(query, crate::time::unix_ms())
    }

    /// The last `n` evaluations (what `/history?limit=n` answers), with only `function`'s
    /// figures when it is given.
    pub fn recent_history(&self, n: usize, function: Option<&str>) -> HistoryAnswer {
        self.history.last(n, function)
    }

    /// Whether history is being written to disk.
    pub fn history_persisted(&self) -> bool {
        self.history.is_persisted()
    }

    /// Each function's figures over the last hour against the hour before.
    pub fn trends(&self) -> Trends {
        self.history
            .trends(history::TREND_WINDOW, crate::time::unix_ms())
    }

    /// `/stats` now, with the trends.
    pub fn stats(&self) -> StatsReport {
        let mut report = StatsReport::now(&self.sources, self.system(), self.firing());
        report.trends = Some(self.trends());
        report
    }

    /// `/health` now.
    pub fn health(&self) -> Health {
        Health::check(&self.sources, &self.alerts())
    }

    /// Where the HTTP endpoint listens, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.get().copied()
    }

    /// Stops the evaluation thread (the HTTP endpoint keeps answering), and records the
    /// time since the last evaluation as a last history point, written to disk before this
    /// returns.
    pub fn stop(&self) {
        let (stopped, wake) = &self.stop;
        let already = std::mem::replace(
            &mut *stopped.lock().unwrap_or_else(PoisonError::into_inner),
            true,
        );
        wake.notify_all();
        if !already {
            let _one = self.ticking.lock().unwrap_or_else(PoisonError::into_inner);
            self.record_point();
            self.history.flush();
        }
    }
}

/// Runs `task` on a new thread named `name`, inside a current-thread tokio runtime of its
/// own, so it works whatever runtime (if any) the application uses. `what` names the work in
/// the error logged if the runtime cannot start.
pub(crate) fn spawn_on_own_runtime<F, Fut>(
    name: &str,
    what: &'static str,
    task: F,
) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(task()),
                Err(e) => tracing::error!(error = %e, "optimize: {what} cannot start"),
            }
        })
        .map(|_| ())
}

impl Sources {
    /// Every metric now, without system metrics or alert states (what a runtime without a
    /// monitor reports).
    pub fn snapshot(&self) -> Snapshot {
        build_snapshot(self, self.clock.now_nanos(), None, None)
    }
}

fn build_snapshot(
    sources: &Sources,
    at_nanos: u64,
    system: Option<&SystemStats>,
    firing: Option<&[(String, &'static str, usize)]>,
) -> Snapshot {
    let mut b = SnapshotBuilder::default();
    collect::functions(&mut b, &sources.registry);
    collect::tiers(&mut b, &sources.tiers);
    if let Some(budget) = &sources.l1_budget {
        collect::l1_budget(&mut b, budget);
    }
    collect::pools(&mut b, &sources.pools);
    if let Some(system) = system {
        collect::system(&mut b, system);
    }
    if let Some(firing) = firing {
        collect::alerts(&mut b, firing);
    }
    metrics::collect(&mut b);
    b.finish(at_nanos, crate::time::unix_ms())
}
