#!/usr/bin/env bash
# Start-up of a RabbitMQ worker: process start to its first connection to
# the broker, shoal's `worker` (the no-op handler, default build, no
# --input) against the hand-written lapin consumer of bench/amqp-worker.sh.
# A listener of ours stands in for the broker (it accepts and says
# nothing), so the figure is the contenders' own start-up, with no server
# in it.
#
#   bench/amqp-connect.sh            # 50 starts each, taking turns
#   STARTS=200 bench/amqp-connect.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STARTS="${STARTS:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-worker --example noop --example amqp-baseline
bin="$CARGO_TARGET_DIR/release/examples"

# The AWS settings a worker in a cluster would have; neither contender
# should need them before its first message.
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true SHOAL_LOG_FORMAT=json
queue="amqp://127.0.0.1:{port}/%2f/jobs"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "spawn to the first connection, $STARTS starts each (microseconds)"
python3 bench/lib/first_connect.py "$STARTS" \
  "shoal=exec $bin/noop worker --queue '$queue' --concurrency 8" \
  "baseline=exec $bin/amqp-baseline '$queue' 8" |
  python3 bench/lib/paired.py shoal baseline
