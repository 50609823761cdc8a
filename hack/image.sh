#!/usr/bin/env bash
# Build the project's image from the Dockerfile, for real, on a machine that
# reaches no container registry:
#   1. the base images are made here: `debootstrap --variant=minbase bookworm`
#      from the Debian mirror that apt uses, then `docker import`; the build
#      image also gets Python 3.11, pip, venv, libpython and binutils;
#   2. `docker build --network=host` of the Dockerfile, with those images passed
#      as BUILD_IMAGE and RUNTIME_IMAGE (a user with a registry passes nothing
#      and gets the Dockerfile's defaults);
#   3. a check that the image's plugin answers VERSION.
#
#   hack/image.sh [TAG]      default TAG: whereabouts:<version of the package>
#
# The Docker engine is hack/node.sh's (`hack/node.sh dockerd` starts only it;
# `hack/node.sh down` stops it). The rootfs tarballs are cached in
# $CACHE_ROOT/images, and Docker keeps its layer cache, so a second run only
# rebuilds what changed.
#
# TLS: behind a TLS-intercepting proxy, pip inside the build must trust the
# proxy's CA as the host does. The host's CA bundle (SSL_CERT_FILE, else
# /etc/ssl/certs/ca-certificates.crt) is put into the base images as their
# system bundle, where Debian's pip and Python's ssl read it. Verification is
# never turned off. apt settings the host needs to use its mirror
# (Acquire::Check-Valid-Until for a snapshot mirror) are copied the same way.
#
# Prints the tag on stdout.
set -euo pipefail

LOG_TAG="image"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
IMAGES="$CACHE_ROOT/images"
SUITE=bookworm
BUILD_BASE="localhost/whereabouts-base/$SUITE-python:1"
RUNTIME_BASE="localhost/whereabouts-base/$SUITE:1"
BUILD_PACKAGES="python3,python3-venv,python3-pip,python-is-python3,libpython3.11,binutils,ca-certificates"
RUNTIME_PACKAGES="ca-certificates"

WORK=""
# shellcheck disable=SC2154,SC2317  # rc is assigned inside the trap; called by the trap
on_exit() {
  local rc=$?
  [[ -n "$WORK" ]] && rm -rf "$WORK"
  report_failure "$rc"
}
trap on_exit EXIT

[[ $EUID -eq 0 ]] || { say "needs root (debootstrap, the Docker engine)"; exit 1; }
VERSION="$(sed -n 's/^version *= *//p' "$ROOT/setup.cfg" | head -n1)"
if [[ -z "$VERSION" ]]; then
  VERSION="$(cd "$ROOT" && python3 -c 'import whereabouts; print(whereabouts.__version__)')"
fi
TAG="${1:-whereabouts:$VERSION}"
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
[[ -f "$CA_BUNDLE" ]] || CA_BUNDLE=""
NICE=(nice -n 19)

step "starting or reusing the Docker engine (hack/node.sh dockerd)"
eval "$(bash "$ROOT/hack/node.sh" dockerd)"
export DOCKER_HOST

command -v debootstrap >/dev/null || { STEP="find debootstrap (hack/setup.sh installs it)"; exit 1; }
MIRROR="${DEBIAN_MIRROR:-}"
if [[ -z "$MIRROR" ]]; then
  MIRROR="$(sed -n 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
  [[ -n "$MIRROR" ]] || MIRROR="$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$MIRROR" ]] || MIRROR="http://deb.debian.org/debian"
fi

# base_image NAME PACKAGES: debootstrap (cached as a tarball keyed by the
# package list and the CA bundle), then docker import.
base_image() {
  local name="$1" packages="$2" key tarball
  key="$(printf '%s\n%s\n%s\n' "$SUITE" "$packages" "$MIRROR" | cat - ${CA_BUNDLE:+"$CA_BUNDLE"} | sha256sum | cut -c1-16)"
  tarball="$IMAGES/$SUITE-$key.tar"
  if docker image inspect "$name" >/dev/null 2>&1 \
     && [[ "$(docker image inspect -f '{{index .Config.Labels "whereabouts.rootfs"}}' "$name")" == "$key" ]]; then
    say "$name present (rootfs $key)"
    return 0
  fi
  if [[ ! -f "$tarball" ]]; then
    WORK="$(mktemp -d -p "${TMPDIR:-/tmp}" image.XXXXXX)"
    step "debootstrap --variant=minbase $SUITE from $MIRROR (+ $packages)"
    "${NICE[@]}" debootstrap --variant=minbase --include="$packages" "$SUITE" "$WORK/root" "$MIRROR" \
      >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; return 1; }
    if [[ -n "$CA_BUNDLE" ]]; then
      step "trusting the host's CA bundle ($CA_BUNDLE) in the rootfs"
      install -m 0644 "$CA_BUNDLE" "$WORK/root/etc/ssl/certs/ca-certificates.crt"
    fi
    local conf
    for conf in /etc/apt/apt.conf.d/*; do
      [[ -f "$conf" ]] && grep -q 'Check-Valid-Until' "$conf" && cp "$conf" "$WORK/root/etc/apt/apt.conf.d/"
    done
    rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/lib/apt/lists/"*
    mkdir -p "$IMAGES"
    tar -C "$WORK/root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$WORK"; WORK=""
  fi
  step "docker import $name"
  docker import --change "LABEL whereabouts.rootfs=$key" --change 'CMD ["bash"]' "$tarball" "$name" >/dev/null
}

base_image "$BUILD_BASE" "$BUILD_PACKAGES"
base_image "$RUNTIME_BASE" "$RUNTIME_PACKAGES"

step "docker build -t $TAG (BUILD_IMAGE=$BUILD_BASE RUNTIME_IMAGE=$RUNTIME_BASE)"
start=$SECONDS
"${NICE[@]}" docker build --network=host \
  --build-arg "BUILD_IMAGE=$BUILD_BASE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE" \
  -t "$TAG" "$ROOT" >&2
say "docker build took $((SECONDS - start))s"

step "checking that the image's plugin answers VERSION"
out="$(echo '{"cniVersion":"1.0.0"}' | docker run --rm -i --net=none -e CNI_COMMAND=VERSION \
  --entrypoint /opt/whereabouts/bin/whereabouts "$TAG")"
[[ "$out" == *supportedVersions* ]] || { STEP="check VERSION (got: $out)"; exit 1; }
say "VERSION: $out"
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
STEP="done"
echo "$TAG"
