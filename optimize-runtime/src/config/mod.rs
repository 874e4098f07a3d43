//! Configuration (docs/configuration.md): one [`Config`] resolved from, later winning,
//! defaults ← the [`Level`] preset ← `optimize.toml` ← `OPTIMIZE_*` environment ← the builder.
//!
//! Resolving is pure: it reads the file and the environment and returns typed options, or
//! every problem found. Starting things with them is the runtime's job (`optimize::install`).
//!
//! ```
//! use optimize_runtime::config::{Config, Level};
//!
//! let config = Config::builder()
//!     .without_file()
//!     .environment([("OPTIMIZE_L3_MAX_SIZE", "2GiB")])
//!     .level(Level::Ultra)
//!     .resolve()
//!     .expect("valid configuration");
//! assert_eq!(config.l3_max_size, 2 << 30);
//! assert!(config.monitor_enabled);
//! ```
//!
//! An application that never installs a configuration gets one lazily, at the first managed
//! call, from the same sources minus the builder. docs/configuration.md lists every key.

pub(crate) mod keys;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keys::Value;
use source::Layer;

use crate::cache::l1::EngineKind;
use crate::cache::l2_redis::{RedisOptions, RedisUrl, TlsFiles};
use crate::cache::tiered::{L3Options, TierConfig};
use crate::cache::Tier;
use crate::codec::EnvelopeOptions;
use crate::meta::PredictModel;
use crate::monitor::alert::{AlertHandler, Rule};
use crate::monitor::{HttpConfig, MonitorConfig};
use crate::pool::PoolConfig;
use crate::stats::Recording;
use crate::time::Clock;

pub use crate::meta::Level;
pub use crate::site::settings::{FnDefaults, FnOverride};

impl Level {
    /// The keys the level sets. `persist` says whether L3 may be turned on: true once a
    /// configuration is installed or a file is present.
    fn preset(self, persist: bool) -> Vec<(&'static str, Value)> {
        let at_least = |l: Level| self >= l;
        vec![
            ("l2.enabled", Value::Bool(at_least(Level::Advanced))),
            (
                "l3.enabled",
                Value::Bool(persist && at_least(Level::Advanced)),
            ),
            (
                "tiers.compress_above",
                Value::Int(if at_least(Level::Extreme) { 0 } else { 1024 }),
            ),
            ("tiers.demote_on_evict", Value::Bool(at_least(Level::Ultra))),
            (
                "metrics.recording",
                Value::Recording(if at_least(Level::Advanced) {
                    Recording::Full
                } else {
                    Recording::Counters
                }),
            ),
            ("monitor.enabled", Value::Bool(at_least(Level::Ultra))),
            ("monitor.system", Value::Bool(at_least(Level::Ultra))),
            ("monitor.default_rules", Value::Bool(at_least(Level::Ultra))),
            (
                "monitor.history",
                Value::Int(if at_least(Level::Extreme) {
                    1440
                } else {
                    MonitorConfig::DEFAULT_HISTORY as u64
                }),
            ),
        ]
    }
}

