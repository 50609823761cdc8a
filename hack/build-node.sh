#!/usr/bin/env bash
# Build what a real node needs, from the Go module proxy, into caches outside
# the repo, reusing whatever is already built:
#   kubelet, kubectl                                  k8s.io/kubernetes (hack/build-control-plane.sh kubelet kubectl,
#                                                     with the control plane's binaries)
#   containerd, containerd-shim-runc-v2               github.com/containerd/containerd/v2 $CONTAINERD_VERSION
#   multus (the thin CNI plugin)                      gopkg.in/k8snetworkplumbingwg/multus-cni.v4 $MULTUS_VERSION
#   crictl (to stop and remove pod sandboxes on down) sigs.k8s.io/cri-tools $CRICTL_VERSION
#   pause                                             a tiny static program of ours (hack/node/pause.go)
# runc and the Docker engine come from Debian (hack/setup.sh --node).
#
#   hack/build-node.sh          build or reuse all; prints two lines: the directory
#                               of kubelet, then the directory of the others
#
# Each build's wall time is appended to $CACHE_ROOT/build-times.log.
set -euo pipefail

LOG_TAG="build-node"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
MULTUS_VERSION="${MULTUS_VERSION:-v4.2.3}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
BIN_DIR="$CACHE_ROOT/node-containerd-$CONTAINERD_VERSION-multus-$MULTUS_VERSION-crictl-$CRICTL_VERSION"

# shellcheck source=hack/lib/go-build.sh
source "$ROOT/hack/lib/go-build.sh"
mkdir -p "$BIN_DIR"

build_containerd() {
  if [[ -x "$BIN_DIR/containerd" && -x "$BIN_DIR/containerd-shim-runc-v2" && -x "$BIN_DIR/ctr" ]]; then
    say "containerd $CONTAINERD_VERSION cached"; return
  fi
  local mod="$CACHE_ROOT/src/containerd-$CONTAINERD_VERSION" pkg="github.com/containerd/containerd/v2"
  scratch_module containerd "$mod"
  say "containerd $CONTAINERD_VERSION: fetching modules"
  # The package paths, not the module alone: that leaves go.sum short.
  go get "$pkg/cmd/containerd@$CONTAINERD_VERSION" "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$pkg/cmd/ctr@$CONTAINERD_VERSION" >&2 || fail "containerd: go get"
  local ldflags="-X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
  local tags="no_btrfs no_devmapper no_zfs"
  say "containerd $CONTAINERD_VERSION: building containerd, containerd-shim-runc-v2, ctr"
  timed containerd "${NICE[@]}" go build -tags "$tags" -ldflags "$ldflags" -o "$BIN_DIR/containerd.tmp" "$pkg/cmd/containerd" >&2 \
    || fail "containerd: go build"
  timed containerd-shim-runc-v2 env CGO_ENABLED=0 "${NICE[@]}" go build -tags "$tags" -ldflags "$ldflags" \
    -o "$BIN_DIR/containerd-shim-runc-v2.tmp" "$pkg/cmd/containerd-shim-runc-v2" >&2 || fail "containerd-shim-runc-v2: go build"
  timed ctr "${NICE[@]}" go build -tags "$tags" -ldflags "$ldflags" -o "$BIN_DIR/ctr.tmp" "$pkg/cmd/ctr" >&2 \
    || fail "ctr: go build"
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"; done
}

build_multus() {
  [[ -x "$BIN_DIR/multus" ]] && { say "multus $MULTUS_VERSION cached"; return; }
  local mod="$CACHE_ROOT/src/multus-$MULTUS_VERSION" pkg="gopkg.in/k8snetworkplumbingwg/multus-cni.v4"
  scratch_module multus "$mod"
  say "multus $MULTUS_VERSION: fetching modules (an exact version: listing them is refused)"
  go get "$pkg/cmd/multus@$MULTUS_VERSION" >&2 || fail "multus: go get"
  say "multus $MULTUS_VERSION: building the thin plugin"
  timed multus "${NICE[@]}" go build -ldflags "-X $pkg/pkg/multus.version=$MULTUS_VERSION" \
    -o "$BIN_DIR/multus.tmp" "$pkg/cmd/multus" >&2 || fail "multus: go build"
  mv "$BIN_DIR/multus.tmp" "$BIN_DIR/multus"
}

build_crictl() {
  [[ -x "$BIN_DIR/crictl" ]] && { say "crictl $CRICTL_VERSION cached"; return; }
  local mod="$CACHE_ROOT/src/cri-tools-$CRICTL_VERSION" pkg="sigs.k8s.io/cri-tools"
  scratch_module crictl "$mod"
  say "crictl $CRICTL_VERSION: fetching modules"
  go get "$pkg/cmd/crictl@$CRICTL_VERSION" >&2 || fail "crictl: go get"
  say "crictl $CRICTL_VERSION: building"
  timed crictl env CGO_ENABLED=0 "${NICE[@]}" go build -ldflags "-X $pkg/pkg/version.Version=$CRICTL_VERSION" \
    -o "$BIN_DIR/crictl.tmp" "$pkg/cmd/crictl" >&2 || fail "crictl: go build"
  mv "$BIN_DIR/crictl.tmp" "$BIN_DIR/crictl"
}

build_pause() {
  local src="$ROOT/hack/node/pause.go" sum
  sum="$(sha256sum "$src" | cut -c1-12)"
  [[ -x "$BIN_DIR/pause-$sum" ]] && { say "pause ($sum) cached"; return; }
  local tmp; tmp="$(mktemp -d)"
  cp "$src" "$tmp/main.go"
  (cd "$tmp" && go mod init pause >/dev/null 2>&1 \
    && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/pause-$sum" .) >&2 || { rm -rf "$tmp"; fail "pause: go build"; }
  rm -rf "$tmp"
  ln -sfn "pause-$sum" "$BIN_DIR/pause"
}

(build_pause)
(build_containerd)
(build_multus)
(build_crictl)
K8S_DIR="$(bash "$ROOT/hack/build-control-plane.sh" kubelet kubectl)"
K8S_DIR="${K8S_DIR##*$'\n'}"
echo "$K8S_DIR"
echo "$BIN_DIR"
