//! Alert rules over the monitor's metrics, modelled on Prometheus alerting rules (docs/metrics.md).
//!
//! - [`Rule`]: a condition ([`Condition`]: value, rate, ratio or quantile over a
//!   [`Selector`]), a comparison and threshold, `for`, `keep_firing_for`, a [`Severity`],
//!   labels and a message template;
//! - [`AlertEngine`]: evaluates rules against snapshots and keeps each instance's
//!   [`AlertState`] (inactive → pending → firing → resolved);
//! - [`AlertHandler`]: what is told of each change — [`TracingHandler`] (the default),
//!   any closure, or a [`WebhookHandler`];
//! - [`default_rules`], [`rules_from_toml`] and [`promfile::rule_file`] for the shipped rule
//!   set, rules from configuration, and export as a Prometheus rule file.

mod engine;
mod handler;
pub mod promfile;
mod rule;
mod spec;

use std::time::Duration;

pub use engine::{Alert, AlertEngine, AlertEvent, AlertState, KEEP_RESOLVED};
pub use handler::{AlertHandler, TracingHandler, WebhookHandler, WebhookStats};
pub use rule::{Comparison, Condition, GroupKey, Matcher, Rule, RuleError, Selector, Severity};
pub use spec::{load_rules, rules_from_toml, RulesError};

/// Outcomes answered from a cache tier.
const HITS: [&str; 3] = ["hit_l1", "hit_l2", "hit_l3"];
/// Outcomes of calls that could have been answered from a cache.
const CACHEABLE: [&str; 8] = [
    "hit_l1",
    "hit_l2",
    "hit_l3",
    "coalesced",
    "computed",
    "uncached",
    "panic",
    "stale",
];
/// Outcomes that are errors: `Err`/`None` results and panics.
const ERRORS: [&str; 3] = ["uncached", "panic", "failed"];

/// The shipped rule set (docs/alerts.md has the table):
///
/// | rule | fires when | for | severity |
/// |---|---|---|---|
/// | `OptimizeLowHitRatio` | a function's hit ratio over 5m < 50% (≥ 100 calls) | 10m | warning |
/// | `OptimizeSlowCalls` | a function's p99 over 5m > 1s | 5m | warning |
/// | `OptimizeErrorRatio` | a function's `Err`/`None`/panic ratio over 5m > 5% (≥ 20 calls) | 5m | error |
/// | `OptimizeL2CircuitOpen` | the Redis circuit breaker is open | 1m | error |
/// | `OptimizeRedisRightsMissing` | the Redis user may not run something the cache needs | 0 | error |
/// | `OptimizeBackplaneDisconnected` | the backplane is not reading Redis: other instances' invalidations do not reach this one | 1m | error |
/// | `OptimizeMemoryHigh` | system memory in use > 80% | 5m | warning |
/// | `OptimizeWritebackDrops` | shared-tier writes are being dropped | 0 | warning |
/// | `OptimizePoolQueueDepth` | more than 100 calls wait for one pool | 2m | warning |
/// | `OptimizeServingStale` | a function serves stale values (fail-safe) because its body fails | 5m | warning |
///
/// ```
/// let rules = optimize_runtime::monitor::alert::default_rules();
/// assert!(rules.iter().all(|r| r.validate().is_ok()));
/// assert_eq!(rules.len(), 10);
/// ```
pub fn default_rules() -> Vec<Rule> {
    let min = |m: u64| Duration::from_secs(m * 60);
    let calls = || Selector::metric("optimize_calls_total").by(["fn"]);
    vec![
        Rule::ratio(
            "OptimizeLowHitRatio",
            calls().one_of("outcome", HITS),
            calls().one_of("outcome", CACHEABLE),
            min(5),
        )
        .min_denominator(100.0)
        .below(0.5)
        .for_(min(10))
        .severity(Severity::Warning)
        .message("hit ratio of {{ $labels.fn }} is {{ $value | humanizePercentage }} over 5m"),
        Rule::quantile(
            "OptimizeSlowCalls",
            Selector::metric("optimize_call_duration_seconds").by(["fn"]),
            0.99,
            min(5),
        )
        .above(1.0)
        .for_(min(5))
        .severity(Severity::Warning)
        .message("p99 latency of {{ $labels.fn }} is {{ $value | humanizeDuration }}"),
        Rule::ratio(
            "OptimizeErrorRatio",
            calls().one_of("outcome", ERRORS),
            calls(),
            min(5),
        )
        .min_denominator(20.0)
        .above(0.05)
        .for_(min(5))
        .severity(Severity::Error)
        .message("{{ $value | humanizePercentage }} of calls of {{ $labels.fn }} fail"),
        Rule::value(
            "OptimizeL2CircuitOpen",
            Selector::metric("optimize_l2_circuit_open"),
        )
        .above(0.0)
        .for_(min(1))
        .severity(Severity::Error)
        .message("Redis (L2) is failing; calls skip it and use L1/L3"),
        Rule::value(
            "OptimizeRedisRightsMissing",
            Selector::metric("optimize_l2_missing_rights"),
        )
        .above(0.0)
        .severity(Severity::Error)
        .message("the Redis user lacks {{ $value }} right(s) the cache needs; /health names them"),
        Rule::value(
            "OptimizeBackplaneDisconnected",
            Selector::metric("optimize_backplane_connected"),
        )
        .below(1.0)
        .for_(min(1))
        .severity(Severity::Error)
        .message("the backplane is not reading Redis: invalidations made by other instances do not reach this one (it catches up, or clears its L1 and L3, when it reconnects)"),
        Rule::ratio(
            "OptimizeMemoryHigh",
            Selector::metric("optimize_system_memory_used_bytes"),
            Selector::metric("optimize_system_memory_total_bytes"),
            Duration::ZERO,
        )
        .above(0.8)
        .for_(min(5))
        .severity(Severity::Warning)
        .message("system memory is {{ $value | humanizePercentage }} used"),
        Rule::rate(
            "OptimizeWritebackDrops",
            Selector::metric("optimize_writeback_dropped_total"),
            min(5),
        )
        .above(0.0)
        .severity(Severity::Warning)
        .message("shared-tier writes are dropped ({{ $value }}/s): the write-behind queue is full"),
        Rule::value(
            "OptimizePoolQueueDepth",
            Selector::metric("optimize_pool_queue_depth").by(["pool"]),
        )
        .above(100.0)
        .for_(min(2))
        .severity(Severity::Warning)
        .message("{{ $value }} calls wait for the {{ $labels.pool }} pool"),
        Rule::rate(
            "OptimizeServingStale",
            calls().one_of("outcome", ["stale"]),
            min(5),
        )
        .above(0.0)
        .for_(min(5))
        .severity(Severity::Warning)
        .message("{{ $labels.fn }} serves stale values ({{ $value }}/s): its body fails and fail-safe answers in its place"),
    ]
}

#[cfg(test)]
mod tests;
