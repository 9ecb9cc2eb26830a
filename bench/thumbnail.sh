#!/usr/bin/env bash
# Thumbnail throughput, quality and memory: shoal local mode against
# vipsthumbnail (libvips) on the same JPEGs, at the same sizes, quality and
# core count.
#
#   bench/thumbnail.sh                         # both sets, 256 and 1024 px, 3 rounds
#   ROUNDS=5 SIZES=256 SETS=photos bench/thumbnail.sh
#
# Image sets (Debian packages, installed when missing):
#   wallpapers  the six 5120x2880 JPEGs of plasma-workspace-wallpapers (two
#               progressive), copied round-robin to COPIES files
#   photos      every JPEG of mate-backgrounds, lomiri-wallpapers-20.04 and
#               ukui-wallpapers (1.3-24 MP, baseline and progressive, two
#               with ICC profiles), plus a portrait copy (rotated 90° by
#               jpegtran, losslessly) of every third of them
#
# Contenders, each round, in turn:
#   shoal         `thumbnail run --concurrency CORES` (one process)
#   vips-split    CORES vipsthumbnail processes (xargs -P), the files split
#                 evenly between them
#   vips-each     one vipsthumbnail process per file, CORES at a time
#   vips-threads  one vipsthumbnail process for every file (its own threads)
# The vips variant with the best median is the peer of the ratio. Both fit
# within SIZE x SIZE, write JPEG at quality Q, honour EXIF orientation and
# shrink on load. Every output is then compared with a reference thumbnail
# made from a full decode by area averaging (examples/thumbnail/examples/
# psnr.rs), and each
# contender's peak resident memory is divided by the images it has in
# flight (shoal: CORES in one process; vips: one per process).
set -euo pipefail
cd "$(dirname "$0")/.."

