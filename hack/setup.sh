#!/usr/bin/env bash
# Prepare a development/test machine (Debian bookworm, as root):
#   - Debian packages the tests need (CNI reference plugins, iproute2, ...)
#   - .venv at the repo root with the project installed editable, test extras
#   - etcd and kube-apiserver built from the Go module proxy (cached)
# Safe to run again: each step is skipped when already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.whereabouts-install-stamp"
APT_PACKAGES=(containernetworking-plugins iproute2 iputils-ping openssl procps curl time)

say() { echo "[setup] $*" >&2; }
STEP="start"
step() { STEP="$*"; say "$*"; }
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; if [[ $rc -ne 0 ]]; then say "FAILED at step: $STEP (exit $rc)"; fi' EXIT

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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
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
step "building/reusing etcd and kube-apiserver (hack/build-control-plane.sh)"
CACHE_ROOT="${WHEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whereabouts-testenv}"
mkdir -p "$CACHE_ROOT"
# Serialise builds started from here (setup.sh, cluster.sh) on one lock.
if command -v flock >/dev/null; then
  BIN_DIR="$(flock "$CACHE_ROOT/.build.lock" bash "$ROOT/hack/build-control-plane.sh")"
else
  BIN_DIR="$(bash "$ROOT/hack/build-control-plane.sh")"
fi
BIN_DIR="${BIN_DIR##*$'\n'}"
[[ -x "$BIN_DIR/etcd" && -x "$BIN_DIR/kube-apiserver" ]] || { STEP="locate control-plane binaries in '$BIN_DIR'"; exit 1; }

STEP="done"
cni_dir=""
for d in /usr/lib/cni /opt/cni/bin; do [[ -x "$d/bridge" ]] && { cni_dir="$d"; break; }; done
say "ready:"
say "  virtualenv      $VENV  (python: $VENV/bin/python)"
say "  etcd            $BIN_DIR/etcd"
say "  kube-apiserver  $BIN_DIR/kube-apiserver"
say "  CNI plugins     ${cni_dir:-not found}"
say "next: hack/cluster.sh up   |   hack/test.sh"
STEP="build the Go whereabouts plugin for tests/compat and bench/ (hack/build-go-whereabouts.sh)"; bash "$ROOT/hack/build-go-whereabouts.sh" >/dev/null
