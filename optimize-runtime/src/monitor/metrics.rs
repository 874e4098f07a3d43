//! Metrics of the application's own, exported beside optimize's: counters, gauges and
//! duration histograms, with or without labels.
//!
//! ```
//! use optimize_runtime::monitor::metrics;
//! use std::time::Duration;
//!
//! let orders = metrics::counter("shop_orders_total", "Orders placed.").unwrap();
//! orders.inc();
//! let queue = metrics::gauge("shop_queue_depth", "Orders waiting.").unwrap();
//! queue.set(3.0);
//! let by_route = metrics::counter_vec("shop_requests_total", "Requests.", &["route"]).unwrap();
//! by_route.with(&["/cart"]).inc();
//! let latency = metrics::histogram("shop_checkout_seconds", "Checkout time.").unwrap();
//! latency.observe(Duration::from_millis(12));
//!
//! let snapshot = optimize::runtime().snapshot();
//! assert_eq!(snapshot.value("shop_queue_depth", &[]), Some(3.0));
//! assert_eq!(snapshot.value("shop_requests_total", &[("route", "/cart")]), Some(1.0));
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::snapshot::{HistogramValue, Labels, MetricType, SnapshotBuilder};
use crate::stats::{shard_index, AtomicHistogram, SHARDS};

/// Series one labelled metric may have; label values past it are counted in one series whose
/// labels all read `overflow`, so an unbounded label (a user id) cannot exhaust memory.
pub const MAX_SERIES: usize = 1000;

/// A metric that cannot be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricError {
    /// The name is not a Prometheus metric name, or uses optimize's own prefix.
    #[error(
        "metric name `{0}` is not allowed: use letters, digits, `_` and `:`, not starting \
         with a digit, and not starting with `optimize_` (optimize's own metrics)"
    )]
    InvalidName(String),
    /// A label name is not a Prometheus label name.
    #[error("label name `{0}` of metric `{1}` is not allowed: use letters, digits and `_`, not starting with a digit or `__`")]
    InvalidLabel(String, String),
    /// The name is taken by a metric of another type or other labels.
    #[error("metric `{0}` is already registered as a {1} with labels {2:?}")]
    Conflict(String, &'static str, Vec<String>),
}

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A cell of one series: what the handles write to.
enum Cell {
    Counter(Box<[Padded; SHARDS]>),
    Gauge(AtomicU64),
    Histogram(Box<AtomicHistogram>, AtomicU64),
}

impl Cell {
    fn new(kind: MetricType) -> Self {
        match kind {
            MetricType::Counter => {
                Cell::Counter(Box::new(std::array::from_fn(|_| Padded::default())))
            }
            MetricType::Gauge => Cell::Gauge(AtomicU64::new(0f64.to_bits())),
            MetricType::Histogram => Cell::Histogram(Box::default(), AtomicU64::new(0)),
        }
    }
}

struct Metric {
    name: String,
    help: String,
    kind: MetricType,
    label_names: Vec<String>,
    series: Mutex<HashMap<Vec<String>, Arc<Cell>>>,
}

impl Metric {
    fn cell(&self, values: &[&str]) -> Arc<Cell> {
        assert_eq!(
            values.len(),
            self.label_names.len(),
            "metric `{}` has labels {:?}; `with` got {} values",
            self.name,
            self.label_names,
            values.len()
        );
        let mut key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = series.get(&key) {
            return cell.clone();
        }
        if series.len() >= MAX_SERIES {
            if !series.keys().any(|k| k.iter().all(|v| v == "overflow")) {
                tracing::warn!(metric = %self.name, limit = MAX_SERIES, "optimize: a custom metric reached its series limit; further label values are counted under `overflow`");
            }
            key = vec!["overflow".to_owned(); values.len()];
        }
        series
            .entry(key)
            .or_insert_with(|| Arc::new(Cell::new(self.kind)))
            .clone()
    }
}

fn registry() -> &'static Mutex<Vec<Arc<Metric>>> {
    static METRICS: OnceLock<Mutex<Vec<Arc<Metric>>>> = OnceLock::new();
    METRICS.get_or_init(Default::default)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    !name.starts_with("__") && name != "le" && valid_name(name) && !name.contains(':')
}

fn register(
    name: &str,
    help: &str,
    kind: MetricType,
    label_names: &[&str],
) -> Result<Arc<Metric>, MetricError> {
    let name = match kind {
        MetricType::Counter if !name.ends_with("_total") => format!("{name}_total"),
        _ => name.to_owned(),
    };
    if !valid_name(&name) || name.starts_with("optimize_") {
        return Err(MetricError::InvalidName(name));
    }
    if let Some(bad) = label_names.iter().find(|l| !valid_label(l)) {
        return Err(MetricError::InvalidLabel((*bad).to_owned(), name));
    }
    let label_names: Vec<String> = label_names.iter().map(|l| (*l).to_owned()).collect();
    let mut all = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = all.iter().find(|m| m.name == name) {
        if m.kind == kind && m.label_names == label_names {
            return Ok(m.clone());
        }
        return Err(MetricError::Conflict(
            name,
            m.kind.as_str(),
            m.label_names.clone(),
        ));
    }
    let metric = Arc::new(Metric {
        name,
        help: help.to_owned(),
        kind,
        label_names,
        series: Mutex::new(HashMap::new()),
    });
    all.push(metric.clone());
    Ok(metric)
}

