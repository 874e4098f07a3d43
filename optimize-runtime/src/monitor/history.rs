//! The monitor's history: one [`Point`] per evaluation (what every function, pool and the
//! system did during that interval), kept in memory and, by default, in an embedded sled
//! database that survives restarts, retained by age and size and rolled up into one-minute
//! points for long ranges. `/history` reads it with a range, a step and a function filter;
//! `/stats` reads its trends.
//!
//! A point holds *deltas* (calls during the interval, the latency histogram of those calls),
//! never the process's cumulative counters, so points from before and after a restart add up
//! and any number of points merge into one (downsampling) without losing the quantiles.
//!
//! sled is unmaintained: every call on it is guarded (an error or a panic turns persistence
//! off, logged once, and the monitor keeps its in-memory history).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::system::SystemStats;
use super::Sources;
use crate::stats::{FnStats, Histogram, Outcome};

/// What one function did during a point's span.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FnDelta {
    #[serde(rename = "fn")]
    path: String,
    kind: String,
    calls: u64,
    /// Calls that could have been hits (the hit ratio's denominator).
    cacheable: u64,
    /// Hits per tier: L1, L2, L3.
    hits: [u64; 3],
    errors: u64,
    stale: u64,
    /// Whole-call latency of the span's calls, sparse.
    latency: Vec<(u16, u64)>,
}

/// One pool during a point's span.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolSample {
    pool: String,
    /// Waiting at the end of the span (a mean once points merge).
    queued: f64,
    /// Running at the end of the span (a mean once points merge).
    active: f64,
    /// Finished during the span.
    completed: u64,
    /// Admission waits during the span, sparse.
    wait: Vec<(u16, u64)>,
}

/// The system during a point's span (means once points merge).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SystemSample {
    cpu_usage: Option<f64>,
    memory_used: Option<f64>,
    memory_total: Option<f64>,
    process_resident: Option<f64>,
    process_cpu: Option<f64>,
}

/// One history entry as stored: what happened in the `span_ms` before `at_unix_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Point {
    at_unix_ms: u64,
    span_ms: u64,
    functions: Vec<FnDelta>,
    pools: Vec<PoolSample>,
    system: Option<SystemSample>,
    alerts_firing: u64,
}

impl Point {
    /// Adds `other` (a later or earlier point) into this one: counters and histograms add,
    /// gauges become span-weighted means, the end is the later end.
    fn merge(&mut self, other: &Point) {
        let (a, b) = (self.span_ms.max(1) as f64, other.span_ms.max(1) as f64);
        let mean = |x: f64, y: f64| (x * a + y * b) / (a + b);
        let mean_opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => Some(mean(x, y)),
            (x, y) => x.or(y),
        };
        for f in &other.functions {
            match self.functions.iter_mut().find(|g| g.path == f.path) {
                Some(g) => {
                    g.calls += f.calls;
                    g.cacheable += f.cacheable;
                    for (h, o) in g.hits.iter_mut().zip(f.hits) {
                        *h += o;
                    }
                    g.errors += f.errors;
                    g.stale += f.stale;
                    g.latency = add_sparse(&g.latency, &f.latency);
                }
                None => self.functions.push(f.clone()),
            }
        }
        for p in &other.pools {
            match self.pools.iter_mut().find(|q| q.pool == p.pool) {
                Some(q) => {
                    q.queued = mean(q.queued, p.queued);
                    q.active = mean(q.active, p.active);
                    q.completed += p.completed;
                    q.wait = add_sparse(&q.wait, &p.wait);
                }
                None => self.pools.push(p.clone()),
            }
        }
        self.system = match (self.system.take(), &other.system) {
            (Some(x), Some(y)) => Some(SystemSample {
                cpu_usage: mean_opt(x.cpu_usage, y.cpu_usage),
                memory_used: mean_opt(x.memory_used, y.memory_used),
                memory_total: mean_opt(x.memory_total, y.memory_total),
                process_resident: mean_opt(x.process_resident, y.process_resident),
                process_cpu: mean_opt(x.process_cpu, y.process_cpu),
            }),
            (x, y) => x.or_else(|| y.clone()),
        };
        self.alerts_firing = self.alerts_firing.max(other.alerts_firing);
        self.at_unix_ms = self.at_unix_ms.max(other.at_unix_ms);
        self.span_ms += other.span_ms;
    }
}

fn add_sparse(a: &[(u16, u64)], b: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut h = Histogram::from_sparse(a);
    h.merge(&Histogram::from_sparse(b));
    h.sparse()
}

