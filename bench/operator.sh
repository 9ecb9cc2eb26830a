#!/usr/bin/env bash
# Operator benchmark: how fast replicas follow a backlog, alone and among
# many jobs, and what 100, 1,000, ... BatchJobs cost the operator (memory,
# reconcile latency from raw samples, requests to the API server and to the
# queue server, and their slope per job). Runs the operator built as its
# image has it (its own Cargo profile, `operator`) against the test bed's
# real kube-apiserver + etcd and ElasticMQ (no KEDA here: its figures in
# BENCHMARKS.md are its documented defaults, not a measurement).
# The driver is tests/examples/operator-bench.rs; lines starting RESULT are
# the figures.
#
#   bench/operator.sh                              # 20 trials; 100, then 1,000 jobs
#   TRIALS=10 STEPS=100,1000,10000 bench/operator.sh
#   BENCH_QUEUES=shared bench/operator.sh          # every job on one queue
#   BENCH_OPERATOR_ENV="MALLOC_ARENA_MAX=2" bench/operator.sh
#   BENCH_NODES=20 bench/operator.sh               # with pods, on 20 kwok fake nodes
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS="${TRIALS:-20}"
STEPS="${STEPS:-100,1000}"

# kube-apiserver, etcd, kubectl, ElasticMQ, and the controller manager,
# scheduler and kwok of BENCH_NODES come with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
# The operator as its image has it: its own profile (see Cargo.toml).
cargo build -q --profile operator -p shoal-operator --bin shoal-operator
cargo build -q --release -p shoal-tests --example operator-bench
"$CARGO_TARGET_DIR/release/examples/operator-bench" "$CARGO_TARGET_DIR/operator/shoal-operator" "$TRIALS" "$STEPS"
