//! The JSON views of the monitor: `/stats` (one [`StatsReport`]), `/history` (recent ones)
//! and `/health` ([`Health`]).

use serde::Serialize;

use super::alert::{Alert, AlertState, Severity};
use super::system::SystemStats;
use super::Sources;
use crate::cache::tiered::TiersStatus;
use crate::cache::Tier;
use crate::pool::GateStats;
use crate::stats::Outcome;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Hit ratio of each tier over cacheable calls.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierRatios {
    /// In-process.
    pub l1: f64,
    /// Redis.
    pub l2: f64,
    /// Local disk.
    pub l3: f64,
}

/// One function's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FnReport {
    /// Its path.
    #[serde(rename = "fn")]
    pub path: String,
    /// `io`, `cpu` or `memory`.
    pub kind: &'static str,
    /// Calls.
    pub calls: u64,
    /// Calls answered from a cache tier.
    pub hits: u64,
    /// Hits over cacheable calls.
    pub hit_ratio: f64,
    /// Per tier.
    pub tier_hit_ratio: TierRatios,
    /// Calls that shared a concurrent call's result.
    pub coalesced: u64,
    /// Calls answered with a value kept past its expiry because the body failed (fail-safe).
    pub stale: u64,
    /// Background runs that stored a fresh value (refresh-ahead, soft timeouts).
    pub refreshed: u64,
    /// Warming and prefetch calls that ran the body.
    pub prefetched: u64,
    /// What predictive prefetch did, for a function with `predict` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictions: Option<crate::predict::PredictStats>,
    /// `Err`/`None` results and panics.
    pub errors: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Retries.
    pub retries: u64,
    /// Entries in this process's L1.
    pub l1_entries: u64,
    /// Whole-call latency quantiles, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// 99th percentile of body run time, milliseconds.
    pub compute_p99_ms: f64,
}

/// One pool's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolReport {
    /// `cpu`, `io` or `memory`.
    pub pool: &'static str,
    /// Slots (bytes for memory).
    pub capacity: u64,
    /// Slots in use.
    pub in_use: u64,
    /// Running.
    pub active: u64,
    /// Waiting, all priorities.
    pub queued: u64,
    /// Finished.
    pub completed: u64,
    /// Refused after shutdown.
    pub rejected: u64,
    /// Refused because the queue was full.
    pub refused_full: u64,
    /// The queue's bound (`None`: unbounded).
    pub queue_capacity: Option<u64>,
    /// Waiting, per priority (critical, high, normal, low, batch).
    pub queued_by_priority: Vec<u64>,
    /// 99th percentile of admission waits, milliseconds.
    pub wait_p99_ms: f64,
}

impl PoolReport {
    fn new(pool: &'static str, g: &GateStats) -> Self {
        Self {
            pool,
            capacity: g.capacity,
            in_use: g.in_use,
            active: g.active,
            queued: g.queued_total(),
            completed: g.completed,
            rejected: g.rejected,
            refused_full: g.refused_full,
            queue_capacity: g.queue_capacity,
            queued_by_priority: g.queued.to_vec(),
            wait_p99_ms: ms(g.wait.quantile(0.99)),
        }
    }
}

/// Everything `/stats` shows at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsReport {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Each managed function, in first-use order.
    pub functions: Vec<FnReport>,
    /// The shared tiers.
    pub tiers: Option<TiersStatus>,
    /// The pools.
    pub pools: Vec<PoolReport>,
    /// The task processor's figures.
    pub tasks: crate::pool::tasks::TaskFigures,
    /// Each CPU pool thread's figures.
    pub cpu_workers: Vec<crate::pool::cpu::WorkerStats>,
    /// The last system sample, when the monitor runs.
    pub system: Option<SystemStats>,
    /// Alert instances firing.
    pub alerts_firing: usize,
    /// Each function's figures over the last hour against the hour before, from the
    /// monitor's history (absent without a monitor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trends: Option<super::Trends>,
}

