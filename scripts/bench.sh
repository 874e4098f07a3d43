#!/usr/bin/env bash
# The comparison command: every figure next to its baseline, all measured in this run on this
# machine (L1 hits vs HashMap, quick_cache, moka and `cached` on one and two threads; L2 and L3
# hits vs raw redis GET and raw sled get; the miss path; single-flight; io p99 under cpu load,
# routed vs naive; invalidation propagation between instances; predictive prefetch's hit ratio
# with and without a model; task submission and adaptive concurrency against fixed limits;
# the demo workload).
# Full criterion output goes to target/bench-*.log; the summaries are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-command.sh redis-server redis-server
mkdir -p target

echo "==> L1 hits against peers (cargo bench --bench compare)"
cargo bench --bench compare > target/bench-compare.log 2>&1 || { tail -30 target/bench-compare.log; exit 1; }
sed -n '/^summary/,$p' target/bench-compare.log

echo
echo "==> shared tiers and the miss path (cargo bench --bench tiers)"
cargo bench --bench tiers > target/bench-tiers.log 2>&1 || { tail -30 target/bench-tiers.log; exit 1; }
sed -n '/^summary/,$p' target/bench-tiers.log

echo
echo "==> invalidation propagation between instances (cargo bench --bench propagation)"
cargo bench --bench propagation > target/bench-propagation.log 2>&1 || { tail -30 target/bench-propagation.log; exit 1; }
sed -n '/^summary/,$p' target/bench-propagation.log

echo
echo "==> io p99 while cpu calls saturate the machine (cargo bench --bench pools)"
cargo bench --bench pools > target/bench-pools.log 2>&1 || { tail -30 target/bench-pools.log; exit 1; }
sed -n '/^io p99/p;/^summary/,$p' target/bench-pools.log

echo
echo "==> predictive prefetch: hit ratio with and without a model (cargo bench --bench predict)"
cargo bench --bench predict > target/bench-predict.log 2>&1 || { tail -30 target/bench-predict.log; exit 1; }
sed -n '/^summary/,$p' target/bench-predict.log

echo
echo "==> the task processor and adaptive concurrency (cargo bench --bench tasks)"
cargo bench --bench tasks > target/bench-tasks.log 2>&1 || { tail -30 target/bench-tasks.log; exit 1; }
sed -n '/^summary/,$p' target/bench-tasks.log

echo
echo "==> the demo workload (cargo run --release --example demo)"
cargo run --release --example demo 2>/dev/null | grep -E "^(optimize demo|tiers|function|plain|optimized|wall time|fetch_profile)"
