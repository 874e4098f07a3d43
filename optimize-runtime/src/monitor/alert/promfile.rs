//! Rules as a Prometheus rule file, so the same alerts can run in Prometheus against the
//! scraped metrics. The file is YAML; every string is written as a JSON string, which YAML
//! reads as a double-quoted scalar.

use std::fmt::Write as _;
use std::time::Duration;

use super::rule::{Condition, Rule};

/// A Prometheus duration: the largest unit that divides `d` exactly.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The PromQL expression of a rule: its condition compared with its threshold.
///
/// ```
/// use optimize_runtime::monitor::alert::{promfile, Rule, Selector};
/// use std::time::Duration;
///
/// let rule = Rule::rate(
///     "Drops",
///     Selector::metric("optimize_writeback_dropped_total"),
///     Duration::from_secs(300),
/// )
/// .above(0.0);
/// assert_eq!(
///     promfile::expr(&rule),
///     "sum(rate(optimize_writeback_dropped_total[5m])) > 0"
/// );
/// ```
pub fn expr(rule: &Rule) -> String {
    let threshold = super::rule::format_number(rule.threshold);
    let op = rule.comparison.operator();
    match &rule.condition {
        Condition::Value(s) => format!("{} {op} {threshold}", s.promql()),
        Condition::Rate { selector, window } => format!(
            "{} {op} {threshold}",
            selector.sum(&format!(
                "rate({}[{}])",
                selector.promql_selector(""),
                duration(*window)
            ))
        ),
        Condition::Ratio {
            numerator,
            denominator,
            window,
            min_denominator,
        } => {
            let side = |s: &super::Selector| {
                if window.is_zero() {
                    s.sum(&s.promql_selector(""))
                } else {
                    s.sum(&format!(
                        "increase({}[{}])",
                        s.promql_selector(""),
                        duration(*window)
                    ))
                }
            };
            let den = side(denominator);
            let mut e = format!("{} / {den} {op} {threshold}", side(numerator));
            if *min_denominator > 0.0 {
                let _ = write!(
                    e,
                    " and {den} >= {}",
                    super::rule::format_number(*min_denominator)
                );
            }
            e
        }
        Condition::Quantile {
            selector,
            quantile,
            window,
        } => {
            let mut by = selector.by.clone();
            by.push("le".into());
            let buckets = selector.promql_selector("_bucket");
            let inner = if window.is_zero() {
                buckets
            } else {
                format!("rate({buckets}[{}])", duration(*window))
            };
            format!(
                "histogram_quantile({}, {}) {op} {threshold}",
                super::rule::format_number(*quantile),
                selector.sum_by(&by, &inner)
            )
        }
    }
}

/// The rules as one Prometheus rule group named `group`.
///
/// ```
/// use optimize_runtime::monitor::alert::{default_rules, promfile};
///
/// let yaml = promfile::rule_file("optimize", &default_rules());
/// assert!(yaml.contains("- alert: \"OptimizeLowHitRatio\""));
/// ```
pub fn rule_file(group: &str, rules: &[Rule]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "groups:\n  - name: {}\n    rules:", quote(group));
    for rule in rules {
        let _ = writeln!(out, "      - alert: {}", quote(&rule.name));
        let _ = writeln!(out, "        expr: {}", quote(&expr(rule)));
        if !rule.for_.is_zero() {
            let _ = writeln!(out, "        for: {}", duration(rule.for_));
        }
        if !rule.keep_firing_for.is_zero() {
            let _ = writeln!(
                out,
                "        keep_firing_for: {}",
                duration(rule.keep_firing_for)
            );
        }
        let _ = writeln!(out, "        labels:");
        let _ = writeln!(out, "          severity: {}", quote(rule.severity.as_str()));
        for (k, v) in &rule.labels {
            let _ = writeln!(out, "          {k}: {}", quote(v));
        }
        if !rule.message.is_empty() {
            let _ = writeln!(out, "        annotations:");
            let _ = writeln!(out, "          summary: {}", quote(&rule.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn default_expressions() {
        let rules = super::super::default_rules();
        let by_name = |n: &str| expr(rules.iter().find(|r| r.name == n).unwrap());
        assert_eq!(
            by_name("OptimizeSlowCalls"),
            "histogram_quantile(0.99, sum by (fn, le) (rate(optimize_call_duration_seconds_bucket[5m]))) > 1"
        );
        assert_eq!(
            by_name("OptimizeMemoryHigh"),
            "sum(optimize_system_memory_used_bytes) / sum(optimize_system_memory_total_bytes) > 0.8"
        );
        assert!(by_name("OptimizeLowHitRatio").ends_with(
            r#"and sum by (fn) (increase(optimize_calls_total{outcome=~"hit_l1|hit_l2|hit_l3|coalesced|computed|uncached|panic|stale"}[5m])) >= 100"#
        ));
    }
}
