#!/usr/bin/env bash
# Installs everything flowgate's build and tests need on a fresh Debian machine,
# and mounts the kernel filesystems the probe needs. Safe to run again.
# Usage: scripts/setup.sh   (as root, or through sudo: root is needed for apt and mounts)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  # Root installs Debian packages and mounts tracefs/bpffs; sudo if present.
  exec scripts/as-root "$0" "$@"
fi

PKGS=(
  clang llvm libbpf-dev libelf-dev   # eBPF programs: clang -target bpf + libbpf headers
  bpftool                            # inspecting loaded programs in tests and by hand
  protobuf-compiler                  # proto/: tonic-prost-build runs protoc
  nftables iproute2 iputils-ping     # test "pods" in network namespaces, a dropping "CNI"
  chromium chromium-driver           # web/ browser tests (headless)
  ca-certificates
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages already installed"
fi

# The probe reads tracepoints through tracefs and may pin maps in bpffs.
if ! mountpoint -q /sys/kernel/tracing; then
  log "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing
fi
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

# Browser-test driver (playwright-core drives Debian's chromium; it downloads no browser).
if [ -f web/tests/package.json ]; then
  log "installing web test dependencies (npm)"
  (cd web/tests && npm ci --no-audit --no-fund --silent)
fi

log "done"
