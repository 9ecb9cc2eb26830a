#!/usr/bin/env bash
# Writes charts/shoal/README.md from the chart's values.yaml ("# --"
# comments) and README.md.gotmpl, with helm-docs (SHOAL_HELM_DOCS, else
# built by k8s-tools.sh into the tool cache). Arguments go to helm-docs:
# with --dry-run it prints the README instead of writing it, which is how
# tests/tests/chart.rs checks that the file is up to date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${SHOAL_HELM_DOCS:-}" ]; then
  source scripts/k8s-tools.sh >&2
fi
exec "$SHOAL_HELM_DOCS" --chart-search-root charts --skip-version-footer \
  --sort-values-order file --log-level warning "$@"