/// Applies a `[functions]` key to an override.
fn set_override(o: &mut FnOverride, key: &str, value: Value) {
    match (key, value) {
        ("enabled", Value::Bool(b)) => o.enabled = Some(b),
        ("level", Value::Level(l)) => o.level = Some(l),
        ("ttl", Value::Duration(d)) => o.ttl = Some(d),
        ("tiers", Value::Tiers(t)) => o.tiers = Some(t),
        ("capacity", Value::Int(n)) => o.capacity = Some(n),
        ("capacity", Value::Bytes(n)) => o.capacity_bytes = Some(n),
        ("priority", Value::Priority(p)) => o.priority = Some(p),
        ("concurrency", Value::Int(n)) => {
            o.concurrency = Some(n);
            o.adaptive_concurrency = None;
        }
        ("concurrency", Value::Adaptive(min, max)) => {
            o.adaptive_concurrency = Some((min, max));
            o.concurrency = None;
        }
        ("fail_safe", Value::Duration(d)) => o.fail_safe = Some(d),
        ("fail_safe_throttle", Value::Duration(d)) => o.fail_safe_throttle = Some(d),
        ("soft_timeout", Value::Duration(d)) => o.soft_timeout = Some(d),
        ("refresh_ahead", Value::Float(f)) => o.refresh_ahead = Some(f),
        ("stale_if_busy", Value::Int(n)) => o.stale_if_busy = Some(n),
        ("predict", Value::Predict(m)) => o.predict = Some(m),
        ("predict_confidence", Value::Float(f)) => o.predict_confidence = Some(f),
        ("predict_depth", Value::Int(n)) => o.predict_depth = Some(int(n)),
        (key, value) => unreachable!("function key {key} with {value:?}"),
    }
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    /// The global level.
    pub level: Level,
    /// Prefix of shared-tier keys.
    pub namespace: String,
    /// L1 engine.
    pub l1_engine: EngineKind,
    /// L1 capacity of functions that set none.
    pub l1_capacity: u64,
    /// The process-wide L1 byte budget (`None`: each function's own capacity only).
    pub l1_max_size: Option<u64>,
    /// Whether L2 is used when `l2_url` is set.
    pub l2_enabled: bool,
    l2_url: Option<RedisUrl>,
    /// L2 operation timeout.
    pub l2_timeout: Duration,
    /// Failures that open the L2 circuit breaker.
    pub l2_breaker_threshold: u32,
    /// How long the breaker stays open.
    pub l2_breaker_cooldown: Duration,
    /// Whether invalidations travel to every instance sharing the namespace (with L2).
    pub l2_backplane: bool,
    /// Whether Redis is a cluster (`l2.url` then lists seed nodes, separated by commas).
    pub l2_cluster: bool,
    /// TLS settings of a `rediss://` URL.
    pub l2_tls: TlsFiles,
    /// Whether a miss takes a lease in Redis, so one instance computes a key at a time.
    pub l2_lease: bool,
    /// How long a lease lasts before another instance may take it over.
    pub l2_lease_ttl: Duration,
    /// Whether L3 runs.
    pub l3_enabled: bool,
    /// L3 directory.
    pub l3_dir: PathBuf,
    /// L3 size cap in bytes.
    pub l3_max_size: u64,
    /// L3 sweep interval.
    pub l3_sweep_interval: Duration,
    /// Warm restart: entries per function copied from L3 into L1 at its first call (0: off).
    pub l3_warm_l1: u64,
    /// Which shared tier a miss asks first.
    pub lookup_order: [Tier; 2],
    /// Write-behind queue capacity.
    pub writeback_capacity: usize,
    /// Shared-tier entries larger than this are compressed (0: all).
    pub compress_above: u64,
    /// Whether L1 capacity evictions are written to L3.
    pub demote_on_evict: bool,
    /// Fail-safe window of functions that set none (`None`: off).
    pub fail_safe: Option<Duration>,
    /// Fail-safe throttle of functions that set none.
    pub fail_safe_throttle: Duration,
    /// Stale-if-busy depth of functions with fail-safe that set none (`None`: off).
    pub stale_if_busy: Option<u64>,
    /// Confidence of predicting functions that set none.
    pub predict_confidence: f64,
    /// Depth of predicting functions that set none.
    pub predict_depth: u32,
    /// Secret that signs shared-tier entries (HMAC-SHA256); entries without a valid tag are
    /// refused. Never shown.
    signing_key: Option<String>,
    /// The previous signing secret, still accepted on read while keys roll.
    signing_key_previous: Option<String>,
    /// Pool settings.
    pub pools: PoolConfig,
    /// `pools.queue_capacity`: the bound of each pool's queue that sets none of its own
    /// (0: unbounded).
    queue_capacity: u64,
    /// What calls record.
    pub recording: Recording,
    /// The level of the per-call spans.
    pub spans: crate::spans::SpanLevel,
    /// Calls at least this slow are logged at info.
    pub slow_call: Duration,
    /// Whether the monitor runs.
    pub monitor_enabled: bool,
    /// Monitor evaluation interval.
    pub monitor_interval: Duration,
    /// Monitor history entries.
    pub monitor_history: usize,
    /// Whether the monitor's history is written to disk.
    pub monitor_history_persist: bool,
    /// Where (`None`: `history` inside `l3.dir` when L3 is on, else not persisted).
    pub monitor_history_dir: Option<PathBuf>,
    /// How long persisted history is kept.
    pub monitor_history_retention: Duration,
    /// The most bytes persisted history may take.
    pub monitor_history_max_size: u64,
    /// Whether the monitor samples system metrics.
    pub monitor_system: bool,
    /// Whether the shipped alert rules are on.
    pub monitor_default_rules: bool,
    /// Where the monitor serves HTTP (off when `None`).
    pub monitor_addr: Option<SocketAddr>,
    monitor_token: Option<String>,
    /// Whether a non-loopback `monitor.addr` may serve without a token.
    pub monitor_allow_public: bool,
    /// Alert rules from `[[alerts]]`.
    pub alerts: Vec<Rule>,
    /// Per-function overrides, by function path.
    pub functions: BTreeMap<String, FnOverride>,
    /// Where each `[functions]` table came from (a file's path, or `builder`).
    pub function_sources: BTreeMap<String, String>,
    /// The clock of expiry and timing (a mock one in tests).
    pub clock: Clock,
    /// Told of every alert state change, besides the tracing log.
    pub alert_handlers: Vec<Arc<dyn AlertHandler>>,
    /// Where each key's value came from (`defaults`, `level advanced`, a file, `environment`,
    /// `builder`).
    pub origins: BTreeMap<&'static str, String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets (the Redis URL's password, the monitor token) are redacted.
        f.debug_struct("Config")
            .field("level", &self.level)
            .field("namespace", &self.namespace)
            .field("l2_url", &self.l2_url.as_ref().map(ToString::to_string))
            .field("l3_enabled", &self.l3_enabled)
            .field("l3_dir", &self.l3_dir)
            .field("recording", &self.recording)
            .field("monitor_enabled", &self.monitor_enabled)
            .field("monitor_addr", &self.monitor_addr)
            .field(
                "monitor_token",
                &self.monitor_token.as_ref().map(|_| "<redacted>"),
            )
            .field("functions", &self.functions)
            .finish_non_exhaustive()
    }
}

/// One problem in the configuration: where, which key, what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file's path, `environment` or `builder`.
    pub source: String,
    /// The key path (`l3.max_size`, `functions."app::f".ttl`) or variable.
    pub key: String,
    /// What is wrong and the expected form.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

