//! The alert state machine, one transition per test, on a mock clock.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::monitor::snapshot::{labels, HistogramValue, MetricType, SnapshotBuilder};
use crate::stats::{FnRecorder, Outcome};
use crate::time::{Clock, MockClock};

const SEC: Duration = Duration::from_secs(1);

struct Bench {
    clock: Clock,
    mock: MockClock,
    engine: AlertEngine,
}

impl Bench {
    fn new(rules: Vec<Rule>) -> Self {
        let (clock, mock) = Clock::mock();
        mock.increment(SEC); // keep t=0 apart from "no time"
        Self {
            clock,
            mock,
            engine: AlertEngine::new(rules).unwrap(),
        }
    }

    /// Advances the clock by `dt`, then evaluates a snapshot built by `fill`.
    fn tick(
        &mut self,
        dt: Duration,
        fill: impl FnOnce(&mut SnapshotBuilder),
    ) -> Vec<(AlertState, AlertState)> {
        self.mock.increment(dt);
        let mut b = SnapshotBuilder::default();
        fill(&mut b);
        let snap = Arc::new(b.finish(self.clock.now_nanos(), 0));
        self.engine
            .evaluate(snap)
            .into_iter()
            .map(|e| (e.previous, e.alert.state))
            .collect()
    }

    fn gauge(&mut self, dt: Duration, v: f64) -> Vec<(AlertState, AlertState)> {
        self.tick(dt, |b| {
            b.family("g", "", MetricType::Gauge).number(Vec::new(), v);
        })
    }

    fn state(&self) -> Option<AlertState> {
        self.engine.alerts().first().map(|a| a.state)
    }
}

use AlertState::*;

fn gauge_rule() -> Rule {
    Rule::value("High", Selector::metric("g"))
        .above(10.0)
        .for_(5 * SEC)
}

#[test]
fn inactive_to_pending_when_the_condition_starts_holding() {
    let mut b = Bench::new(vec![gauge_rule()]);
    assert_eq!(b.gauge(SEC, 1.0), vec![]);
    assert_eq!(b.state(), None);
    assert_eq!(b.gauge(SEC, 11.0), vec![(Inactive, Pending)]);
}

#[test]
fn pending_to_firing_once_for_has_passed() {
    let mut b = Bench::new(vec![gauge_rule()]);
    b.gauge(SEC, 11.0);
    assert_eq!(b.gauge(4 * SEC, 11.0), vec![], "4s of a 5s `for`");
    assert_eq!(b.state(), Some(Pending));
    assert_eq!(b.gauge(SEC, 12.0), vec![(Pending, Firing)]);
    let alert = &b.engine.alerts()[0];
    assert_eq!(alert.value, 12.0);
    assert_eq!(alert.fired_at.unwrap() - alert.active_since, 5_000_000_000);
}

#[test]
fn pending_to_inactive_when_the_condition_stops_early() {
    let mut b = Bench::new(vec![gauge_rule()]);
    b.gauge(SEC, 11.0);
    assert_eq!(b.gauge(SEC, 3.0), vec![(Pending, Inactive)]);
    assert_eq!(b.state(), None);
    // Starting again restarts the `for` clock.
    b.gauge(SEC, 11.0);
    assert_eq!(b.gauge(4 * SEC, 11.0), vec![]);
}

#[test]
fn firing_to_resolved_when_the_condition_stops() {
    let mut b = Bench::new(vec![gauge_rule()]);
    b.gauge(SEC, 11.0);
    b.gauge(5 * SEC, 11.0);
    assert_eq!(b.gauge(SEC, 2.0), vec![(Firing, Resolved)]);
    assert!(b.engine.alerts()[0].resolved_at.is_some());
}

#[test]
fn firing_holds_for_keep_firing_for() {
    let mut b = Bench::new(vec![gauge_rule().keep_firing_for(3 * SEC)]);
    b.gauge(SEC, 11.0);
    b.gauge(5 * SEC, 11.0);
    assert_eq!(b.state(), Some(Firing));
    assert_eq!(
        b.gauge(2 * SEC, 2.0),
        vec![],
        "2s into a 3s keep_firing_for"
    );
    assert_eq!(b.state(), Some(Firing));
    assert_eq!(b.gauge(SEC, 2.0), vec![(Firing, Resolved)]);
}

#[test]
fn zero_for_fires_at_once() {
    let mut b = Bench::new(vec![Rule::value("Now", Selector::metric("g")).above(1.0)]);
    assert_eq!(b.gauge(SEC, 2.0), vec![(Inactive, Firing)]);
}

#[test]
fn resolved_to_pending_when_it_comes_back_and_dropped_after_retention() {
    let mut b = Bench {
        engine: AlertEngine::new(vec![gauge_rule()])
            .unwrap()
            .keep_resolved_for(60 * SEC),
        ..Bench::new(vec![])
    };
    b.gauge(SEC, 11.0);
    b.gauge(5 * SEC, 11.0);
    b.gauge(SEC, 0.0);
    assert_eq!(b.gauge(SEC, 11.0), vec![(Resolved, Pending)]);
    b.gauge(5 * SEC, 11.0);
    b.gauge(SEC, 0.0);
    assert_eq!(b.state(), Some(Resolved));
    b.gauge(59 * SEC, 0.0);
    assert_eq!(b.state(), Some(Resolved));
    b.gauge(SEC, 0.0);
    assert_eq!(b.state(), None, "dropped after the retention");
}

