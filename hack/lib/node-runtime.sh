# shellcheck shell=bash
# Sourced by hack/node.sh: the Docker engine and containerd, their configs and start-up.
# Uses its variables (DIR, SOCK, NODE_BIN, ...) and hack/lib/common.sh.

# await_daemon NAME PAUSE CMD...: poll CMD every PAUSE seconds until it answers; NAME exiting, or
# 60 s without an answer, is fatal (with NAME's log).
await_daemon() {
  local name="$1" pause="$2" deadline=$((SECONDS + 60)); shift 2
  until "$@" >/dev/null 2>&1; do
    our_pid "$name" >/dev/null || { show_log "$name"; die "$name exited"; }
    ((SECONDS < deadline)) || { show_log "$name"; die "$name did not answer in 60s"; }
    sleep "$pause"
  done
}

# --- Docker engine ---------------------------------------------------------------

# Docker's own networking stays off: no docker0, no iptables rules (so no FORWARD
# policy DROP from this engine; one of a user's may still set it, see the CNI
# config). Builds use the host's network (docker build --network=host).
start_dockerd() {
  if our_pid dockerd >/dev/null && docker_ version >/dev/null 2>&1; then
    say "dockerd running (DOCKER_HOST=unix://$DOCKER_SOCK)"
    return 0
  fi
  step "starting dockerd (data in $CACHE_ROOT/docker, socket $DOCKER_SOCK)"
  mkdir -p "$CACHE_ROOT/docker" "$DIR/docker-exec"
  launch dockerd "$(command -v dockerd)" \
    --host="unix://$DOCKER_SOCK" \
    --data-root="$CACHE_ROOT/docker" \
    --exec-root="$DIR/docker-exec" \
    --pidfile="$DIR/docker-exec/dockerd.pid" \
    --storage-driver=overlay2 \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    --userland-proxy=false \
    --log-level=warn
  await_daemon dockerd 0.5 docker_ version
}

# --- containerd ----------------------------------------------------------------

write_containerd_config() {
  mkdir -p "$DIR/net.d" "$DIR/cni-bin"
  ln -sfn "$NODE_BIN/multus" "$DIR/cni-bin/multus"
  cat >"$DIR/containerd.toml" <<EOF
# Written by hack/node.sh.
version = 3
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # root here lacks CAP_SYS_RESOURCE: never ask runc for an oom_score_adj below ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin", "/usr/lib/cni", "$DIR/cni-bin"]
    conf_dir = "$DIR/net.d"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        SystemdCgroup = false
EOF
}

start_containerd() {
  if our_pid containerd >/dev/null && ctr version >/dev/null 2>&1; then
    say "containerd running ($SOCK)"
    return 0
  fi
  write_containerd_config
  step "starting containerd $("$NODE_BIN/containerd" --version | awk '{print $3}') ($SOCK)"
  launch containerd env PATH="$NODE_BIN:$PATH" "$NODE_BIN/containerd" --config "$DIR/containerd.toml"
  await_daemon containerd 0.3 ctr version
}
