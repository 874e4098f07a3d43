//! Alert rules written in TOML, as an `[[alerts]]` array of tables:
//!
//! ```toml
//! [[alerts]]
//! name = "CheckoutSlow"
//! kind = "quantile"             # value | rate | ratio | quantile
//! metric = "optimize_call_duration_seconds"
//! match = { fn = "shop::checkout" }   # a string: equals; an array: one of
//! by = ["fn"]
//! quantile = 0.99
//! window = "5m"
//! when = ">"                    # > >= < <= == !=
//! threshold = 0.25
//! for = "2m"
//! severity = "error"            # info | warning | error | critical
//! message = "p99 of {{ $labels.fn }} is {{ $value | humanizeDuration }}"
//! ```
//!
//! Ratio rules give `numerator` and `denominator` tables (`metric`, `match`, `not`) instead
//! of `metric`; both group by `by`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::rule::{Comparison, Rule, Selector, Severity};

/// Rules that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct RulesError {
    /// The file (or `<string>`).
    pub source_name: String,
    /// What is wrong, with the key path and the expected form.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    alerts: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MatchValue {
    One(String),
    Any(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SelectorSpec {
    metric: String,
    #[serde(default, rename = "match")]
    matches: BTreeMap<String, MatchValue>,
    #[serde(default)]
    not: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    kind: String,
    metric: Option<String>,
    #[serde(default, rename = "match")]
    matches: BTreeMap<String, MatchValue>,
    #[serde(default)]
    not: BTreeMap<String, String>,
    numerator: Option<SelectorSpec>,
    denominator: Option<SelectorSpec>,
    #[serde(default)]
    by: Vec<String>,
    quantile: Option<f64>,
    window: Option<String>,
    min_denominator: Option<f64>,
    when: String,
    threshold: f64,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: String,
}

fn selector(
    metric: String,
    matches: BTreeMap<String, MatchValue>,
    not: BTreeMap<String, String>,
    by: &[String],
) -> Selector {
    let mut s = Selector::metric(metric).by(by.iter().cloned());
    for (label, m) in matches {
        s = match m {
            MatchValue::One(v) => s.label(label, v),
            MatchValue::Any(vs) => s.one_of(label, vs),
        };
    }
    for (label, v) in not {
        s = s.label_not(label, v);
    }
    s
}

impl RuleSpec {
    fn into_rule(self, at: &str) -> Result<Rule, String> {
        let duration = |key: &str, v: &Option<String>| -> Result<Duration, String> {
            match v {
                None => Ok(Duration::ZERO),
                Some(s) => humantime::parse_duration(s).map_err(|e| {
                    format!(
                        "{at}.{key} = {s:?}: {e}; expected a duration such as \"5m\" or \"30s\""
                    )
                }),
            }
        };
        let window = duration("window", &self.window)?;
        let own_selector = |what: &str| -> Result<Selector, String> {
            let metric = self
                .metric
                .clone()
                .ok_or_else(|| format!("{at}: a {what} rule needs `metric = \"...\"`"))?;
            Ok(selector(
                metric,
                self.matches
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            match v {
                                MatchValue::One(s) => MatchValue::One(s.clone()),
                                MatchValue::Any(vs) => MatchValue::Any(vs.clone()),
                            },
                        )
                    })
                    .collect(),
                self.not.clone(),
                &self.by,
            ))
        };
        let mut rule = match self.kind.as_str() {
            "value" => Rule::value(&self.name, own_selector("value")?),
            "rate" => Rule::rate(&self.name, own_selector("rate")?, window),
            "quantile" => Rule::quantile(
                &self.name,
                own_selector("quantile")?,
                self.quantile.ok_or_else(|| {
                    format!("{at}: a quantile rule needs `quantile = 0.99` (0..=1)")
                })?,
                window,
            ),
            "ratio" => {
                let side = |s: Option<SelectorSpec>, key: &str| {
                    s.map(|s| selector(s.metric, s.matches, s.not, &self.by))
                        .ok_or_else(|| {
                            format!("{at}: a ratio rule needs `{key} = {{ metric = \"...\" }}`")
                        })
                };
                Rule::ratio(
                    &self.name,
                    side(self.numerator, "numerator")?,
                    side(self.denominator, "denominator")?,
                    window,
                )
                .min_denominator(self.min_denominator.unwrap_or(0.0))
            }
            other => {
                return Err(format!(
                    "{at}.kind = {other:?}: expected \"value\", \"rate\", \"ratio\" or \"quantile\""
                ))
            }
        };
        let comparison = Comparison::parse(&self.when).ok_or_else(|| {
            format!(
                "{at}.when = {:?}: expected one of \">\", \">=\", \"<\", \"<=\", \"==\", \"!=\"",
                self.when
            )
        })?;
        rule = rule
            .compare(comparison, self.threshold)
            .for_(duration("for", &self.for_)?)
            .keep_firing_for(duration("keep_firing_for", &self.keep_firing_for)?)
            .message(self.message);
        if let Some(s) = &self.severity {
            rule = rule.severity(Severity::parse(s).ok_or_else(|| {
                format!("{at}.severity = {s:?}: expected \"info\", \"warning\", \"error\" or \"critical\"")
            })?);
        }
        for (k, v) in self.labels {
            rule = rule.label(k, v);
        }
        rule.validate().map_err(|e| format!("{at}: {e}"))?;
        Ok(rule)
    }
}

/// Reads `[[alerts]]` rules from TOML text; `source_name` names it in errors.
///
/// ```
/// use optimize_runtime::monitor::alert::rules_from_toml;
///
/// let rules = rules_from_toml(
///     "inline",
///     r#"
///     [[alerts]]
///     name = "QueueDeep"
///     kind = "value"
///     metric = "shop_queue_depth"
///     when = ">"
///     threshold = 10
///     for = "30s"
///     "#,
/// )
/// .unwrap();
/// assert_eq!(rules[0].threshold, 10.0);
///
/// let err = rules_from_toml("inline", "[[alerts]]\nname = \"X\"\nkind = \"average\"\nmetric = \"m\"\nwhen = \">\"\nthreshold = 1\n")
///     .unwrap_err();
/// assert!(err.to_string().contains("alerts[0].kind"));
/// ```
pub fn rules_from_toml(source_name: &str, text: &str) -> Result<Vec<Rule>, RulesError> {
    let fail = |message: String| RulesError {
        source_name: source_name.to_owned(),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
    file.alerts
        .into_iter()
        .enumerate()
        .map(|(i, spec)| spec.into_rule(&format!("alerts[{i}]")).map_err(fail))
        .collect()
}

/// Reads `[[alerts]]` rules from a TOML file.
pub fn load_rules(path: &Path) -> Result<Vec<Rule>, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|e| RulesError {
        source_name: path.display().to_string(),
        message: e.to_string(),
    })?;
    rules_from_toml(&path.display().to_string(), &text)
}
