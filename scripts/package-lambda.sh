#!/usr/bin/env bash
# Builds a handler binary as a Lambda deployment zip, the layout cargo-lambda
# produces and the provided.al2023 runtime expects: one executable named
# `bootstrap` at the root of the zip.
#
#   scripts/package-lambda.sh                  # release build of `thumbnail`
#   scripts/package-lambda.sh --name PKG --features LIST
#                                              # another handler crate, built
#                                              # with LIST (cargo features;
#                                              # default: its defaults)
#   scripts/package-lambda.sh --binary PATH    # package a binary built elsewhere
#   scripts/package-lambda.sh --out DIR        # write DIR/bootstrap.zip instead
#
# Output: dist/lambda/<name>/bootstrap.zip (what deploy/lambda/template.yaml
# points at). Debug info is stripped from the copy (symbols stay, for
# backtraces). The binary must not need a newer glibc than Amazon Linux
# 2023's (2.34); the script checks its symbol versions and refuses one that
# does. `thumbnail` is built with only the Lambda mode and S3 (it forwards
# shoal-worker's features): no queue clients, metrics server or progress
# bar in the function; a crate of yours that forwards them too takes
# `--features lambda,s3`.
set -euo pipefail
cd "$(dirname "$0")/.."

name=thumbnail
binary=""
out=""
features=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --features) features="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--name NAME] [--features LIST] [--out DIR]" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
  # thumbnail forwards shoal-worker's features: the function gets only
  # the Lambda mode and S3.
  if [ -z "$features" ] && [ "$name" = thumbnail ]; then features="lambda,s3"; fi
  if [ -n "$features" ]; then
    cargo build --release -p "$name" --no-default-features -F "$features"
  else
    cargo build --release -p "$name"
  fi
  binary="$CARGO_TARGET_DIR/release/$name"
fi
[ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 1; }

# Amazon Linux 2023 ships glibc 2.34.
newest="$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
if [ -n "$newest" ] && [ "$(printf '%s\n2.34\n' "$newest" | sort -V | tail -1)" != "2.34" ]; then
  echo "$binary needs glibc $newest; provided.al2023 has 2.34: build on an older glibc" >&2
  exit 1
fi

out="${out:-dist/lambda/$name}"
mkdir -p "$out"
rm -f "$out/bootstrap" "$out/bootstrap.zip"
strip --strip-debug -o "$out/bootstrap" "$binary"
chmod 755 "$out/bootstrap"
(cd "$out" && python3 -m zipfile -c bootstrap.zip bootstrap)
echo "$out/bootstrap.zip (glibc symbols up to ${newest:-none})"
