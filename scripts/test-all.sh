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
# The real node's tests run them (tests/tests/real_node.rs). They carry the
# dev profile's binaries, which the tests build anyway: a release build
# would compile every dependency a second time (see build-images.sh).
export SHOAL_IMAGES="$SHOAL_CACHE/images"
SHOAL_IMAGE_PROFILE="${SHOAL_IMAGE_PROFILE:-dev}" ./scripts/build-images.sh "$SHOAL_IMAGES"
phase "cargo test: build"
cargo test --workspace --locked --no-run
phase "cargo test"
# The real node's test (pods starting, draining and stopping: the longest
# by far) runs beside the others in a process of its own. They share
# nothing: the node lives in a network namespace of its own, with its own
# servers; the others' servers listen on loopback ports the kernel picks.
real_node="batchjobs_run_as_real_pods_on_a_real_node"
node_test="$(cargo test --locked -p shoal-tests --test real_node --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(m["executable"])')"
node_log="$(mktemp)"
# As cargo runs it: from its package's folder.
(cd tests && exec "$node_test" --exact "$real_node") >"$node_log" 2>&1 &
node_pid=$!
status=0
cargo test --workspace --locked --no-fail-fast -- --skip "$real_node" || status=$?
node_status=0
wait "$node_pid" || node_status=$?
echo "== $real_node (tests/tests/real_node.rs, run beside the others): status $node_status"
cat "$node_log"
rm -f "$node_log"
if [ "$status" -eq 0 ]; then
  status="$node_status"
fi
phase "done, status $status"
exit "$status"
