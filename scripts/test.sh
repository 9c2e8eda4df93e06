#!/usr/bin/env bash
# Runs every flowgate test: formatting, lints, unit and integration tests
# (including eBPF tests against this machine's kernel, which need root), the
# NetworkPolicy conformance suite, and the browser tests.
# Usage: scripts/test.sh   (as root, or it re-runs itself through sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  exec scripts/as-root "$0" "$@"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "setup (installs missing packages, mounts tracefs/bpffs)"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (the flowgate binary the CLI tests run)"
cargo build --locked -p flowgate

step "cargo test (workspace; the fuzz targets get their own step)"
cargo test --workspace --locked --no-fail-fast --exclude flowgate-fuzz

step "fuzz the parsers (gRPC frames and batch validation, cluster YAML, replay files, WAL reader, SQL sandbox), ${FLOWGATE_FUZZ_SECONDS:=15} s each"
export FLOWGATE_FUZZ_SECONDS
# --workspace so features unify as in every other build (a `-p` build rebuilds DataFusion).
cargo test --workspace --locked --no-fail-fast --test targets -- --test-threads 2

step "NetworkPolicy conformance through the CLI (sampled; the in-process test checks every row)"
if [ -f ../shared/policy-conformance/check.py ]; then
  python3 ../shared/policy-conformance/check.py \
    --cmd 'target/debug/flowgate explain --cluster {cluster} --from {src} --to {dst} --port {port} --protocol {protocol} --output json' \
    --max-rows-per-case 60 --jobs 2
else
  echo "!! SKIPPED: ../shared/policy-conformance not found beside this checkout" >&2
  [ -z "${CI:-}" ] || { echo "in CI the conformance suite must be present" >&2; exit 1; }
fi

step "Cluster-tier (AdminNetworkPolicy/BaselineAdminNetworkPolicy) conformance through the CLI (sampled; the in-process test checks every row)"
if [ -f ../shared/policy-conformance-tiers/check.py ]; then
  python3 ../shared/policy-conformance-tiers/check.py \
    --cmd 'target/debug/flowgate explain --cluster {cluster} --from {src} --to {dst} --port {port} --protocol {protocol} --output json' \
    --max-rows-per-case 40 --jobs 2
else
  echo "!! SKIPPED: ../shared/policy-conformance-tiers not found beside this checkout" >&2
  [ -z "${CI:-}" ] || { echo "in CI the tiers conformance suite must be present" >&2; exit 1; }
fi