/// Invalid configuration: every problem found, each naming its source and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid optimize configuration")?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        let pools = PoolConfig::default();
        let monitor = MonitorConfig::default();
        Self {
            level: Level::Advanced,
            namespace: TierConfig::DEFAULT_NAMESPACE.into(),
            l1_engine: EngineKind::default(),
            l1_capacity: crate::cache::l1::L1Options::DEFAULT_CAPACITY,
            l1_max_size: None,
            l2_enabled: false,
            l2_url: None,
            l2_timeout: RedisOptions::DEFAULT_OP_TIMEOUT,
            l2_breaker_threshold: RedisOptions::DEFAULT_BREAKER_THRESHOLD,
            l2_breaker_cooldown: RedisOptions::DEFAULT_BREAKER_COOLDOWN,
            l2_backplane: true,
            l2_cluster: false,
            l2_tls: TlsFiles::default(),
            l2_lease: true,
            l2_lease_ttl: RedisOptions::DEFAULT_LEASE,
            l3_enabled: false,
            l3_dir: TierConfig::default_l3_dir(),
            l3_max_size: TierConfig::DEFAULT_L3_MAX_BYTES,
            l3_sweep_interval: TierConfig::DEFAULT_L3_SWEEP_INTERVAL,
            l3_warm_l1: 0,
            lookup_order: [Tier::L2, Tier::L3],
            writeback_capacity: TierConfig::DEFAULT_WRITEBACK_CAPACITY,
            compress_above: EnvelopeOptions::default().compress_threshold as u64,
            demote_on_evict: false,
            fail_safe: None,
            fail_safe_throttle: crate::cache::store::FailSafe::DEFAULT_THROTTLE,
            stale_if_busy: None,
            predict_confidence: crate::predict::Prediction::DEFAULT_CONFIDENCE,
            predict_depth: crate::predict::Prediction::DEFAULT_DEPTH,
            signing_key: None,
            signing_key_previous: None,
            pools,
            queue_capacity: PoolConfig::DEFAULT_QUEUE_CAPACITY,
            recording: Recording::Full,
            spans: crate::spans::SpanLevel::Debug,
            slow_call: crate::stats::DEFAULT_SLOW_CALL,
            monitor_enabled: false,
            monitor_interval: monitor.interval,
            monitor_history: monitor.history,
            monitor_history_persist: true,
            monitor_history_dir: None,
            monitor_history_retention: Duration::from_secs(7 * 86_400),
            monitor_history_max_size: 64 << 20,
            monitor_system: false,
            monitor_default_rules: false,
            monitor_addr: None,
            monitor_token: None,
            monitor_allow_public: false,
            alerts: Vec::new(),
            functions: BTreeMap::new(),
            function_sources: BTreeMap::new(),
            clock: Clock::new(),
            alert_handlers: Vec::new(),
            origins: BTreeMap::new(),
        }
    }
}

/// A `u64` setting narrowed to a smaller integer, saturating.
fn int<T: TryFrom<u64> + Saturated>(n: u64) -> T {
    T::try_from(n).unwrap_or(T::MAX)
}

/// Integer types a `u64` setting is narrowed to.
trait Saturated {
    const MAX: Self;
}
impl Saturated for u32 {
    const MAX: Self = u32::MAX;
}
impl Saturated for usize {
    const MAX: Self = usize::MAX;
}

impl Config {
    /// A builder over the file and environment.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Each pool's queue bound: its own key where one was given, else `pools.queue_capacity`.
    fn settle_queue_capacities(&mut self) {
        let shared = (self.queue_capacity > 0).then_some(self.queue_capacity);
        for (key, bound) in [
            (
                "pools.cpu_queue_capacity",
                &mut self.pools.cpu_queue_capacity,
            ),
            ("pools.io_queue_capacity", &mut self.pools.io_queue_capacity),
            (
                "pools.memory_queue_capacity",
                &mut self.pools.memory_queue_capacity,
            ),
        ] {
            if !self.origins.contains_key(key) {
                *bound = shared;
            }
        }
    }

    /// The configuration from defaults, the level, the file and the environment.
    pub fn load() -> Result<Config, ConfigError> {
        ConfigBuilder::default().resolve()
    }

