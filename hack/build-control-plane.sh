#!/usr/bin/env bash
# Build the control plane from the Go module proxy into a cache outside the
# repo, reusing what is there. Prints the directory that holds the binaries.
#
#   hack/build-control-plane.sh [NAME...]
#
# NAMEs (default: etcd kube-apiserver kube-scheduler kube-controller-manager):
# etcd, or any k8s.io/kubernetes command such as kubelet (hack/build-node.sh asks
# for it). The Kubernetes binaries share one scratch module and are linked with
# the version ldflags, so they report $K8S_VERSION. Each build's wall time is
# appended to $CACHE_ROOT/build-times.log.
set -euo pipefail

LOG_TAG="build-control-plane"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

# shellcheck source=hack/lib/go-build.sh
source "$ROOT/hack/lib/go-build.sh"
mkdir -p "$BIN_DIR"

build_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] && { say "etcd $ETCD_VERSION cached"; return; }
  local mod="$CACHE_ROOT/src/etcd-$ETCD_VERSION"
  scratch_module etcd "$mod"
  say "etcd $ETCD_VERSION: fetching modules"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 || fail "etcd: go get go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  say "etcd $ETCD_VERSION: building (a few minutes on 2 cores)"
  timed etcd "${NICE[@]}" go build -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3 >&2 || fail "etcd: go build"
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

# The scratch module: k8s.io/kubernetes with every staging module replaced by
# its published v0 version (the upstream replaces point at ./staging).
k8s_module() {
  local mod="$CACHE_ROOT/src/kubernetes-$K8S_VERSION"
  local staging="v0.${K8S_VERSION#v1.}"
  scratch_module k8s "$mod"
  grep -q 'k8s.io/kubernetes v' go.mod && return 0
  say "k8s.io/kubernetes $K8S_VERSION: reading its go.mod"
  local upstream
  upstream="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')" \
    || fail "k8s: go mod download k8s.io/kubernetes@$K8S_VERSION"
  local name
  for name in $(sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$upstream"); do
    go mod edit "-replace=$name=$name@$staging"
  done
  go mod edit "-require=k8s.io/kubernetes@$K8S_VERSION"
}

build_k8s() {
  local name="$1"
  [[ -x "$BIN_DIR/$name" ]] && { say "$name $K8S_VERSION cached"; return; }
  k8s_module
  say "$name $K8S_VERSION: fetching modules"
  go get "k8s.io/kubernetes/cmd/$name@$K8S_VERSION" >&2 || fail "$name: go get"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  say "$name $K8S_VERSION: building (kube-apiserver 10-20 minutes on 2 cores the first time, the others less)"
  timed "$name" "${NICE[@]}" go build -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" "k8s.io/kubernetes/cmd/$name" >&2 \
    || fail "$name: go build"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
}

(($#)) || set -- etcd kube-apiserver kube-scheduler kube-controller-manager
for what in "$@"; do
  case "$what" in
    etcd) (build_etcd) ;;
    kube-*|kubelet|kubectl) (build_k8s "$what") ;;
    *) fail "unknown binary '$what'" ;;
  esac
done
echo "$BIN_DIR"
