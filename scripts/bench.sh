#!/usr/bin/env bash
# Runs flowgate's store benchmarks and their peers side by side on the same
# data, then prints each figure, the peer's and the ratio (issue 10):
#   ingest through gRPC (flows per collector CPU-second) vs chDB inserting
#   the same rows into a MergeTree table; the four SQL queries over
#   10,000,000 flows vs DuckDB reading flowgate's own Parquet files; bytes
#   per flow in memory and on disk.
# DuckDB, chDB and pyarrow come from PyPI into a venv (a measurement peer,
# not a dependency). Offline, the peers are skipped and this says so loudly.
# Environment: FLOWGATE_BENCH_FLOWS (10000000), FLOWGATE_BENCH_INGEST_FLOWS
# (2000000), FLOWGATE_BENCH_WORK (where data and figures go, default a
# temporary directory), FLOWGATE_BENCH_VENV (the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

work=${FLOWGATE_BENCH_WORK:-$(mktemp -d /tmp/flowgate-bench.XXXXXX)}
mkdir -p "$work"
venv=${FLOWGATE_BENCH_VENV:-$work/venv}
peers=yes
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import duckdb, chdb, pyarrow' 2>/dev/null; then
  if ! "$venv/bin/pip" install --quiet duckdb chdb pyarrow; then
    peers=no
    echo "!!! bench.sh: cannot install duckdb, chdb and pyarrow from PyPI (offline?):" >&2
    echo "!!! the peers are SKIPPED; flowgate's figures have nothing to be compared with." >&2
  fi
fi

echo "== building the benchmarks" >&2
# --workspace keeps features unified with the other builds (a -p build
# resolves them differently and rebuilds DataFusion).
cargo bench --workspace --locked --bench sql --bench ingest --no-run >&2

echo "== ingest: flowgate collector over gRPC" >&2
FLOWGATE_BENCH_DIR="$work/ingest" FLOWGATE_BENCH_OUT="$work/ingest.json" \
  cargo bench --workspace --locked --bench ingest
echo "== store and SQL: flowgate" >&2
FLOWGATE_BENCH_DIR="$work/sql" FLOWGATE_BENCH_OUT="$work/sql.json" \
  cargo bench --workspace --locked --bench sql
if [ "$peers" = yes ]; then
  echo "== peers: chDB insert, DuckDB queries" >&2
  "$venv/bin/python" bench/peers.py --sql "$work/sql.json" --ingest "$work/ingest.json" \
    --out "$work/peers.json"
fi
echo
"$venv/bin/python" bench/report.py "$work/sql.json" "$work/ingest.json" "$work/peers.json"
echo "(data and figures in $work)" >&2
