#!/usr/bin/env bash
# Queue consumer throughput: shoal's `worker` against a minimal hand-written
# aws-sdk-sqs loop (receive 10, run the handler, delete the batch), both
# with a no-op handler, the same concurrency, on the same ElasticMQ server.
#
#   bench/sqs-worker.sh                         # 20000 messages, best of 3
#   MESSAGES=50000 ROUNDS=5 CONCURRENCY=16 bench/sqs-worker.sh
#   LATENCY_MS=5 bench/sqs-worker.sh            # 5 ms each way, as to SQS
#   ROUNDS=0 STARTS=50 bench/sqs-worker.sh      # the start-up trial alone
#   SHOAL_NOOP=/tmp/noop-before bench/sqs-worker.sh  # another build of `noop`
#
# SHOAL_NOOP runs a copy of the `noop` example kept from another commit in
# shoal's place, so that trials of two builds can take turns (A/B).
#
# LATENCY_MS puts toxiproxy (built from its Go module into the tool cache)
# between the contenders and the server, delaying every request and every
# answer by that much: on loopback the server's CPU decides both rates,
# with a network's round trip their own waits do.
#
# Each round fills a fresh queue, starts the contender, and times it until
# the queue is empty. `shoal` runs with its defaults (JSON logs with the
# REPORT line of every invocation, metrics, leases, per-item settlement);
# the baseline does nothing but receive and delete. Each ratio (rate and
# CPU per message, shoal / baseline) comes with a 95% bootstrap interval
# over the paired rounds (bench/lib/paired.py).
#
# Then the start-up trial: STARTS starts of each (taking turns), each on a
# fresh queue holding 10 messages, timed from the spawn until the
# contender's "first receive" line reaches the driver; paired by start.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES="${MESSAGES:-20000}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-8}"
LATENCY_MS="${LATENCY_MS:-0}"
STARTS="${STARTS:-30}"
TOXIPROXY_VERSION=v2.5.0

# ElasticMQ's jars (and Java, Maven) come with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-worker --example noop --example sqs-baseline --example sqs-bench
bin="$CARGO_TARGET_DIR/release/examples"

# The server on one core, the contenders on another (bench/lib/pin.sh).
source bench/lib/pin.sh

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$work/elasticmq.conf" <<CONF
include classpath("application.conf")
node-address { protocol = http, host = "127.0.0.1", port = $port, context-path = "" }
rest-sqs { enabled = true, bind-port = $port, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false }
CONF
"${server_cpu[@]}" java -Xmx1g -Dconfig.file="$work/elasticmq.conf" -cp "$SHOAL_ELASTICMQ_LIB/*" org.elasticmq.server.Main >"$work/elasticmq.log" 2>&1 &
server=$!
proxy=""
trap 'kill $server $proxy 2>/dev/null; wait $server $proxy 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# What the contenders talk to: the server, or a proxy delaying both ways.
contender_endpoint="http://127.0.0.1:$port"
if [ "$LATENCY_MS" != 0 ]; then
  toxi_bin="$SHOAL_CACHE/tools/toxiproxy-$TOXIPROXY_VERSION/bin"
  if [ ! -x "$toxi_bin/server" ]; then
    GOBIN="$toxi_bin" GOFLAGS=-mod=mod go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
  fi
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  api_port="$(free_port)"
  proxy_port="$(free_port)"
  # On the contenders' core (the server's is the one both wait for); the
  # proxy's work is the same for both.
  $contender_cpu"$toxi_bin/server" -host 127.0.0.1 -port "$api_port" >"$work/toxiproxy.log" 2>&1 &
  proxy=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$api_port/version" >/dev/null && break
    sleep 0.1
  done
  curl -fsS -X POST "http://127.0.0.1:$api_port/proxies" \
    -d "{\"name\":\"sqs\",\"listen\":\"127.0.0.1:$proxy_port\",\"upstream\":\"127.0.0.1:$port\"}" >/dev/null
  for stream in upstream downstream; do
    curl -fsS -X POST "http://127.0.0.1:$api_port/proxies/sqs/toxics" \
      -d "{\"type\":\"latency\",\"stream\":\"$stream\",\"attributes\":{\"latency\":$LATENCY_MS}}" >/dev/null
  done
  contender_endpoint="http://127.0.0.1:$proxy_port"
fi

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true
export SHOAL_LOG_FORMAT=json

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "server: ElasticMQ $ELASTICMQ_VERSION on 127.0.0.1:$port; $MESSAGES messages; concurrency $CONCURRENCY; $ROUNDS rounds + 1 warm-up"
echo "pinning: server ${server_cpu[*]:-none}, contenders ${contender_cpu:-none}"
echo "added latency: ${LATENCY_MS} ms each way (contenders reach the server at $contender_endpoint)"
shoal="AWS_ENDPOINT_URL=$contender_endpoint exec $contender_cpu${SHOAL_NOOP:-$bin/noop} worker --queue \"\$QUEUE\" --concurrency $CONCURRENCY"
baseline="AWS_ENDPOINT_URL=$contender_endpoint exec $contender_cpu$bin/sqs-baseline \"\$QUEUE\" $CONCURRENCY"
: >"$work/out.txt"
if [ "$ROUNDS" != 0 ]; then
  SERVER_PID=$server "$bin/sqs-bench" "$AWS_ENDPOINT_URL" "$MESSAGES" "$ROUNDS" "$work" \
    "shoal=$shoal" "baseline=$baseline" | tee -a "$work/out.txt"
fi
if [ "$STARTS" != 0 ]; then
  echo
  echo "start-up: $STARTS starts each + 1 warm-up, spawn to the first receive's answer"
  "$bin/sqs-bench" startup "$AWS_ENDPOINT_URL" "$STARTS" "$work" \
    "shoal=$shoal" "baseline=$baseline" | tee -a "$work/out.txt"
fi
echo
sed -n 's/^sample //p' "$work/out.txt" | python3 bench/lib/paired.py shoal baseline