    fn apply(&mut self, key: &'static str, value: Value) {
        use Value as V;
        match (key, value) {
            ("level", V::Level(l)) => self.level = l,
            ("namespace", V::Text(s)) => self.namespace = s,
            ("l1.engine", V::Engine(e)) => self.l1_engine = e,
            ("l1.capacity", V::Int(n)) => self.l1_capacity = n,
            ("l1.max_size", V::Int(n)) => self.l1_max_size = Some(n),
            ("l2.enabled", V::Bool(b)) => self.l2_enabled = b,
            ("l2.url", V::Text(s)) => self.l2_url = Some(RedisUrl::new(s)),
            ("l2.timeout", V::Duration(d)) => self.l2_timeout = d,
            ("l2.breaker_threshold", V::Int(n)) => self.l2_breaker_threshold = int(n),
            ("l2.breaker_cooldown", V::Duration(d)) => self.l2_breaker_cooldown = d,
            ("l2.backplane", V::Bool(b)) => self.l2_backplane = b,
            ("l2.cluster", V::Bool(b)) => self.l2_cluster = b,
            ("l2.tls_ca_file", V::Path(p)) => self.l2_tls.ca_file = Some(p),
            ("l2.tls_client_cert", V::Path(p)) => self.l2_tls.client_cert = Some(p),
            ("l2.tls_client_key", V::Path(p)) => self.l2_tls.client_key = Some(p),
            ("l2.tls_insecure", V::Bool(b)) => self.l2_tls.insecure = b,
            ("l2.lease", V::Bool(b)) => self.l2_lease = b,
            ("l2.lease_ttl", V::Duration(d)) => self.l2_lease_ttl = d,
            ("l3.enabled", V::Bool(b)) => self.l3_enabled = b,
            ("l3.dir", V::Path(p)) => self.l3_dir = p,
            ("l3.max_size", V::Int(n)) => self.l3_max_size = n,
            ("l3.sweep_interval", V::Duration(d)) => self.l3_sweep_interval = d,
            ("l3.warm_l1", V::Int(n)) => self.l3_warm_l1 = n,
            ("tiers.lookup_order", V::Order(o)) => self.lookup_order = o,
            ("tiers.writeback_capacity", V::Int(n)) => self.writeback_capacity = int(n),
            ("tiers.compress_above", V::Int(n)) => self.compress_above = n,
            ("tiers.demote_on_evict", V::Bool(b)) => self.demote_on_evict = b,
            ("resilience.fail_safe", V::Duration(d)) => {
                self.fail_safe = (!d.is_zero()).then_some(d);
            }
            ("resilience.fail_safe_throttle", V::Duration(d)) => self.fail_safe_throttle = d,
            ("resilience.stale_if_busy", V::Int(n)) => {
                self.stale_if_busy = (n > 0).then_some(n);
            }
            ("resilience.predict_confidence", V::Float(f)) => self.predict_confidence = f,
            ("resilience.predict_depth", V::Int(n)) => self.predict_depth = int(n),
            ("tiers.signing_key", V::Text(s)) => self.signing_key = Some(s),
            ("tiers.signing_key_previous", V::Text(s)) => self.signing_key_previous = Some(s),
            ("pools.cpu_threads", V::Int(n)) => self.pools.cpu_threads = int(n),
            ("pools.io_concurrency", V::Int(n)) => self.pools.io_concurrency = n,
            ("pools.io_adaptive", V::Bool(b)) => self.pools.io_adaptive = b,
            ("pools.memory_budget", V::Int(n)) => self.pools.memory_budget = Some(n),
            ("pools.memory_budget_fraction", V::Float(f)) => self.pools.memory_budget_fraction = f,
            ("pools.memory_default_weight", V::Int(n)) => self.pools.memory_default_weight = n,
            ("pools.memory_pressure_threshold", V::Float(f)) => {
                self.pools.memory_pressure_threshold = f
            }
            ("pools.queue_capacity", V::Int(n)) => self.queue_capacity = n,
            ("pools.cpu_queue_capacity", V::Int(n)) => {
                self.pools.cpu_queue_capacity = (n > 0).then_some(n);
            }
            ("pools.io_queue_capacity", V::Int(n)) => {
                self.pools.io_queue_capacity = (n > 0).then_some(n);
            }
            ("pools.memory_queue_capacity", V::Int(n)) => {
                self.pools.memory_queue_capacity = (n > 0).then_some(n);
            }
            ("pools.memory_sample_interval", V::Duration(d)) => {
                self.pools.memory_sample_interval = d
            }
            ("metrics.recording", V::Recording(r)) => self.recording = r,
            ("metrics.spans", V::Spans(l)) => self.spans = l,
            ("metrics.slow_call", V::Duration(d)) => self.slow_call = d,
            ("monitor.enabled", V::Bool(b)) => self.monitor_enabled = b,
            ("monitor.interval", V::Duration(d)) => self.monitor_interval = d,
            ("monitor.history", V::Int(n)) => self.monitor_history = int(n),
            ("monitor.history_persist", V::Bool(b)) => self.monitor_history_persist = b,
            ("monitor.history_dir", V::Path(p)) => self.monitor_history_dir = Some(p),
            ("monitor.history_retention", V::Duration(d)) => self.monitor_history_retention = d,
            ("monitor.history_max_size", V::Int(n)) => self.monitor_history_max_size = n,
            ("monitor.system", V::Bool(b)) => self.monitor_system = b,
            ("monitor.default_rules", V::Bool(b)) => self.monitor_default_rules = b,
            ("monitor.addr", V::Addr(a)) => self.monitor_addr = Some(a),
            ("monitor.token", V::Text(t)) => self.monitor_token = Some(t),
            ("monitor.allow_public", V::Bool(b)) => self.monitor_allow_public = b,
            (key, value) => unreachable!("key {key} with {value:?}"),
        }
    }

