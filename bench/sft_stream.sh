#!/usr/bin/env bash
# SFT memory against the size of the table it streams from: the same short run (tiny model,
# RoT rows only, one tokenizer) on repositories of ROWS_SMALL and ROWS_LARGE synthetic RoT
# rows (examples/gen_query_bench.rs, the engine's conversation layout), peak RSS of each
# (GNU time). Streaming holds a block of token windows, never the table: the two peaks should
# be about the same.
#
#   bash bench/sft_stream.sh [ROWS_SMALL] [ROWS_LARGE]     (defaults 500000 and 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
small=${1:-500000}
large=${2:-2000000}
work=${BENCH_DIR:-/tmp/regrpo-bench-sft-stream}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin regrpo --example gen_query_bench
bin=$target/release/regrpo
mkdir -p "$work"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for rows in "$small" "$large"; do
  repo="$work/repo-$rows"
  if [ ! -f "$work/.done-$rows" ]; then
    rm -rf "$repo"
    "$target/release/examples/gen_query_bench" "$repo" 0 "$rows" 2>/dev/null
    "$bin" --quiet snapshot create "$repo" s --split 0.98,0.01,0.01
    touch "$work/.done-$rows"
  fi
done
tk="$work/tokenizer.json"
[ -f "$tk" ] || "$bin" --quiet train tokenizer "$work/repo-$small" -s s --vocab 1024 "$tk"
for rows in "$small" "$large"; do
  rm -rf "$work/run-$rows"
  /usr/bin/time -f "%e %M" -o "$work/time-$rows.txt" "$bin" --quiet train sft "$work/repo-$rows" -s s \
    --model tiny --tokenizer "$tk" --out "$work/run-$rows" --steps 40 --batch-size 8 --rot-fraction 1.0 \
    --eval-every 0 --checkpoint-every 0 > /dev/null
  read -r secs kb < "$work/time-$rows.txt"
  echo "$rows RoT rows: 40 SFT steps in ${secs}s, peak RSS $((kb / 1024)) MiB"
  if [ -n "${BENCH_SUMMARY:-}" ]; then
    echo "{\"bench\": \"sft_stream\", \"rot_rows\": $rows, \"seconds\": $secs, \"peak_rss_mib\": $((kb / 1024))}" >> "$BENCH_SUMMARY"
  fi
done
