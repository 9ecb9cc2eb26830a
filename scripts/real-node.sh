#!/usr/bin/env bash
# Starts the real single-node cluster the end-to-end tests use, by hand:
# builds (once) what the tests build — the Kubernetes binaries, containerd
# and friends from Debian, the images — then runs the node inside its own
# network namespace and opens a shell there with KUBECONFIG set. Leaving
# the shell tears everything down and puts the machine back as it was.
# Needs root (network namespaces, mounts, cgroups), like the tests.
#
#   scripts/real-node.sh
#   (shoal-node-1234) $ helm install shoal charts/shoal ...   # see docs/real-node.md
#   scripts/real-node.sh --clean    # only clean up after a killed test or node
set -euo pipefail
cd "$(dirname "$0")/.."

source ./scripts/install-test-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
export SHOAL_IMAGES="${SHOAL_IMAGES:-$SHOAL_CACHE/images}"
cargo build --locked -p shoal-tests --bin real-node
if [ "${1:-}" = "--clean" ]; then
  exec "$CARGO_TARGET_DIR/debug/real-node" --clean
fi
./scripts/build-images.sh "$SHOAL_IMAGES"
exec "$CARGO_TARGET_DIR/debug/real-node"
