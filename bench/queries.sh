#!/usr/bin/env bash
# Query benchmark: regrpo (DataFusion over our Delta layout) vs DuckDB on the same Parquet files.
#
#   bash bench/queries.sh [NEAR_MISSES] [ROT]      (defaults 10000000 and 2000000)
#
# Generates a synthetic repository with examples/gen_query_bench.rs (through regrpo's own
# writer: files clustered by error_type/tool, page statistics, dictionaries), then times three
# queries on the same Parquet files, regrpo against DuckDB's Python package, three ways:
#   1. whole process: `regrpo sql` (process start + Delta log replay + plan + scan) against
#      `python -c "import duckdb; …"`, best of 3;
#   2. in process: examples/query_latency.rs (session opened once, then plan + scan + collect)
#      against bench/duckdb_queries.py (after import and connect), best of 5 — the fair ratio;
#   3. the Flight SQL server (same example): one client, then 16 concurrent clients, latency
#      percentiles and queries/s.
# For the selective filter it also reports the bytes DataFusion's Parquet scan read against the
# table's size. Needs `pip install duckdb` (PYTHON points at that interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
nm=${1:-10000000}
rot=${2:-2000000}
work=${BENCH_DIR:-/tmp/regrpo-bench-queries}
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin regrpo --example gen_query_bench --example query_latency
bin=$target/release/regrpo
if [ ! -f "$work/.done-$nm-$rot" ]; then
  rm -rf "$work"; mkdir -p "$work"
  /usr/bin/time -f "generated in %es, peak %MKB" "$target/release/examples/gen_query_bench" "$work/repo" "$nm" "$rot"
  touch "$work/.done-$nm-$rot"
fi
nm_bytes=$(du -sb "$work/repo/tables/near_misses" | cut -f1)
echo "near_misses: $nm rows, $((nm_bytes / 1000000)) MB; rot: $rot rows, $(( $(du -sb "$work/repo/tables/rot" | cut -f1) / 1000000 )) MB"

declare -A Q
Q[by_type]="SELECT error_type, count(*) AS n FROM near_misses GROUP BY error_type ORDER BY n DESC"
Q[tool_x_type]="SELECT tool, error_type, count(*) AS n FROM rot GROUP BY tool, error_type ORDER BY tool, n DESC"
Q[rare_filter]="SELECT near_miss_id, tool, execution.text FROM near_misses WHERE error_type = 'NonCommit'"

best() { # best wall time of 3 runs of a command, seconds
  local b=999999
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
    b=$(echo "$b $s $e" | awk '{t=$3-$2; print (t<$1)?t:$1}')
  done
  echo "$b"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== whole process (best of 3) =="
printf "%-12s %10s %10s %8s\n" query "regrpo s" "duckdb s" ratio
for name in by_type tool_x_type rare_filter; do
  sql=${Q[$name]}
  r=$(best "$bin" --quiet sql "$work/repo" "$sql" --format csv)
  duck_sql=$(echo "$sql" | sed "s#FROM near_misses#FROM read_parquet('$work/repo/tables/near_misses/*.parquet')#; s#FROM rot#FROM read_parquet('$work/repo/tables/rot/*.parquet')#; s#execution.text#execution.text AS text#")
  d=$(best "$py" -c "import duckdb,sys; duckdb.sql(sys.argv[1]).fetchall()" "$duck_sql")
  printf "%-12s %10.3f %10.3f %8.2f\n" "$name" "$r" "$d" "$(echo "$r $d" | awk '{print $1/$2}')"
done

echo "== in process (best of 5; regrpo: session open once, then plan + scan + collect) =="
"$target/release/examples/query_latency" "$work/repo" 5 16 6 > "$work/latency.jsonl"
"$py" bench/duckdb_queries.py "$work/repo" 5 > "$work/duckdb.jsonl"
"$py" - "$work/latency.jsonl" "$work/duckdb.jsonl" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
duck = {d["query"]: d for d in map(json.loads, open(sys.argv[2]))}
print(f"session open (Delta log replay of every table): {ours[0]['seconds']:.3f}s; {next(iter(duck.values()))['system']}")
raw = {o["query"]: o for o in ours if o["phase"] == "raw_parquet"}
print(f"{'query':12} {'regrpo s':>10} {'duckdb s':>10} {'ratio':>8} {'rows':>8} {'plain DF s':>11}")
for o in (o for o in ours if o["phase"] == "in_process"):
    d = duck[o["query"]]
    assert o["rows"] == d["rows"], f"{o['query']}: {o['rows']} rows vs DuckDB's {d['rows']}"
    r = raw.get(o["query"], {}).get("best_s", float("nan"))
    print(f"{o['query']:12} {o['best_s']:10.3f} {d['best_s']:10.3f} {o['best_s'] / d['best_s']:8.2f} {o['rows']:8} {r:11.3f}")
print("(plain DF: DataFusion's own Parquet listing over the same files, no Delta provider)")
print("== Flight SQL server (queries round-robin, each answer's row count checked) ==")
for o in (o for o in ours if o["phase"] == "flight_sql"):
    print(f"{o['clients']:2} client(s): {o['queries']} queries, p50 {o['p50_s']:.3f}s p95 {o['p95_s']:.3f}s p99 {o['p99_s']:.3f}s, {o['queries_per_s']:.1f} queries/s")
PY

if [ -n "${BENCH_SUMMARY:-}" ]; then
  "$py" - "$work/latency.jsonl" "$work/duckdb.jsonl" "$nm" "$rot" >> "$BENCH_SUMMARY" <<'PY'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1])]
duck = {d["query"]: d for d in map(json.loads, open(sys.argv[2]))}
out = {"bench": "queries", "near_misses": int(sys.argv[3]), "rot": int(sys.argv[4])}
for o in ours:
    if o["phase"] == "in_process":
        out[o["query"] + "_s"] = o["best_s"]
        out[o["query"] + "_duckdb_s"] = duck[o["query"]]["best_s"]
        out[o["query"] + "_ratio"] = o["best_s"] / duck[o["query"]]["best_s"]
    if o["phase"] == "flight_sql":
        out[f"flight_{o['clients']}_p99_s"] = o["p99_s"]
        out[f"flight_{o['clients']}_p50_s"] = o["p50_s"]
print(json.dumps(out))
PY
fi

# Bytes the selective filter read (DataFusion's scan metrics) against the table's size.
"$bin" sql "$work/repo" "EXPLAIN ANALYZE ${Q[rare_filter]}" --format csv > "$work/analyze.txt"
scanned=$(grep -o 'bytes_scanned=[0-9.]* [KMG]*B\?' "$work/analyze.txt" | head -1 || true)
echo "rare_filter: DataFusion scan metric ${scanned:-bytes_scanned not reported}; near_misses table $((nm_bytes / 1000000)) MB on disk"
grep -o 'row_groups_pruned_statistics=[^,]*\|page_index_rows_pruned=[^,]*\|files_ranges_pruned_statistics=[^,]*' "$work/analyze.txt" | head -5 || true
