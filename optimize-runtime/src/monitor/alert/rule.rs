//! Alert rules: what to watch, when it is a problem, how bad it is. Modelled on Prometheus
//! alerting rules, so that each rule also exports as one (see [`super::promfile`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::monitor::snapshot::{Snapshot, Value};
use crate::stats::Histogram;

/// How bad a firing alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs a look soon.
    Warning,
    /// Something is failing.
    Error,
    /// Users are affected now.
    Critical,
}

impl Severity {
    /// Every severity, mildest first.
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    /// The name used in labels and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a condition's value is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Comparison {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

impl Comparison {
    /// The PromQL operator.
    pub fn operator(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
            Comparison::Equal => "==",
            Comparison::NotEqual => "!=",
        }
    }

    /// The comparison written as `op` (`>`, `>=`, `<`, `<=`, `==`, `!=`).
    pub fn parse(op: &str) -> Option<Self> {
        [
            Comparison::Above,
            Comparison::AtLeast,
            Comparison::Below,
            Comparison::AtMost,
            Comparison::Equal,
            Comparison::NotEqual,
        ]
        .into_iter()
        .find(|c| c.operator() == op)
    }

    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
            Comparison::Equal => value == threshold,
            Comparison::NotEqual => value != threshold,
        }
    }
}

/// A condition on one label of a series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Matcher {
    /// The label equals the value.
    Eq(String, String),
    /// The label differs from the value.
    Ne(String, String),
    /// The label is one of the values.
    In(String, Vec<String>),
}

impl Matcher {
    fn matches(&self, labels: &crate::monitor::snapshot::Series) -> bool {
        let get = |k: &str| labels.label(k).unwrap_or("");
        match self {
            Matcher::Eq(k, v) => get(k) == v,
            Matcher::Ne(k, v) => get(k) != v,
            Matcher::In(k, vs) => vs.iter().any(|v| v == get(k)),
        }
    }
}

/// Which series of a metric a condition reads, and how they are summed.
///
/// ```
/// use optimize_runtime::monitor::alert::Selector;
///
/// let hits = Selector::metric("optimize_calls_total")
///     .one_of("outcome", ["hit_l1", "hit_l2", "hit_l3"])
///     .by(["fn"]);
/// assert_eq!(
///     hits.promql(),
///     r#"sum by (fn) (optimize_calls_total{outcome=~"hit_l1|hit_l2|hit_l3"})"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Selector {
    /// The metric's exported name (counters end in `_total`).
    pub metric: String,
    /// Conditions on labels; all must hold.
    pub matchers: Vec<Matcher>,
    /// Labels that tell alert instances apart: matching series are summed per combination
    /// of these labels' values. Empty: one sum over every matching series.
    pub by: Vec<String>,
}

/// Labels that identify one alert instance (the `by` labels of its selector).
pub type GroupKey = Vec<(String, String)>;

/// What a selector reads per group.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reading {
    Number(f64),
    Histogram(Histogram, f64),
}

