#!/usr/bin/env bash
# Longer fuzzing than CI's: every `fuzz_*` property test (the decoders of
# untrusted bytes: queue messages, S3/SNS/SQS events, chunk bodies, control
# attributes, AMQP headers, broker URLs, image files, the fan-out's cut)
# with CASES inputs each instead of proptest's default 256.
#
#   scripts/fuzz.sh [CASES]        (default 20000)
#
# A failing case is shrunk to a small one and saved next to its test
# (`proptest-regressions/`, `*.proptest-regressions`): commit it, and
# every later run, CI's included, replays it first; then fix the code and
# add a named regression test with the case.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${1:-20000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "fuzzing with $PROPTEST_CASES cases per property" >&2
start=$SECONDS
status=0
cargo test --locked -p shoal-protocol --lib fuzz_ || status=$?
cargo test --locked -p shoal-worker --lib fuzz_ || status=$?
cargo test --locked -p shoal-operator --lib fuzz_ || status=$?
cargo test --locked -p thumbnail --test fuzz_decode || status=$?
echo "fuzzing took $((SECONDS - start)) s, status $status" >&2
exit "$status"
