"""DuckDB's side of bench/queries.sh, inside one process: the same three queries over the same
Parquet files, each run RUNS times after `import duckdb` and connecting (not timed); prints one
JSON line per query with the best and median time and the row count.

    python bench/duckdb_queries.py REPO_DIR [RUNS]
"""

import json
import statistics
import sys
import time

import duckdb

repo, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
nm = f"read_parquet('{repo}/tables/near_misses/*.parquet')"
rot = f"read_parquet('{repo}/tables/rot/*.parquet')"
QUERIES = {
    "by_type": f"SELECT error_type, count(*) AS n FROM {nm} GROUP BY error_type ORDER BY n DESC",
    "tool_x_type": f"SELECT tool, error_type, count(*) AS n FROM {rot} GROUP BY tool, error_type ORDER BY tool, n DESC",
    "rare_filter": f"SELECT near_miss_id, tool, execution.text AS text FROM {nm} WHERE error_type = 'NonCommit'",
}
con = duckdb.connect()
threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
for name, sql in QUERIES.items():
    times, n = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        n = len(con.sql(sql).fetchall())
        times.append(time.perf_counter() - t)
    print(json.dumps({"phase": "in_process", "query": name, "rows": n, "runs": runs,
                      "best_s": min(times), "median_s": statistics.median(times),
                      "system": f"duckdb {duckdb.__version__} ({threads} threads)"}))
