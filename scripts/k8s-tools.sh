#!/usr/bin/env bash
# Builds the Kubernetes test bed from Go modules, once per version, into
# $SHOAL_CACHE/tools (outside the clone):
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy, kubectl      k8s.io/kubernetes at $KUBERNETES_VERSION, as one
#                            binary (tools/kube/main.go) with symlinks, every
#                            staging module pinned by a replace line and the
#                            version stamped so /version is real
#   etcd                     go.etcd.io/etcd/server/v3 at $ETCD_VERSION
#                            (>= 3.5.13: watch progress notifications)
#   helm                     helm.sh/helm/v4 at $HELM_VERSION, version stamped
#   helm-docs                github.com/norwoodj/helm-docs at $HELM_DOCS_VERSION
#                            (charts/shoal/README.md, scripts/chart-readme.sh)
#   kwok                     sigs.k8s.io/kwok at $KWOK_VERSION, with its "fast"
#                            node and pod stages in one file: fake nodes for the
#                            operator's scale test bed (pods become Running and
#                            Ready without a container runtime)
#   monitoring CRDs          ServiceMonitor, PodMonitor, PrometheusRule from the
#                            prometheus-operator module at $PROMETHEUS_OPERATOR_VERSION
#                            (its example/ folder), so the chart's optional
#                            objects can be checked by a real API server
# The container runtime of the real node (containerd, runc, CNI plugins)
# comes from Debian's packages (install-test-deps.sh).
# Sourced by install-test-deps.sh; exports SHOAL_KUBE_APISERVER,
# SHOAL_KUBE_CONTROLLER_MANAGER, SHOAL_KUBE_SCHEDULER, SHOAL_KUBELET,
# SHOAL_KUBE_PROXY, SHOAL_KUBECTL, SHOAL_ETCD, SHOAL_HELM, SHOAL_HELM_DOCS
# SHOAL_KWOK, SHOAL_KWOK_STAGES and SHOAL_MONITORING_CRDS.
set -euo pipefail

SHOAL_CACHE="${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.6.16
HELM_VERSION=4.3.1
HELM_DOCS_VERSION=1.14.2
PROMETHEUS_OPERATOR_VERSION=0.90.1
KWOK_VERSION=0.8.0

# Staging modules of k8s.io/kubernetes 1.34; each is published as v0.34.x.
K8S_STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime
  client-go cloud-provider cluster-bootstrap code-generator component-base
  component-helpers controller-manager cri-api cri-client csi-translation-lib
  dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin
  sample-controller)

# Every component in one binary (tools/kube/main.go dispatches on the name
# it is called by): one link instead of six.
k8s_bin="$SHOAL_CACHE/tools/kubernetes-v$KUBERNETES_VERSION-aio/bin"
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
if [ ! -x "$k8s_bin/kube" ]; then
  started=$SECONDS
  echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl v$KUBERNETES_VERSION (one binary) into $k8s_bin (takes a while once)"
  mod_dir="$(mktemp -d)"
  staging_version="v0.${KUBERNETES_VERSION#1.}"
  {
    echo "module shoal.dev/k8s-tools"
    echo
    echo "go 1.24"
    echo
    echo "replace ("
    for m in "${K8S_STAGING[@]}"; do
      echo "	k8s.io/$m => k8s.io/$m $staging_version"
    done
    echo ")"
  } >"$mod_dir/go.mod"
  cp "$(dirname "${BASH_SOURCE[0]}")/../tools/kube/main.go" "$mod_dir/main.go"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=v$KUBERNETES_VERSION"
    ldflags="$ldflags -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
    ldflags="$ldflags -X $pkg.gitTreeState=clean"
  done
  (
    cd "$mod_dir"
    # Quiet unless it fails: module resolution prints a line per module.
    if ! { GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v$KUBERNETES_VERSION" &&
      GOFLAGS=-mod=mod go mod tidy; } >resolve.log 2>&1; then
      cat resolve.log >&2
      exit 1
    fi
    # A build killed after its links leaves them: start clean.
    rm -rf "$k8s_bin.tmp"
    mkdir -p "$k8s_bin.tmp"
    # No cgo: the kubelet runs without it here, and the binary needs no C
    # toolchain at run time.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$k8s_bin.tmp/kube" .
    for c in "${K8S_COMPONENTS[@]}"; do ln -s kube "$k8s_bin.tmp/$c"; done
  )
  rm -rf "$k8s_bin" "$mod_dir"
  mv "$k8s_bin.tmp" "$k8s_bin"
  echo "built Kubernetes v$KUBERNETES_VERSION in $((SECONDS - started)) s"
fi
export SHOAL_KUBE_APISERVER="$k8s_bin/kube-apiserver"
export SHOAL_KUBE_CONTROLLER_MANAGER="$k8s_bin/kube-controller-manager"
export SHOAL_KUBE_SCHEDULER="$k8s_bin/kube-scheduler"
export SHOAL_KUBELET="$k8s_bin/kubelet"
export SHOAL_KUBE_PROXY="$k8s_bin/kube-proxy"
export SHOAL_KUBECTL="$k8s_bin/kubectl"