impl StatsReport {
    /// Reads every function, tier and pool now.
    pub fn now(sources: &Sources, system: Option<SystemStats>, alerts_firing: usize) -> Self {
        let functions = sources
            .registry
            .sites()
            .into_iter()
            .map(|site| {
                let s = site.stats();
                FnReport {
                    path: site.path().to_owned(),
                    kind: site.kind().as_str(),
                    calls: s.calls(),
                    hits: s.hits(),
                    hit_ratio: s.hit_ratio(),
                    tier_hit_ratio: TierRatios {
                        l1: s.tier_hit_ratio(Tier::L1),
                        l2: s.tier_hit_ratio(Tier::L2),
                        l3: s.tier_hit_ratio(Tier::L3),
                    },
                    coalesced: s.count(Outcome::Coalesced),
                    stale: s.count(Outcome::Stale),
                    refreshed: s.count(Outcome::Refreshed),
                    prefetched: s.count(Outcome::Prefetched),
                    predictions: site.predictions(),
                    errors: s.errors(),
                    timeouts: s.timeouts,
                    retries: s.retries,
                    l1_entries: site.len(),
                    p50_ms: ms(s.latency.quantile(0.5)),
                    p95_ms: ms(s.latency.quantile(0.95)),
                    p99_ms: ms(s.latency.quantile(0.99)),
                    mean_ms: ms(s.mean()),
                    compute_p99_ms: ms(s.compute.quantile(0.99)),
                }
            })
            .collect();
        let s = sources.pools.stats();
        let (tasks, cpu_workers) = (s.tasks.clone(), s.cpu_workers.clone());
        let pools = vec![
            PoolReport::new("cpu", &s.cpu),
            PoolReport::new("io", &s.io),
            PoolReport::new("memory", &s.memory),
        ];
        Self {
            at_unix_ms: crate::time::unix_ms(),
            functions,
            tiers: Some(sources.tiers.status()),
            pools,
            tasks,
            cpu_workers,
            system,
            alerts_firing,
            trends: None,
        }
    }
}

/// How the process is doing, as `/health` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Calls are answered, but something is off (a tier is down, memory is tight).
    Degraded,
    /// Calls are failing or refused.
    Unhealthy,
}

/// `/health`: a status and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The worst of the reasons' statuses.
    pub status: HealthStatus,
    /// Each problem found, with its own status.
    pub reasons: Vec<(HealthStatus, String)>,
}

impl Health {
    /// Checks tiers, pools and alerts now.
    pub fn check(sources: &Sources, alerts: &[Alert]) -> Self {
        use HealthStatus::*;
        let mut reasons = Vec::new();
        {
            let tiers = &sources.tiers;
            let s = tiers.status();
            if s.l2_circuit_open {
                reasons.push((
                    Degraded,
                    "L2 (Redis) circuit open: calls skip Redis until it answers again".into(),
                ));
            } else if s.l2_enabled && !s.l2_connected {
                reasons.push((Degraded, "L2 (Redis) has not connected yet".into()));
            }
            if !s.l2_missing_rights.is_empty() {
                reasons.push((
                    Degraded,
                    format!(
                        "the Redis user lacks rights the cache needs: {}",
                        s.l2_missing_rights.join("; ")
                    ),
                ));
            }
            if s.backplane_enabled && !s.backplane_connected && s.l2_connected {
                reasons.push((
                    Degraded,
                    "the backplane is not reading Redis: other instances' invalidations do not reach this one yet".into(),
                ));
            }
            if tiers.config().l3.is_some() && !s.l3_enabled {
                reasons.push((
                    Degraded,
                    "L3 (disk) is off after an error opening or writing it".into(),
                ));
            }
        }
        {
            let pools = &sources.pools;
            let s = pools.stats();
            if pools.cpu().gate().is_closed() {
                reasons.push((
                    Unhealthy,
                    "pools are shut down: new tasks are rejected".into(),
                ));
            }
            if s.memory_held {
                reasons.push((
                    Degraded,
                    format!(
                        "system memory pressure {:.0}%: memory-kind calls are held",
                        s.memory_pressure * 100.0
                    ),
                ));
            }
        }
        for a in alerts.iter().filter(|a| a.state == AlertState::Firing) {
            let status = match a.severity {
                Severity::Critical => Unhealthy,
                Severity::Error => Degraded,
                _ => continue,
            };
            reasons.push((status, format!("alert {} firing: {}", a.rule, a.message)));
        }
        Self {
            status: reasons.iter().map(|(s, _)| *s).max().unwrap_or(Healthy),
            reasons,
        }
    }
}