    /// Checks combinations no single key can be wrong about.
    fn check(&self, problems: &mut Vec<Problem>) {
        let mut fail = |key: &'static str, message: String| {
            problems.push(Problem {
                source: self
                    .origins
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "defaults".into()),
                key: key.into(),
                message,
            })
        };
        for (key, zero) in [
            ("pools.cpu_threads", self.pools.cpu_threads == 0),
            ("pools.io_concurrency", self.pools.io_concurrency == 0),
            ("l1.capacity", self.l1_capacity == 0),
            ("l1.max_size", self.l1_max_size == Some(0)),
            ("l3.max_size", self.l3_max_size == 0),
            ("monitor.history", self.monitor_history == 0),
            (
                "monitor.history_max_size",
                self.monitor_history_max_size == 0,
            ),
            ("tiers.writeback_capacity", self.writeback_capacity == 0),
        ] {
            if zero {
                fail(key, "must be at least 1".into());
            }
        }
        if self.predict_depth == 0 || self.predict_depth > crate::predict::Prediction::MAX_DEPTH {
            fail(
                "resilience.predict_depth",
                format!(
                    "is how many calls ahead to prefetch: expected a number from 1 to {}",
                    crate::predict::Prediction::MAX_DEPTH
                ),
            );
        }
        if self.monitor_interval.is_zero() {
            fail(
                "monitor.interval",
                "must be longer than zero, e.g. \"15s\"".into(),
            );
        }
        if self.origins.contains_key("pools.memory_budget")
            && self.origins.contains_key("pools.memory_budget_fraction")
        {
            fail(
                "pools.memory_budget_fraction",
                "cannot be set together with pools.memory_budget: the budget is either a size or a share of system memory; keep one".into(),
            );
        }
        if let Some(addr) = self
            .monitor_addr
            .filter(|a| !a.ip().is_loopback() && self.monitor_token.is_none())
            .filter(|_| !self.monitor_allow_public)
        {
            fail(
                "monitor.addr",
                format!("{addr} is reachable from other hosts and no monitor.token is set, so anyone could read the metrics; set monitor.token, bind 127.0.0.1, or set monitor.allow_public = true if that is intended"),
            );
        }
        if self.signing_key_previous.is_some() && self.signing_key.is_none() {
            fail(
                "tiers.signing_key_previous",
                "is set but tiers.signing_key is not: the previous key is only accepted on read while a current one signs; set tiers.signing_key".into(),
            );
        }
        if self.signing_key.as_ref().is_some_and(|k| k.len() < 16) {
            fail(
                "tiers.signing_key",
                "is shorter than 16 characters: use a long random secret, e.g. the output of `openssl rand -hex 32`".into(),
            );
        }
        let tls = &self.l2_tls;
        let tls_url = self
            .l2_url
            .as_ref()
            .is_some_and(|u| u.expose().starts_with("rediss://"));
        for (key, set) in [
            ("l2.tls_ca_file", tls.ca_file.is_some()),
            ("l2.tls_client_cert", tls.client_cert.is_some()),
            ("l2.tls_client_key", tls.client_key.is_some()),
            ("l2.tls_insecure", tls.insecure),
        ] {
            if set && !tls_url {
                fail(
                    key,
                    "applies to TLS connections only, and l2.url does not start with rediss://; use a rediss:// URL or remove it".into(),
                );
            }
        }
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            let (key, other) = match tls.client_cert {
                Some(_) => ("l2.tls_client_cert", "l2.tls_client_key"),
                None => ("l2.tls_client_key", "l2.tls_client_cert"),
            };
            fail(
                key,
                format!("is set but {other} is not: a client certificate needs its key (both PEM files)"),
            );
        }
        for (key, path) in [
            ("l2.tls_ca_file", &tls.ca_file),
            ("l2.tls_client_cert", &tls.client_cert),
            ("l2.tls_client_key", &tls.client_key),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::metadata(path).and_then(|m| {
                    m.is_file()
                        .then_some(())
                        .ok_or_else(|| std::io::Error::other("not a regular file"))
                }) {
                    fail(
                        key,
                        format!("{}: {e}; expected a readable PEM file", path.display()),
                    );
                }
            }
        }
        if self.monitor_token.is_some() && self.monitor_addr.is_none() {
            fail(
                "monitor.token",
                "is set but monitor.addr is not, so nothing would serve HTTP; set monitor.addr = \"127.0.0.1:9464\"".into(),
            );
        }
        if self.monitor_addr.is_some() && !self.monitor_enabled {
            fail(
                "monitor.addr",
                "is set but the monitor is off (level basic or advanced); set monitor.enabled = true".into(),
            );
        }
        if let Some(url) = &self.l2_url {
            let nodes = url.nodes();
            let bad = nodes.iter().find(|u| {
                !(u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || (!self.l2_cluster && u.starts_with("redis+unix://")))
            });
            if let Some(u) = bad {
                let u = url.redact(u);
                fail(
                    "l2.url",
                    if self.l2_cluster {
                        format!("{u} is not a Redis Cluster node URL: expected redis://host:port or rediss://host:port (TLS), separated by commas")
                    } else {
                        format!("{u} is not a Redis URL: expected one starting with redis://, rediss:// (TLS) or redis+unix://")
                    },
                );
            } else if nodes.is_empty() {
                fail(
                    "l2.url",
                    "is empty: expected a Redis URL such as redis://127.0.0.1:6379".into(),
                );
            } else if nodes.len() > 1 && !self.l2_cluster {
                fail(
                    "l2.url",
                    format!("{url} lists {} nodes, which is for a Redis Cluster: set l2.cluster = true, or give one URL", nodes.len()),
                );
            } else if self.l2_cluster
                && nodes.iter().any(|u| u.starts_with("rediss://"))
                    != nodes.iter().all(|u| u.starts_with("rediss://"))
            {
                fail(
                    "l2.url",
                    format!("{url} mixes redis:// and rediss:// nodes: a cluster is reached with TLS on every node or on none"),
                );
            }
        }
        if self.l2_cluster && self.l2_url.is_none() && self.l2_enabled {
            fail(
                "l2.cluster",
                "is set but l2.url is not: list the cluster's seed nodes, e.g. l2.url = \"redis://10.0.0.1:6379,redis://10.0.0.2:6379\"".into(),
            );
        }
        if self.namespace.is_empty()
            || self
                .namespace
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            fail(
                "namespace",
                format!(
                    "{:?}: expected a prefix without spaces or braces (braces are Redis Cluster hash tags), e.g. \"myapp\"",
                    self.namespace
                ),
            );
        }
        for (path, o) in &self.functions {
            // A table's ttl was range-checked when read; an override from the builder's
            // `function(..)` was not.
            if let Some(ttl) = o.ttl.filter(|t| t.is_zero() || *t > keys::MAX_TTL) {
                problems.push(Problem {
                    source: "configuration".into(),
                    key: format!("functions.\"{path}\".ttl"),
                    message: format!(
                        "{} is out of range: expected a duration from 1ms to {}",
                        keys::human(ttl),
                        keys::human(keys::MAX_TTL)
                    ),
                });
            }
            if o.concurrency == Some(0) {
                problems.push(Problem {
                    source: "configuration".into(),
                    key: format!("functions.\"{path}\".concurrency"),
                    message: "must be at least 1".into(),
                });
            }
            if o.capacity == Some(0) || o.capacity_bytes == Some(0) {
                problems.push(Problem {
                    source: "configuration".into(),
                    key: format!("functions.\"{path}\".capacity"),
                    message: "must be at least 1".into(),
                });
            }
        }
    }

    /// The shared tiers' settings.
    pub fn tier_config(&self) -> TierConfig {
        let mut t = TierConfig::l1_only();
        t.namespace = self.namespace.clone();
        if let (true, Some(url)) = (self.l2_enabled, &self.l2_url) {
            t.redis = Some(RedisOptions {
                url: url.clone(),
                op_timeout: self.l2_timeout,
                breaker_threshold: self.l2_breaker_threshold,
                breaker_cooldown: self.l2_breaker_cooldown,
                lease: self.l2_lease.then_some(self.l2_lease_ttl),
                tls: self.l2_tls.clone(),
                cluster: self.l2_cluster,
            });
        }
        if self.l3_enabled {
            t.l3 = Some(L3Options {
                dir: self.l3_dir.clone(),
                max_bytes: self.l3_max_size,
                sweep_interval: self.l3_sweep_interval,
                warm_l1: usize::try_from(self.l3_warm_l1).unwrap_or(usize::MAX),
            });
        }
        t.backplane = self.l2_backplane;
        t.order = self.lookup_order;
        t.writeback_capacity = self.writeback_capacity;
        t.envelope.compress_threshold = usize::try_from(self.compress_above).unwrap_or(usize::MAX);
        t.envelope.signing = self.signing_key.as_ref().map(|current| {
            crate::codec::SigningKeys::new(
                current.as_bytes(),
                self.signing_key_previous.as_deref().map(str::as_bytes),
            )
            .interned()
        });
        t
    }

    /// The monitor's settings (rules: the defaults when on, then `[[alerts]]`).
    pub fn monitor_config(&self) -> MonitorConfig {
        let mut rules = if self.monitor_default_rules {
            crate::monitor::alert::default_rules()
        } else {
            Vec::new()
        };
        rules.extend(self.alerts.iter().cloned());
        let mut m = MonitorConfig::default()
            .interval(self.monitor_interval)
            .history(self.monitor_history)
            .system(self.monitor_system)
            .rules(rules);
        // History is persisted where there is a place for it: next to L3, or where
        // `monitor.history_dir` says.
        let dir = match &self.monitor_history_dir {
            Some(dir) => Some(dir.clone()),
            None => self
                .l3_enabled
                .then(|| crate::monitor::history::default_dir(&self.l3_dir)),
        };
        if let Some(dir) = dir.filter(|_| self.monitor_history_persist) {
            m = m.persist(
                dir,
                self.monitor_history_retention,
                self.monitor_history_max_size,
            );
        }
        m.handlers.extend(self.alert_handlers.iter().cloned());
        m.http = self.monitor_addr.map(|addr| HttpConfig {
            addr,
            token: self.monitor_token.clone(),
        });
        m
    }

    /// The override for the function at `path`, if any.
    pub fn function(&self, path: &str) -> Option<&FnOverride> {
        self.functions.get(path)
    }

    /// What functions fall back on where neither their attribute nor their table says.
    pub fn fn_defaults(&self) -> FnDefaults {
        FnDefaults {
            level: self.level,
            l1_capacity: self.l1_capacity,
            l1_engine: self.l1_engine,
            demote_on_evict: self.demote_on_evict,
            memory_weight: self.pools.memory_default_weight,
            fail_safe: self.fail_safe,
            fail_safe_throttle: self.fail_safe_throttle,
            stale_if_busy: self.stale_if_busy,
            predict_confidence: self.predict_confidence,
            predict_depth: self.predict_depth,
        }
    }

    /// A problem for every `[functions."path"]` table (or builder override) that names no
    /// managed function, with the closest of `candidates` as a suggestion.
    pub fn unknown_functions(
        &self,
        is_function: impl Fn(&str) -> bool,
        candidates: &[String],
    ) -> Vec<Problem> {
        self.functions
            .keys()
            .filter(|path| !is_function(path))
            .map(|path| Problem {
                source: self
                    .function_sources
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| "configuration".into()),
                key: format!("functions.\"{path}\""),
                message: match keys::did_you_mean(path, candidates.iter().map(String::as_str)) {
                    Some(s) => format!("names no managed function; did you mean `{s}`?"),
                    None => format!(
                        "names no managed function; the managed functions are: {}",
                        if candidates.is_empty() {
                            "(none)".to_owned()
                        } else {
                            candidates.join(", ")
                        }
                    ),
                },
            })
            .collect()
    }

    /// A problem for every table that asks of its function what the function cannot do
    /// (`meta_of` finds the attribute's values by path): `fail_safe` without a ttl or
    /// without L1; `soft_timeout` or `refresh_ahead` when the attribute has none (the
    /// background run they need is generated by the attribute).
    pub fn function_misuse(
        &self,
        meta_of: impl Fn(&str) -> Option<&'static crate::meta::SiteMeta>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (path, o) in &self.functions {
            let Some(meta) = meta_of(path) else {
                continue;
            };
            let mut refuse = |key: &str, message: &str| {
                problems.push(Problem {
                    source: self
                        .function_sources
                        .get(path)
                        .cloned()
                        .unwrap_or_else(|| "configuration".into()),
                    key: format!("functions.\"{path}\".{key}"),
                    message: message.into(),
                });
            };
            if o.fail_safe.is_some_and(|w| !w.is_zero()) {
                if o.ttl.is_none() && meta.ttl.is_none() {
                    refuse("fail_safe", "keeps entries past their ttl, and this function's entries never expire; set `ttl = \"5m\"` in the same table (or in the attribute)");
                } else if !o.tiers.or(meta.tiers).is_none_or(|t| t.l1) {
                    refuse("fail_safe", "serves the kept value from L1, and this function keeps nothing in L1; add \"l1\" to its `tiers`, or remove `fail_safe`");
                }
            }
            if o.soft_timeout.is_some_and(|d| !d.is_zero()) && meta.soft_timeout.is_none() {
                refuse("soft_timeout", "needs the body to go on in the background, which the attribute sets up: add `soft_timeout = \"...\"` to the function's attribute (a table can then change it, or turn it off with \"0s\")");
            }
            let fail_safe = o.fail_safe.or(meta.fail_safe).or(self.fail_safe);
            if o.stale_if_busy.is_some_and(|n| n > 0) && fail_safe.is_none_or(|w| w.is_zero()) {
                refuse("stale_if_busy", "serves the value fail-safe keeps, and this function has no fail-safe; set `fail_safe = \"1h\"` too (here, in the attribute, or as resilience.fail_safe)");
            }
            if o.refresh_ahead.is_some_and(|r| r > 0.0) && meta.refresh_ahead.is_none() {
                refuse("refresh_ahead", "needs the body to run in the background, which the attribute sets up: add `refresh_ahead = 0.8` to the function's attribute (a table can then change it, or turn it off with 0)");
            }
            let predicting = |key: &str| {
                format!("needs the prefetch call the attribute generates: add `predict = \"markov\"` (or `\"sequential\"`) to the function's attribute; `{key}` here can then tune it")
            };
            match (o.predict, meta.predict) {
                (Some(Some(_)), None) => refuse("predict", &predicting("predict")),
                (Some(Some(PredictModel::Sequential)), Some(PredictModel::Markov)) => refuse(
                    "predict",
                    "\"sequential\" steps an integer argument the attribute names, and this function's attribute has `predict = \"markov\"`; write `predict = \"sequential(arg)\"` in the attribute, or \"markov\" or \"off\" here",
                ),
                _ => {}
            }
            if meta.predict.is_none() {
                if o.predict_confidence.is_some() {
                    refuse("predict_confidence", &predicting("predict_confidence"));
                }
                if o.predict_depth.is_some() {
                    refuse("predict_depth", &predicting("predict_depth"));
                }
            }
            if o.predict_depth
                .is_some_and(|d| d == 0 || d > crate::predict::Prediction::MAX_DEPTH)
            {
                refuse(
                    "predict_depth",
                    &format!(
                        "is how many calls ahead to prefetch: expected a number from 1 to {}",
                        crate::predict::Prediction::MAX_DEPTH
                    ),
                );
            }
        }
        problems
    }
}

