#!/usr/bin/env bash
# Regenerates crds/batchjob.yaml from the Rust types (operator/src/crd.rs)
# and copies it into the chart (charts/shoal/files/crds/). Tests fail when
# either copy differs from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p shoal-operator -- crd >crds/batchjob.yaml
cp crds/batchjob.yaml charts/shoal/files/crds/batchjob.yaml
