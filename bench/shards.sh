#!/usr/bin/env bash
# A sharded engine run: RoT rows/s with 1, 2 and 4 shard processes running at once on one
# repository (`regrpo engine run REPO --shards N --shard i`), on the same toolworld. Each
# process plans, executes and commits its own shard; Delta's commit protocol orders their
# commits. On a machine with few cores the processes share them, so this measures the
# overhead of sharding as much as its speed-up: publish the figure with the machine.
#
#   bash bench/shards.sh [TASKS]      (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
work=${BENCH_DIR:-/tmp/regrpo-bench-shards}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin regrpo
bin=$target/release/regrpo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
rm -rf "$work"; mkdir -p "$work"
"$bin" --quiet init "$work/base"
"$bin" --quiet toolworld generate "$work/base" --tasks "$tasks" --seed 1
echo "engine over $tasks toolworld tasks, shard processes at once on one local repository"
echo "| shard processes | RoT rows | seconds | RoT rows/s | vs 1 process |"
echo "| ---: | ---: | ---: | ---: | ---: |"
base_rate=""
for n in 1 2 4; do
  repo="$work/shards-$n"
  cp -r "$work/base" "$repo"
  s=$(date +%s.%N)
  pids=()
  for ((i = 0; i < n; i++)); do
    "$bin" --quiet engine run "$repo" --shards "$n" --shard "$i" > "$work/shard-$n-$i.txt" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  e=$(date +%s.%N)
  rows=$("$bin" sql "$repo" "SELECT count(*) FROM rot" --format csv | tail -1)
  secs=$(echo "$s $e" | awk '{printf "%.1f", $2-$1}')
  rate=$(echo "$rows $secs" | awk '{printf "%.0f", $1/$2}')
  base_rate=${base_rate:-$rate}
  ratio=$(echo "$rate $base_rate" | awk '{printf "%.2f", $1/$2}')
  echo "| $n | $rows | $secs | $rate | ${ratio}× |"
  if [ -n "${BENCH_SUMMARY:-}" ]; then
    echo "{\"bench\": \"engine_shards\", \"tasks\": $tasks, \"shards\": $n, \"rot_rows\": $rows, \"seconds\": $secs, \"rows_per_s\": $rate}" >> "$BENCH_SUMMARY"
  fi
done
