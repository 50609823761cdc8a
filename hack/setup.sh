#!/usr/bin/env bash
# Prepare a development/test machine (Debian bookworm, as root):
#   - Debian packages the tests need (CNI reference plugins, iproute2, ...)
#   - .venv at the repo root with the project installed editable, test extras
#   - etcd, kube-apiserver, kube-scheduler and kube-controller-manager built
#     from the Go module proxy (cached)
#   - for the real node (hack/node.sh, tests/node): kubelet, containerd v2 with
#     its runc shim, crictl and Multus built the same way (hack/build-node.sh),
#     and from Debian runc, the Docker engine, debootstrap and busybox-static.
#     WHEREABOUTS_NO_NODE=1 skips the node's part.
# Safe to run again: each step is skipped when already done.
set -euo pipefail

LOG_TAG="setup"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
VENV="$ROOT/.venv"
STAMP="$VENV/.whereabouts-install-stamp"
APT_PACKAGES=(containernetworking-plugins iproute2 iputils-ping openssl procps curl time iptables util-linux)
NODE=1
[[ "${WHEREABOUTS_NO_NODE:-}" == "1" ]] && NODE=0
# The node: runc for containerd, the Docker engine for image builds, debootstrap
# for the base images, a static busybox for the test pods' image.
((NODE)) && APT_PACKAGES+=(runc docker.io debootstrap busybox-static)

# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap report_failure EXIT

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root (or sudo) to run: $*"; return 1
  fi
}

# --- 1. Debian packages ------------------------------------------------------
step "checking Debian packages"
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${APT_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  # python3 -m venv needs ensurepip, which Debian ships in python3-venv.
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3 python3-venv)
  fi
  if ((${#missing[@]})); then
    step "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    step "apt-get install ${missing[*]}"
    # Installing docker.io must not start a system Docker engine (hack/node.sh
    # runs its own): where no policy-rc.d says so, say it for this install.
    policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    [[ -z "$policy" ]] || as_root rm -f "$policy"
  else
    say "Debian packages present: ${APT_PACKAGES[*]}"
  fi
else
  say "no dpkg here: skipping Debian packages (need: ${APT_PACKAGES[*]})"
fi

# --- 2. Python virtualenv -----------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  step "creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  rm -f "$STAMP"
else
  say "virtualenv present: $VENV"
fi

want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
  step "pip install -e '.[test,bench,build]' into $VENV"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[test,bench,build]') >&2
  echo "$want" >"$STAMP"
else
  say "python packages up to date (setup.cfg/pyproject.toml unchanged)"
fi

# --- 3. Control-plane binaries -----------------------------------------------
step "building/reusing the control plane's binaries (hack/build-control-plane.sh)"
mkdir -p "$CACHE_ROOT"
# Serialise builds started from here (setup.sh, cluster.sh) on one lock.
if command -v flock >/dev/null; then
  BIN_DIR="$(flock "$CACHE_ROOT/.build.lock" bash "$ROOT/hack/build-control-plane.sh")"
else
  BIN_DIR="$(bash "$ROOT/hack/build-control-plane.sh")"
fi
BIN_DIR="${BIN_DIR##*$'\n'}"
for b in etcd kube-apiserver kube-scheduler kube-controller-manager; do
  [[ -x "$BIN_DIR/$b" ]] || { STEP="locate $b in '$BIN_DIR'"; exit 1; }
done

NODE_BIN=""
if ((NODE)); then
  step "building/reusing the node's binaries (hack/build-node.sh)"
  NODE_BIN="$(flock "$CACHE_ROOT/.build.lock" bash "$ROOT/hack/build-node.sh")"
  NODE_BIN="${NODE_BIN##*$'\n'}"
fi

STEP="done"
cni_dir=""
for d in /usr/lib/cni /opt/cni/bin; do [[ -x "$d/bridge" ]] && { cni_dir="$d"; break; }; done
say "ready:"
say "  virtualenv      $VENV  (python: $VENV/bin/python)"
say "  etcd            $BIN_DIR/etcd"
say "  kube-apiserver  $BIN_DIR/kube-apiserver (and kube-scheduler, kube-controller-manager, kubelet)"
[[ -z "$NODE_BIN" ]] || say "  node            $NODE_BIN (containerd, containerd-shim-runc-v2, ctr, crictl, multus, pause)"
say "  CNI plugins     ${cni_dir:-not found}"
say "next: hack/cluster.sh up   |   hack/test.sh"
STEP="build the Go whereabouts plugin for tests/compat and bench/ (hack/build-go-whereabouts.sh)"; bash "$ROOT/hack/build-go-whereabouts.sh" >/dev/null
