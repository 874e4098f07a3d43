//! Reads every source of metrics into a [`Snapshot`]: managed functions, shared tiers, pools,
//! the system sampler, user metrics and alert states. Names and labels are those of docs/metrics.md;
//! docs/metrics.md has a row for each.

use std::borrow::Cow;

use super::snapshot::{labels, HistogramValue, MetricType, SnapshotBuilder};
use super::system::SystemStats;
use crate::cache::backplane::BackplaneStats;
use crate::cache::tiered::Tiers;
use crate::cache::{Tier, OPS};
use crate::codec::Reject;
use crate::pool::{GateStats, Pools, Priority};
use crate::registry::Registry;
use crate::stats::Outcome;

use MetricType::{Counter, Gauge, Histogram};

pub(crate) fn functions(b: &mut SnapshotBuilder, registry: &Registry) {
    // Families first, so they exist (empty) before any function is called.
    b.family(
        "optimize_calls_total",
        "Calls of managed functions, by how they ended.",
        Counter,
    );
    for site in registry.sites() {
        let stats = site.stats();
        let path = site.path();
        let kind = site.kind().as_str();
        let calls = b.family("optimize_calls_total", "", Counter);
        for outcome in Outcome::ALL {
            calls.number(
                labels([("fn", path), ("kind", kind), ("outcome", outcome.as_str())]),
                stats.count(outcome) as f64,
            );
        }
        b.family(
            "optimize_call_duration_seconds",
            "Whole-call latency (L1 hits are timed one in 16 and weighted).",
            Histogram,
        )
        .histogram(
            labels([("fn", path)]),
            HistogramValue::durations(stats.latency.clone(), stats.total_time),
        );
        b.family(
            "optimize_compute_duration_seconds",
            "How long function bodies ran, over the calls that ran them.",
            Histogram,
        )
        .histogram(
            labels([("fn", path)]),
            HistogramValue::durations(stats.compute.clone(), stats.compute_time),
        );
        b.family(
            "optimize_coalesced_total",
            "Calls that shared a concurrent call's result instead of running the body.",
            Counter,
        )
        .number(
            labels([("fn", path)]),
            stats.count(Outcome::Coalesced) as f64,
        );
        b.family(
            "optimize_cache_entries",
            "Entries in a function's cache tier (L1: this process).",
            Gauge,
        )
        .number(labels([("fn", path), ("tier", "l1")]), site.len() as f64);
        b.family(
            "optimize_cache_evictions_total",
            "Entries evicted because the tier was full.",
            Counter,
        )
        .number(
            labels([("fn", path), ("tier", "l1")]),
            stats.evictions as f64,
        );
        if let Some(limit) = site.concurrency() {
            b.family(
                "optimize_concurrency_limit",
                "A function's concurrency limit now (it moves when the limit is adaptive).",
                Gauge,
            )
            .number(labels([("fn", path)]), limit as f64);
        }
        b.family(
            "optimize_timeouts_total",
            "Attempts that ran out of their timeout.",
            Counter,
        )
        .number(labels([("fn", path)]), stats.timeouts as f64);
        b.family(
            "optimize_retries_total",
            "Retries started after an error or a timeout.",
            Counter,
        )
        .number(labels([("fn", path)]), stats.retries as f64);
        if let Some(p) = site.predictions() {
            let family = b.family(
                "optimize_predictions_total",
                "Predictive prefetches, by what became of them.",
                Counter,
            );
            for (result, n) in [
                ("predicted", p.predicted),
                ("used", p.used),
                ("late", p.late),
                ("wasted", p.wasted),
                ("skipped", p.skipped),
            ] {
                family.number(labels([("fn", path), ("result", result)]), n as f64);
            }
            b.family(
                "optimize_predictions_pending",
                "Predictive prefetches whose key nobody has asked for yet.",
                Gauge,
            )
            .number(labels([("fn", path)]), p.pending as f64);
        }
    }
}

