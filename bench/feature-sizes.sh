#!/usr/bin/env bash
# Size of the thumbnail handler per set of shoal-worker features: what a
# binary built for one place (Lambda, an SQS or RabbitMQ worker, a laptop)
# carries. Release profile, as shipped.
#
#   bench/feature-sizes.sh              # the builds below
#   BUILDS="default lambda,s3" bench/feature-sizes.sh
#
# Per build: the file size with debug info stripped (what
# scripts/package-lambda.sh ships), the .text section, the dynamic
# relocations the loader applies at start, and the ten largest crates of
# .text by cargo-bloat (built once into the tool cache).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDS="${BUILDS:-default lambda,s3 lambda sqs,s3,http amqp,s3,http local}"
BLOAT_VERSION=0.12.1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
tools="${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}/tools/cargo-bloat-$BLOAT_VERSION"
if [ ! -x "$tools/bin/cargo-bloat" ]; then
  cargo install --locked --quiet --version "$BLOAT_VERSION" --root "$tools" cargo-bloat
fi
export PATH="$tools/bin:$PATH"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "| build | file (no debug info) | .text | dynamic relocations |"
echo "| --- | ---: | ---: | ---: |"
for build in $BUILDS; do
  if [ "$build" = default ]; then
    flags=()
  else
    flags=(--no-default-features --features "$build")
  fi
  cargo build -q --release --locked -p thumbnail "${flags[@]}"
  strip --strip-debug -o "$work/bin" "$CARGO_TARGET_DIR/release/thumbnail"
  size_mb="$(stat -c %s "$work/bin" | awk '{printf "%.1f MB", $1 / 1e6}')"
  text_mb="$(size -A "$work/bin" | awk '$1 == ".text" {printf "%.1f MB", $2 / 1e6}')"
  relocs="$(readelf -r "$work/bin" | grep -c '^[0-9a-f]\{12\}' || true)"
  echo "| \`$build\` | $size_mb | $text_mb | $relocs |"
  cargo bloat -q --release --locked -p thumbnail --bin thumbnail "${flags[@]}" --crates -n 10 \
    >"$work/crates-${build//,/-}.txt" 2>/dev/null || true
done
for build in $BUILDS; do
  echo
  echo "largest crates of .text, \`$build\`:"
  sed 's/^/    /' "$work/crates-${build//,/-}.txt"
done