/// The cumulative figures the last point was measured from.
#[derive(Default)]
pub(crate) struct Baseline {
    at_unix_ms: Option<u64>,
    /// Each function's cumulative statistics at the last point.
    functions: Vec<(String, FnStats)>,
    pool_waits: Vec<(&'static str, Histogram, u64)>,
}

impl Baseline {
    /// The point for the time since the last call, and moves the baseline to now.
    pub(crate) fn advance(
        &mut self,
        sources: &Sources,
        system: Option<&SystemStats>,
        alerts_firing: usize,
        now_unix_ms: u64,
        started_unix_ms: u64,
    ) -> Point {
        let since = self.at_unix_ms.unwrap_or(started_unix_ms);
        let mut functions = Vec::new();
        let mut seen = Vec::new();
        for site in sources.registry.sites() {
            // Cumulative: `reset_stats` does not change it, so nothing is lost or counted twice.
            let now = site.cumulative_stats();
            let before = self
                .functions
                .iter()
                .find(|(p, _)| p == site.path())
                .map(|(_, s)| s);
            let delta = |outcome: Outcome| {
                let n = now.count(outcome);
                before.map_or(n, |b| n.saturating_sub(b.count(outcome)))
            };
            let calls: u64 = Outcome::ALL.iter().map(|&o| delta(o)).sum();
            let latency = match before {
                Some(b) => now.latency.since(&b.latency),
                None => now.latency.clone(),
            };
            if calls > 0 || latency.count() > 0 {
                let skipped = [
                    Outcome::Executed,
                    Outcome::Failed,
                    Outcome::Refreshed,
                    Outcome::Prefetched,
                ];
                functions.push(FnDelta {
                    path: site.path().to_owned(),
                    kind: site.kind().as_str().to_owned(),
                    calls,
                    cacheable: calls - skipped.iter().map(|&o| delta(o)).sum::<u64>(),
                    hits: [
                        delta(Outcome::HitL1),
                        delta(Outcome::HitL2),
                        delta(Outcome::HitL3),
                    ],
                    errors: Outcome::ALL
                        .iter()
                        .filter(|o| o.is_error())
                        .map(|&o| delta(o))
                        .sum(),
                    stale: delta(Outcome::Stale),
                    latency: latency.sparse(),
                });
            }
            seen.push((site.path().to_owned(), now));
        }
        self.functions = seen;
        let stats = sources.pools.stats();
        let mut pools = Vec::new();
        let mut waits = Vec::new();
        for (name, g) in [
            ("cpu", &stats.cpu),
            ("io", &stats.io),
            ("memory", &stats.memory),
        ] {
            let before = self.pool_waits.iter().find(|(n, _, _)| *n == name);
            let wait = before.map_or(g.wait.clone(), |(_, w, _)| g.wait.since(w));
            let completed = before.map_or(g.completed, |(_, _, c)| {
                g.completed.checked_sub(*c).unwrap_or(g.completed)
            });
            pools.push(PoolSample {
                pool: name.to_owned(),
                queued: g.queued_total() as f64,
                active: g.active as f64,
                completed,
                wait: wait.sparse(),
            });
            waits.push((name, g.wait.clone(), g.completed));
        }
        self.pool_waits = waits;
        self.at_unix_ms = Some(now_unix_ms);
        Point {
            at_unix_ms: now_unix_ms,
            span_ms: now_unix_ms.saturating_sub(since).max(1),
            functions,
            pools,
            system: system.map(|s| SystemSample {
                cpu_usage: s.cpu_usage,
                memory_used: s.memory_used,
                memory_total: s.memory_total,
                process_resident: s.process_resident,
                process_cpu: s.process_cpu,
            }),
            alerts_firing: alerts_firing as u64,
        }
    }
}

/// Where and how long history is kept on disk.
#[derive(Clone, Debug)]
pub struct PersistConfig {
    /// The database's directory (created when missing).
    pub dir: PathBuf,
    /// Points older than this are deleted. Raw points are kept for at most
    /// [`RAW_RETENTION`] of it; one-minute rollups for all of it.
    pub retention: Duration,
    /// The most bytes the stored points may take; the oldest go first beyond it.
    pub max_bytes: u64,
}

/// How long raw (one per evaluation) points are kept; older ranges are read from the
/// one-minute rollups.
pub const RAW_RETENTION: Duration = Duration::from_secs(6 * 3600);
/// The window of `/stats` trends: the last hour against the hour before.
pub const TREND_WINDOW: Duration = Duration::from_secs(3600);
/// The width of a rollup point.
pub const ROLLUP: Duration = Duration::from_secs(60);
/// The most points one `/history` answer holds; a smaller step is widened to fit.
pub const MAX_POINTS: u64 = 2_000;
/// The most raw points one query reads; longer ranges are read from the rollups.
const MAX_RAW_READ: usize = 20_000;

/// The history: the last points in memory, and the store when persistence is on.
pub(crate) struct History {
    memory: Mutex<VecDeque<Point>>,
    memory_len: usize,
    store: Option<SledHistory>,
}

impl History {
    /// Keeps `memory_len` points in memory; opens the store when `persist` is set (a store
    /// that cannot open is logged and left out: history is then in memory only).
    pub(crate) fn new(memory_len: usize, persist: Option<&PersistConfig>) -> Self {
        let store = persist.and_then(|p| match SledHistory::open(p) {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::error!(dir = %p.dir.display(), error = %e, "optimize: the monitor's history cannot be persisted; keeping it in memory only");
                None
            }
        });
        Self {
            memory: Mutex::new(VecDeque::with_capacity(memory_len.min(4096))),
            memory_len: memory_len.max(1),
            store,
        }
    }

