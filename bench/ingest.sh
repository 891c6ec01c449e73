#!/usr/bin/env bash
# Ingest throughput: a generated OpenAI-chat JSONL corpus (default 1.2 GB) into a fresh
# repository with the release binary; prints MB/s, records/s and peak memory (GNU time).
#
# Run with: bash bench/ingest.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-1200}
work=${BENCH_DIR:-/tmp/regrpo-bench-ingest}
mkdir -p "$work"
corpus="$work/chat-${size_mb}mb.jsonl"
if [ ! -f "$corpus" ]; then
  python3 bench/gen_chat_corpus.py "$corpus" "$size_mb"
fi
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/regrpo
rm -rf "$work/repo"
"$bin" init "$work/repo" >/dev/null
bytes=$(stat -c %s "$corpus")
/usr/bin/time -v "$bin" --quiet ingest "$work/repo" -f openai "$corpus" 2> "$work/time.txt" | tee "$work/ingest.txt"
peak_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
echo "corpus: $((bytes / 1000000)) MB; wall: $wall; peak RSS: $((peak_kb / 1024)) MiB"
secs=$(echo "$wall" | awk -F: '{s=0; for (i=1;i<=NF;i++) s=s*60+$i; print s}')
if [ -n "${BENCH_SUMMARY:-}" ]; then
  echo "{\"bench\": \"ingest\", \"mb\": $((bytes / 1000000)), \"seconds\": $secs, \"mb_per_s\": $(echo "$bytes $secs" | awk '{printf "%.1f", $1/1e6/$2}'), \"peak_rss_mib\": $((peak_kb / 1024))}" >> "$BENCH_SUMMARY"
fi
"$bin" sql "$work/repo" "SELECT count(*) AS rows FROM trajectories"
du -sh "$work/repo/tables/trajectories"
