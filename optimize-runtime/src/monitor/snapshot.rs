//! A point-in-time reading of every metric: what the exporters print, what alert rules
//! evaluate and what `/history` keeps.

use std::borrow::Cow;
use std::time::Duration;

use crate::stats::Histogram;

/// The Prometheus type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// Only goes up (resets when the process starts); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution; exported as cumulative `_bucket`s with `_sum` and `_count`.
    Histogram,
}

impl MetricType {
    /// The name Prometheus uses in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Label pairs of one series, in a fixed order.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// Upper bounds (in seconds) of the buckets duration histograms are exported with.
pub const DURATION_BOUNDS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A distribution: the fine-grained histogram of raw values plus how to export it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Raw values (nanoseconds for durations).
    pub histogram: Histogram,
    /// Sum of the exported values.
    pub sum: f64,
    /// One raw unit in exported units: `1e-9` turns nanoseconds into seconds.
    pub scale: f64,
    /// Upper bounds of the exported buckets, in exported units.
    pub bounds: Cow<'static, [f64]>,
}

impl HistogramValue {
    /// A duration histogram (raw values in nanoseconds, exported in seconds).
    pub fn durations(histogram: Histogram, sum: Duration) -> Self {
        Self {
            histogram,
            sum: sum.as_secs_f64(),
            scale: 1e-9,
            bounds: Cow::Borrowed(DURATION_BOUNDS),
        }
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.histogram.count()
    }

    /// Cumulative count at each exported bound, then the total (`+Inf`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let raw: Vec<u64> = self
            .bounds
            .iter()
            .map(|b| (b / self.scale).round().clamp(0.0, u64::MAX as f64) as u64)
            .collect();
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .zip(self.histogram.cumulative(&raw))
            .collect();
        out.push((f64::INFINITY, self.count()));
        out
    }

    /// The value at quantile `q`, in exported units.
    pub fn quantile(&self, q: f64) -> f64 {
        self.histogram.quantile(q).as_nanos() as f64 * self.scale
    }
}

/// The value of one series.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's or a gauge's value.
    Number(f64),
    /// A histogram's.
    Histogram(HistogramValue),
}

impl Value {
    /// The number, or a histogram's count.
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Number(v) => *v,
            Value::Histogram(h) => h.count() as f64,
        }
    }
}

/// One labelled series of a family.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: Value,
}

impl Series {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric and all its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The name series carry: counters end in `_total`, and histogram series add `_bucket`,
    /// `_sum` and `_count` to it.
    pub name: Cow<'static, str>,
    /// One line saying what it measures.
    pub help: Cow<'static, str>,
    /// Its type.
    pub kind: MetricType,
    /// Its series.
    pub series: Vec<Series>,
}

/// Every metric at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// When it was taken, on the monitor's clock (nanoseconds).
    pub at_nanos: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The families, in a stable order.
    pub families: Vec<Family>,
}

impl Snapshot {
    /// The family named `name` (counters by their `_total` name).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series of `name` whose labels include every pair in `labels`
    /// (the first such series), as a number; histograms give their count.
    ///
    /// ```
    /// use optimize_runtime::monitor::Snapshot;
    ///
    /// #[optimize::cpu]
    /// fn triple(x: u32) -> u32 {
    ///     x * 3
    /// }
    ///
    /// triple(1);
    /// let path = triple_cache().path().to_owned();
    /// let snapshot = optimize::runtime().snapshot();
    /// let calls = snapshot.value(
    ///     "optimize_calls_total",
    ///     &[("fn", path.as_str()), ("outcome", "computed")],
    /// );
    /// assert_eq!(calls, Some(1.0));
    /// ```
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.family(name)?
            .series
            .iter()
            .find(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value.as_f64())
    }
}

/// Builds a snapshot family by family; what the collectors write into.
#[derive(Debug, Default)]
pub(crate) struct SnapshotBuilder {
    families: Vec<Family>,
}

impl SnapshotBuilder {
    /// Starts a family (or continues the one of that name).
    pub(crate) fn family(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: MetricType,
    ) -> &mut Family {
        let name = name.into();
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.families.push(Family {
                    name,
                    help: help.into(),
                    kind,
                    series: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    pub(crate) fn finish(self, at_nanos: u64, at_unix_ms: u64) -> Snapshot {
        Snapshot {
            at_nanos,
            at_unix_ms,
            families: self.families,
        }
    }
}

impl Family {
    /// Adds a series with a number.
    pub(crate) fn number(&mut self, labels: Labels, value: f64) -> &mut Self {
        self.series.push(Series {
            labels,
            value: Value::Number(value),
        });
        self
    }

    /// Adds a series with a distribution.
    pub(crate) fn histogram(&mut self, labels: Labels, value: HistogramValue) -> &mut Self {
        self.series.push(Series {
            labels,
            value: Value::Histogram(value),
        });
        self
    }
}

/// Labels from `(name, value)` pairs.
pub(crate) fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (Cow::Borrowed(k), v.to_owned()))
        .collect()
}
