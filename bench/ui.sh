#!/usr/bin/env bash
# The web view's browse pages over a large RoT table: p50 / p95 / max per page over real HTTP
# on loopback (ui/examples/ui_browse.rs). The repository is written once and reused.
#
#   bash bench/ui.sh [ROWS] [RUNS]      (default 2000000 rows, 20 runs per page)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-2000000}
runs=${2:-20}
work=${BENCH_DIR:-/tmp/regrpo-bench-ui-$rows}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet -p regrpo-ui --example ui_browse
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$target/release/examples/ui_browse" "$rows" "$work" "$runs" | tee "$work.txt"
if [ -n "${BENCH_SUMMARY:-}" ]; then
  worst=$(awk '/^worst p95/ {print $3}' "$work.txt")
  echo "{\"bench\": \"ui_browse\", \"rows\": $rows, \"worst_p95_ms\": $worst}" >> "$BENCH_SUMMARY"
fi
