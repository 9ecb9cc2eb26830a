#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, idempotently:
#   promtool     Debian package prometheus: checks the /metrics exposition
#   pushgateway  Debian package prometheus-pushgateway: Lambda mode pushes
#                its metrics to it
#   moto_server  moto[server] from PyPI (S3 and SQS), in a virtualenv cached
#                outside the clone and keyed by version
#   ElasticMQ    the fast SQS server, its jars from Maven Central (resolved by
#                Maven into a cache folder keyed by version); runs on Java
#   aws-lambda-rie  the AWS Lambda Runtime Interface Emulator, built from its
#                Go module at a pinned version into a cache folder
#   cfn-lint     CloudFormation/SAM linter from PyPI, in a cached virtualenv
#   cargo-lambda the Runtime API emulator Rust Lambda users test with
#                (`cargo lambda watch`), from PyPI, in a cached virtualenv
#   awslambdaric AWS's Python runtime interface client (with boto3 and
#                Pillow, as Lambda's Python functions use them), from
#                PyPI, in a cached virtualenv: Python Lambda functions run
#                unchanged behind shoal's Runtime API host (host/tests)
#   Java RIC     AWS's Java runtime interface client and its dependencies,
#                from Maven Central into a cache folder keyed by version
#                (javac from default-jdk-headless compiles the function)
#   rabbitmq-server  Debian package: the AMQP broker the RabbitMQ tests start
#                (one per test, on loopback ports, stopped afterwards)
#   containerd, runc, containernetworking-plugins, iptables, conntrack
#                Debian packages: the real node's container runtime, pod
#                network and kube-proxy's tools (tests/src/node)
#   kube-apiserver, kubectl, etcd, helm  built from Go modules
#                (scripts/k8s-tools.sh)
# Source it to get SHOAL_MOTO_SERVER, SHOAL_ELASTICMQ_LIB, SHOAL_LAMBDA_RIE,
# SHOAL_CFN_LINT, SHOAL_CARGO_LAMBDA, SHOAL_LAMBDA_PYTHON and
# SHOAL_LAMBDA_JAVA_LIB exported; run it to just install.
#
# SHOAL_K8S_TOOLS=background (test-all.sh sets it) starts the Kubernetes
# build (some 17 minutes of CPU on two cores, the longest step of a cold
# run) at low priority once Go is installed, and returns without waiting:
# SHOAL_K8S_TOOLS_PID is the process to wait for (its status is the
# build's), SHOAL_K8S_TOOLS_PGID_FILE holds the build's process group (to
# kill it), SHOAL_K8S_TOOLS_LOG its output.
# The caller waits for it and then sources k8s-tools.sh, which only exports
# once everything is built. Unset (the default), it is built here, in turn.
set -euo pipefail

SHOAL_CACHE="${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"
MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
CARGO_LAMBDA_VERSION=1.9.2
AWSLAMBDARIC_VERSION=4.2.2
PILLOW_VERSION=12.3.0
BOTO3_VERSION=1.44.8
JAVA_RIC_VERSION=2.10.1
ELASTICMQ_VERSION=1.7.1
# The emulator publishes no module tags; this is its commit of 2026-10-30.
RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# Compiles the Java Lambda function the host's tests run.
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
# libjpeg-turbo's SIMD code in the thumbnail example's decoder and encoder
# (mozjpeg-sys builds without it, more slowly, where nasm is missing).
command -v nasm >/dev/null 2>&1 || missing+=(nasm)
# The durability test reads which system calls a run makes.
command -v strace >/dev/null 2>&1 || missing+=(strace)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ "${#missing[@]}" -gt 0 ]; then
  started=$SECONDS
  echo "installing test dependencies: ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages would start servers; tests start their own.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl stop prometheus prometheus-pushgateway rabbitmq-server epmd.socket epmd containerd >/dev/null 2>&1 || true
  fi
  echo "installed the Debian packages in $((SECONDS - started)) s"
fi

if [ "${SHOAL_K8S_TOOLS:-}" = background ]; then
  SHOAL_K8S_TOOLS_LOG="$(mktemp)"
  SHOAL_K8S_TOOLS_PGID_FILE="$(mktemp)"
  # A session of its own, whose id the build writes first: the caller
  # stops the whole build (go and its compilers) with one kill. `setsid -w`
  # stays until the build ends and exits with its status, even where
  # setsid has to fork (a shell with job control).
  setsid -w bash -c 'echo $$ >"$1"; shift; exec nice -n 19 bash "$@"' \
    setsid "$SHOAL_K8S_TOOLS_PGID_FILE" "$(dirname "${BASH_SOURCE[0]}")/k8s-tools.sh" \
    >"$SHOAL_K8S_TOOLS_LOG" 2>&1 &
  SHOAL_K8S_TOOLS_PID=$!
  # The session id, once the build has written it.
  for _ in $(seq 100); do
    [ -s "$SHOAL_K8S_TOOLS_PGID_FILE" ] && break
    sleep 0.1
  done