impl Selector {
    /// Every series of `metric`.
    pub fn metric(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            matchers: Vec::new(),
            by: Vec::new(),
        }
    }

    /// Only series whose `label` is `value`.
    pub fn label(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.matchers.push(Matcher::Eq(label.into(), value.into()));
        self
    }

    /// Only series whose `label` is not `value`.
    pub fn label_not(mut self, label: impl Into<String>, value: impl Into<String>) -> Self {
        self.matchers.push(Matcher::Ne(label.into(), value.into()));
        self
    }

    /// Only series whose `label` is one of `values`.
    pub fn one_of<I, S>(mut self, label: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.matchers.push(Matcher::In(
            label.into(),
            values.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// One alert instance per combination of these labels.
    pub fn by<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.by = labels.into_iter().map(Into::into).collect();
        self
    }

    /// The matching series of `snapshot`, summed per group. A metric the snapshot lacks
    /// reads as no groups.
    pub(crate) fn read(&self, snapshot: &Snapshot) -> BTreeMap<GroupKey, Reading> {
        let mut out: BTreeMap<GroupKey, Reading> = BTreeMap::new();
        let Some(family) = snapshot.family(&self.metric) else {
            return out;
        };
        for series in &family.series {
            if !self.matchers.iter().all(|m| m.matches(series)) {
                continue;
            }
            let key: GroupKey = self
                .by
                .iter()
                .map(|l| (l.clone(), series.label(l).unwrap_or("").to_owned()))
                .collect();
            match (&series.value, out.get_mut(&key)) {
                (Value::Number(v), Some(Reading::Number(sum))) => *sum += v,
                (Value::Number(v), None) => {
                    out.insert(key, Reading::Number(*v));
                }
                (Value::Histogram(h), Some(Reading::Histogram(sum, scale))) => {
                    sum.merge(&h.histogram);
                    *scale = h.scale;
                }
                (Value::Histogram(h), None) => {
                    out.insert(key, Reading::Histogram(h.histogram.clone(), h.scale));
                }
                // A family does not mix numbers and histograms.
                _ => {}
            }
        }
        out
    }

    /// The selector as a PromQL vector selector, without aggregation.
    pub fn promql_selector(&self, suffix: &str) -> String {
        let matchers: Vec<String> = self
            .matchers
            .iter()
            .map(|m| match m {
                Matcher::Eq(k, v) => format!("{k}={}", promql_string(v)),
                Matcher::Ne(k, v) => format!("{k}!={}", promql_string(v)),
                Matcher::In(k, vs) => {
                    let alternatives: Vec<String> = vs.iter().map(|v| regex_escape(v)).collect();
                    format!("{k}=~{}", promql_string(&alternatives.join("|")))
                }
            })
            .collect();
        if matchers.is_empty() {
            format!("{}{suffix}", self.metric)
        } else {
            format!("{}{suffix}{{{}}}", self.metric, matchers.join(","))
        }
    }

    /// `sum by (...) (selector)`.
    pub fn promql(&self) -> String {
        self.sum(&self.promql_selector(""))
    }

    pub(crate) fn sum(&self, inner: &str) -> String {
        self.sum_by(&self.by, inner)
    }

    pub(crate) fn sum_by(&self, by: &[String], inner: &str) -> String {
        if by.is_empty() {
            format!("sum({inner})")
        } else {
            format!("sum by ({}) ({inner})", by.join(", "))
        }
    }
}

/// A PromQL string literal (Go escapes, which JSON's are a subset of).
fn promql_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// `s` matched literally inside a PromQL (RE2) regular expression.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What a rule computes from the metrics, per group.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Condition {
    /// The current value (gauges, or counters' totals).
    Value(Selector),
    /// Per-second increase of a counter over a window.
    Rate {
        /// The counter.
        selector: Selector,
        /// How far back.
        window: Duration,
    },
    /// One sum divided by another: both counters' increases over a window, or both gauges'
    /// current values when the window is zero. Groups whose denominator is below
    /// `min_denominator` (or zero) have no value, so a handful of calls cannot fire an alert.
    Ratio {
        /// Top.
        numerator: Selector,
        /// Bottom; grouped by the same labels as the numerator.
        denominator: Selector,
        /// How far back; zero for current values.
        window: Duration,
        /// Least denominator for the ratio to count.
        min_denominator: f64,
    },
    /// A quantile of a histogram over a window (zero: since start), in the histogram's
    /// exported unit (seconds for durations).
    Quantile {
        /// The histogram, by its exported name (without `_bucket`).
        selector: Selector,
        /// 0..=1.
        quantile: f64,
        /// How far back; zero for everything recorded.
        window: Duration,
    },
}

impl Condition {
    /// The labels alert instances are told apart by.
    pub fn by(&self) -> &[String] {
        match self {
            Condition::Value(s)
            | Condition::Rate { selector: s, .. }
            | Condition::Quantile { selector: s, .. } => &s.by,
            Condition::Ratio { numerator, .. } => &numerator.by,
        }
    }

    /// How much history the condition needs.
    pub fn window(&self) -> Duration {
        match self {
            Condition::Value(_) => Duration::ZERO,
            Condition::Rate { window, .. }
            | Condition::Ratio { window, .. }
            | Condition::Quantile { window, .. } => *window,
        }
    }
}

/// An alert rule.
///
/// ```
/// use optimize_runtime::monitor::alert::{Rule, Selector, Severity};
/// use std::time::Duration;
///
/// let rule = Rule::quantile(
///     "CheckoutSlow",
///     Selector::metric("optimize_call_duration_seconds")
///         .label("fn", "shop::checkout")
///         .by(["fn"]),
///     0.99,
///     Duration::from_secs(300),
/// )
/// .above(0.250)
/// .for_(Duration::from_secs(120))
/// .severity(Severity::Error)
/// .message("p99 of {{ $labels.fn }} is {{ $value | humanizeDuration }}");
/// assert!(rule.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rule {
    /// Unique name; the `alert` label of exported metrics and Prometheus rules.
    pub name: String,
    /// What is computed.
    pub condition: Condition,
    /// How it is compared.
    pub comparison: Comparison,
    /// With what.
    pub threshold: f64,
    /// How long the comparison must hold before the alert fires (pending until then).
    #[serde(with = "humantime_serde_compat")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after the comparison stops holding.
    #[serde(with = "humantime_serde_compat")]
    pub keep_firing_for: Duration,
    /// How bad it is.
    pub severity: Severity,
    /// Extra labels on every instance.
    pub labels: BTreeMap<String, String>,
    /// What a reader is told; `{{ $value }}`, `{{ $labels.NAME }}` and the pipes
    /// `humanizePercentage` and `humanizeDuration` are filled in, as Prometheus does.
    pub message: String,
}