/// Builds a configuration from the file, the environment and values set in code.
#[derive(Default)]
pub struct ConfigBuilder {
    layer: Layer,
    problems: Vec<Problem>,
    file: Option<PathBuf>,
    no_file: bool,
    env: Option<Vec<(String, String)>>,
    clock: Option<Clock>,
    handlers: Vec<Arc<dyn AlertHandler>>,
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("file", &self.file)
            .field("no_file", &self.no_file)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

/// The largest configuration file read: a real one is a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a configuration file: a regular file of at most [`MAX_FILE_BYTES`] (so a path such as
/// `/dev/zero` is refused instead of read until memory runs out).
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file; point it at an optimize.toml",
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "larger than 1 MiB; a configuration file is a few KiB",
        ));
    }
    Ok(text)
}

/// The process environment's `OPTIMIZE_*`-relevant variables. A variable whose name or
/// value is not UTF-8 cannot be one of ours by name, or cannot be parsed by value: it is
/// skipped (with a warning when its name starts with `OPTIMIZE_`) instead of panicking.
fn process_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => Some((k, v)),
            (Ok(k), Err(_)) if k.starts_with("OPTIMIZE_") => {
                tracing::warn!(variable = %k, "optimize: ignoring a variable whose value is not UTF-8");
                None
            }
            _ => None,
        })
        .collect()
}