pub(crate) fn tiers(b: &mut SnapshotBuilder, tiers: &Tiers) {
    let status = tiers.status();
    for (tier, on) in [(Tier::L2, status.l2_enabled), (Tier::L3, status.l3_enabled)] {
        if !on {
            continue;
        }
        let counters = tiers.counters(tier);
        let t = tier.as_str();
        for op in OPS {
            b.family(
                "optimize_tier_errors_total",
                "Failed shared-tier operations (each became a miss or a dropped write).",
                Counter,
            )
            .number(
                labels([("tier", t), ("op", op)]),
                counters.errors(op) as f64,
            );
            let (count, nanos) = counters.timing(op);
            if count > 0 {
                b.family(
                    "optimize_tier_duration_seconds",
                    "Duration of shared-tier operations.",
                    Histogram,
                )
                .histogram(
                    labels([("tier", t), ("op", op)]),
                    HistogramValue::durations(
                        counters.latency(op),
                        std::time::Duration::from_nanos(nanos),
                    ),
                );
            }
        }
        for reason in Reject::ALL {
            b.family(
                "optimize_cache_rejected_total",
                "Entries read from a shared tier and rejected (corrupt, foreign or too large).",
                Counter,
            )
            .number(
                labels([("tier", t), ("reason", reason.as_str())]),
                counters.rejected(reason) as f64,
            );
        }
    }
    if status.l2_enabled {
        b.family(
            "optimize_l2_circuit_open",
            "1 while the L2 circuit breaker is open (Redis is being skipped).",
            Gauge,
        )
        .number(Vec::new(), f64::from(u8::from(status.l2_circuit_open)));
        b.family(
            "optimize_l2_breaker_opened_total",
            "Times an L2 circuit breaker opened (Redis, or on a cluster the slots of a failed node, then skipped).",
            Counter,
        )
        .number(Vec::new(), status.l2_breaker_opened as f64);
        b.family(
            "optimize_l2_missing_rights",
            "Operations the Redis user may not run that the cache needs (0 when all are allowed).",
            Gauge,
        )
        .number(Vec::new(), status.l2_missing_rights.len() as f64);
        b.family(
            "optimize_l2_connected",
            "1 once the L2 connection has been established.",
            Gauge,
        )
        .number(Vec::new(), f64::from(u8::from(status.l2_connected)));
    }
    if let Some(bp) = tiers.backplane() {
        backplane(b, bp);
    }
    if tiers.leases_on() {
        leases(b, tiers);
    }
    b.family(
        "optimize_writeback_queue_depth",
        "Shared-tier writes waiting in the write-behind queue.",
        Gauge,
    )
    .number(Vec::new(), status.writeback_depth as f64);
    b.family(
        "optimize_writeback_dropped_total",
        "Shared-tier writes dropped because the write-behind queue was full.",
        Counter,
    )
    .number(Vec::new(), status.writeback_dropped as f64);
    b.family(
        "optimize_invalidations_pending",
        "Deletions Redis missed during an outage, waiting to be replayed.",
        Gauge,
    )
    .number(Vec::new(), status.invalidations_pending as f64);
    b.family(
        "optimize_invalidations_replayed_total",
        "Deletions replayed once Redis answered again.",
        Counter,
    )
    .number(Vec::new(), status.invalidations_replayed as f64);
    b.family(
        "optimize_invalidations_dropped_total",
        "Missed deletions given up because too many were waiting.",
        Counter,
    )
    .number(Vec::new(), status.invalidations_dropped as f64);
    b.family(
        "optimize_writes_unwritten",
        "L2 writes Redis did not take during an outage, waiting to be written once it answers.",
        Gauge,
    )
    .number(Vec::new(), status.writes_unwritten as f64);
    b.family(
        "optimize_writes_rewritten_total",
        "L2 writes made again (SET NX) once Redis answered after an outage.",
        Counter,
    )
    .number(Vec::new(), status.writes_rewritten as f64);
    b.family(
        "optimize_writes_unwritten_dropped_total",
        "L2 writes given up because too many were waiting.",
        Counter,
    )
    .number(Vec::new(), status.writes_unwritten_dropped as f64);
}

pub(crate) fn l1_budget(b: &mut SnapshotBuilder, budget: &crate::cache::budget::L1Budget) {
    b.family(
        "optimize_l1_budget_bytes",
        "The process-wide L1 byte budget (l1.max_size).",
        Gauge,
    )
    .number(Vec::new(), budget.limit() as f64);
    b.family(
        "optimize_l1_bytes",
        "Bytes of every function's L1 values, counted against the budget.",
        Gauge,
    )
    .number(Vec::new(), budget.used() as f64);
    b.family(
        "optimize_l1_budget_evicted_bytes_total",
        "Bytes evicted from L1 to stay within the budget.",
        Counter,
    )
    .number(Vec::new(), budget.evicted() as f64);
}

