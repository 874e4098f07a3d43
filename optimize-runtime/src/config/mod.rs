//! Configuration (design §10): one [`Config`] resolved from, later winning,
//! defaults ← the [`Level`] preset ← `optimize.toml` ← `OPTIMIZE_*` environment ← the builder.
//!
//! ```no_run
//! use optimize_runtime::config::{Config, Level};
//!
//! // At start-up, before any managed function runs:
//! Config::builder()
//!     .level(Level::Ultra)
//!     .set("l3.dir", "/var/cache/myapp")
//!     .install()
//!     .expect("valid configuration");
//! ```
//!
//! An application that never installs a configuration gets one lazily, at the first managed
//! call, from the same sources minus the builder (see [`global`]). docs/configuration.md
//! lists every key.

pub(crate) mod keys;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use keys::Value;
use source::Layer;

use crate::cache::l1::EngineKind;
use crate::cache::l2_redis::{RedisOptions, RedisUrl};
use crate::cache::tiered::{L3Options, TierConfig};
use crate::cache::Tier;
use crate::codec::EnvelopeOptions;
use crate::monitor::alert::Rule;
use crate::monitor::{HttpConfig, MonitorConfig};
use crate::pool::{PoolConfig, Priority};
use crate::site::TierSet;
use crate::stats::Recording;

/// An optimization level: a preset of what is turned on (docs/configuration.md has the
/// table; [`Level::preset`] is its code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// L1, outcome counters and pool routing; no shared tiers, no latency histograms.
    Basic,
    /// + L3 on disk, L2 when a Redis URL is set, compression above 1 KiB, full metrics.
    #[default]
    Advanced,
    /// + demotion of L1 evictions to L3, the monitor with system metrics and alert rules.
    Ultra,
    /// + compression of every shared-tier entry, a longer monitor history (6 hours).
    Extreme,
}

impl Level {
    /// Every level, from least to most.
    pub const ALL: [Level; 4] = [Level::Basic, Level::Advanced, Level::Ultra, Level::Extreme];

    /// The level's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Basic => "basic",
            Level::Advanced => "advanced",
            Level::Ultra => "ultra",
            Level::Extreme => "extreme",
        }
    }

    /// The level named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The keys the level sets. `persist` says whether L3 may be turned on: true once a
    /// configuration is installed or a file is present (see [`global`]).
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
                Value::Int(if at_least(Level::Extreme) { 1440 } else { 240 }),
            ),
        ]
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `[functions."path::fn"]` table (or the builder) sets for one function; unset
/// fields keep the attribute's values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FnOverride {
    /// `enabled = false` runs the function's body directly: no cache, no pool.
    pub enabled: Option<bool>,
    /// The function's level: its tiers (basic: L1 only), compression and demotion.
    pub level: Option<Level>,
    /// TTL.
    pub ttl: Option<Duration>,
    /// Tiers.
    pub tiers: Option<TierSet>,
    /// L1 capacity (entries; bytes for memory functions).
    pub capacity: Option<u64>,
    /// Admission priority.
    pub priority: Option<Priority>,
    /// io concurrency limit.
    pub concurrency: Option<u64>,
}

