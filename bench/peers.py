"""The peers of scripts/bench.sh, on the same data in the same run.

- DuckDB runs the SQL benchmark's four queries (the SQL text comes from
  flowgate's figures file) over flowgate's own Parquet files, and its answers
  are compared with flowgate's.
- chDB (embedded ClickHouse) inserts the rows the ingest benchmark's collector
  stored (read from its Parquet files into Arrow first, not timed) into a
  MergeTree table; its rate is per CPU-second of this process, like the
  collector's.

Prints one line per figure and writes them as JSON for bench/report.py.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

RUNS = 5


def duckdb_queries(sql_figures):
    import duckdb

    con = duckdb.connect()
    files = sql_figures["parquet_files"]
    con.read_parquet(files).create_view("flows")
    out = {}
    for q in sql_figures["queries"]:
        times, rows = [], None
        for _ in range(RUNS):
            t = time.perf_counter()
            cur = con.execute(q["sql"])
            rows = cur.fetchall()
            times.append((time.perf_counter() - t) * 1e3)
            columns = [d[0] for d in cur.description]
        times.sort()
        same = same_answer(q["rows"], columns, rows)
        print(f"duckdb {q['name']}: best {times[0]:.1f} ms, median {times[RUNS // 2]:.1f} ms"
              f" (answer {'matches flowgate' if same else 'DIFFERS from flowgate'})")
        out[q["name"]] = {"best_ms": times[0], "median_ms": times[RUNS // 2], "same_answer": same}
    return out


def same_answer(flowgate_rows, columns, duck_rows):
    """Compares the answers, leaving out timestamps (printed differently)."""
    if len(flowgate_rows) != len(duck_rows):
        return False
    for fg, dk in zip(flowgate_rows, duck_rows):
        for name, value in zip(columns, dk):
            if name in ("time", "last_seen"):
                continue
            if str(fg.get(name)) != str(value):
                return False
    return True


def clickhouse_type(field):
    import pyarrow as pa

    t = field.type
    if pa.types.is_dictionary(t):
        inner = "Nullable(String)" if field.nullable else "String"
        return f"LowCardinality({inner})"
    if pa.types.is_timestamp(t):
        base = "DateTime64(9, 'UTC')"
    elif pa.types.is_list(t):
        return "Array(String)"
    elif pa.types.is_string(t):
        base = "String"
    elif pa.types.is_boolean(t):
        base = "Bool"
    elif pa.types.is_unsigned_integer(t):
        base = f"UInt{t.bit_width}"
    elif pa.types.is_signed_integer(t):
        base = f"Int{t.bit_width}"
    else:
        raise SystemExit(f"peers.py: no ClickHouse type for column {field.name} ({t})")
    return f"Nullable({base})" if field.nullable else base


def chdb_insert(ingest_figures):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from chdb import session

    files = sorted(glob.glob(os.path.join(ingest_figures["flows_dir"], "*", "*.parquet")))
    if not files:
        raise SystemExit(f"peers.py: no Parquet files under {ingest_figures['flows_dir']}")
    table = pa.concat_tables(pq.read_table(f) for f in files).combine_chunks()
    columns = ", ".join(f"`{f.name}` {clickhouse_type(f)}" for f in table.schema)
    s = session.Session()
    s.query("CREATE DATABASE IF NOT EXISTS bench")
    s.query(f"CREATE TABLE bench.flows ({columns}) ENGINE = MergeTree ORDER BY time")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    s.query("INSERT INTO bench.flows SELECT * FROM Python(table)")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stored = int(s.query("SELECT count() FROM bench.flows", "CSV").data().strip())
    if stored != table.num_rows:
        raise SystemExit(f"peers.py: chDB holds {stored} rows, {table.num_rows} were inserted")
    per_cpu = stored / cpu
    print(f"chdb insert into MergeTree from Arrow: {stored} rows, {per_cpu:.0f} rows per CPU-second"
          f" ({cpu:.2f} s CPU, {wall:.2f} s wall, {stored / wall:.0f} rows/s of wall time)")
    return {"rows": stored, "cpu_s": cpu, "wall_s": wall, "rows_per_cpu_s": per_cpu}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sql", help="figures of the flowgate-query sql bench")
    p.add_argument("--ingest", help="figures of the flowgate-collector ingest bench")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = {}
    if a.sql:
        with open(a.sql) as f:
            out["duckdb"] = duckdb_queries(json.load(f))
    if a.ingest:
        with open(a.ingest) as f:
            out["chdb"] = chdb_insert(json.load(f))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