impl ConfigBuilder {
    /// Sets the global level.
    pub fn level(mut self, level: Level) -> Self {
        self.layer.values.insert("level", Value::Level(level));
        self
    }

    /// Sets any key from its string form, as the environment would (`"l3.max_size"`,
    /// `"2GiB"`). An unknown key or a bad value is reported when the builder is resolved.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        let problem = |message: String| Problem {
            source: "builder".into(),
            key: key.to_owned(),
            message,
        };
        match keys::find(keys::KEYS, key) {
            Some(k) => match keys::read_str(k, value) {
                Ok(v) => {
                    self.layer.values.insert(k.path, v);
                }
                Err(message) => self.problems.push(problem(message)),
            },
            None => self.problems.push(problem(
                match keys::did_you_mean(key, keys::KEYS.iter().map(|k| k.path)) {
                    Some(s) => format!("unknown key; did you mean `{s}`?"),
                    None => "unknown key; docs/configuration.md lists them".into(),
                },
            )),
        }
        self
    }

    /// Overrides one function (by its path, as `f_cache().path()` shows it).
    pub fn function(mut self, path: impl Into<String>, o: FnOverride) -> Self {
        let values = self.layer.functions.entry(path.into()).or_default();
        let capacity = o
            .capacity_bytes
            .map(Value::Bytes)
            .or(o.capacity.map(Value::Int));
        let fields: [(&'static str, Option<Value>); 15] = [
            ("enabled", o.enabled.map(Value::Bool)),
            ("level", o.level.map(Value::Level)),
            ("ttl", o.ttl.map(Value::Duration)),
            ("tiers", o.tiers.map(Value::Tiers)),
            ("capacity", capacity),
            ("priority", o.priority.map(Value::Priority)),
            (
                "concurrency",
                o.concurrency.map(Value::Int).or(o
                    .adaptive_concurrency
                    .map(|(min, max)| Value::Adaptive(min, max))),
            ),
            ("fail_safe", o.fail_safe.map(Value::Duration)),
            (
                "fail_safe_throttle",
                o.fail_safe_throttle.map(Value::Duration),
            ),
            ("soft_timeout", o.soft_timeout.map(Value::Duration)),
            ("refresh_ahead", o.refresh_ahead.map(Value::Float)),
            ("stale_if_busy", o.stale_if_busy.map(Value::Int)),
            ("predict", o.predict.map(Value::Predict)),
            ("predict_confidence", o.predict_confidence.map(Value::Float)),
            (
                "predict_depth",
                o.predict_depth.map(|d| Value::Int(u64::from(d))),
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                values.insert(k, v);
            }
        }
        self
    }

    /// Adds an alert rule.
    pub fn alert(mut self, rule: Rule) -> Self {
        self.layer.alerts.push(rule);
        self
    }

    /// Reads this file instead of `$OPTIMIZE_CONFIG` or `./optimize.toml`; it must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads no file.
    pub fn without_file(mut self) -> Self {
        self.no_file = true;
        self
    }

    /// Reads these variables instead of the process environment (for tests and tools).
    pub fn environment<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The file to read: the one given, else `$OPTIMIZE_CONFIG` (must exist), else
    /// `./optimize.toml` when present.
    fn file_to_read(&self, env: &[(String, String)]) -> Option<(PathBuf, bool)> {
        if self.no_file {
            return None;
        }
        if let Some(f) = &self.file {
            return Some((f.clone(), true));
        }
        if let Some((_, p)) = env
            .iter()
            .find(|(k, v)| k == "OPTIMIZE_CONFIG" && !v.is_empty())
        {
            return Some((PathBuf::from(p), true));
        }
        let local = Path::new("optimize.toml");
        local.is_file().then(|| (local.to_path_buf(), false))
    }

    /// Resolves every source into a configuration, or every problem found. Reads the file and
    /// the environment; starts nothing.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        self.resolve_as(true)
    }

    /// Sets the clock of expiry and timing (tests pass [`Clock::mock`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adds an alert handler: told of every alert state change when the monitor runs.
    pub fn alert_handler(mut self, handler: impl AlertHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Resolves every source; `explicit` is whether the application asked for configuration
    /// (install) rather than a managed call needing it (lazy).
    pub(crate) fn resolve_as(self, explicit: bool) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = self.env.clone().unwrap_or_else(process_environment);
        let mut problems = self.problems.clone();
        let mut layers: Vec<Layer> = Vec::new();
        let file = self.file_to_read(&env);
        if let Some((path, required)) = &file {
            let shown = path.display().to_string();
            match read_file(path) {
                Ok(text) => match source::from_toml(&shown, &text) {
                    Ok(layer) => layers.push(layer),
                    Err(e) => problems.extend(e.0),
                },
                Err(e) if *required || e.kind() != std::io::ErrorKind::NotFound => {
                    problems.push(Problem {
                        source: shown,
                        key: String::new(),
                        message: format!("cannot be read: {e}"),
                    })
                }
                Err(_) => {}
            }
        }
        let (env_layer, unknown_variables) = source::from_env(env);
        match env_layer {
            Ok(layer) => layers.push(layer),
            Err(e) => problems.extend(e.0),
        }
        if explicit {
            problems.extend(unknown_variables);
        } else {
            for p in unknown_variables {
                tracing::warn!("optimize: ignoring {p}");
            }
        }
        let mut builder = self.layer;
        builder.source = "builder".into();
        layers.push(builder);

        let level = layers
            .iter()
            .rev()
            .find_map(|l| match l.values.get("level") {
                Some(Value::Level(level)) => Some(*level),
                _ => None,
            })
            .unwrap_or_default();
        // Persisting to disk is opt-in: a process that never configures optimize keeps
        // everything in memory (docs/architecture.md).
        let persist = explicit || file.is_some();
        let mut config = Config::default();
        if let Some(clock) = self.clock {
            config.clock = clock;
        }
        config.alert_handlers = self.handlers;
        for (key, value) in level.preset(persist) {
            config.apply(key, value);
            config.origins.insert(key, format!("level {level}"));
        }
        for layer in layers {
            for (key, value) in layer.values {
                config.apply(key, value);
                let origin = match layer.variables.get(key) {
                    Some(var) => format!("{} ({var})", layer.source),
                    None => layer.source.clone(),
                };
                config.origins.insert(key, origin);
            }
            for (path, values) in layer.functions {
                config
                    .function_sources
                    .insert(path.clone(), layer.source.clone());
                let o = config.functions.entry(path).or_default();
                for (k, v) in values {
                    set_override(o, k, v);
                }
            }
            config.alerts.extend(layer.alerts);
        }
        // A directory given for L3 turns it on unless something said otherwise.
        if config
            .origins
            .get("l3.dir")
            .is_some_and(|s| !s.starts_with("level"))
            && config
                .origins
                .get("l3.enabled")
                .is_none_or(|s| s.starts_with("level"))
        {
            config.l3_enabled = true;
        }
        config.settle_queue_capacities();
        config.check(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }
}

#[cfg(test)]
mod tests;