/// Durations as humantime strings in JSON (`"5m"`).
mod humantime_serde_compat {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// A rule that cannot be evaluated or exported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("alert rule `{rule}`: {problem}")]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl Rule {
    fn new(name: impl Into<String>, condition: Condition) -> Self {
        Self {
            name: name.into(),
            condition,
            comparison: Comparison::Above,
            threshold: 0.0,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            message: String::new(),
        }
    }

    /// A rule on the current value of a selector.
    pub fn value(name: impl Into<String>, selector: Selector) -> Self {
        Self::new(name, Condition::Value(selector))
    }

    /// A rule on the per-second rate of a counter over `window`.
    pub fn rate(name: impl Into<String>, selector: Selector, window: Duration) -> Self {
        Self::new(name, Condition::Rate { selector, window })
    }

    /// A rule on `numerator / denominator` over `window` (zero: current values).
    pub fn ratio(
        name: impl Into<String>,
        numerator: Selector,
        denominator: Selector,
        window: Duration,
    ) -> Self {
        Self::new(
            name,
            Condition::Ratio {
                numerator,
                denominator,
                window,
                min_denominator: 0.0,
            },
        )
    }

    /// A rule on a quantile of a histogram over `window` (zero: since start).
    pub fn quantile(
        name: impl Into<String>,
        selector: Selector,
        quantile: f64,
        window: Duration,
    ) -> Self {
        Self::new(
            name,
            Condition::Quantile {
                selector,
                quantile,
                window,
            },
        )
    }

    /// Fires when the value is above `threshold`.
    pub fn above(self, threshold: f64) -> Self {
        self.compare(Comparison::Above, threshold)
    }

    /// Fires when the value is below `threshold`.
    pub fn below(self, threshold: f64) -> Self {
        self.compare(Comparison::Below, threshold)
    }

    /// Fires when `value comparison threshold` holds.
    pub fn compare(mut self, comparison: Comparison, threshold: f64) -> Self {
        self.comparison = comparison;
        self.threshold = threshold;
        self
    }

    /// Pending for this long before firing.
    pub fn for_(mut self, d: Duration) -> Self {
        self.for_ = d;
        self
    }

    /// Keeps firing this long after the condition clears.
    pub fn keep_firing_for(mut self, d: Duration) -> Self {
        self.keep_firing_for = d;
        self
    }

    /// Sets the severity.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the message template.
    pub fn message(mut self, template: impl Into<String>) -> Self {
        self.message = template.into();
        self
    }

    /// For ratio rules: the least denominator for the ratio to count.
    pub fn min_denominator(mut self, min: f64) -> Self {
        if let Condition::Ratio {
            min_denominator, ..
        } = &mut self.condition
        {
            *min_denominator = min;
        }
        self
    }