fn leases(b: &mut SnapshotBuilder, tiers: &Tiers) {
    use std::sync::atomic::Ordering::Relaxed;
    let l = tiers.lease_stats();
    let fenced = tiers
        .writeback_stats()
        .map_or(0, |w| w.leases_fenced.load(Relaxed));
    for (outcome, n) in [
        ("acquired", l.acquired.load(Relaxed)),
        ("waited", l.waited.load(Relaxed)),
        ("served", l.served.load(Relaxed)),
        ("taken_over", l.taken_over.load(Relaxed)),
        ("fenced", fenced),
    ] {
        b.family(
            "optimize_lease_total",
            "Leases on L2 misses (one computation per key across instances), by outcome.",
            Counter,
        )
        .number(labels([("outcome", outcome)]), n as f64);
    }
}

fn backplane(b: &mut SnapshotBuilder, bp: &BackplaneStats) {
    b.family(
        "optimize_backplane_connected",
        "1 while this instance reads the invalidations of the others (the backplane).",
        Gauge,
    )
    .number(Vec::new(), f64::from(u8::from(bp.connected())));
    b.family(
        "optimize_backplane_sent_total",
        "Invalidations this instance announced to the others.",
        Counter,
    )
    .number(Vec::new(), bp.sent() as f64);
    b.family(
        "optimize_backplane_received_total",
        "Invalidations of other instances applied here.",
        Counter,
    )
    .number(Vec::new(), bp.received() as f64);
    b.family(
        "optimize_backplane_gaps_total",
        "Times invalidations may have been missed, so L1 and this namespace's L3 were cleared.",
        Counter,
    )
    .number(Vec::new(), bp.gaps() as f64);
    let lag = bp.lag();
    let sum = lag.approx_sum();
    b.family(
        "optimize_backplane_lag_seconds",
        "From an invalidation's announcement (sender's clock) to its application here.",
        Histogram,
    )
    .histogram(Vec::new(), HistogramValue::durations(lag, sum));
}

fn gate(b: &mut SnapshotBuilder, pool: &'static str, g: &GateStats) {
    for p in Priority::ALL {
        b.family(
            "optimize_pool_queue_depth",
            "Calls and tasks waiting for admission to a pool.",
            Gauge,
        )
        .number(
            labels([("pool", pool), ("priority", p.as_str())]),
            g.queued[p.index()] as f64,
        );
    }
    b.family(
        "optimize_pool_active",
        "Calls and tasks admitted to a pool and running.",
        Gauge,
    )
    .number(labels([("pool", pool)]), g.active as f64);
    b.family(
        "optimize_pool_capacity",
        "What a pool admits at once (slots; bytes for the memory pool).",
        Gauge,
    )
    .number(labels([("pool", pool)]), g.capacity as f64);
    b.family(
        "optimize_pool_wait_seconds",
        "Time spent waiting for admission to a pool.",
        Histogram,
    )
    .histogram(
        labels([("pool", pool)]),
        HistogramValue::durations(g.wait.clone(), g.wait.approx_sum()),
    );
    let rejected = b.family(
        "optimize_pool_rejected_total",
        "Admissions refused: the pool was shut down, or its queue was full.",
        Counter,
    );
    rejected.number(
        labels([("pool", pool), ("reason", "shutdown")]),
        g.rejected as f64,
    );
    rejected.number(
        labels([("pool", pool), ("reason", "queue_full")]),
        g.refused_full as f64,
    );
    if let Some(bound) = g.queue_capacity {
        b.family(
            "optimize_pool_queue_capacity",
            "Calls and tasks that may wait for a pool's admission (all priorities).",
            Gauge,
        )
        .number(labels([("pool", pool)]), bound as f64);
    }
    b.family(
        "optimize_pool_completed_total",
        "Calls and tasks a pool admitted and that finished.",
        Counter,
    )
    .number(labels([("pool", pool)]), g.completed as f64);
}