etcd_bin="$SHOAL_CACHE/tools/etcd-v$ETCD_VERSION/bin"
if [ ! -x "$etcd_bin/etcd" ]; then
  started=$SECONDS
  echo "building etcd v$ETCD_VERSION into $etcd_bin"
  mod_dir="$(mktemp -d)"
  cat >"$mod_dir/go.mod" <<GOMOD
module shoal.dev/etcd

go 1.24
GOMOD
  cat >"$mod_dir/main.go" <<'GO'
// etcd's own main, built from its server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$mod_dir"
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
    rm -rf "$etcd_bin.tmp"
    mkdir -p "$etcd_bin.tmp"
    GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$etcd_bin.tmp/etcd" .
  )
  rm -rf "$etcd_bin" "$mod_dir"
  mv "$etcd_bin.tmp" "$etcd_bin"
  echo "built etcd v$ETCD_VERSION in $((SECONDS - started)) s"
fi
export SHOAL_ETCD="$etcd_bin/etcd"

helm_bin="$SHOAL_CACHE/tools/helm-v$HELM_VERSION/bin"
if [ ! -x "$helm_bin/helm" ]; then
  started=$SECONDS
  echo "building helm v$HELM_VERSION into $helm_bin"
  mod_dir="$(mktemp -d)"
  printf 'module shoal.dev/helm\n\ngo 1.25\n' >"$mod_dir/go.mod"
  (
    cd "$mod_dir"
    GOFLAGS=-mod=mod go get "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION" >/dev/null 2>&1
    rm -rf "$helm_bin.tmp"
    mkdir -p "$helm_bin.tmp"
    GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" \
      -o "$helm_bin.tmp/helm" helm.sh/helm/v4/cmd/helm
  )
  rm -rf "$helm_bin" "$mod_dir"
  mv "$helm_bin.tmp" "$helm_bin"
  echo "built helm v$HELM_VERSION in $((SECONDS - started)) s"
fi
export SHOAL_HELM="$helm_bin/helm"

helm_docs_bin="$SHOAL_CACHE/tools/helm-docs-v$HELM_DOCS_VERSION/bin"
if [ ! -x "$helm_docs_bin/helm-docs" ]; then
  started=$SECONDS
  echo "building helm-docs v$HELM_DOCS_VERSION into $helm_docs_bin"
  rm -rf "$helm_docs_bin.tmp"
  GOBIN="$helm_docs_bin.tmp" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
    "github.com/norwoodj/helm-docs/cmd/helm-docs@v$HELM_DOCS_VERSION"
  rm -rf "$helm_docs_bin"
  mv "$helm_docs_bin.tmp" "$helm_docs_bin"
  echo "built helm-docs v$HELM_DOCS_VERSION in $((SECONDS - started)) s"
fi
export SHOAL_HELM_DOCS="$helm_docs_bin/helm-docs"

kwok_bin="$SHOAL_CACHE/tools/kwok-v$KWOK_VERSION/bin"
if [ ! -x "$kwok_bin/kwok" ] || [ ! -f "$kwok_bin/stages.yaml" ]; then
  started=$SECONDS
  echo "building kwok v$KWOK_VERSION into $kwok_bin"
  mod_dir="$(mktemp -d)"
  printf 'module shoal.dev/kwok\n\ngo 1.26\n' >"$mod_dir/go.mod"
  (
    cd "$mod_dir"
    if ! GOFLAGS=-mod=mod go get "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" >resolve.log 2>&1; then
      cat resolve.log >&2
      exit 1
    fi
    rm -rf "$kwok_bin.tmp"
    mkdir -p "$kwok_bin.tmp"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$kwok_bin.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
    # The stages kwok plays: nodes become Ready and keep a lease; pods are
    # given an address, become Running and Ready, and go when deleted.
    src="$(GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
    for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
      pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
      printf '\n---\n'
      cat "$src/kustomize/stage/$stage.yaml"
    done >"$kwok_bin.tmp/stages.yaml"
  )
  rm -rf "$kwok_bin" "$mod_dir"
  mv "$kwok_bin.tmp" "$kwok_bin"
  echo "built kwok v$KWOK_VERSION in $((SECONDS - started)) s"
fi
export SHOAL_KWOK="$kwok_bin/kwok"
export SHOAL_KWOK_STAGES="$kwok_bin/stages.yaml"

crd_dir="$SHOAL_CACHE/tools/monitoring-crds-v$PROMETHEUS_OPERATOR_VERSION"
if [ ! -f "$crd_dir/monitoring.coreos.com_prometheusrules.yaml" ]; then
  echo "fetching the monitoring CRDs of prometheus-operator v$PROMETHEUS_OPERATOR_VERSION"
  mod_dir="$(mktemp -d)"
  printf 'module shoal.dev/monitoring-crds\n\ngo 1.25\n' >"$mod_dir/go.mod"
  src="$(cd "$mod_dir" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$crd_dir.tmp"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$crd_dir.tmp/"
  done
  rm -rf "$crd_dir" "$mod_dir"
  mv "$crd_dir.tmp" "$crd_dir"
fi
export SHOAL_MONITORING_CRDS="$crd_dir"
