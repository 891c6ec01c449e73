#!/usr/bin/env python3
"""Read a regrpo table at a pinned version with another Delta reader (the `deltalake` package).

Usage:
    python3 -m venv .venv && .venv/bin/pip install deltalake pyarrow
    .venv/bin/python scripts/read_with_deltalake.py REPO_DIR [SNAPSHOT] [TABLE]

It opens REPO_DIR/tables/TABLE at the Delta version SNAPSHOT pins (latest when omitted) and
prints the row count, the schema and an ErrorType histogram when the table has that column.
"""
import json
import sys
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable

repo = Path(sys.argv[1])
snapshot = sys.argv[2] if len(sys.argv) > 2 else None
table = sys.argv[3] if len(sys.argv) > 3 else "rot"

version = None
if snapshot:
    manifest = json.loads((repo / "snapshots" / f"{snapshot}.json").read_text())
    version = manifest["tables"][table]["version"]

dt = DeltaTable(str(repo / "tables" / table), version=version)
data = dt.to_pyarrow_table()
print(f"{table} @ version {dt.version()} (snapshot {snapshot or '-'}): {data.num_rows} rows")
print(data.schema)
if "error_type" in data.column_names:
    print(Counter(data.column("error_type").to_pylist()).most_common())