COPIES="${COPIES:-40}"
ROUNDS="${ROUNDS:-3}"
CORES="${CORES:-$(nproc)}"
SIZES="${SIZES:-256 1024}"
SETS="${SETS:-wallpapers photos}"
Q="${Q:-80}"
WALLPAPERS=/usr/share/wallpapers
PHOTOS=(/usr/share/backgrounds/mate/nature /usr/share/backgrounds/mate/abstract /usr/share/backgrounds)

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
command -v vipsthumbnail >/dev/null 2>&1 || need+=(libvips-tools)
command -v jpegtran >/dev/null 2>&1 || need+=(libjpeg-turbo-progs)
ls "$WALLPAPERS"/*/contents/images*/5120x2880.jpg >/dev/null 2>&1 || need+=(plasma-workspace-wallpapers)
[ -d /usr/share/backgrounds/mate/nature ] || need+=(mate-backgrounds)
[ -f /usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg ] || need+=(lomiri-wallpapers-20.04)
[ -f /usr/share/backgrounds/rhythm.jpg ] || need+=(ukui-wallpapers)
if [ "${#need[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal/target}"
cargo build -q --release -p thumbnail --bin thumbnail --example psnr
SHOAL="$CARGO_TARGET_DIR/release/thumbnail"
PSNR="$CARGO_TARGET_DIR/release/examples/psnr"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The input folders, one per set.
mkdir -p "$work/wallpapers" "$work/photos"
mapfile -t sources < <(ls "$WALLPAPERS"/*/contents/images*/5120x2880.jpg | sort)
for ((i = 0; i < COPIES; i++)); do
  cp "${sources[i % ${#sources[@]}]}" "$work/wallpapers/img-$(printf %04d "$i").jpg"
done
n=0
while IFS= read -r photo; do
  name="$(basename "$photo" .jpg)"
  if [ -e "$work/photos/$name.jpg" ]; then
    echo "two source photos are named $name.jpg; rename one" >&2; exit 1
  fi
  cp "$photo" "$work/photos/$name.jpg"
  if ((n % 3 == 0)); then
    jpegtran -rotate 90 -copy all -outfile "$work/photos/$name-portrait.jpg" "$photo"
  fi
  n=$((n + 1))
done < <(find "${PHOTOS[@]}" -maxdepth 1 -name '*.jpg' | sort)

echo "machine: $CORES cores of $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "vips: $(vips --version 2>/dev/null || echo unknown); quality $Q; sizes $SIZES; $ROUNDS rounds"
python3 - "$work/wallpapers" "$work/photos" <<'PY'
import os, struct, sys
for folder in sys.argv[1:]:
    mp, prog, icc = [], 0, 0
    for name in sorted(os.listdir(folder)):
        d = open(os.path.join(folder, name), "rb").read()
        i = 2
        while i + 4 <= len(d) and d[i] == 0xFF:
            m = d[i + 1]
            length = struct.unpack(">H", d[i + 2:i + 4])[0]
            seg = d[i + 4:i + 2 + length]
            if m == 0xE2 and seg.startswith(b"ICC_PROFILE"):
                icc += 1
            if m in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", seg[1:5])
                mp.append(w * h / 1e6)
                prog += m == 0xC2
                break
            i += 2 + length
    print(f"set {os.path.basename(folder)}: {len(mp)} JPEGs, {min(mp):.1f}-{max(mp):.1f} MP "
          f"({sum(mp):.0f} MP in all), {prog} progressive, {icc} with an ICC profile")
PY

samples="$work/samples.txt"
: >"$samples"
# run NAME SCENARIO ROUND IN OUT PER_FLIGHT COMMAND...: times COMMAND, checks
# it wrote one thumbnail per input, records images/s and peak KiB per image
# in flight.
run() {
  local name="$1" scenario="$2" round="$3" in="$4" out="$5" per="$6"
  shift 6
  rm -rf "$out"; mkdir -p "$out"
  local result
  result="$(python3 bench/lib/timed.py "$@")"
  local count inputs
  count="$(find "$out" -name '*.jpg' | wc -l)"
  inputs="$(find "$in" -name '*.jpg' | wc -l)"
  if [ "$count" -ne "$inputs" ]; then
    echo "$name wrote $count thumbnails for $inputs inputs" >&2; exit 1
  fi
  python3 - "$name" "$scenario" "$round" "$inputs" "$per" $result <<'PY' | tee -a "$samples"
import sys
name, scenario, rnd, n, per = sys.argv[1:6]
seconds, peak = float(sys.argv[7]), int(sys.argv[9])
print(f"{scenario}-img/s {rnd} {name} {int(n) / seconds:.3f}")
print(f"{scenario}-peak-MiB/image {rnd} {name} {peak / 1024 / int(per):.1f}")
PY
}

for set in $SETS; do
  in="$work/$set"
  inputs="$(find "$in" -name '*.jpg' | wc -l)"
  per_proc=$(( (inputs + CORES - 1) / CORES ))
  for size in $SIZES; do
    scenario="$set-$size"
    for ((r = 1; r <= ROUNDS; r++)); do
      run shoal "$scenario" "$r" "$in" "$work/out-shoal" "$CORES" \
        env THUMBNAIL_MAX_EDGE="$size" THUMBNAIL_QUALITY="$Q" "$SHOAL" run --input "$in" \
        --output "$work/out-shoal" --concurrency "$CORES" --no-progress --log-format json
      run vips-split "$scenario" "$r" "$in" "$work/out-vips" 1 \
        sh -c "find '$in' -maxdepth 1 -name '*.jpg' -print0 | xargs -0 -P $CORES -n $per_proc vipsthumbnail -s $size -o '$work/out-vips/%s.jpg[Q=$Q]'"
      run vips-each "$scenario" "$r" "$in" "$work/out-vips" 1 \
        sh -c "find '$in' -maxdepth 1 -name '*.jpg' -print0 | xargs -0 -P $CORES -n 1 vipsthumbnail -s $size -o '$work/out-vips/%s.jpg[Q=$Q]'"
      run vips-threads "$scenario" "$r" "$in" "$work/out-vips" 1 \
        sh -c "vipsthumbnail -s $size -o '$work/out-vips/%s.jpg[Q=$Q]' '$in'/*.jpg"
    done
    # Quality of the last round's outputs (every vips variant writes the
    # same files).
    for who in shoal vips; do
      "$PSNR" "$in" "$work/out-$who" >"$work/psnr-$who-$scenario.txt"
      mean="$(sed -n 's/^mean_psnr_db //p' "$work/psnr-$who-$scenario.txt")"
      min="$(sed -n 's/^min_psnr_db //p' "$work/psnr-$who-$scenario.txt")"
      # The thumbnails' own bytes (not shoal's journal beside them, nor
      # file-system blocks).
      kib="$(find "$work/out-$who" -maxdepth 1 -name '*.jpg' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1024 }')"
      echo "quality $scenario $who: mean PSNR $mean dB (lowest $min dB), outputs $kib KiB"
    done
    paste <(sed -n 's/^psnr //p' "$work/psnr-shoal-$scenario.txt") \
      <(sed -n 's/^psnr //p' "$work/psnr-vips-$scenario.txt") |
      awk -v s="$scenario" '{ printf "  %s %-44s shoal %6.2f dB  vips %6.2f dB\n", s, $1, $2, $4 }'
  done
done

echo
echo "The peer of each scenario: the vips variant with the best median images/s."
python3 - "$samples" >"$work/paired.txt" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [line.split() for line in open(sys.argv[1]) if len(line.split()) == 4]
rate = defaultdict(lambda: defaultdict(list))
for scenario, rnd, who, value in rows:
    if scenario.endswith("-img/s"):
        rate[scenario][who].append(float(value))
best = {}
for scenario, by in rate.items():
    variants = {w: statistics.median(v) for w, v in by.items() if w.startswith("vips")}
    best[scenario.removesuffix("-img/s")] = max(variants, key=variants.get)
    print(f"# {scenario}: " + ", ".join(f"{w} {m:.2f}" for w, m in sorted(variants.items())), file=sys.stderr)
for scenario, rnd, who, value in rows:
    base = scenario.removesuffix("-peak-MiB/image").removesuffix("-img/s")
    if who == "shoal":
        print(scenario, rnd, who, value)
    elif who == best.get(base):
        print(scenario, rnd, "vips", value)
PY
python3 bench/lib/paired.py shoal vips <"$work/paired.txt"