#[test]
fn a_vanished_series_resolves() {
    let mut b = Bench::new(vec![Rule::value("Now", Selector::metric("g")).above(1.0)]);
    b.gauge(SEC, 2.0);
    assert_eq!(b.tick(SEC, |_| {}), vec![(Firing, Resolved)]);
}

#[test]
fn groups_are_separate_instances_with_rendered_messages() {
    let rule = Rule::value("Deep", Selector::metric("q").by(["pool"]))
        .above(5.0)
        .label("team", "core")
        .message("{{ $labels.pool }} has {{ $value }}");
    let mut b = Bench::new(vec![rule]);
    b.tick(SEC, |b| {
        b.family("q", "", MetricType::Gauge)
            .number(labels([("pool", "cpu"), ("priority", "high")]), 4.0)
            .number(labels([("pool", "cpu"), ("priority", "low")]), 3.0)
            .number(labels([("pool", "io"), ("priority", "high")]), 1.0);
    });
    let alerts = b.engine.alerts();
    assert_eq!(alerts.len(), 1, "cpu sums to 7 > 5; io is 1");
    assert_eq!(alerts[0].labels["pool"], "cpu");
    assert_eq!(alerts[0].labels["team"], "core");
    assert_eq!(alerts[0].labels["severity"], "warning");
    assert_eq!(alerts[0].message, "cpu has 7");
    assert_eq!(
        b.engine.firing_counts(),
        vec![("Deep".into(), "warning", 1)]
    );
}

#[test]
fn rate_is_the_increase_over_the_window() {
    let rule = Rule::rate("Fast", Selector::metric("c_total"), 10 * SEC).above(5.0);
    let mut b = Bench::new(vec![rule]);
    let counter = |v: f64| {
        move |b: &mut SnapshotBuilder| {
            b.family("c_total", "", MetricType::Counter)
                .number(Vec::new(), v);
        }
    };
    assert_eq!(b.tick(SEC, counter(0.0)), vec![], "one reading has no rate");
    assert_eq!(b.tick(10 * SEC, counter(40.0)), vec![], "4/s");
    assert_eq!(b.tick(10 * SEC, counter(100.0)), vec![(Inactive, Firing)]);
    assert_eq!(b.engine.alerts()[0].value, 6.0);
    // A reset (process restart) counts the new value as the increase.
    assert_eq!(b.tick(10 * SEC, counter(30.0)), vec![(Firing, Resolved)]);
}

#[test]
fn ratio_needs_its_minimum_denominator() {
    let calls = || Selector::metric("calls_total").by(["fn"]);
    let rule = Rule::ratio(
        "LowHits",
        calls().label("outcome", "hit"),
        calls(),
        10 * SEC,
    )
    .min_denominator(10.0)
    .below(0.5);
    let mut b = Bench::new(vec![rule]);
    let calls = |hits: f64, misses: f64| {
        move |b: &mut SnapshotBuilder| {
            b.family("calls_total", "", MetricType::Counter)
                .number(labels([("fn", "f"), ("outcome", "hit")]), hits)
                .number(labels([("fn", "f"), ("outcome", "miss")]), misses);
        }
    };
    b.tick(SEC, calls(0.0, 0.0));
    assert_eq!(b.tick(10 * SEC, calls(1.0, 5.0)), vec![], "6 calls < 10");
    assert_eq!(
        b.tick(10 * SEC, calls(3.0, 20.0)),
        vec![(Inactive, Firing)],
        "2 of 17"
    );
    assert!((b.engine.alerts()[0].value - 2.0 / 17.0).abs() < 1e-9);
}

#[test]
fn quantile_reads_the_window_of_a_histogram() {
    let rule = Rule::quantile(
        "Slow",
        Selector::metric("d_seconds").by(["fn"]),
        0.9,
        10 * SEC,
    )
    .above(0.5);
    let mut b = Bench::new(vec![rule]);
    let rec = Arc::new(FnRecorder::new());
    let fill = |rec: Arc<FnRecorder>| {
        move |b: &mut SnapshotBuilder| {
            let s = rec.snapshot();
            b.family("d_seconds", "", MetricType::Histogram).histogram(
                labels([("fn", "f")]),
                HistogramValue::durations(s.latency, s.total_time),
            );
        }
    };
    b.tick(SEC, fill(rec.clone()));
    for _ in 0..100 {
        rec.record(Outcome::Computed, 2_000_000_000, 0); // 2 s
    }
    assert_eq!(b.tick(SEC, fill(rec.clone())), vec![(Inactive, Firing)]);
    for _ in 0..100 {
        rec.record(Outcome::Computed, 10_000_000, 0); // 10 ms
    }
    // Once the window no longer holds the slow calls, p90 is 10 ms.
    assert_eq!(
        b.tick(11 * SEC, fill(rec.clone())),
        vec![(Firing, Resolved)]
    );
    let v = b.engine.alerts()[0].value;
    assert!((v - 0.01).abs() < 0.002, "{v}");
}

#[test]
fn duplicate_or_invalid_rules_are_refused() {
    let err = AlertEngine::new(vec![gauge_rule(), gauge_rule()]).unwrap_err();
    assert!(err.to_string().contains("unique"), "{err}");
    assert!(AlertEngine::new(vec![Rule::value("bad name", Selector::metric("g"))]).is_err());
}

#[test]
fn snapshots_without_the_metric_have_no_instances() {
    let mut b = Bench::new(default_rules());
    assert_eq!(b.tick(SEC, |_| {}), vec![]);
    assert!(b.engine.alerts().is_empty());
}