/// A counter: only goes up. Cloning gives another handle to the same series.
#[derive(Clone)]
pub struct Counter(Arc<Cell>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        if let Cell::Counter(shards) = &*self.0 {
            shards[shard_index()].0.fetch_add(n, Relaxed);
        }
    }

    /// The current value (sums the shards).
    pub fn get(&self) -> u64 {
        match &*self.0 {
            Cell::Counter(shards) => shards.iter().map(|s| s.0.load(Relaxed)).sum(),
            _ => 0,
        }
    }
}

/// A gauge: set to any value.
#[derive(Clone)]
pub struct Gauge(Arc<Cell>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        if let Cell::Gauge(bits) = &*self.0 {
            bits.store(v.to_bits(), Relaxed);
        }
    }

    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: f64) {
        if let Cell::Gauge(bits) = &*self.0 {
            let _ = bits.fetch_update(Relaxed, Relaxed, |b| {
                Some((f64::from_bits(b) + delta).to_bits())
            });
        }
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        match &*self.0 {
            Cell::Gauge(bits) => f64::from_bits(bits.load(Relaxed)),
            _ => 0.0,
        }
    }
}

/// A histogram of durations, exported in seconds.
#[derive(Clone)]
pub struct Histogram(Arc<Cell>);

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        if let Cell::Histogram(h, sum) = &*self.0 {
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            h.record(nanos);
            sum.fetch_add(nanos, Relaxed);
        }
    }

    /// Runs `f` and records how long it took.
    pub fn time<R>(&self, f: impl FnOnce() -> R) -> R {
        let start = std::time::Instant::now();
        let out = f();
        self.observe(start.elapsed());
        out
    }
}

/// A labelled metric: one series per combination of label values.
#[derive(Clone)]
pub struct Vector<M> {
    metric: Arc<Metric>,
    wrap: fn(Arc<Cell>) -> M,
}

impl<M> Vector<M> {
    /// The series with these label values, in the order the labels were declared.
    ///
    /// # Panics
    /// If the number of values differs from the number of labels.
    pub fn with(&self, values: &[&str]) -> M {
        (self.wrap)(self.metric.cell(values))
    }
}

/// Registers (or finds) a counter without labels; `_total` is appended when missing.
pub fn counter(name: &str, help: &str) -> Result<Counter, MetricError> {
    Ok(counter_vec(name, help, &[])?.with(&[]))
}

/// Registers (or finds) a gauge without labels.
pub fn gauge(name: &str, help: &str) -> Result<Gauge, MetricError> {
    Ok(gauge_vec(name, help, &[])?.with(&[]))
}

/// Registers (or finds) a duration histogram without labels.
pub fn histogram(name: &str, help: &str) -> Result<Histogram, MetricError> {
    Ok(histogram_vec(name, help, &[])?.with(&[]))
}

/// Registers (or finds) a counter with labels.
pub fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<Vector<Counter>, MetricError> {
    Ok(Vector {
        metric: register(name, help, MetricType::Counter, labels)?,
        wrap: Counter,
    })
}

/// Registers (or finds) a gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Result<Vector<Gauge>, MetricError> {
    Ok(Vector {
        metric: register(name, help, MetricType::Gauge, labels)?,
        wrap: Gauge,
    })
}

/// Registers (or finds) a duration histogram with labels.
pub fn histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<Vector<Histogram>, MetricError> {
    Ok(Vector {
        metric: register(name, help, MetricType::Histogram, labels)?,
        wrap: Histogram,
    })
}

pub(crate) fn collect(b: &mut SnapshotBuilder) {
    let all = registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for metric in all {
        let family = b.family(metric.name.clone(), metric.help.clone(), metric.kind);
        let series = metric.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<_> = series.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (values, cell) in rows {
            let labels: Labels = metric
                .label_names
                .iter()
                .zip(values)
                .map(|(k, v)| (Cow::Owned(k.clone()), v.clone()))
                .collect();
            match &**cell {
                Cell::Counter(_) => {
                    family.number(labels, Counter(cell.clone()).get() as f64);
                }
                Cell::Gauge(_) => {
                    family.number(labels, Gauge(cell.clone()).get());
                }
                Cell::Histogram(h, sum) => {
                    family.histogram(
                        labels,
                        HistogramValue::durations(
                            h.snapshot(),
                            Duration::from_nanos(sum.load(Relaxed)),
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_conflicts_reported() {
        assert!(matches!(
            counter("9lives", ""),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            gauge("optimize_mine", ""),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            counter_vec("t_labels_total", "", &["__x"]),
            Err(MetricError::InvalidLabel(..))
        ));
        let a = counter("t_same", "").unwrap();
        let b = counter("t_same_total", "").unwrap();
        a.inc();
        assert_eq!(b.get(), 1, "one name, one series");
        assert!(matches!(
            gauge("t_same_total", ""),
            Err(MetricError::Conflict(..))
        ));
    }

    #[test]
    fn labelled_series_are_bounded() {
        let v = counter_vec("t_bounded_total", "", &["user"]).unwrap();
        for i in 0..MAX_SERIES + 10 {
            v.with(&[&i.to_string()]).inc();
        }
        assert_eq!(v.with(&["overflow"]).get(), 10);
        let mut b = SnapshotBuilder::default();
        collect(&mut b);
        let snap = b.finish(0, 0);
        assert_eq!(
            snap.family("t_bounded_total").unwrap().series.len(),
            MAX_SERIES + 1
        );
    }

    #[test]
    fn gauges_add_and_counters_shard() {
        let g = gauge("t_gauge", "").unwrap();
        g.set(1.5);
        g.add(-0.5);
        assert_eq!(g.get(), 1.0);
        let c = counter("t_sharded_total", "").unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| c.inc()));
            }
        });
        assert_eq!(c.get(), 4000);
    }
}
