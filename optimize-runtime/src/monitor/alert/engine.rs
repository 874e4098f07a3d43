//! Evaluation of alert rules against snapshots, and the state of every alert instance.
//!
//! The engine is a plain value driven by the snapshots it is given; their `at_nanos` is the
//! clock. The monitor feeds it on an interval, tests feed it with a mock clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::rule::{format_number, Condition, GroupKey, Reading, Rule, RuleError};
use crate::monitor::snapshot::Snapshot;

/// Where an alert instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold (instances in this state are not kept).
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for `for` (or stopped less than `keep_firing_for` ago).
    Firing,
    /// It fired and has stopped; kept for a while so readers see it ended.
    Resolved,
}

impl AlertState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One instance of a rule: the rule's state for one group of labels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: super::Severity,
    /// The instance's labels: its group, then the rule's labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: AlertState,
    /// The last value computed for it.
    pub value: f64,
    /// The rule's message, rendered with that value.
    pub message: String,
    /// When the condition started holding (monitor clock, nanoseconds).
    pub active_since: u64,
    /// When it started firing.
    pub fired_at: Option<u64>,
    /// When it resolved.
    pub resolved_at: Option<u64>,
    #[serde(skip)]
    last_true: u64,
}

/// A change of an alert instance's state, handed to the handlers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlertEvent {
    /// The instance after the change.
    pub alert: Alert,
    /// Its state before.
    pub previous: AlertState,
    /// When (monitor clock, nanoseconds).
    pub at: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Rules, their instances and the recent snapshots that windows look back on.
#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    alerts: BTreeMap<(usize, GroupKey), Alert>,
    history: VecDeque<Arc<Snapshot>>,
    keep_resolved: Duration,
}

/// How long resolved instances stay listed, as Prometheus keeps them.
pub const KEEP_RESOLVED: Duration = Duration::from_secs(15 * 60);

