#!/usr/bin/env bash
# Operator benchmark: how fast replicas follow a backlog, and what 1,000
# BatchJobs cost the operator. Runs the release operator against the test
# bed's real kube-apiserver + etcd and ElasticMQ (no KEDA here: its figures
# in BENCHMARKS.md are its documented defaults, not a measurement).
#
#   bench/operator.sh                 # 20 trials, 1000 BatchJobs
#   TRIALS=10 JOBS=200 bench/operator.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS="${TRIALS:-20}"
JOBS="${JOBS:-1000}"

# kube-apiserver, etcd, kubectl and ElasticMQ come with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-operator --bin shoal-operator
cargo build -q --release -p shoal-tests --example operator-bench
"$CARGO_TARGET_DIR/release/examples/operator-bench" "$CARGO_TARGET_DIR/release/shoal-operator" "$TRIALS" "$JOBS"