    /// Whether points are being written to disk.
    pub(crate) fn is_persisted(&self) -> bool {
        self.store.as_ref().is_some_and(|s| !s.failed.load(Relaxed))
    }

    pub(crate) fn record(&self, point: Point) {
        if let Some(store) = &self.store {
            store.append(&point);
        }
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if memory.len() == self.memory_len {
            memory.pop_front();
        }
        memory.push_back(point);
    }

    /// The last `n` evaluations, oldest first, as recorded (with only `function`'s figures
    /// when it is given).
    pub(crate) fn last(&self, n: usize, function: Option<&str>) -> HistoryAnswer {
        let (source, points) = match self.store.as_ref().and_then(|s| s.last(n)) {
            Some(points) => ("raw", points),
            None => {
                let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
                let skip = memory.len().saturating_sub(n);
                ("memory", memory.iter().skip(skip).cloned().collect())
            }
        };
        let span = |p: &Point| (p.at_unix_ms.saturating_sub(p.span_ms), p.at_unix_ms);
        HistoryAnswer {
            from: points.first().map_or(0, |p| span(p).0),
            to: points.last().map_or(0, |p| span(p).1),
            step_ms: None,
            source,
            persisted: self.is_persisted(),
            points: points
                .iter()
                .map(|p| HistoryPoint::of(p, function))
                .collect(),
        }
    }

    /// Points ending in `from..=to`, merged `step` at a time (see [`HistoryQuery`]).
    pub(crate) fn query(&self, q: &HistoryQuery, now_unix_ms: u64) -> HistoryAnswer {
        let to = q.to.unwrap_or(now_unix_ms);
        let from = q.from.unwrap_or(to.saturating_sub(3_600_000)).min(to);
        let range = to - from;
        let widest = range.div_ceil(MAX_POINTS).max(1);
        let mut step = q
            .step
            .map_or(widest, |s| (s.as_millis() as u64).max(widest));
        let (source, mut points) = match &self.store {
            Some(store) if !store.failed.load(Relaxed) => {
                let raw_from = now_unix_ms.saturating_sub(RAW_RETENTION.as_millis() as u64);
                let raw = (step < ROLLUP.as_millis() as u64 && from >= raw_from)
                    .then(|| store.range(Tree::Raw, from, to, MAX_RAW_READ))
                    .flatten();
                match raw {
                    Some(points) => ("raw", points),
                    None => (
                        "minutes",
                        store
                            .range(Tree::Minutes, from, to, usize::MAX)
                            .unwrap_or_default(),
                    ),
                }
            }
            _ => {
                let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
                let points = memory
                    .iter()
                    .filter(|p| (from..=to).contains(&p.at_unix_ms))
                    .cloned()
                    .collect();
                ("memory", points)
            }
        };
        points.sort_by_key(|p| p.at_unix_ms);
        let each = q.step.is_none() && points.len() as u64 <= MAX_POINTS;
        if each {
            // One point per evaluation, as recorded.
            step = 1;
        }
        let mut buckets: Vec<(u64, Point)> = Vec::new();
        for p in points {
            let index = (p.at_unix_ms - from) / step;
            match buckets.last_mut() {
                Some((i, merged)) if *i == index => merged.merge(&p),
                _ => buckets.push((index, p)),
            }
        }
        HistoryAnswer {
            from,
            to,
            step_ms: (!each).then_some(step),
            source,
            persisted: self.is_persisted(),
            points: buckets
                .into_iter()
                .map(|(_, p)| HistoryPoint::of(&p, q.function.as_deref()))
                .collect(),
        }
    }