fi

# pip_tool NAME REQUIREMENT...: a virtualenv at $SHOAL_CACHE/tools/NAME with
# the REQUIREMENTs installed, made once; prints the folder.
pip_tool() {
  local venv="$SHOAL_CACHE/tools/$1"
  if [ ! -f "$venv/.installed" ]; then
    local started=$SECONDS
    echo "installing ${*:2} into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${@:2}"
    touch "$venv/.installed"
    echo "installed ${*:2} in $((SECONDS - started)) s" >&2
  fi
  echo "$venv"
}

SHOAL_MOTO_SERVER="$(pip_tool "moto-$MOTO_VERSION" "moto[server]==$MOTO_VERSION")/bin/moto_server"
export SHOAL_MOTO_SERVER
SHOAL_CFN_LINT="$(pip_tool "cfn-lint-$CFN_LINT_VERSION" "cfn-lint==$CFN_LINT_VERSION")/bin/cfn-lint"
export SHOAL_CFN_LINT
SHOAL_CARGO_LAMBDA="$(pip_tool "cargo-lambda-$CARGO_LAMBDA_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION")/bin/cargo-lambda"
export SHOAL_CARGO_LAMBDA
SHOAL_LAMBDA_PYTHON="$(pip_tool "lambda-python-ric-$AWSLAMBDARIC_VERSION-pillow-$PILLOW_VERSION-boto3-$BOTO3_VERSION" \
  "awslambdaric==$AWSLAMBDARIC_VERSION" "pillow==$PILLOW_VERSION" "boto3==$BOTO3_VERSION")/bin/python3"
export SHOAL_LAMBDA_PYTHON

# maven_lib NAME GROUP ARTIFACT VERSION: the jar of GROUP:ARTIFACT:VERSION
# and every jar it depends on, resolved by Maven once into
# $SHOAL_CACHE/tools/NAME-VERSION/lib; prints that folder.
maven_lib() {
  local lib="$SHOAL_CACHE/tools/$1-$4/lib"
  if [ ! -f "$lib/$3-$4.jar" ]; then
    local started=$SECONDS pom_dir
    echo "installing $2:$3:$4 into $lib" >&2
    pom_dir="$(mktemp -d)"
    cat >"$pom_dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shoal.tests</groupId>
  <artifactId>$1-jars</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>$2</groupId>
      <artifactId>$3</artifactId>
      <version>$4</version>
    </dependency>
  </dependencies>
</project>
POM
    rm -rf "$lib"
    mvn -q -B -Dstyle.color=never -f "$pom_dir/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib" >&2
    rm -rf "$pom_dir"
    echo "installed $2:$3:$4 in $((SECONDS - started)) s" >&2
  fi
  echo "$lib"
}

SHOAL_ELASTICMQ_LIB="$(maven_lib elasticmq org.elasticmq elasticmq-server_2.13 "$ELASTICMQ_VERSION")"
export SHOAL_ELASTICMQ_LIB
SHOAL_LAMBDA_JAVA_LIB="$(maven_lib lambda-java-ric com.amazonaws aws-lambda-java-runtime-interface-client "$JAVA_RIC_VERSION")"
export SHOAL_LAMBDA_JAVA_LIB

rie_bin="$SHOAL_CACHE/tools/aws-lambda-rie-$RIE_VERSION/bin"
if [ ! -x "$rie_bin/aws-lambda-rie" ]; then
  started=$SECONDS
  echo "building aws-lambda-rie $RIE_VERSION into $rie_bin"
  GOBIN="$rie_bin" GOFLAGS=-mod=mod go install \
    "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$RIE_VERSION"
  echo "built aws-lambda-rie in $((SECONDS - started)) s"
fi
export SHOAL_LAMBDA_RIE="$rie_bin/aws-lambda-rie"


# kube-apiserver, kubectl and etcd for the operator's tests, built from Go
# modules once per version (exports SHOAL_KUBE_APISERVER, SHOAL_KUBECTL,
# SHOAL_ETCD).
if [ "${SHOAL_K8S_TOOLS:-}" != background ]; then
  source "$(dirname "${BASH_SOURCE[0]}")/k8s-tools.sh"
fi
