#!/usr/bin/env bash
# Engine throughput: grounded RoT rows/s end to end on toolworld (release binary), then the
# calculator and WASM micro-benchmarks (examples/engine_micro.rs).
#
#   bash bench/engine.sh [TASKS]      (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
work=${BENCH_DIR:-/tmp/regrpo-bench-engine}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin regrpo --example engine_micro
bin=$target/release/regrpo
rm -rf "$work"; mkdir -p "$work"
"$bin" --quiet init "$work/repo"
s=$(date +%s.%N); "$bin" --quiet toolworld generate "$work/repo" --tasks "$tasks" --seed 1; e=$(date +%s.%N)
echo "toolworld: $tasks tasks in $(echo "$s $e" | awk '{printf "%.1f", $2-$1}')s"
s=$(date +%s.%N); "$bin" engine run "$work/repo" | tail -25; e=$(date +%s.%N)
rows=$("$bin" sql "$work/repo" "SELECT count(*) FROM rot" --format csv | tail -1)
secs=$(echo "$s $e" | awk '{print $2-$1}')
rate=$(echo "$rows $secs" | awk '{printf "%.0f", $1/$2}')
echo "engine: $rows RoT rows in ${secs}s = $rate rows/s (whole process: log replay, execution, judge, reflect, verify, commits)"
"$target/release/examples/engine_micro" 200000 | tee "$work/micro.txt"
if [ -n "${BENCH_SUMMARY:-}" ]; then
  echo "{\"bench\": \"engine\", \"tasks\": $tasks, \"rot_rows\": $rows, \"seconds\": $secs, \"rows_per_s\": $rate}" >> "$BENCH_SUMMARY"
  grep '^{' "$work/micro.txt" >> "$BENCH_SUMMARY"
fi
