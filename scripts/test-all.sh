#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check and
# test of the workspace. `.ci/run` calls exactly this.
#
# The order keeps a cold machine's two cores busy: the Kubernetes test bed
# (Go, the longest build) compiles at low priority in the background while
# cargo checks and builds, and while the tests that need no Kubernetes run
# (they mostly wait on servers). The tests that need it run last.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start in seconds since this script began: where a cold run's
# time goes.
phase() { echo "== $1 (${SECONDS} s)"; }

k8s_pid=""
node_pid=""
# Nothing outlives the script, whatever phase fails: the Kubernetes build
# (its whole process group), and the real node's test, whose node is then
# torn down by `real-node --clean` (a killed test skips its own teardown).
stop_background() {
  if [ -z "$k8s_pid" ] && [ -n "${SHOAL_K8S_TOOLS_PGID_FILE:-}" ] && [ -s "$SHOAL_K8S_TOOLS_PGID_FILE" ]; then
    k8s_pid="$(cat "$SHOAL_K8S_TOOLS_PGID_FILE")"
  fi
  if [ -n "$k8s_pid" ]; then
    kill -- -"$k8s_pid" 2>/dev/null || true
  fi
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    "$CARGO_TARGET_DIR/debug/real-node" --clean || true
  fi
  wait 2>/dev/null || true
  rm -f "${SHOAL_K8S_TOOLS_LOG:-}" "${SHOAL_K8S_TOOLS_PGID_FILE:-}"
}
trap stop_background EXIT

# Installs the Debian packages, moto, ElasticMQ, the Lambda emulators;
# starts the Kubernetes build (see install-test-deps.sh).
export SHOAL_K8S_TOOLS=background
source ./scripts/install-test-deps.sh
k8s_pid="$(cat "$SHOAL_K8S_TOOLS_PGID_FILE")"

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
phase "cargo clippy: lean feature builds"
# A handler binary built with one mode's features (shoal-worker's cargo
# features; tests/tests/crate_boundaries.rs checks what each carries).
for features in lambda,s3 sqs,s3 amqp local; do
  cargo clippy --locked -p shoal-worker --all-targets --no-default-features -F "$features" -- -D warnings
  cargo clippy --locked -p thumbnail --bins --no-default-features -F "$features" -- -D warnings
done
phase "cargo test: build"
cargo test --workspace --locked --no-run
phase "container images"
# The real node's tests run them (tests/tests/real_node.rs). They carry the
# test build's binaries: same profile, same features, nothing compiled
# twice (see build-images.sh).
export SHOAL_IMAGES="$SHOAL_CACHE/images"
SHOAL_IMAGE_PROFILE="${SHOAL_IMAGE_PROFILE:-test}" ./scripts/build-images.sh "$SHOAL_IMAGES"

# The integration test binaries that start a Kubernetes API server, helm or
# the real node (all in tests/tests). Every other test runs while the test
# bed still builds; one that needs it and is missing here fails at once,
# naming the variable it lacks (shoal_tests::kube::tool_from_env).
k8s_tests=()
plain_tests=()
while read -r name; do
  case "$name" in
    chaos | chart | chart_cluster | operator_* | real_node) k8s_tests+=(--test "$name") ;;
    *) plain_tests+=(--test "$name") ;;
  esac
done < <(cargo metadata --locked --no-deps --format-version 1 | python3 -c 'import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if target["kind"] == ["test"]:
            print(target["name"])')

status=0
phase "cargo test: without Kubernetes"
cargo test --workspace --locked --no-fail-fast --lib --bins "${plain_tests[@]}" || status=$?
cargo test --workspace --locked --doc || status=$?

phase "waiting for the Kubernetes test bed"
if ! wait "$SHOAL_K8S_TOOLS_PID"; then
  cat "$SHOAL_K8S_TOOLS_LOG"
  echo "building the Kubernetes test bed failed (output above)" >&2
  exit 1
fi
# Built: nothing left to stop (its process group id may be reused).
k8s_pid=""
rm -f "$SHOAL_K8S_TOOLS_PGID_FILE"
SHOAL_K8S_TOOLS_PGID_FILE=""
cat "$SHOAL_K8S_TOOLS_LOG"
source ./scripts/k8s-tools.sh

phase "cargo test: with Kubernetes"
# The real node's test (pods starting, draining and stopping: the longest
# by far) runs beside the others in a process of its own. They share
# nothing: the node lives in a network namespace of its own, with its own
# servers; the others' servers listen on loopback ports the kernel picks.
real_node="batchjobs_run_as_real_pods_on_a_real_node"
node_test="$(cargo test --workspace --locked --test real_node --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(m["executable"])')"
node_log="$(mktemp)"
# As cargo runs it: from its package's folder.
(cd tests && exec "$node_test" --exact "$real_node") >"$node_log" 2>&1 &
node_pid=$!
cargo test --workspace --locked --no-fail-fast "${k8s_tests[@]}" -- --skip "$real_node" || status=$?
node_status=0
wait "$node_pid" || node_status=$?
node_pid=""
echo "== $real_node (tests/tests/real_node.rs, run beside the others): status $node_status"
cat "$node_log"
rm -f "$node_log"
if [ "$status" -eq 0 ]; then
  status="$node_status"
fi
phase "done, status $status"
exit "$status"
