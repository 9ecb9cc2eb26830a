#!/usr/bin/env bash
# Builds shoal's container images without a container engine, as OCI image
# archives that containerd imports (`ctr images import`):
#   shoal-operator:$TAG      the operator binary, as deploy/operator.Dockerfile
#   shoal-thumbnail:$TAG     the thumbnail worker, as deploy/Dockerfile
#   shoal-host:$TAG          the Lambda host, as deploy/host.Dockerfile
#   registry.k8s.io/pause:3.10  the pod sandbox (tools/pause/pause.c, static)
#   python-thumbnails:$TAG   only when $SHOAL_LAMBDA_PYTHON names the test
#                            virtualenv (scripts/install-test-deps.sh): the
#                            Python Lambda function examples/python-lambda,
#                            as a Lambda user's image holds it (Python, its
#                            standard library, awslambdaric, boto3, Pillow,
#                            app.py in /var/task), for the real-node tests
# The final stage of each Dockerfile is what the image holds; a test
# (tests/tests/images.rs) checks that they agree.
#
# Usage: scripts/build-images.sh OUT_DIR
# Prints one line per image; the archives are OUT_DIR/<name>.tar. Binaries
# come from $CARGO_TARGET_DIR (default ~/.cache/shoal/target), built here
# with `cargo build` when missing or stale, as $SHOAL_IMAGE_PROFILE says:
#   release  (the default) what the Dockerfiles build and users run: the
#            operator with its own profile, `operator` (small code, see the
#            workspace's Cargo.toml), the others with `release`
#   test     the test build's binaries: the dev profile, and the features
#            `cargo test --workspace` resolves (the operator's failpoints
#            compiled in, inert unless a test arms them). scripts/test-all.sh
#            uses it: after the test build nothing compiles again, where a
#            release build compiles every dependency a second time (a
#            quarter of an hour on two cores) and no test measures speed
#   dev      the dev profile, these two packages' own features
# The unstripped binaries are kept as OUT_DIR/bin/<name> with the profile in
# OUT_DIR/profile: tests/tests/images.rs checks each image holds its
# binary stripped as the Dockerfile strips it.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:?usage: scripts/build-images.sh OUT_DIR}"
TAG="${SHOAL_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
profile="${SHOAL_IMAGE_PROFILE:-release}"
case "$profile" in
  release | dev | test) ;;
  *)
    echo "SHOAL_IMAGE_PROFILE must be release, test or dev, not '$profile'" >&2
    exit 2
    ;;
esac
# Where the build of binary $1 lies under $CARGO_TARGET_DIR (for release,
# the name of the Cargo profile it is built with).
built_in() {
  case "$profile:$1" in
    release:shoal-operator) echo operator ;;
    release:*) echo release ;;
    *) echo debug ;;
  esac
}
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$profile" = test ]; then
  # The whole workspace's binaries, built beside its tests: the features
  # the test build resolves (dev-dependencies included: tower-test turns
  # on tokio's test-util, so without them tokio and all above it would
  # compile again).
  cargo build --locked --workspace --bins --tests >&2
elif [ "$profile" = release ]; then
  cargo build --profile "$(built_in shoal-operator)" --locked -p shoal-operator >&2
  cargo build --profile release --locked -p thumbnail -p shoal-host >&2
else
  cargo build --profile "$profile" --locked -p shoal-operator -p thumbnail -p shoal-host >&2
fi
mkdir -p "$out/bin"
for bin in shoal-operator thumbnail shoal-host; do
  # A copy: a later build of another feature set replaces the one in the
  # target folder.
  cp "$CARGO_TARGET_DIR/$(built_in "$bin")/$bin" "$out/bin/$bin.tmp"
  mv "$out/bin/$bin.tmp" "$out/bin/$bin"
  # As the Dockerfiles do: debug info out, symbols kept.
  strip --strip-debug -o "$work/$bin" "$out/bin/$bin"
done
echo "$profile" >"$out/profile"

scripts/oci-image.py --name "shoal-operator:$TAG" --out "$out/shoal-operator.tar" --distroless \
  --file "$work/shoal-operator:/usr/local/bin/shoal-operator" \
  --entrypoint /usr/local/bin/shoal-operator --cmd run \
  --user 65532:65532 --expose 8080/tcp

scripts/oci-image.py --name "shoal-thumbnail:$TAG" --out "$out/shoal-thumbnail.tar" --distroless \
  --file "$work/thumbnail:/usr/local/bin/thumbnail" \
  --entrypoint /usr/local/bin/thumbnail \
  --user 65532:65532 --env SHOAL_LOG_FORMAT=json

scripts/oci-image.py --name "shoal-host:$TAG" --out "$out/shoal-host.tar" --distroless \
  --file "$work/shoal-host:/usr/local/bin/shoal-host" \
  --entrypoint /usr/local/bin/shoal-host \
  --user 65532:65532

gcc -static -O2 -Wall -Wextra -Werror -o "$work/pause" tools/pause/pause.c
scripts/oci-image.py --name registry.k8s.io/pause:3.10 --out "$out/pause.tar" \
  --file "$work/pause:/pause" --entrypoint /pause --user 65535:65535

if [ -n "${SHOAL_LAMBDA_PYTHON:-}" ]; then
  # The Python the virtualenv was made from, at the same path as here (the
  # interpreter finds its standard library by it), and the virtualenv at
  # /opt/python-venv (found by its pyvenv.cfg, next to the interpreter as
  # invoked): its path here may be under /tmp, which a worker pod mounts
  # over. tests/tests/real_node/pod_forms.rs runs that path.
  venv="$(dirname "$(dirname "$SHOAL_LAMBDA_PYTHON")")"
  home="$(sed -n 's/^home = //p' "$venv/pyvenv.cfg")"
  prefix="$(dirname "$home")"
  python="python$(sed -n 's/^version = \([0-9]*\.[0-9]*\).*/\1/p' "$venv/pyvenv.cfg")"
  scripts/oci-image.py --name "python-thumbnails:$TAG" --out "$out/python-thumbnails.tar" --distroless \
    --file "$prefix/bin/$python:$prefix/bin/$python" \
    --tree "$prefix/lib/$python:$prefix/lib/$python" \
    --tree "$venv:/opt/python-venv" \
    --exclude site-packages/ --exclude test --exclude tests --exclude idlelib --exclude tkinter \
    --exclude turtledemo --exclude ensurepip --exclude lib2to3 --exclude pip --exclude setuptools \
    --exclude pkg_resources --exclude "config-${python#python}-x86_64-linux-gnu" \
    --file examples/python-lambda/app.py:/var/task/app.py \
    --env LAMBDA_TASK_ROOT=/var/task --workdir /var/task \
    --entrypoint /opt/python-venv/bin/python3 --entrypoint=-m --entrypoint=awslambdaric \
    --cmd app.handler --user 65532:65532
fi
