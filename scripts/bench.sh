#!/usr/bin/env bash
# The comparison command: every figure next to its baseline, all measured in this run on this
# machine (L1 hits vs HashMap, quick_cache, moka and `cached` on one and two threads; L2 and L3
# hits vs raw redis GET and raw sled get; the miss path; single-flight; io p99 under cpu load,
# routed vs naive; invalidation propagation between instances; predictive prefetch's hit ratio
# with and without a model; task submission and adaptive concurrency against fixed limits;
# scaling from 1 to 16 threads (the L1 hits and scaling again on the `clock` engine); memory
# per entry; coalescing 1,000 waiters against moka's
# get_with; hit ratio per L1 engine against a plain LRU; instructions per L1 and per L3 hit
# (callgrind);
# compile time of 100 annotated functions against `cached`; the demo workload).
# Full criterion output goes to target/bench-*.log; the summaries are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-command.sh redis-server redis-server
mkdir -p target

echo "==> L1 hits against peers (cargo bench --bench compare)"
cargo bench --bench compare > target/bench-compare.log 2>&1 || { tail -30 target/bench-compare.log; exit 1; }
sed -n '/^summary/,$p' target/bench-compare.log

echo
echo "==> L1 hits against peers, the attribute on the clock engine (OPTIMIZE_L1_ENGINE=clock)"
OPTIMIZE_L1_ENGINE=clock cargo bench --bench compare > target/bench-compare-clock.log 2>&1 || { tail -30 target/bench-compare-clock.log; exit 1; }
sed -n '/^summary/,$p' target/bench-compare-clock.log

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
echo "==> L1 hit scaling, 1 to 16 threads (cargo bench --bench scaling)"
cargo bench --bench scaling > target/bench-scaling.log 2>&1 || { tail -30 target/bench-scaling.log; exit 1; }
sed -n '/^summary/,$p' target/bench-scaling.log

echo
echo "==> L1 hit scaling, the attribute on the clock engine (OPTIMIZE_L1_ENGINE=clock)"
OPTIMIZE_L1_ENGINE=clock cargo bench --bench scaling > target/bench-scaling-clock.log 2>&1 || { tail -30 target/bench-scaling-clock.log; exit 1; }
sed -n '/^summary/,$p' target/bench-scaling-clock.log

echo
echo "==> memory per L1 entry (cargo bench --bench memory)"
cargo bench --bench memory > target/bench-memory.log 2>&1 || { tail -30 target/bench-memory.log; exit 1; }
sed -n '/^summary/,$p' target/bench-memory.log
echo "  the attribute on the clock engine:"
OPTIMIZE_L1_ENGINE=clock cargo bench --bench memory > target/bench-memory-clock.log 2>&1 || { tail -30 target/bench-memory-clock.log; exit 1; }
sed -n '/^  attribute/p' target/bench-memory-clock.log

echo
echo "==> coalescing 1,000 waiters (cargo bench --bench coalesce)"
cargo bench --bench coalesce > target/bench-coalesce.log 2>&1 || { tail -30 target/bench-coalesce.log; exit 1; }
sed -n '/^summary/,$p' target/bench-coalesce.log

echo
echo "==> hit ratio by L1 engine against a plain LRU (cargo bench --bench engines)"
cargo bench --bench engines > target/bench-engines.log 2>&1 || { tail -30 target/bench-engines.log; exit 1; }
sed -n '/^summary/,$p' target/bench-engines.log

echo
echo "==> instructions per L1 hit (callgrind on benches/hit_profile.rs, counted inside its loop)"
bash scripts/ensure-command.sh valgrind valgrind
CARGO_PROFILE_BENCH_DEBUG=line-tables-only cargo bench --bench hit_profile --bench l3_profile --no-run > target/bench-hit-profile.log 2>&1
# Instructions counted inside the named loop function only: start-up and the runtime's
# background threads vary from run to run.
inside() { # binary loop-function contender hits -> instructions
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect="$2" \
    --callgrind-out-file=/dev/null "$1" "$3" "$4" 2>&1 >/dev/null \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
profile_bin=$(ls -t target/release/deps/hit_profile-* | grep -v '\.d$' | head -1)
l1() { inside "$profile_bin" hit_profile::hits "$1" 100000; }
echo "summary (instructions per hit, loop subtracted; ratio to cached)"
loop=$(l1 none)
declare -A per_hit
for c in quick_cache cached attribute; do
  per_hit[$c]=$(( ($(l1 "$c") - loop) / 100000 ))
done
per_hit[attribute_clock]=$(( ($(OPTIMIZE_L1_ENGINE=clock l1 attribute) - loop) / 100000 ))
for c in quick_cache cached attribute attribute_clock; do
  awk -v c="$c" -v n="${per_hit[$c]}" -v b="${per_hit[cached]}" 'BEGIN { printf "  %-16s %5d instructions  %5.2fx\n", c, n, n / b }'
done

echo
echo "==> instructions per L3 hit (callgrind on benches/l3_profile.rs, counted inside its loop)"
l3_bin=$(ls -t target/release/deps/l3_profile-* | grep -v '\.d$' | head -1)
l3() { inside "$l3_bin" l3_profile::hits "$1" 20000; }
l3_loop=$(l3 none)
l3_raw=$(( ($(l3 raw_sled) - l3_loop) / 20000 ))
l3_ours=$(( ($(l3 attribute) - l3_loop) / 20000 ))
echo "summary (instructions per L3 hit, loop subtracted; ratio to raw sled get + bincode decode; target <= 1.50x)"
awk -v a="$l3_ours" -v r="$l3_raw" 'BEGIN { printf "  raw sled get + decode %5d instructions\n  attribute             %5d instructions  %5.2fx\n", r, a, a / r }'

echo
echo "==> compile time of 100 annotated functions (scripts/compile-time.sh)"
bash scripts/compile-time.sh

echo
echo "==> the demo workload (cargo run --release --example demo)"
cargo run --release --example demo 2>/dev/null | grep -E "^(optimize demo|tiers|function|plain|optimized|wall time|fetch_profile)"