impl AlertEngine {
    /// An engine for `rules`, each checked with [`Rule::validate`]; names must be unique.
    pub fn new(rules: Vec<Rule>) -> Result<Self, RuleError> {
        for (i, rule) in rules.iter().enumerate() {
            rule.validate()?;
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(RuleError {
                    rule: rule.name.clone(),
                    problem: "two rules have this name; give each a unique one".into(),
                });
            }
        }
        Ok(Self {
            rules,
            alerts: BTreeMap::new(),
            history: VecDeque::new(),
            keep_resolved: KEEP_RESOLVED,
        })
    }

    /// Keeps resolved instances listed for `d` instead of [`KEEP_RESOLVED`].
    pub fn keep_resolved_for(mut self, d: Duration) -> Self {
        self.keep_resolved = d;
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every instance that is pending, firing or recently resolved.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.values().cloned().collect()
    }

    /// Firing instances per rule: (rule, severity, count), every rule listed.
    pub fn firing_counts(&self) -> Vec<(String, &'static str, usize)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let n = self
                    .alerts
                    .iter()
                    .filter(|((ri, _), a)| *ri == i && a.state == AlertState::Firing)
                    .count();
                (r.name.clone(), r.severity.as_str(), n)
            })
            .collect()
    }

    /// Evaluates every rule on `snapshot` (taken at `snapshot.at_nanos`) and returns the
    /// state changes, in rule order.
    pub fn evaluate(&mut self, snapshot: Arc<Snapshot>) -> Vec<AlertEvent> {
        let now = snapshot.at_nanos;
        let longest = self
            .rules
            .iter()
            .map(|r| r.condition.window())
            .max()
            .unwrap_or_default();
        let mut events = Vec::new();
        for i in 0..self.rules.len() {
            let values = self.compute(&self.rules[i].condition, &snapshot);
            self.step(i, values, &snapshot, &mut events);
        }
        // Keep the newest snapshot at or before the longest window, and everything since.
        self.history.push_back(snapshot);
        let horizon = now.saturating_sub(nanos(longest));
        while self.history.len() > 1 && self.history[1].at_nanos <= horizon {
            self.history.pop_front();
        }
        events
    }

    /// The snapshot a window of `window` ending at `now` starts from: the newest at or
    /// before its start, else the oldest kept (a shorter window, early in the process).
    fn base(&self, now: u64, window: Duration) -> Option<&Arc<Snapshot>> {
        let start = now.saturating_sub(nanos(window));
        self.history
            .iter()
            .rev()
            .find(|s| s.at_nanos <= start)
            .or_else(|| self.history.front())
            .filter(|s| s.at_nanos < now)
    }

    fn compute(&self, condition: &Condition, snapshot: &Snapshot) -> BTreeMap<GroupKey, f64> {
        let now = snapshot.at_nanos;
        let numbers = |readings: BTreeMap<GroupKey, Reading>| -> BTreeMap<GroupKey, f64> {
            readings
                .into_iter()
                .map(|(k, r)| match r {
                    Reading::Number(v) => (k, v),
                    Reading::Histogram(h, _) => (k, h.count() as f64),
                })
                .collect()
        };
        // Increase of a counter since `base`; a counter that went down was reset.
        let increase = |now: &BTreeMap<GroupKey, f64>,
                        then: &BTreeMap<GroupKey, f64>|
         -> BTreeMap<GroupKey, f64> {
            now.iter()
                .map(|(k, v)| {
                    let before = then.get(k).copied().unwrap_or(0.0);
                    (k.clone(), if *v >= before { v - before } else { *v })
                })
                .collect()
        };
        match condition {
            Condition::Value(selector) => numbers(selector.read(snapshot)),
            Condition::Rate { selector, window } => {
                let Some(base) = self.base(now, *window) else {
                    return BTreeMap::new();
                };
                let span = (now - base.at_nanos) as f64 / 1e9;
                increase(
                    &numbers(selector.read(snapshot)),
                    &numbers(selector.read(base)),
                )
                .into_iter()
                .map(|(k, v)| (k, v / span))
                .collect()
            }
            Condition::Ratio {
                numerator,
                denominator,
                window,
                min_denominator,
            } => {
                let (num, den) = if window.is_zero() {
                    (
                        numbers(numerator.read(snapshot)),
                        numbers(denominator.read(snapshot)),
                    )
                } else {
                    let Some(base) = self.base(now, *window) else {
                        return BTreeMap::new();
                    };
                    (
                        increase(
                            &numbers(numerator.read(snapshot)),
                            &numbers(numerator.read(base)),
                        ),
                        increase(
                            &numbers(denominator.read(snapshot)),
                            &numbers(denominator.read(base)),
                        ),
                    )
                };
                den.into_iter()
                    .filter(|(_, d)| *d > 0.0 && *d >= *min_denominator)
                    .map(|(k, d)| {
                        let n = num.get(&k).copied().unwrap_or(0.0);
                        (k, n / d)
                    })
                    .collect()
            }
            Condition::Quantile {
                selector,
                quantile,
                window,
            } => {
                let now_h = selector.read(snapshot);
                let base_h = if window.is_zero() {
                    None
                } else {
                    match self.base(now, *window) {
                        Some(base) => Some(selector.read(base)),
                        None => return BTreeMap::new(),
                    }
                };
                now_h
                    .into_iter()
                    .filter_map(|(k, r)| {
                        let Reading::Histogram(h, scale) = r else {
                            return None;
                        };
                        let h = match base_h.as_ref().and_then(|b| b.get(&k)) {
                            Some(Reading::Histogram(before, _)) => h.since(before),
                            _ => h,
                        };
                        (h.count() > 0)
                            .then(|| (k, h.quantile(*quantile).as_nanos() as f64 * scale))
                    })
                    .collect()
            }
        }
    }

    fn step(
        &mut self,
        rule_index: usize,
        values: BTreeMap<GroupKey, f64>,
        snapshot: &Snapshot,
        events: &mut Vec<AlertEvent>,
    ) {
        let rule = &self.rules[rule_index];
        let now = snapshot.at_nanos;
        let mut keys: Vec<GroupKey> = values.keys().cloned().collect();
        for (ri, key) in self.alerts.keys() {
            if *ri == rule_index && !values.contains_key(key) {
                keys.push(key.clone());
            }
        }
        for key in keys {
            let value = values.get(&key).copied();
            let holds = value.is_some_and(|v| rule.comparison.holds(v, rule.threshold));
            let slot = (rule_index, key.clone());
            let previous = self
                .alerts
                .get(&slot)
                .map_or(AlertState::Inactive, |a| a.state);
            let next = match (previous, holds) {
                (AlertState::Inactive | AlertState::Resolved, true) if rule.for_.is_zero() => {
                    AlertState::Firing
                }
                (AlertState::Inactive | AlertState::Resolved, true) => AlertState::Pending,
                (AlertState::Pending, true) => {
                    let since = self.alerts[&slot].active_since;
                    if now.saturating_sub(since) >= nanos(rule.for_) {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    }
                }
                (AlertState::Firing, true) => AlertState::Firing,
                (AlertState::Inactive | AlertState::Pending, false) => AlertState::Inactive,
                (AlertState::Firing, false) => {
                    let last_true = self.alerts[&slot].last_true;
                    if now.saturating_sub(last_true) < nanos(rule.keep_firing_for) {
                        AlertState::Firing
                    } else {
                        AlertState::Resolved
                    }
                }
                (AlertState::Resolved, false) => AlertState::Resolved,
            };
            if next == AlertState::Inactive {
                if self.alerts.remove(&slot).is_some() {
                    events.push(self.event(rule_index, &key, value, previous, next, snapshot));
                }
                continue;
            }
            if next == AlertState::Resolved
                && previous == AlertState::Resolved
                && self.alerts[&slot]
                    .resolved_at
                    .is_some_and(|at| now.saturating_sub(at) >= nanos(self.keep_resolved))
            {
                self.alerts.remove(&slot);
                continue;
            }
            let labels = instance_labels(rule, &key);
            let alert = self.alerts.entry(slot).or_insert_with(|| Alert {
                rule: rule.name.clone(),
                severity: rule.severity,
                labels,
                state: AlertState::Inactive,
                value: 0.0,
                message: String::new(),
                active_since: now,
                fired_at: None,
                resolved_at: None,
                last_true: now,
            });
            if let Some(v) = value {
                alert.value = v;
                alert.message = rule.render(v, &key);
            }
            if holds {
                alert.last_true = now;
            }
            if previous != next {
                match next {
                    AlertState::Pending => {
                        alert.active_since = now;
                        alert.fired_at = None;
                        alert.resolved_at = None;
                    }
                    AlertState::Firing => {
                        if previous != AlertState::Pending {
                            alert.active_since = now;
                        }
                        alert.fired_at = Some(now);
                        alert.resolved_at = None;
                    }
                    AlertState::Resolved => alert.resolved_at = Some(now),
                    AlertState::Inactive => {}
                }
                alert.state = next;
                events.push(AlertEvent {
                    alert: alert.clone(),
                    previous,
                    at: now,
                    at_unix_ms: snapshot.at_unix_ms,
                });
            }
        }
    }

    fn event(
        &self,
        rule_index: usize,
        key: &GroupKey,
        value: Option<f64>,
        previous: AlertState,
        state: AlertState,
        snapshot: &Snapshot,
    ) -> AlertEvent {
        let rule = &self.rules[rule_index];
        let value = value.unwrap_or(f64::NAN);
        AlertEvent {
            alert: Alert {
                rule: rule.name.clone(),
                severity: rule.severity,
                labels: instance_labels(rule, key),
                state,
                value,
                message: rule.render(value, key),
                active_since: snapshot.at_nanos,
                fired_at: None,
                resolved_at: None,
                last_true: snapshot.at_nanos,
            },
            previous,
            at: snapshot.at_nanos,
            at_unix_ms: snapshot.at_unix_ms,
        }
    }
}

fn instance_labels(rule: &Rule, key: &GroupKey) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = key.iter().cloned().collect();
    for (k, v) in &rule.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels.insert("severity".into(), rule.severity.as_str().into());
    labels
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] {} = {}",
            self.rule,
            self.severity,
            self.state.as_str(),
            format_number(self.value)
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}
