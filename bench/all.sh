#!/usr/bin/env bash
# Every data-plane benchmark in one run, then one table of the figures against the goals:
# queries vs DuckDB (in process, same Parquet files), Flight SQL under 16 clients, the engine
# end to end and the WASM call, ingest of a large chat corpus, and SFT's memory against the size
# of the table it streams. The README's data-plane table is this output.
#
#   PYTHON=<python with duckdb> bash bench/all.sh [--quick]
#
# --quick runs smaller sizes (1M/200k query rows, 500 engine tasks, 200 MB ingest, 100k/400k
# SFT rows) to check the pipeline, not to report.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_SUMMARY=${BENCH_SUMMARY:-/tmp/regrpo-bench-summary.jsonl}
: > "$BENCH_SUMMARY"
if [ "${1:-}" = "--quick" ]; then
  q=(1000000 200000); e=500; ingest=200; s=(100000 400000)
else
  q=(10000000 2000000); e=2000; ingest=1200; s=(500000 2000000)
fi
bash bench/queries.sh "${q[@]}"
bash bench/engine.sh "$e"
bash bench/ingest.sh "$ingest"
bash bench/sft_stream.sh "${s[@]}"
py=${PYTHON:-python3}
"$py" - "$BENCH_SUMMARY" <<'PY'
import json, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["bench"], []).append(r)
q, eng, micro = by["queries"][0], by["engine"][0], by["engine_micro"][0]
ing, sft = by["ingest"][0], by["sft_stream"]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
mem = subprocess.run(["sh", "-c", "awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo"], capture_output=True, text=True).stdout
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"\nmachine: {cores} cores, {mem}, {cpu}")
flight = q["flight_16_p99_s"] / q["flight_1_p99_s"]
sft_small, sft_large = sft[0], sft[-1]
table = [
    (f"`GROUP BY error_type`, {q['near_misses']:,} near_misses, regrpo / DuckDB", f"{q['by_type_ratio']:.2f}× ({q['by_type_s']*1e3:.0f} vs {q['by_type_duckdb_s']*1e3:.0f} ms)", "≤ 1.0×", "≤ 1.5×"),
    (f"`GROUP BY tool, error_type`, {q['rot']:,} rot", f"{q['tool_x_type_ratio']:.2f}× ({q['tool_x_type_s']*1e3:.0f} vs {q['tool_x_type_duckdb_s']*1e3:.0f} ms)", "≤ 1.0×", "≤ 1.2×"),
    ("rare ErrorType filter (0.5% of rows)", f"{q['rare_filter_ratio']:.2f}×", "≤ 0.5×", "≤ 0.79×"),
    ("Flight SQL, p99 of 16 clients / 1 client", f"{flight:.1f}× ({q['flight_16_p99_s']:.2f} s vs {q['flight_1_p99_s']:.2f} s)", "≤ 4×", "≤ 8×"),
    (f"engine, RoT rows/s ({eng['tasks']:,} toolworld tasks)", f"{eng['rows_per_s']:,}", "≥ 10,000", "≥ 3,000"),
    ("WASM tool call p50 / p99", f"{micro['wasm_p50_us']:.0f} µs / {micro['wasm_p99_us']:.0f} µs", "≤ 20 µs", "≤ 30 µs"),
    (f"ingest of {ing['mb']:,} MB chat JSONL", f"{ing['mb_per_s']:.0f} MB/s, peak RSS {ing['peak_rss_mib']} MiB", "≥ 200 MB/s, flat memory", "run, figures published"),
    (f"SFT peak RSS, {sft_small['rot_rows']:,} vs {sft_large['rot_rows']:,} rot rows", f"{sft_small['peak_rss_mib']} vs {sft_large['peak_rss_mib']} MiB", "streamed, flat memory", "streamed"),
]
print("\n| what | now | goal | floor |\n| --- | --- | --- | --- |")
for r in table:
    print("| " + " | ".join(r) + " |")
PY