pub(crate) fn pools(b: &mut SnapshotBuilder, pools: &Pools) {
    let s = pools.stats();
    gate(b, "cpu", &s.cpu);
    gate(b, "io", &s.io);
    gate(b, "memory", &s.memory);
    b.family(
        "optimize_memory_budget_bytes",
        "Bytes the memory pool may reserve at once.",
        Gauge,
    )
    .number(Vec::new(), s.memory.capacity as f64);
    b.family(
        "optimize_memory_reserved_bytes",
        "Bytes reserved by running memory-kind calls.",
        Gauge,
    )
    .number(Vec::new(), s.memory.in_use as f64);
    b.family(
        "optimize_memory_pressure_ratio",
        "System memory in use as the memory budget last sampled it (0..1).",
        Gauge,
    )
    .number(Vec::new(), s.memory_pressure);
    b.family(
        "optimize_tasks_running",
        "Tasks submitted with optimize::Task that have not finished.",
        Gauge,
    )
    .number(Vec::new(), s.tasks_running as f64);
    let t = &s.tasks;
    let ended = b.family("optimize_tasks_total", "Tasks that ended, by how.", Counter);
    for (status, n) in &t.ended {
        ended.number(labels([("status", *status)]), *n as f64);
    }
    let live = b.family(
        "optimize_tasks_live",
        "Tasks not ended: waiting for the tasks they depend on, queued, or running.",
        Gauge,
    );
    for (status, n) in [
        ("waiting", t.waiting),
        ("queued", t.queued),
        ("running", t.running),
    ] {
        live.number(labels([("status", status)]), n as f64);
    }
    b.family(
        "optimize_task_duration_seconds",
        "Execution time of tasks that ran, from admission to end.",
        Histogram,
    )
    .histogram(
        Vec::new(),
        HistogramValue::durations(t.execution.clone(), t.execution_total),
    );
    b.family(
        "optimize_tasks_throughput",
        "Tasks ended per second over the last 10 seconds.",
        Gauge,
    )
    .number(Vec::new(), t.throughput_per_s);
    for w in &s.cpu_workers {
        let worker = w.worker.to_string();
        b.family(
            "optimize_cpu_worker_runs_total",
            "Bodies and task attempts a CPU pool thread ran.",
            Counter,
        )
        .number(labels([("worker", worker.as_str())]), w.runs as f64);
        b.family(
            "optimize_cpu_worker_busy_seconds_total",
            "Time a CPU pool thread spent running them.",
            Counter,
        )
        .number(labels([("worker", worker.as_str())]), w.busy.as_secs_f64());
    }
}

pub(crate) fn system(b: &mut SnapshotBuilder, s: &SystemStats) {
    let gauges: [(&'static str, &'static str, Option<f64>); 7] = [
        (
            "optimize_system_cpu_usage_ratio",
            "CPU use of the whole system (0..1).",
            s.cpu_usage,
        ),
        (
            "optimize_system_memory_used_bytes",
            "System memory in use (total minus available).",
            s.memory_used,
        ),
        (
            "optimize_system_memory_total_bytes",
            "System memory.",
            s.memory_total,
        ),
        (
            "optimize_process_resident_memory_bytes",
            "Resident memory of this process.",
            s.process_resident,
        ),
        (
            "optimize_process_cpu_usage_ratio",
            "CPU use of this process over all cores (0..1).",
            s.process_cpu,
        ),
        (
            "optimize_network_received_bytes_total",
            "Bytes received on every network interface, as the system counts them.",
            s.network_received,
        ),
        (
            "optimize_network_transmitted_bytes_total",
            "Bytes sent on every network interface, as the system counts them.",
            s.network_transmitted,
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            let kind = if name.ends_with("_total") {
                Counter
            } else {
                Gauge
            };
            b.family(name, help, kind).number(Vec::new(), v);
        }
    }
    if let Some(load) = s.load_average {
        let f = b.family(
            "optimize_system_load_average",
            "System load average over 1, 5 and 15 minutes.",
            Gauge,
        );
        for (window, v) in [("1m", load[0]), ("5m", load[1]), ("15m", load[2])] {
            f.number(labels([("window", window)]), v);
        }
    }
    for disk in &s.disks {
        let path = disk.path.to_string_lossy();
        b.family(
            "optimize_disk_available_bytes",
            "Free space of the volume holding the L3 directory.",
            Gauge,
        )
        .number(labels([("path", &path)]), disk.available as f64);
        b.family(
            "optimize_disk_total_bytes",
            "Size of the volume holding the L3 directory.",
            Gauge,
        )
        .number(labels([("path", &path)]), disk.total as f64);
    }
}

pub(crate) fn alerts(b: &mut SnapshotBuilder, firing: &[(String, &'static str, usize)]) {
    let f = b.family(
        "optimize_alerts_firing",
        "Alert instances firing, per rule.",
        Gauge,
    );
    for (alert, severity, n) in firing {
        f.number(
            vec![
                (Cow::Borrowed("alert"), alert.clone()),
                (Cow::Borrowed("severity"), (*severity).to_owned()),
            ],
            *n as f64,
        );
    }
}
