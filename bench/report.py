"""Prints flowgate's figures beside its peers' from the same run, with the
ratio and whether each aim of issue 10 is met (scripts/bench.sh)."""

import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def row(what, ours, peer, ratio, aim, met):
    peer = "-" if peer is None else peer
    ratio = "-" if ratio is None else f"{ratio:.2f}"
    verdict = "-" if met is None else ("met" if met else "NOT met")
    print(f"| {what} | {ours} | {peer} | {ratio} | {aim} | {verdict} |")


def main():
    sql, ingest, peers = (load(p) for p in sys.argv[1:4])
    peers = peers or {}
    print("| figure | flowgate | peer (same run) | ratio | aim | |")
    print("|---|---|---|---|---|---|")
    if ingest:
        ours = ingest["flows_per_cpu_s"]
        ch = peers.get("chdb")
        theirs = ch["rows_per_cpu_s"] if ch else None
        row("ingest, flows per collector CPU-second (gRPC from another process)",
            f"{ours:,.0f}", None, None, ">= 1,000,000", ours >= 1e6)
        if theirs:
            r = ours / theirs
            row("ingest vs chDB MergeTree insert from Arrow (rows per CPU-second)",
                f"{ours:,.0f}", f"{theirs:,.0f}", r, ">= 0.5x chDB", r >= 0.5)
    if sql:
        duck = peers.get("duckdb", {})
        for q in sql["queries"]:
            d = duck.get(q["name"])
            if d:
                # ratio = DuckDB's time / flowgate's: >= 1 means flowgate is no slower.
                r = d["best_ms"] / q["best_ms"]
                note = "" if d["same_answer"] else " (answers differ!)"
                row(f"SQL {q['name']}, {sql['flows']:,} flows, best of 5 (ratio = DuckDB time / ours){note}",
                    f"{q['best_ms']:.0f} ms", f"{d['best_ms']:.0f} ms", r, "ratio >= 1", r >= 1.0)
            else:
                row(f"SQL {q['name']}", f"{q['best_ms']:.0f} ms", None, None, "no slower than DuckDB", None)
        # The same queries over the same rows still in memory (Parquet
        # images): what the dashboard reads; DuckDB still reads the files.
        for q in sql.get("memory_queries", []):
            d = duck.get(q["name"])
            r = d["best_ms"] / q["best_ms"] if d else None
            row(f"SQL {q['name']} over the hot store (in memory), best of 5",
                f"{q['best_ms']:.0f} ms", f"{d['best_ms']:.0f} ms" if d else None, r,
                "ratio >= 1", None if r is None else r >= 1.0)
        for key, what, aim in [
            ("memory_bytes_per_flow_store", "memory, bytes/flow (store's accounting)", 64),
            ("memory_bytes_per_flow_rss", "memory, bytes/flow (RSS growth)", 64),
            ("disk_bytes_per_flow", "disk, bytes/flow (Parquet)", 20),
        ]:
            v = sql[key]
            row(what, f"{v:.1f}", None, None, f"<= {aim}", v <= aim)


if __name__ == "__main__":
    main()