    /// The trends `/stats` shows: the last `window` against the one before it.
    pub(crate) fn trends(&self, window: Duration, now_unix_ms: u64) -> Trends {
        let w = window.as_millis() as u64;
        let answer = self.query(
            &HistoryQuery {
                from: Some(now_unix_ms.saturating_sub(2 * w)),
                to: Some(now_unix_ms),
                step: Some(window),
                function: None,
            },
            now_unix_ms,
        );
        let before_end = now_unix_ms.saturating_sub(w);
        let (mut before, mut now) = (None, None);
        for p in answer.points {
            if p.at_unix_ms <= before_end {
                before = Some(p);
            } else {
                now = Some(p);
            }
        }
        let mut functions: Vec<FnTrend> = Vec::new();
        let figures = |p: &Option<HistoryPoint>, path: &str| {
            p.as_ref()
                .and_then(|p| p.functions.iter().find(|f| f.path == path))
                .map(|f| TrendFigures {
                    calls: f.calls,
                    hit_ratio: f.hit_ratio,
                    p99_ms: f.p99_ms,
                    errors: f.errors,
                })
        };
        for p in now.iter().chain(before.iter()) {
            for f in &p.functions {
                if !functions.iter().any(|t| t.path == f.path) {
                    functions.push(FnTrend {
                        path: f.path.clone(),
                        now: figures(&now, &f.path),
                        before: figures(&before, &f.path),
                    });
                }
            }
        }
        Trends {
            window_s: window.as_secs(),
            functions,
        }
    }
}

/// What `/history` is asked: the range, the step, one function.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// Start, milliseconds since the Unix epoch (default: an hour before `to`).
    pub from: Option<u64>,
    /// End, milliseconds since the Unix epoch (default: now).
    pub to: Option<u64>,
    /// How much time each answered point covers (default: one evaluation, widened so that
    /// at most [`MAX_POINTS`] points come back).
    pub step: Option<Duration>,
    /// Only this function's figures (by path).
    pub function: Option<String>,
}

/// `/history`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryAnswer {
    /// The range, milliseconds since the Unix epoch.
    pub from: u64,
    /// The range's end.
    pub to: u64,
    /// The step used (it may be wider than asked); `None`: one point per evaluation, as
    /// recorded (no step asked, and at most [`MAX_POINTS`] of them).
    pub step_ms: Option<u64>,
    /// Where the points came from: `raw` or `minutes` (on disk), or `memory`.
    pub source: &'static str,
    /// Whether history is being written to disk.
    pub persisted: bool,
    /// The points, oldest first; steps with no evaluation in them are absent.
    pub points: Vec<HistoryPoint>,
}

/// One function in a [`HistoryPoint`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FnHistory {
    /// Its path.
    #[serde(rename = "fn")]
    pub path: String,
    /// `io`, `cpu` or `memory`.
    pub kind: String,
    /// Calls in the point's span.
    pub calls: u64,
    /// Calls per second over the span.
    pub calls_per_s: f64,
    /// Hits over cacheable calls.
    pub hit_ratio: f64,
    /// Hits per tier.
    pub hits_l1: u64,
    /// L2 hits.
    pub hits_l2: u64,
    /// L3 hits.
    pub hits_l3: u64,
    /// `Err`/`None` results, panics and rejections.
    pub errors: u64,
    /// Stale values served (fail-safe).
    pub stale: u64,
    /// Latency quantiles of the span's calls, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// One pool in a [`HistoryPoint`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolHistory {
    /// `cpu`, `io` or `memory`.
    pub pool: String,
    /// Waiting (a mean over the span).
    pub queued: f64,
    /// Running (a mean over the span).
    pub active: f64,
    /// Finished in the span.
    pub completed: u64,
    /// 99th percentile of the span's admission waits, milliseconds.
    pub wait_p99_ms: f64,
}

/// The system in a [`HistoryPoint`] (means over the span).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemHistory {
    /// System CPU use, 0..1.
    pub cpu_usage: Option<f64>,
    /// This process's CPU use over all cores, 0..1.
    pub process_cpu: Option<f64>,
    /// System memory in use, bytes.
    pub memory_used: Option<f64>,
    /// System memory, bytes.
    pub memory_total: Option<f64>,
    /// This process's resident memory, bytes.
    pub process_resident: Option<f64>,
}

