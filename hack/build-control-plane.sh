#!/usr/bin/env bash
# Build etcd and kube-apiserver from the Go module proxy into a cache outside
# the repo, reusing them when present. Prints the two binary paths' directory.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
CACHE_ROOT="${WHEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whereabouts-testenv}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

say() { echo "[build-control-plane] $*" >&2; }
fail() { say "FAILED at step: $*"; exit 1; }

command -v go >/dev/null || fail "find go (install Go 1.25 or newer)"
mkdir -p "$BIN_DIR"

# A scratch module per binary: each one only requires the upstream module, so
# the upstream go.mod's local replace lines do not apply.
build_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] && { say "etcd $ETCD_VERSION cached"; return; }
  local mod="$CACHE_ROOT/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"; cd "$mod"
  [[ -f go.mod ]] || go mod init testenv-etcd >/dev/null 2>&1 || fail "etcd: go mod init"
  say "etcd $ETCD_VERSION: fetching modules"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 || fail "etcd: go get go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  say "etcd $ETCD_VERSION: building (a few minutes on 2 cores)"
  go build -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3 >&2 || fail "etcd: go build"
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

build_apiserver() {
  [[ -x "$BIN_DIR/kube-apiserver" ]] && { say "kube-apiserver $K8S_VERSION cached"; return; }
  local mod="$CACHE_ROOT/src/kubernetes-$K8S_VERSION"
  local staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod"; cd "$mod"
  [[ -f go.mod ]] || go mod init testenv-k8s >/dev/null 2>&1 || fail "kube-apiserver: go mod init"
  say "kube-apiserver $K8S_VERSION: reading its go.mod"
  local upstream
  upstream="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')" \
    || fail "kube-apiserver: go mod download k8s.io/kubernetes@$K8S_VERSION"
  # Every staging replace (k8s.io/x => ./staging/src/k8s.io/x) becomes the
  # published module at the matching v0 version.
  local name
  for name in $(sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$upstream"); do
    go mod edit "-replace=$name=$name@$staging"
  done
  go mod edit "-require=k8s.io/kubernetes@$K8S_VERSION"
  say "kube-apiserver $K8S_VERSION: fetching modules"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2 || fail "kube-apiserver: go get"
  say "kube-apiserver $K8S_VERSION: building (10-20 minutes on 2 cores the first time)"
  go build -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2 || fail "kube-apiserver: go build"
  mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
}

(build_etcd)
(build_apiserver)
echo "$BIN_DIR"
