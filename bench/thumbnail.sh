#!/usr/bin/env bash
# Thumbnail throughput: shoal local mode against vipsthumbnail (libvips),
# on the same large JPEGs, at the same size, quality and core count.
#
#   bench/thumbnail.sh            # 40 images, all cores, best of 3 rounds
#   COPIES=80 ROUNDS=5 bench/thumbnail.sh
#
# Input: the 5120x2880 JPEG wallpapers of Debian's plasma-workspace-wallpapers
# package, copied round-robin to COPIES files. vipsthumbnail is started as
# exactly CORES processes (xargs -P) so its start-up cost is paid once per
# core, as shoal's is paid once. Both fit images within SIZE x SIZE, write
# JPEG at quality Q, and use shrink-on-load / DCT-scaled decoding.
set -euo pipefail
cd "$(dirname "$0")/.."

COPIES="${COPIES:-40}"
ROUNDS="${ROUNDS:-3}"
CORES="${CORES:-$(nproc)}"
SIZE="${SIZE:-256}"
Q="${Q:-80}"
WALLPAPERS=/usr/share/wallpapers

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
command -v vipsthumbnail >/dev/null 2>&1 || need+=(libvips-tools)
ls "$WALLPAPERS"/*/contents/images*/5120x2880.jpg >/dev/null 2>&1 || need+=(plasma-workspace-wallpapers)
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p thumbnail
SHOAL="$CARGO_TARGET_DIR/release/thumbnail"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/in"
mapfile -t sources < <(ls "$WALLPAPERS"/*/contents/images*/5120x2880.jpg | sort)
for ((i = 0; i < COPIES; i++)); do
  cp "${sources[i % ${#sources[@]}]}" "$work/in/img-$(printf %04d "$i").jpg"
done
per_proc=$(( (COPIES + CORES - 1) / CORES ))

seconds() { python3 -c 'import time; print(time.perf_counter())'; }
best_shoal=""; best_vips=""
for ((r = 1; r <= ROUNDS; r++)); do
  rm -rf "$work/shoal" "$work/vips"; mkdir -p "$work/vips"
  t0=$(seconds)
  THUMBNAIL_MAX_EDGE="$SIZE" THUMBNAIL_QUALITY="$Q" "$SHOAL" run --input "$work/in" --output "$work/shoal" \
    --concurrency "$CORES" --no-progress --log-format json >/dev/null 2>&1
  t1=$(seconds)
  ls "$work"/in/*.jpg | xargs -P "$CORES" -n "$per_proc" vipsthumbnail -s "$SIZE" -o "$work/vips/%s.jpg[Q=$Q]"
  t2=$(seconds)
  n_shoal=$(ls "$work/shoal"/*.jpg | wc -l); n_vips=$(ls "$work/vips"/*.jpg | wc -l)
  if [ "$n_shoal" -ne "$COPIES" ] || [ "$n_vips" -ne "$COPIES" ]; then
    echo "output count mismatch: shoal $n_shoal, vips $n_vips, expected $COPIES" >&2; exit 1
  fi
  s=$(python3 -c "print($t1 - $t0)"); v=$(python3 -c "print($t2 - $t1)")
  printf 'round %d: shoal %.2f s, vipsthumbnail %.2f s\n' "$r" "$s" "$v"
  best_shoal=$(python3 -c "print(min(x for x in [$s, ${best_shoal:-$s}]))")
  best_vips=$(python3 -c "print(min(x for x in [$v, ${best_vips:-$v}]))")
done

python3 - "$COPIES" "$best_shoal" "$best_vips" "$CORES" "$SIZE" "${#sources[@]}" <<'PY'
import sys
n, s, v, cores, size, sources = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
print(f"{n} JPEGs (5120x2880, {sources} distinct), fit {size}px, {cores} cores, best of rounds")
print(f"shoal local mode : {n / s:6.2f} images/s")
print(f"vipsthumbnail    : {n / v:6.2f} images/s")
print(f"ratio shoal/vips : {(n / s) / (n / v):.2f}x")
PY