/// One step of `/history`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// The end of the span, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long the span is, milliseconds.
    pub span_ms: u64,
    /// Calls of every (listed) function in the span.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Hits over cacheable calls, every (listed) function.
    pub hit_ratio: f64,
    /// Latency quantiles over every (listed) function's calls, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Errors.
    pub errors: u64,
    /// Stale values served.
    pub stale: u64,
    /// Alert instances firing (the most at once).
    pub alerts_firing: u64,
    /// Each function that was called in the span.
    pub functions: Vec<FnHistory>,
    /// The pools.
    pub pools: Vec<PoolHistory>,
    /// The system, when sampled.
    pub system: Option<SystemHistory>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl HistoryPoint {
    pub(crate) fn of(p: &Point, only: Option<&str>) -> Self {
        let secs = p.span_ms.max(1) as f64 / 1000.0;
        let listed: Vec<&FnDelta> = p
            .functions
            .iter()
            .filter(|f| only.is_none_or(|o| f.path == o))
            .collect();
        let mut all = Histogram::empty();
        let (mut calls, mut cacheable, mut hits, mut errors, mut stale) = (0, 0, 0, 0, 0);
        let functions = listed
            .iter()
            .map(|f| {
                let latency = Histogram::from_sparse(&f.latency);
                all.merge(&latency);
                calls += f.calls;
                cacheable += f.cacheable;
                hits += f.hits.iter().sum::<u64>();
                errors += f.errors;
                stale += f.stale;
                FnHistory {
                    path: f.path.clone(),
                    kind: f.kind.clone(),
                    calls: f.calls,
                    calls_per_s: f.calls as f64 / secs,
                    hit_ratio: ratio(f.hits.iter().sum(), f.cacheable),
                    hits_l1: f.hits[0],
                    hits_l2: f.hits[1],
                    hits_l3: f.hits[2],
                    errors: f.errors,
                    stale: f.stale,
                    p50_ms: ms(latency.quantile(0.5)),
                    p99_ms: ms(latency.quantile(0.99)),
                }
            })
            .collect();
        Self {
            at_unix_ms: p.at_unix_ms,
            span_ms: p.span_ms,
            calls,
            calls_per_s: calls as f64 / secs,
            hit_ratio: ratio(hits, cacheable),
            p50_ms: ms(all.quantile(0.5)),
            p99_ms: ms(all.quantile(0.99)),
            errors,
            stale,
            alerts_firing: p.alerts_firing,
            functions,
            pools: p
                .pools
                .iter()
                .map(|s| PoolHistory {
                    pool: s.pool.clone(),
                    queued: s.queued,
                    active: s.active,
                    completed: s.completed,
                    wait_p99_ms: ms(Histogram::from_sparse(&s.wait).quantile(0.99)),
                })
                .collect(),
            system: p.system.as_ref().map(|s| SystemHistory {
                cpu_usage: s.cpu_usage,
                process_cpu: s.process_cpu,
                memory_used: s.memory_used,
                memory_total: s.memory_total,
                process_resident: s.process_resident,
            }),
        }
    }
}

/// A function's figures in one trend window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrendFigures {
    /// Calls.
    pub calls: u64,
    /// Hits over cacheable calls.
    pub hit_ratio: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Errors.
    pub errors: u64,
}

/// One function's trend: the last window against the one before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FnTrend {
    /// Its path.
    #[serde(rename = "fn")]
    pub path: String,
    /// The last window (`None`: not called in it).
    pub now: Option<TrendFigures>,
    /// The window before it.
    pub before: Option<TrendFigures>,
}

/// `/stats` `trends`: each function's figures over the last window and the one before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trends {
    /// The window, seconds (an hour).
    pub window_s: u64,
    /// Functions called in either window.
    pub functions: Vec<FnTrend>,
}

#[derive(Clone, Copy)]
enum Tree {
    Raw,
    Minutes,
}

/// The on-disk store: a sled database with a tree of raw points and one of minute rollups,
/// keyed by big-endian milliseconds so that ranges read in time order.
struct SledHistory {
    db: sled::Db,
    raw: sled::Tree,
    minutes: sled::Tree,
    dir: PathBuf,
    retention_ms: u64,
    max_bytes: u64,
    /// The minute being rolled up: its start and what it holds so far.
    minute: Mutex<Option<(u64, Point)>>,
    appended: std::sync::atomic::AtomicU64,
    /// Bytes (keys and values) the two trees hold.
    bytes: std::sync::atomic::AtomicU64,
    failed: AtomicBool,
}

const RAW_TREE: &str = "raw";
const MINUTES_TREE: &str = "minutes";
/// How many appends between retention sweeps.
const SWEEP_EVERY: u64 = 64;

