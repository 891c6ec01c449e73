#!/usr/bin/env python3
"""Query a running `regrpo serve` from Python with ADBC, the way notebooks and BI tools do.

    pip install adbc-driver-flightsql pyarrow
    regrpo serve ./data -s v1 --addr 127.0.0.1:50051 --token-file token.txt &
    python scripts/flight_sql_adbc.py grpc://127.0.0.1:50051 token.txt

Prints failures by ErrorType, the catalog the driver discovers, the server's SqlInfo, and shows
that a write and a call without the token are refused.
"""
import sys

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions


def main(uri: str, token_file: str) -> None:
    token = open(token_file).read().strip()
    auth = {DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    with flightsql.connect(uri, db_kwargs=auth) as conn:
        cur = conn.cursor()
        cur.execute("SELECT error_type, count(*) AS n FROM rot GROUP BY 1 ORDER BY 2 DESC")
        print(cur.fetch_arrow_table())
        print("catalog:", conn.adbc_get_objects(depth="tables").read_all().to_pylist()[0]["catalog_name"])
        info = conn.adbc_get_info()
        print({k: info[k] for k in ("vendor_name", "vendor_version", "vendor_arrow_version")})
        try:
            cur.execute("DROP TABLE rot")
            print("DROP was accepted: this is a bug")
        except Exception as e:  # noqa: BLE001 - we print whatever the driver raises
            print("DROP refused:", str(e).splitlines()[0][:160])
    try:
        with flightsql.connect(uri) as conn:
            conn.cursor().execute("SELECT 1")
        print("a call without the token was accepted: this is a bug")
    except Exception as e:  # noqa: BLE001
        print("no token:", str(e).splitlines()[0][:160])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