    /// Checks that the rule can be evaluated and exported.
    pub fn validate(&self) -> Result<(), RuleError> {
        let fail = |problem: String| {
            Err(RuleError {
                rule: self.name.clone(),
                problem,
            })
        };
        let valid_ident = |s: &str, colon: bool| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        };
        if !valid_ident(&self.name, false) {
            return fail("the name must be letters, digits and `_`, e.g. `CheckoutSlow`".into());
        }
        if !self.threshold.is_finite() {
            return fail("the threshold must be a finite number".into());
        }
        let selectors: Vec<&Selector> = match &self.condition {
            Condition::Value(s) | Condition::Rate { selector: s, .. } => vec![s],
            Condition::Ratio {
                numerator,
                denominator,
                ..
            } => {
                if numerator.by != denominator.by {
                    return fail(format!(
                        "numerator and denominator must group by the same labels (got {:?} and {:?})",
                        numerator.by, denominator.by
                    ));
                }
                vec![numerator, denominator]
            }
            Condition::Quantile {
                selector, quantile, ..
            } => {
                if !(0.0..=1.0).contains(quantile) {
                    return fail(format!(
                        "quantile {quantile} must be within 0..=1, e.g. 0.99"
                    ));
                }
                vec![selector]
            }
        };
        if let Condition::Rate { window, .. } = &self.condition {
            if window.is_zero() {
                return fail("a rate needs a window longer than zero, e.g. \"5m\"".into());
            }
        }
        for s in selectors {
            if !valid_ident(&s.metric, true) {
                return fail(format!("`{}` is not a metric name", s.metric));
            }
            let labels = s.by.iter().chain(s.matchers.iter().map(|m| match m {
                Matcher::Eq(k, _) | Matcher::Ne(k, _) | Matcher::In(k, _) => k,
            }));
            for label in labels {
                if !valid_ident(label, false) {
                    return fail(format!("`{label}` is not a label name"));
                }
            }
        }
        for key in self.labels.keys() {
            if !valid_ident(key, false) || key == "alertname" || key == "severity" {
                return fail(format!(
                    "label `{key}` is not allowed (`alertname` and `severity` are set by the rule)"
                ));
            }
        }
        Ok(())
    }

    /// The message with `{{ $value }}` and `{{ $labels.NAME }}` filled in.
    pub fn render(&self, value: f64, group: &GroupKey) -> String {
        let template = if self.message.is_empty() {
            "{{ $value }}"
        } else {
            &self.message
        };
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find("}}") else {
                out.push_str(&rest[open..]);
                return out;
            };
            let inner = rest[open + 2..open + close].trim();
            let (expr, pipe) = match inner.split_once('|') {
                Some((e, p)) => (e.trim(), Some(p.trim())),
                None => (inner, None),
            };
            let text = match expr {
                "$value" => match pipe {
                    Some("humanizePercentage") => {
                        format!("{}%", format_number((value * 1e6).round() / 1e4))
                    }
                    Some("humanizeDuration") => humanize_seconds(value),
                    _ => format_number(value),
                },
                e => match e.strip_prefix("$labels.") {
                    Some(label) => group
                        .iter()
                        .find(|(k, _)| k == label)
                        .map(|(_, v)| v.clone())
                        .or_else(|| self.labels.get(label).cloned())
                        .unwrap_or_default(),
                    None => rest[open..open + close + 2].to_owned(),
                },
            };
            out.push_str(&text);
            rest = &rest[open + close + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// A number as Prometheus prints `$value`: up to 6 significant digits, no trailing zeros.
pub(crate) fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn humanize_seconds(s: f64) -> String {
    if !s.is_finite() {
        return format_number(s);
    }
    if s >= 1.0 {
        return humantime::format_duration(Duration::from_millis((s * 1000.0) as u64)).to_string();
    }
    for (unit, scale) in [("ms", 1e3), ("µs", 1e6), ("ns", 1e9)] {
        if s * scale >= 1.0 || unit == "ns" {
            return format!(
                "{}{unit}",
                format_number((s * scale * 100.0).round() / 100.0)
            );
        }
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates_like_prometheus() {
        let rule = Rule::value("X", Selector::metric("m").by(["fn"]))
            .label("team", "shop")
            .message("{{ $labels.fn }} ({{ $labels.team }}): {{ $value }} / {{ $value | humanizePercentage }} / {{ $value | humanizeDuration }} {{ $unknown }}");
        let group = vec![("fn".to_owned(), "a::b".to_owned())];
        assert_eq!(
            rule.render(0.25, &group),
            "a::b (shop): 0.25 / 25% / 250ms {{ $unknown }}"
        );
        assert!(rule.render(3.0, &group).contains(" / 3s "));
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = |rule: Rule, what: &str| {
            let err = rule.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        };
        bad(Rule::value("has space", Selector::metric("m")), "name");
        bad(Rule::value("X", Selector::metric("1m")), "metric name");
        bad(
            Rule::value("X", Selector::metric("m").by(["a-b"])),
            "label name",
        );
        bad(
            Rule::rate("X", Selector::metric("m"), Duration::ZERO),
            "window",
        );
        bad(
            Rule::quantile("X", Selector::metric("m"), 1.5, Duration::ZERO),
            "quantile",
        );
        bad(
            Rule::ratio(
                "X",
                Selector::metric("a").by(["fn"]),
                Selector::metric("b"),
                Duration::ZERO,
            ),
            "same labels",
        );
        bad(
            Rule::value("X", Selector::metric("m")).label("severity", "x"),
            "severity",
        );
        bad(
            Rule::value("X", Selector::metric("m")).above(f64::NAN),
            "finite",
        );
    }

    #[test]
    fn promql_escapes_values() {
        let s = Selector::metric("m")
            .label("fn", "a\"b")
            .one_of("x", ["a.b", "c|d"]);
        assert_eq!(s.promql_selector(""), r#"m{fn="a\"b",x=~"a\\.b|c\\|d"}"#);
    }
}