impl SledHistory {
    fn open(config: &PersistConfig) -> Result<Self, String> {
        let (db, _) = crate::cache::l3_sled::open_or_replace(&config.dir, "the monitor's history")?;
        let trees = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ok::<_, sled::Error>((db.open_tree(RAW_TREE)?, db.open_tree(MINUTES_TREE)?))
        }));
        let (raw, minutes) = match trees {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("sled panicked while opening the history trees".into()),
        };
        let store = Self {
            db,
            raw,
            minutes,
            dir: config.dir.clone(),
            retention_ms: config.retention.as_millis() as u64,
            max_bytes: config.max_bytes,
            minute: Mutex::new(None),
            appended: Default::default(),
            bytes: Default::default(),
            failed: AtomicBool::new(false),
        };
        if let Some(total) = store.guard("measure", SledHistory::measure) {
            store.bytes.store(total, Relaxed);
        }
        // Carry on the minute an earlier run was rolling up, if it is still this one.
        let now = crate::time::unix_ms();
        if let Some(Some((start, point))) = store.guard("read", |s| {
            Ok(s.minutes.last()?.and_then(|(k, v)| {
                let start = u64::from_be_bytes(k.as_ref().try_into().ok()?);
                let point = serde_json::from_slice::<Point>(&v).ok()?;
                (start == minute_of(now)).then_some((start, point))
            }))
        }) {
            *store.minute.lock().unwrap_or_else(PoisonError::into_inner) = Some((start, point));
        }
        store.sweep(now);
        Ok(store)
    }

    /// Runs one sled operation with errors and panics contained: the first failure turns
    /// persistence off (logged once).
    fn guard<R>(&self, op: &str, f: impl FnOnce(&Self) -> sled::Result<R>) -> Option<R> {
        if self.failed.load(Relaxed) {
            return None;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.fail(op, &e.to_string());
                None
            }
            Err(_) => {
                self.fail(op, "sled panicked");
                None
            }
        }
    }

    fn fail(&self, op: &str, why: &str) {
        if !self.failed.swap(true, Relaxed) {
            tracing::error!(dir = %self.dir.display(), op, error = why, "optimize: the monitor's history store failed; history is kept in memory only from now on");
        }
    }

    fn append(&self, point: &Point) {
        let Ok(value) = serde_json::to_vec(point) else {
            return;
        };
        self.guard("append", |s| {
            let key = point.at_unix_ms.to_be_bytes();
            let size = (key.len() + value.len()) as u64;
            let old = s.raw.insert(key, value)?;
            s.account(size, old.map(|v| (key.len() + v.len()) as u64));
            Ok(())
        });
        let start = minute_of(point.at_unix_ms);
        let rolled = {
            let mut minute = self.minute.lock().unwrap_or_else(PoisonError::into_inner);
            match minute.as_mut() {
                Some((s, m)) if *s == start => m.merge(point),
                _ => *minute = Some((start, point.clone())),
            }
            minute
                .as_ref()
                .and_then(|(_, m)| serde_json::to_vec(m).ok())
        };
        if let Some(rolled) = rolled {
            self.guard("rollup", |s| {
                let key = start.to_be_bytes();
                let size = (key.len() + rolled.len()) as u64;
                let old = s.minutes.insert(key, rolled)?;
                s.account(size, old.map(|v| (key.len() + v.len()) as u64));
                Ok(())
            });
        }
        if self
            .appended
            .fetch_add(1, Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            self.sweep(point.at_unix_ms);
        }
    }

    /// Counts `added` bytes stored, in place of `replaced` ones.
    fn account(&self, added: u64, replaced: Option<u64>) {
        self.bytes.fetch_add(added, Relaxed);
        if let Some(gone) = replaced {
            self.bytes
                .fetch_sub(gone.min(self.bytes.load(Relaxed)), Relaxed);
        }
    }

    /// Bytes (keys and values) of both trees, read once when the store opens; appends and
    /// sweeps keep [`SledHistory::bytes`] up to date after that.
    fn measure(&self) -> sled::Result<u64> {
        let mut total = 0;
        for tree in [&self.raw, &self.minutes] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                total += (k.len() + v.len()) as u64;
            }
        }
        Ok(total)
    }

    /// Deletes what is past its retention, then the oldest points while the trees hold more
    /// than `max_bytes` (raw points first: the rollups still cover their time).
    fn sweep(&self, now_unix_ms: u64) {
        let raw_keep = self.retention_ms.min(RAW_RETENTION.as_millis() as u64);
        self.guard("sweep", |s| {
            for (tree, keep) in [(&s.raw, raw_keep), (&s.minutes, s.retention_ms)] {
                let cutoff = now_unix_ms.saturating_sub(keep).to_be_bytes();
                let mut batch = sled::Batch::default();
                let mut freed = 0;
                for kv in tree.range(..cutoff) {
                    let (k, v) = kv?;
                    freed += (k.len() + v.len()) as u64;
                    batch.remove(k);
                }
                tree.apply_batch(batch)?;
                s.account(0, Some(freed));
            }
            for tree in [&s.raw, &s.minutes] {
                while s.bytes.load(Relaxed) > s.max_bytes {
                    let Some((k, v)) = tree.pop_min()? else {
                        break;
                    };
                    s.account(0, Some((k.len() + v.len()) as u64));
                }
            }
            Ok(())
        });
    }

    /// The points ending in `from..=to`, or `None` when there are more than `limit`.
    fn range(&self, which: Tree, from: u64, to: u64, limit: usize) -> Option<Vec<Point>> {
        // A rollup is keyed by its start and ends within the minute after it.
        let start = match which {
            Tree::Minutes => minute_of(from),
            Tree::Raw => from,
        };
        self.guard("read", |s| {
            let tree = match which {
                Tree::Raw => &s.raw,
                Tree::Minutes => &s.minutes,
            };
            let mut points = Vec::new();
            for kv in tree.range(start.to_be_bytes()..=to.to_be_bytes()) {
                let (_, v) = kv?;
                if points.len() == limit {
                    return Ok(None);
                }
                // A value that does not decode (a damaged or foreign record) is skipped.
                if let Ok(p) = serde_json::from_slice::<Point>(&v) {
                    if (from..=to).contains(&p.at_unix_ms) {
                        points.push(p);
                    }
                }
            }
            Ok(Some(points))
        })
        .flatten()
    }

    fn last(&self, n: usize) -> Option<Vec<Point>> {
        self.guard("read", |s| {
            let mut points: Vec<Point> = s
                .raw
                .iter()
                .rev()
                .take(n)
                .filter_map(|kv| kv.ok().and_then(|(_, v)| serde_json::from_slice(&v).ok()))
                .collect();
            points.reverse();
            Ok(points)
        })
    }

    fn flush(&self) {
        self.guard("flush", |s| s.db.flush().map(|_| ()));
    }
}

