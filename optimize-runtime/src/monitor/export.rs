//! Exposition of a [`Snapshot`]: Prometheus text (what `promtool check metrics` reads and
//! every scraper accepts) and OpenMetrics text, both encoded by prometheus-client.
//!
//! prometheus-client writes OpenMetrics, whose counter descriptors omit the `_total` that
//! their samples carry; the Prometheus text format wants the descriptor and samples to share
//! the name. [`prometheus_text`] renames counter descriptors and leaves out `# EOF`; nothing
//! else differs. prometheus-client does not escape label values, so [`Escaped`] does.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType as PcType;
use prometheus_client::registry::Registry;

use super::snapshot::{MetricType, Snapshot, Value};

/// Content type of [`prometheus_text`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`openmetrics_text`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped as both formats require.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Help text on one line, with backslashes escaped.
fn help_line(help: &str) -> String {
    help.replace('\\', "\\\\").replace(['\n', '\r'], " ")
}

/// The name prometheus-client is given: counters without `_total`, which it appends.
fn descriptor_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

#[derive(Debug)]
struct SnapshotCollector(std::sync::Arc<Snapshot>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0.families {
            let kind = match family.kind {
                MetricType::Counter => PcType::Counter,
                MetricType::Gauge => PcType::Gauge,
                MetricType::Histogram => PcType::Histogram,
            };
            let help = help_line(&family.help);
            let mut metric = encoder.encode_descriptor(
                descriptor_name(&family.name, family.kind),
                &help,
                None,
                kind,
            )?;
            for series in &family.series {
                let labels: Vec<(&str, Escaped)> = series
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_ref(), Escaped(v)))
                    .collect();
                // Without labels, no `{}` after the name.
                if labels.is_empty() {
                    encode_value(&mut metric, &series.value, family.kind)?;
                } else {
                    let mut labelled = metric.encode_family(&labels)?;
                    encode_value(&mut labelled, &series.value, family.kind)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    encoder: &mut MetricEncoder,
    value: &Value,
    kind: MetricType,
) -> Result<(), std::fmt::Error> {
    match (value, kind) {
        (Value::Number(v), MetricType::Counter) => {
            encoder.encode_counter::<NoLabelSet, _, f64>(v, None)
        }
        (Value::Number(v), _) => encoder.encode_gauge(v),
        (Value::Histogram(h), _) => {
            // prometheus-client takes per-bucket counts and marks +Inf with MAX.
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = h
                .buckets()
                .into_iter()
                .map(|(bound, cumulative)| {
                    let n = cumulative - previous;
                    previous = cumulative;
                    (if bound.is_finite() { bound } else { f64::MAX }, n)
                })
                .collect();
            encoder.encode_histogram::<NoLabelSet>(h.sum, h.count(), &buckets, None)
        }
    }
}

/// The snapshot in the OpenMetrics text format (ends with `# EOF`).
pub fn openmetrics_text(snapshot: std::sync::Arc<Snapshot>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    // Writing to a String cannot fail; the collector itself has no error paths.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The snapshot in the Prometheus text format, version 0.0.4.
///
/// ```
/// use optimize_runtime::monitor::{export, Snapshot};
///
/// #[optimize::io]
/// fn fetch(id: u32) -> u32 {
///     id
/// }
///
/// fetch(1);
/// let text = export::prometheus_text(std::sync::Arc::new(optimize::runtime().snapshot()));
/// assert!(text.contains("# TYPE optimize_calls_total counter"));
/// assert!(text.contains("outcome=\"computed\""));
/// ```
pub fn prometheus_text(snapshot: std::sync::Arc<Snapshot>) -> String {
    let counters: Vec<String> = snapshot
        .families
        .iter()
        .filter(|f| f.kind == MetricType::Counter)
        .map(|f| descriptor_name(&f.name, f.kind).to_owned())
        .collect();
    let open = openmetrics_text(snapshot);
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{labels, HistogramValue, SnapshotBuilder};
    use super::*;
    use crate::stats::{FnRecorder, Outcome};

    fn sample() -> std::sync::Arc<Snapshot> {
        let mut b = SnapshotBuilder::default();
        b.family("t_calls_total", "Calls.\nTwo lines", MetricType::Counter)
            .number(labels([("fn", "a\"b\\c\nd")]), 3.0);
        b.family("t_depth", "Depth.", MetricType::Gauge)
            .number(Vec::new(), 2.5);
        let rec = FnRecorder::new();
        rec.record(Outcome::Computed, 2_000, 0); // 2 µs
        rec.record(Outcome::Computed, 3_000_000, 0); // 3 ms
        let stats = rec.snapshot();
        b.family("t_seconds", "Latency.", MetricType::Histogram)
            .histogram(
                labels([("fn", "f")]),
                HistogramValue::durations(stats.latency, stats.total_time),
            );
        std::sync::Arc::new(b.finish(0, 0))
    }

    #[test]
    fn prometheus_text_names_counters_and_escapes_labels() {
        let text = prometheus_text(sample());
        assert!(
            text.contains("# HELP t_calls_total Calls. Two lines\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_calls_total counter\n"), "{text}");
        assert!(
            text.contains(r#"t_calls_total{fn="a\"b\\c\nd"} 3.0"#),
            "{text}"
        );
        assert!(text.contains("t_depth 2.5\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn histograms_are_cumulative_with_inf() {
        let text = prometheus_text(sample());
        assert!(
            text.contains(r#"t_seconds_bucket{le="0.000001",fn="f"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_seconds_bucket{le="0.000005",fn="f"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_seconds_bucket{le="0.0025",fn="f"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_seconds_bucket{le="0.005",fn="f"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_seconds_bucket{le="+Inf",fn="f"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"t_seconds_count{fn="f"} 2"#), "{text}");
    }

    #[test]
    fn openmetrics_keeps_its_own_counter_naming() {
        let text = openmetrics_text(sample());
        assert!(text.contains("# TYPE t_calls counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
