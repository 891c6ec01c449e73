#!/usr/bin/env bash
# Query benchmark: regrpo (DataFusion over our Delta layout) vs DuckDB on the same Parquet files.
#
#   bash bench/queries.sh [NEAR_MISSES] [ROT]      (defaults 10000000 and 2000000)
#
# Generates a synthetic repository with examples/gen_query_bench.rs (through regrpo's own
# writer: files clustered by error_type/tool, page statistics, dictionaries), then times three
# queries through `regrpo sql` (a fresh process each time: Delta log replay + planning + scan)
# and through DuckDB's Python package reading the same files, best of 3 each, and prints the
# ratio. For the selective filter it also reports the bytes DataFusion's Parquet scan read
# against the table's size. Needs `pip install duckdb` (PYTHON points at that interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
nm=${1:-10000000}
rot=${2:-2000000}
work=${BENCH_DIR:-/tmp/regrpo-bench-queries}
py=${PYTHON:-python3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin regrpo --example gen_query_bench
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

printf "%-12s %10s %10s %8s\n" query "regrpo s" "duckdb s" ratio
for name in by_type tool_x_type rare_filter; do
  sql=${Q[$name]}
  r=$(best "$bin" --quiet sql "$work/repo" "$sql" --format csv)
  duck_sql=$(echo "$sql" | sed "s#FROM near_misses#FROM read_parquet('$work/repo/tables/near_misses/*.parquet')#; s#FROM rot#FROM read_parquet('$work/repo/tables/rot/*.parquet')#; s#execution.text#execution.text AS text#")
  d=$(best "$py" -c "import duckdb,sys; duckdb.sql(sys.argv[1]).fetchall()" "$duck_sql")
  printf "%-12s %10.3f %10.3f %8.2f\n" "$name" "$r" "$d" "$(echo "$r $d" | awk '{print $1/$2}')"
done

# Bytes the selective filter read (DataFusion's scan metrics) against the table's size.
"$bin" sql "$work/repo" "EXPLAIN ANALYZE ${Q[rare_filter]}" --format csv > "$work/analyze.txt"
scanned=$(grep -o 'bytes_scanned=[0-9.]* [KMG]*B\?' "$work/analyze.txt" | head -1 || true)
echo "rare_filter: DataFusion scan metric ${scanned:-bytes_scanned not reported}; near_misses table $((nm_bytes / 1000000)) MB on disk"
grep -o 'row_groups_pruned_statistics=[^,]*\|page_index_rows_pruned=[^,]*\|files_ranges_pruned_statistics=[^,]*' "$work/analyze.txt" | head -5 || true
