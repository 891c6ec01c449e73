#!/usr/bin/env bash
# Beyond one machine, on one machine. First half: a sharded engine run, RoT rows/s with 1, 2
# and 4 shard processes running at once on one repository (`regrpo engine run REPO --shards N --shard i`), on the same toolworld. Each
# process plans, executes and commits its own shard; Delta's commit protocol orders their
# commits. On a machine with few cores the processes share them, so this measures the
# overhead of sharding as much as its speed-up: publish the figure with the machine.
#
# Second half: a named query (failures_by_error_type, and a scan-heavy statement) in one process
# vs on a local Ballista cluster (`regrpo cluster`) with 1 and then 2 executors, median of 5 runs
# each, on the 1-shard repository. Every process of the cluster shares the same cores here.
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

# --- SQL in one process vs on a local Ballista cluster.
repo="$work/shards-1"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median_ms() { # runs "$@" 5 times (after one warm-up), prints the median wall time in ms
  "$@" > /dev/null
  for _ in 1 2 3 4 5; do
    s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
  done | sort -n | sed -n 3p
}
scan="SELECT error_family(error_type) AS family, count(*) AS n, sum(token_count(evidence)) AS tokens FROM rot WHERE icontains(failed_observation, 'not') GROUP BY 1 ORDER BY 1"
sched="127.0.0.1:$(port)"
"$bin" --quiet cluster scheduler --bind "$sched" 2> "$work/scheduler.log" &
cluster_pids=($!)
trap 'kill "${cluster_pids[@]}" 2>/dev/null || true' EXIT
start_executor() {
  local p; p=$(port)
  "$bin" --quiet cluster executor --scheduler "$sched" --bind "127.0.0.1:$p" --grpc-port "$(port)" 2> "$work/executor-$p.log" &
  cluster_pids+=($!)
}
wait_cluster() {
  for _ in $(seq 1 120); do
    if "$bin" --quiet sql "$repo" "SELECT count(*) FROM rot" --cluster "df://$sched" > /dev/null 2>&1; then return; fi
    sleep 0.5
  done
  echo "the cluster did not answer" >&2; exit 1
}
rot_rows=$("$bin" sql "$repo" "SELECT count(*) FROM rot" --format csv | tail -1)
echo
echo "SQL on $rot_rows RoT rows: one process vs a local Ballista cluster (median of 5, ms, whole command)"
echo "| statement | one process | 1 executor | 2 executors | 2 executors ÷ one process (time) |"
echo "| --- | ---: | ---: | ---: | ---: |"
declare -A solo one two
solo[named]=$(median_ms "$bin" --quiet query "$repo" failures_by_error_type --format csv)
solo[scan]=$(median_ms "$bin" --quiet sql "$repo" "$scan" --format csv)
start_executor; wait_cluster
one[named]=$(median_ms "$bin" --quiet query "$repo" failures_by_error_type --format csv --cluster "df://$sched")
one[scan]=$(median_ms "$bin" --quiet sql "$repo" "$scan" --format csv --cluster "df://$sched")
start_executor; sleep 6   # the second executor registers (heartbeats every 5 s)
two[named]=$(median_ms "$bin" --quiet query "$repo" failures_by_error_type --format csv --cluster "df://$sched")
two[scan]=$(median_ms "$bin" --quiet sql "$repo" "$scan" --format csv --cluster "df://$sched")
for k in named scan; do
  name=$([ "$k" = named ] && echo "query failures_by_error_type" || echo "scan + icontains + UDFs")
  ratio=$(echo "${two[$k]} ${solo[$k]}" | awk '{printf "%.2f", $1/$2}')
  echo "| $name | ${solo[$k]} | ${one[$k]} | ${two[$k]} | ${ratio}× |"
  if [ -n "${BENCH_SUMMARY:-}" ]; then
    echo "{\"bench\": \"cluster_sql\", \"statement\": \"$k\", \"rot_rows\": $rot_rows, \"local_ms\": ${solo[$k]}, \"one_executor_ms\": ${one[$k]}, \"two_executors_ms\": ${two[$k]}}" >> "$BENCH_SUMMARY"
  fi
done
