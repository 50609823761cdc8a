# shellcheck shell=bash
# Sourced by hack/node.sh: the node's images, made here and loaded into containerd.
# Uses its variables (DIR, SOCK, NODE_BIN, ...) and hack/lib/common.sh.

# --- images --------------------------------------------------------------------

# pause: our static program in a FROM-scratch image; busybox: Debian's busybox-static.
build_base_images() {
  local work
  if ! docker_ image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    step "building $PAUSE_IMAGE (hack/node/pause.go, FROM scratch)"
    work="$(mktemp -d)"
    cp "$NODE_BIN/pause" "$work/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$work/Dockerfile"
    nice -n 19 env DOCKER_HOST="unix://$DOCKER_SOCK" docker build -q -t "$PAUSE_IMAGE" "$work" >/dev/null \
      || { rm -rf "$work"; die "docker build of $PAUSE_IMAGE failed"; }
    rm -rf "$work"
  fi
  if ! docker_ image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
    [[ -x /bin/busybox ]] && file_is_static /bin/busybox \
      || die "no static /bin/busybox (Debian's busybox-static): hack/setup.sh installs it"
    step "building $BUSYBOX_IMAGE (Debian's busybox-static)"
    work="$(mktemp -d)"
    mkdir -p "$work/root/bin" "$work/root/etc" "$work/root/tmp" "$work/root/root"
    cp /bin/busybox "$work/root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [[ "$applet" == busybox ]] || ln -s busybox "$work/root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/root/etc/group"
    chmod 1777 "$work/root/tmp"
    tar -C "$work/root" --owner=0 --group=0 -c . | docker_ import \
      --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null \
      || { rm -rf "$work"; die "docker import of $BUSYBOX_IMAGE failed"; }
    rm -rf "$work"
  fi
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# load IMAGE...: docker save | ctr import, skipped when containerd has the same image id.
load_images() {
  local image id have
  for image in "$@"; do
    id="$(docker_ image inspect -f '{{.Id}}' "$image" 2>/dev/null)" || die "image $image is not in the Docker engine"
    have="$(ctr images ls -q 2>/dev/null | grep -Fx -- "$(normalize "$image")" || true)"
    if [[ -n "$have" && "$(cat "$DIR/images/$(echo "$image" | tr '/:' '__')" 2>/dev/null)" == "$id" ]]; then
      say "image $image already in containerd"
      continue
    fi
    step "loading $image into containerd"
    docker_ save "$image" | ctr images import - >/dev/null 2>>"$DIR/ctr.log" || die "ctr images import of $image failed"
    mkdir -p "$DIR/images"
    echo "$id" >"$DIR/images/$(echo "$image" | tr '/:' '__')"
  done
}

# docker.io/library/ is what an image name without a registry means.
normalize() {
  local n="$1"
  [[ "$n" == */* ]] || n="library/$n"
  [[ "${n%%/*}" == *.* || "${n%%/*}" == *:* || "${n%%/*}" == localhost ]] || n="docker.io/$n"
  echo "$n"
}
