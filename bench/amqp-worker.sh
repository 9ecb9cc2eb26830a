#!/usr/bin/env bash
# RabbitMQ consumer throughput: shoal's `worker --queue amqp://…` against a
# minimal hand-written lapin consumer (prefetch N, no-op handler, ack each
# delivery), both with the same prefetch (= concurrency), on the same
# broker (Debian's rabbitmq-server, started here on loopback ports and
# stopped afterwards), on identical quorum queues.
#
#   bench/amqp-worker.sh                        # 20000 messages, best of 3
#   MESSAGES=50000 ROUNDS=5 CONCURRENCY=16 bench/amqp-worker.sh
#
# Each round fills a fresh queue (publisher confirms), starts the contender
# and times it until no message is ready; the driver then checks that the
# contender acknowledged every one (amqp-bench.rs). `shoal` runs with its
# defaults (JSON logs with the REPORT line of every invocation, metrics,
# per-item settlement); the baseline only consumes and acknowledges. Each
# ratio (rate and CPU per message, shoal / baseline) comes with a 95%
# bootstrap interval over the paired rounds (bench/lib/paired.py).
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES="${MESSAGES:-20000}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-8}"

# rabbitmq-server comes with the test dependencies.
source ./scripts/install-test-deps.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p shoal-worker --example noop --example amqp-baseline --example amqp-bench
bin="$CARGO_TARGET_DIR/release/examples"

# The server on one core, the contenders on another (bench/lib/pin.sh).
source bench/lib/pin.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
server_group="" epmd_pid=""
stop() {
  # Only a real process group (a number above 1), and `--`: without it a
  # negative pid reads as an option, and kill(-1) signals every process.
  if [[ "$server_group" =~ ^[0-9]+$ ]] && ((server_group > 1)); then
    kill -TERM -- "-$server_group" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$server_group" 2>/dev/null || true
  fi
  if [[ "$epmd_pid" =~ ^[0-9]+$ ]] && ((epmd_pid > 1)); then
    kill "$epmd_pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
port="$(free_port)"; epmd_port="$(free_port)"; dist_port="$(free_port)"
printf 'listeners.tcp.1 = 127.0.0.1:%s\nlog.console = true\nlog.file = false\n' "$port" >"$work/rabbitmq.conf"
echo '[].' >"$work/enabled_plugins"
: >"$work/rabbitmq-env.conf"
export HOME="$work" RABBITMQ_NODENAME="bench$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist_port" ERL_EPMD_PORT="$epmd_port" \
  ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$work/mnesia" RABBITMQ_LOG_BASE="$work/log" \
  RABBITMQ_CONFIG_FILE="$work/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$work/enabled_plugins" \
  RABBITMQ_CONF_ENV_FILE="$work/rabbitmq-env.conf" RABBITMQ_PID_FILE="$work/rabbitmq.pid"
# The node's port mapper, owned here; the broker starts only once it
# answers (else the VM would start a daemon of its own that outlives us).
epmd -port "$epmd_port" -address 127.0.0.1 &
epmd_pid=$!
for _ in $(seq 1 100); do
  epmd -port "$epmd_port" -names >/dev/null 2>&1 && break
  sleep 0.1
done
# Its own process group: the script, the Erlang VM and its helpers are
# stopped together.
# Its shell writes its own pid, which after setsid is the group's id.
setsid "${server_cpu[@]}" bash -c 'echo $$ >"$0/pgid"; exec /usr/lib/rabbitmq/bin/rabbitmq-server' "$work" \
  >"$work/server.log" 2>&1 &
for _ in $(seq 1 100); do
  [ -s "$work/pgid" ] && break
  sleep 0.05
done
server_group="$(cat "$work/pgid" 2>/dev/null || true)"
for _ in $(seq 1 600); do
  grep -q "Server startup complete" "$work/server.log" 2>/dev/null && break
  sleep 0.2
done
grep -q "Server startup complete" "$work/server.log" || { cat "$work/server.log"; exit 1; }
version="$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)"
uri="amqp://guest:guest@127.0.0.1:$port/%2f"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "broker: rabbitmq-server $version on 127.0.0.1:$port; $MESSAGES messages; prefetch = concurrency = $CONCURRENCY; $ROUNDS rounds + 1 warm-up"
echo "pinning: broker ${server_cpu[*]:-none}, contenders ${contender_cpu:-none}"
# The Erlang VM's CPU time over each run (the driver reads SERVER_PID).
beam="$(pgrep -g "$server_group" beam.smp | head -n1 || true)"
SERVER_PID="$beam" SHOAL_LOG_FORMAT=json "$bin/amqp-bench" "$uri" "$MESSAGES" "$ROUNDS" "$work" \
  "shoal=exec $contender_cpu$bin/noop worker --queue \"\$QUEUE\" --concurrency $CONCURRENCY" \
  "baseline=exec $contender_cpu$bin/amqp-baseline \"\$QUEUE\" $CONCURRENCY" | tee "$work/out.txt"
echo
sed -n 's/^sample //p' "$work/out.txt" | python3 bench/lib/paired.py shoal baseline
