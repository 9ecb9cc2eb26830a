#!/usr/bin/env bash
# Real-node benchmark: shoal's BatchJobs as real pods on the test bed's
# single node (kubelet, containerd, runc, bridge CNI in a network namespace
# of its own; tests/src/node), the operator installed by its chart.
#   1. cold start: message on an idle queue -> first worker pod Ready, and
#      -> its thumbnail in S3 (p50/p95 over ROUNDS; image already present)
#   2. throughput: an S3 job of IMAGES photos on the node vs `thumbnail run`
#      over the same photos on the same 2 cores (folder, and S3)
#
#   bench/real-node.sh                      # 10 rounds, 200 images, 3 rounds
#   ROUNDS=20 IMAGES=400 TP_ROUNDS=5 bench/real-node.sh
#   POD_CONCURRENCY=2 LOCAL_CONCURRENCY=2 bench/real-node.sh   # in flight
# Needs root, like the tests (network namespace, mounts, cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-10}"
IMAGES="${IMAGES:-200}"
TP_ROUNDS="${TP_ROUNDS:-3}"

source ./scripts/install-test-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
export SHOAL_IMAGES="${SHOAL_IMAGES:-$SHOAL_CACHE/images}"
./scripts/build-images.sh "$SHOAL_IMAGES" >/dev/null
# The driver only waits and times; a debug build does (what it measures is
# the release images and the release thumbnail binary build-images.sh made).
cargo build -q --locked --workspace --examples
"$CARGO_TARGET_DIR/debug/examples/node-bench" "$CARGO_TARGET_DIR/release/thumbnail" \
  "$ROUNDS" "$IMAGES" "$TP_ROUNDS"