impl FnOverride {
    fn set(&mut self, key: &str, value: Value) {
        match (key, value) {
            ("enabled", Value::Bool(b)) => self.enabled = Some(b),
            ("level", Value::Level(l)) => self.level = Some(l),
            ("ttl", Value::Duration(d)) => self.ttl = Some(d),
            ("tiers", Value::Tiers(t)) => self.tiers = Some(t),
            ("capacity", Value::Int(n)) => self.capacity = Some(n),
            ("priority", Value::Priority(p)) => self.priority = Some(p),
            ("concurrency", Value::Int(n)) => self.concurrency = Some(n),
            (key, value) => unreachable!("function key {key} with {value:?}"),
        }
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
    /// Whether L2 is used when `l2_url` is set.
    pub l2_enabled: bool,
    l2_url: Option<RedisUrl>,
    /// L2 operation timeout.
    pub l2_timeout: Duration,
    /// Failures that open the L2 circuit breaker.
    pub l2_breaker_threshold: u32,
    /// How long the breaker stays open.
    pub l2_breaker_cooldown: Duration,
    /// Whether L3 runs.
    pub l3_enabled: bool,
    /// L3 directory.
    pub l3_dir: PathBuf,
    /// L3 size cap in bytes.
    pub l3_max_size: u64,
    /// L3 sweep interval.
    pub l3_sweep_interval: Duration,
    /// Which shared tier a miss asks first.
    pub lookup_order: [Tier; 2],
    /// Write-behind queue capacity.
    pub writeback_capacity: usize,
    /// Shared-tier entries larger than this are compressed (0: all).
    pub compress_above: u64,
    /// Whether L1 capacity evictions are written to L3.
    pub demote_on_evict: bool,
    /// Pool settings.
    pub pools: PoolConfig,
    /// What calls record.
    pub recording: Recording,
    /// Calls at least this slow are logged at info.
    pub slow_call: Duration,
    /// Whether the monitor runs.
    pub monitor_enabled: bool,
    /// Monitor evaluation interval.
    pub monitor_interval: Duration,
    /// Monitor history entries.
    pub monitor_history: usize,
    /// Whether the monitor samples system metrics.
    pub monitor_system: bool,
    /// Whether the shipped alert rules are on.
    pub monitor_default_rules: bool,
    /// Where the monitor serves HTTP (off when `None`).
    pub monitor_addr: Option<SocketAddr>,
    monitor_token: Option<String>,
    /// Alert rules from `[[alerts]]`.
    pub alerts: Vec<Rule>,
    /// Per-function overrides, by function path.
    pub functions: BTreeMap<String, FnOverride>,
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

/// Why [`ConfigBuilder::install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A configuration was installed before, or resolved lazily by a managed call.
    #[error("optimize is already configured (by an earlier install, or lazily by the first managed call); install the configuration once, at start-up, before any managed function runs")]
    AlreadyInstalled,
    /// The monitor could not start (its HTTP address is taken, say).
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
}

impl Default for Config {
    fn default() -> Self {
        let pools = PoolConfig::default();
        Self {
            level: Level::Advanced,
            namespace: "optimize".into(),
            l1_engine: EngineKind::default(),
            l1_capacity: crate::cache::l1::L1Options::DEFAULT_CAPACITY,
            l2_enabled: false,
            l2_url: None,
            l2_timeout: TierConfig::DEFAULT_L2_TIMEOUT,
            l2_breaker_threshold: 5,
            l2_breaker_cooldown: Duration::from_secs(5),
            l3_enabled: false,
            l3_dir: TierConfig::default_l3_dir(),
            l3_max_size: TierConfig::DEFAULT_L3_MAX_BYTES,
            l3_sweep_interval: Duration::from_secs(60),
            lookup_order: [Tier::L2, Tier::L3],
            writeback_capacity: 10_000,
            compress_above: EnvelopeOptions::default().compress_threshold as u64,
            demote_on_evict: false,
            pools,
            recording: Recording::Full,
            slow_call: Duration::from_secs(1),
            monitor_enabled: false,
            monitor_interval: Duration::from_secs(15),
            monitor_history: 240,
            monitor_system: false,
            monitor_default_rules: false,
            monitor_addr: None,
            monitor_token: None,
            alerts: Vec::new(),
            functions: BTreeMap::new(),
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

    /// The configuration from defaults, the level, the file and the environment.
    pub fn load() -> Result<Config, ConfigError> {
        ConfigBuilder::default().resolve(true)
    }

    fn apply(&mut self, key: &'static str, value: Value) {
        use Value as V;
        match (key, value) {
            ("level", V::Level(l)) => self.level = l,
            ("namespace", V::Text(s)) => self.namespace = s,
            ("l1.engine", V::Engine(e)) => self.l1_engine = e,
            ("l1.capacity", V::Int(n)) => self.l1_capacity = n,
            ("l2.enabled", V::Bool(b)) => self.l2_enabled = b,
            ("l2.url", V::Text(s)) => self.l2_url = Some(RedisUrl::new(s)),
            ("l2.timeout", V::Duration(d)) => self.l2_timeout = d,
            ("l2.breaker_threshold", V::Int(n)) => self.l2_breaker_threshold = int(n),
            ("l2.breaker_cooldown", V::Duration(d)) => self.l2_breaker_cooldown = d,
            ("l3.enabled", V::Bool(b)) => self.l3_enabled = b,
            ("l3.dir", V::Path(p)) => self.l3_dir = p,
            ("l3.max_size", V::Int(n)) => self.l3_max_size = n,
            ("l3.sweep_interval", V::Duration(d)) => self.l3_sweep_interval = d,
            ("tiers.lookup_order", V::Order(o)) => self.lookup_order = o,
            ("tiers.writeback_capacity", V::Int(n)) => self.writeback_capacity = int(n),
            ("tiers.compress_above", V::Int(n)) => self.compress_above = n,
            ("tiers.demote_on_evict", V::Bool(b)) => self.demote_on_evict = b,
            ("pools.cpu_threads", V::Int(n)) => self.pools.cpu_threads = int(n),
            ("pools.io_concurrency", V::Int(n)) => self.pools.io_concurrency = n,
            ("pools.memory_budget", V::Int(n)) => self.pools.memory_budget = Some(n),
            ("pools.memory_budget_fraction", V::Float(f)) => self.pools.memory_budget_fraction = f,
            ("pools.memory_default_weight", V::Int(n)) => self.pools.memory_default_weight = n,
            ("pools.memory_pressure_threshold", V::Float(f)) => {
                self.pools.memory_pressure_threshold = f
            }
            ("pools.memory_sample_interval", V::Duration(d)) => {
                self.pools.memory_sample_interval = d
            }
            ("metrics.recording", V::Recording(r)) => self.recording = r,
            ("metrics.slow_call", V::Duration(d)) => self.slow_call = d,
            ("monitor.enabled", V::Bool(b)) => self.monitor_enabled = b,
            ("monitor.interval", V::Duration(d)) => self.monitor_interval = d,
            ("monitor.history", V::Int(n)) => self.monitor_history = int(n),
            ("monitor.system", V::Bool(b)) => self.monitor_system = b,
            ("monitor.default_rules", V::Bool(b)) => self.monitor_default_rules = b,
            ("monitor.addr", V::Addr(a)) => self.monitor_addr = Some(a),
            ("monitor.token", V::Text(t)) => self.monitor_token = Some(t),
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
            ("l3.max_size", self.l3_max_size == 0),
            ("monitor.history", self.monitor_history == 0),
            ("tiers.writeback_capacity", self.writeback_capacity == 0),
        ] {
            if zero {
                fail(key, "must be at least 1".into());
            }
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
            let u = url.expose();
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+unix://"))
            {
                fail(
                    "l2.url",
                    format!("{url} is not a Redis URL: expected one starting with redis://, rediss:// (TLS) or redis+unix://"),
                );
            }
        }
        if self.namespace.is_empty() || self.namespace.contains(char::is_whitespace) {
            fail(
                "namespace",
                format!(
                    "{:?}: expected a prefix without spaces, e.g. \"myapp\"",
                    self.namespace
                ),
            );
        }
        for (path, o) in &self.functions {
            if o.concurrency == Some(0) {
                problems.push(Problem {
                    source: "configuration".into(),
                    key: format!("functions.\"{path}\".concurrency"),
                    message: "must be at least 1".into(),
                });
            }
            if o.capacity == Some(0) {
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
            });
        }
        if self.l3_enabled {
            t.l3 = Some(L3Options {
                dir: self.l3_dir.clone(),
                max_bytes: self.l3_max_size,
                sweep_interval: self.l3_sweep_interval,
            });
        }
        t.order = self.lookup_order;
        t.writeback_capacity = self.writeback_capacity;
        t.envelope.compress_threshold = usize::try_from(self.compress_above).unwrap_or(usize::MAX);
        t.l1_engine = Some(self.l1_engine);
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
            .slow_call(self.slow_call)
            .rules(rules);
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
}

/// Builds a configuration from the file, the environment and values set in code.
#[derive(Debug, Default)]
pub struct ConfigBuilder {
    layer: Layer,
    problems: Vec<Problem>,
    file: Option<PathBuf>,
    no_file: bool,
    env: Option<Vec<(String, String)>>,
}

impl ConfigBuilder {
    /// Sets the global level.
    pub fn level(mut self, level: Level) -> Self {
        self.layer.values.insert("level", Value::Level(level));
        self
    }

    /// Sets any key from its string form, as the environment would (`"l3.max_size"`,
    /// `"2GiB"`). An unknown key or a bad value is reported by [`ConfigBuilder::install`].
    pub fn set(mut self, key: &str, value: &str) -> Self {
        let problem = |message: String| Problem {
            source: "builder".into(),
            key: key.to_owned(),
            message,
        };
        match keys::find(keys::KEYS, key) {
            Some(k) => match keys::parse_str(k.ty, value) {
                Some(v) => {
                    self.layer.values.insert(k.path, v);
                }
                None => self.problems.push(problem(format!(
                    "{value:?} is not valid: expected {}",
                    k.ty.expected()
                ))),
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
        let fields: [(&'static str, Option<Value>); 7] = [
            ("enabled", o.enabled.map(Value::Bool)),
            ("level", o.level.map(Value::Level)),
            ("ttl", o.ttl.map(Value::Duration)),
            ("tiers", o.tiers.map(Value::Tiers)),
            ("capacity", o.capacity.map(Value::Int)),
            ("priority", o.priority.map(Value::Priority)),
            ("concurrency", o.concurrency.map(Value::Int)),
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

    /// Resolves every source; `explicit` is whether the application asked for configuration
    /// (install) rather than a managed call needing it (lazy).
    pub(crate) fn resolve(self, explicit: bool) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = self
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let mut problems = self.problems.clone();
        let mut layers: Vec<Layer> = Vec::new();
        let file = self.file_to_read(&env);
        if let Some((path, required)) = &file {
            let shown = path.display().to_string();
            match std::fs::read_to_string(path) {
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
                let o = config.functions.entry(path).or_default();
                for (k, v) in values {
                    o.set(k, v);
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
        config.check(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Resolves the configuration and installs it: starts the shared tiers and pools with
    /// it, sets the recording level, and starts the monitor when it is on. Once per process,
    /// before any managed function runs.
    pub fn install(self) -> Result<&'static Config, InstallError> {
        let _one = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        if GLOBAL.get().is_some()
            || crate::cache::tiered::global_if_started().is_some()
            || crate::pool::global_if_started().is_some()
        {
            return Err(InstallError::AlreadyInstalled);
        }
        let config = self.resolve(true)?;
        let config = GLOBAL.get_or_init(|| config);
        start(config, true)?;
        Ok(config)
    }
}

static GLOBAL: OnceLock<Config> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Applies what is process-wide: tiers, pools, recording, monitor.
fn start(config: &'static Config, strict: bool) -> Result<(), InstallError> {
    crate::stats::set_recording(config.recording);
    crate::stats::set_slow_call_threshold(config.slow_call);
    let _ = crate::cache::tiered::init(config.tier_config());
    let _ = crate::pool::init(config.pools.clone());
    if config.monitor_enabled && crate::monitor::global().is_none() {
        match crate::monitor::start(config.monitor_config()) {
            Ok(_) => {}
            Err(e) if strict => return Err(e.into()),
            Err(e) => tracing::error!(error = %e, "optimize: the monitor did not start"),
        }
    }
    Ok(())
}

/// The configuration in force: the installed one, else resolved now from defaults, the
/// level, the file and the environment (the lazy default). Invalid configuration found
/// lazily is logged as an error and the defaults are used: a managed call never fails
/// because of configuration; install it at start-up to fail fast instead.
pub fn global() -> &'static Config {
    if let Some(c) = GLOBAL.get() {
        return c;
    }
    let _one = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = GLOBAL.get() {
        return c;
    }
    let config = ConfigBuilder::default().resolve(false).unwrap_or_else(|e| {
        tracing::error!(error = %e, "optimize: using the default configuration");
        ConfigBuilder::default()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .resolve(false)
            .unwrap_or_default()
    });
    let config = GLOBAL.get_or_init(|| config);
    let _ = start(config, false);
    config
}

/// The installed or lazily resolved configuration, if there is one yet.
pub fn global_if_resolved() -> Option<&'static Config> {
    GLOBAL.get()
}

#[cfg(test)]
mod tests;
