#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check and
# test of the workspace. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start in seconds since this script began: where a cold run's
# time goes.
phase() { echo "== $1 (${SECONDS} s)"; }

# Installs promtool and moto, exports SHOAL_MOTO_SERVER.
source ./scripts/install-test-deps.sh

# Build outputs live outside the clone so a warm machine reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
# Two cores: two test threads, two build jobs.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental caches only pay off for edit-compile loops; here they would
# add some 20 GB to the target folder and fill small disks.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
phase "container images"
# The real node's tests run them (tests/tests/real_node.rs).
export SHOAL_IMAGES="$SHOAL_CACHE/images"
./scripts/build-images.sh "$SHOAL_IMAGES"
phase "cargo test"
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
phase "done, status $status"
exit "$status"
