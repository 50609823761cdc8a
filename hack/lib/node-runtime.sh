# shellcheck shell=bash
# Sourced by hack/node.sh: the Docker engine and containerd, their configs and start-up. Uses its variables (DIR, SOCK, NODE_BIN, ...) and hack/lib/common.sh.

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
  local deadline=$((SECONDS + 60))
  until docker_ version >/dev/null 2>&1; do
    our_pid dockerd >/dev/null || { show_log dockerd; die "dockerd exited"; }
    ((SECONDS < deadline)) || { show_log dockerd; die "dockerd did not answer in 60s"; }
    sleep 0.5
  done
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
  local deadline=$((SECONDS + 60))
  until ctr version >/dev/null 2>&1; do
    our_pid containerd >/dev/null || { show_log containerd; die "containerd exited"; }
    ((SECONDS < deadline)) || { show_log containerd; die "containerd did not answer in 60s"; }
    sleep 0.3
  done
}