fn minute_of(unix_ms: u64) -> u64 {
    let m = ROLLUP.as_millis() as u64;
    unix_ms - unix_ms % m
}

impl History {
    /// Writes what the store holds to disk (at shutdown).
    pub(crate) fn flush(&self) {
        if let Some(store) = &self.store {
            store.flush();
        }
    }
}

/// The default directory of the history store: `history` inside the L3 directory.
pub fn default_dir(l3_dir: &Path) -> PathBuf {
    l3_dir.join("history")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64, span: u64, calls: u64, hits: u64, latency_ns: u64) -> Point {
        let mut latency = Histogram::empty();
        let recorder = crate::stats::AtomicHistogram::new();
        for _ in 0..calls {
            recorder.record(latency_ns);
        }
        latency.merge(&recorder.snapshot());
        Point {
            at_unix_ms: at,
            span_ms: span,
            functions: vec![FnDelta {
                path: "app::f".into(),
                kind: "io".into(),
                calls,
                cacheable: calls,
                hits: [hits, 0, 0],
                errors: 0,
                stale: 0,
                latency: latency.sparse(),
            }],
            pools: vec![PoolSample {
                pool: "io".into(),
                queued: calls as f64,
                ..Default::default()
            }],
            system: None,
            alerts_firing: 0,
        }
    }

    fn store(dir: &Path, retention: Duration, max_bytes: u64) -> History {
        History::new(
            16,
            Some(&PersistConfig {
                dir: dir.to_owned(),
                retention,
                max_bytes,
            }),
        )
    }

    const T0: u64 = 1_800_000_000_000; // a minute boundary

    #[test]
    fn merging_adds_counters_and_keeps_quantiles() {
        let mut a = point(T0 + 1000, 1000, 10, 5, 1_000_000);
        a.merge(&point(T0 + 2000, 1000, 10, 10, 9_000_000));
        let p = HistoryPoint::of(&a, None);
        assert_eq!((p.calls, p.span_ms, p.at_unix_ms), (20, 2000, T0 + 2000));
        assert_eq!(p.hit_ratio, 0.75);
        assert!((p.calls_per_s - 10.0).abs() < 1e-9);
        assert!(p.p50_ms < 1.2 && p.p99_ms > 8.0, "{p:?}");
        assert_eq!(p.pools[0].queued, 10.0, "gauges become means");
    }

    #[test]
    fn a_step_merges_the_points_inside_it() {
        let h = History::new(100, None);
        for i in 1..=10 {
            h.record(point(T0 + i * 1000, 1000, i, 0, 1000));
        }
        let q = HistoryQuery {
            from: Some(T0),
            to: Some(T0 + 10_000),
            step: Some(Duration::from_secs(5)),
            function: Some("app::f".into()),
        };
        let answer = h.query(&q, T0 + 10_000);
        assert_eq!(answer.source, "memory");
        let calls: Vec<u64> = answer.points.iter().map(|p| p.calls).collect();
        // Buckets [0,5s): 1..4, [5s,10s): 5..9, and the point ending at 10 s.
        assert_eq!(calls, vec![10, 35, 10]);
        let other = HistoryQuery {
            function: Some("app::g".into()),
            ..q
        };
        assert!(h
            .query(&other, T0 + 10_000)
            .points
            .iter()
            .all(|p| p.calls == 0));
    }

    #[test]
    fn points_survive_a_reopen_and_roll_up_by_minute() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = store(dir.path(), Duration::from_secs(86_400), 1 << 30);
            for i in 1..=120 {
                h.record(point(T0 + i * 1000, 1000, 1, 1, 1000));
            }
            h.flush();
        }
        let h = store(dir.path(), Duration::from_secs(86_400), 1 << 30);
        assert!(h.is_persisted());
        let now = T0 + 120_000;
        let raw = h.query(
            &HistoryQuery {
                from: Some(T0),
                to: Some(now),
                ..Default::default()
            },
            now,
        );
        assert_eq!(raw.source, "raw");
        assert_eq!(raw.points.len(), 120, "one point per evaluation, from disk");
        let minutes = h.query(
            &HistoryQuery {
                from: Some(T0),
                to: Some(now),
                step: Some(Duration::from_secs(60)),
                function: None,
            },
            now,
        );
        assert_eq!(minutes.source, "minutes");
        let calls: Vec<u64> = minutes.points.iter().map(|p| p.calls).collect();
        assert_eq!(calls, vec![59, 60, 1], "rolled up per minute");
    }

    #[test]
    fn retention_and_size_bound_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let h = store(dir.path(), Duration::from_secs(600), 1 << 30);
        let store_of = |h: &History| h.store.as_ref().unwrap().raw.len();
        for i in 0..100 {
            h.record(point(T0 + i * 10_000, 10_000, 1, 0, 1000));
        }
        h.store.as_ref().unwrap().sweep(T0 + 99 * 10_000);
        // 600 s of 10 s points.
        assert!(store_of(&h) <= 61, "{}", store_of(&h));
        assert!(store_of(&h) >= 59, "{}", store_of(&h));

        let dir = tempfile::tempdir().unwrap();
        let h = store(dir.path(), Duration::from_secs(86_400), 8 * 1024);
        for i in 0..500 {
            h.record(point(T0 + i * 1000, 1000, 1, 0, 1000));
        }
        let s = h.store.as_ref().unwrap();
        s.sweep(T0 + 500_000);
        let bytes: usize = s
            .raw
            .iter()
            .chain(s.minutes.iter())
            .map(|kv| kv.map(|(k, v)| k.len() + v.len()).unwrap())
            .sum();
        assert!(bytes <= 8 * 1024, "{bytes}");
        assert_eq!(
            s.bytes.load(Relaxed),
            s.measure().unwrap(),
            "the running count matches the trees"
        );
        assert!(!s.raw.is_empty(), "the newest points stay");
    }

    #[test]
    fn a_damaged_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let h = store(dir.path(), Duration::from_secs(86_400), 1 << 30);
        h.record(point(T0 + 1000, 1000, 3, 0, 1000));
        let s = h.store.as_ref().unwrap();
        s.raw
            .insert((T0 + 2000).to_be_bytes(), &b"\xff not json"[..])
            .unwrap();
        h.record(point(T0 + 3000, 1000, 4, 0, 1000));
        let answer = h.query(
            &HistoryQuery {
                from: Some(T0),
                to: Some(T0 + 3000),
                ..Default::default()
            },
            T0 + 3000,
        );
        let calls: Vec<u64> = answer.points.iter().map(|p| p.calls).collect();
        assert_eq!(calls, vec![3, 4]);
    }

    #[test]
    fn trends_compare_the_last_window_with_the_one_before() {
        let h = History::new(10_000, None);
        let w = TREND_WINDOW.as_millis() as u64;
        for i in 0..10 {
            h.record(point(T0 + i * 60_000, 60_000, 10, 2, 1_000_000));
            h.record(point(T0 + w + i * 60_000, 60_000, 10, 8, 4_000_000));
        }
        let t = h.trends(TREND_WINDOW, T0 + 2 * w - 1);
        let f = &t.functions[0];
        let (now, before) = (f.now.as_ref().unwrap(), f.before.as_ref().unwrap());
        assert_eq!((now.calls, before.calls), (100, 100));
        assert_eq!((now.hit_ratio, before.hit_ratio), (0.8, 0.2));
        assert!(now.p99_ms > before.p99_ms);
    }
}
