#!/usr/bin/env bash
# A real single Kubernetes node on this machine, registered with the control
# plane of hack/cluster.sh: containerd v2 (with Debian's runc) and a kubelet,
# Multus as the node's CNI with a bridge cluster network, and a Docker engine
# for building images. No registry is needed: the images the node uses are
# made here and loaded into containerd.
#
#   hack/node.sh up        start (or reuse) the control plane, dockerd, containerd and
#                          the kubelet; load the pause, busybox and project images; wait
#                          until the node is Ready; print shell exports on stdout
#   hack/node.sh down      stop what `up` started; remove its pods, interfaces, mounts,
#                          iptables chains, cgroups, files and the Node object
#   hack/node.sh status    "running ..." (exit 0) or "stopped" (exit 1)
#   hack/node.sh env       print the shell exports (DOCKER_HOST, CONTAINERD_ADDRESS, ...)
#   hack/node.sh dockerd   start only the Docker engine (hack/image.sh uses it)
#   hack/node.sh load IMAGE...   copy images from the Docker engine into containerd
#   hack/node.sh stop kubelet|containerd     stop one daemon (tests of a node whose kubelet is down)
#   hack/node.sh start kubelet|containerd    start it again (the kubelet: until the node is Ready)
#
# State lives in .node/ at the repo root (WHEREABOUTS_NODE_DIR overrides):
# pid files, logs, the containerd and kubelet roots, configs and sockets.
# Docker's images are kept between runs in $CACHE_ROOT/docker (its layer cache).
# The node name is the machine's hostname (the API server must resolve it to
# reach the kubelet). WHEREABOUTS_NODE_TAINTS (e.g. "whereabouts.test/node=:NoSchedule")
# registers the node with taints, so only pods that tolerate them land on it.
#
# The node's CNI: Multus (the thin plugin) reads NetworkAttachmentDefinitions;
# its cluster network is a bridge (wbnode0, 10.88.0.0/16, host-local) chained
# with the `firewall` plugin, which accepts each pod's traffic in FORWARD: with
# a Docker engine's FORWARD policy DROP and br_netfilter, pods on one bridge
# would otherwise not reach each other. CNI plugins are looked up in
# /opt/cni/bin (where the whereabouts DaemonSet installs the plugin),
# /usr/lib/cni (Debian's containernetworking-plugins) and our Multus.
set -euo pipefail

LOG_TAG="node"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
DIR="$(realpath -m "${WHEREABOUTS_NODE_DIR:-$ROOT/.node}")"
MARKER="$DIR/.whereabouts-node"
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
SOCK="$DIR/containerd.sock"
DOCKER_SOCK="$DIR/docker.sock"
BRIDGE="wbnode0"
POD_CIDR="10.88.0.0/16"
PAUSE_IMAGE="localhost/whereabouts-node/pause:1"
BUSYBOX_IMAGE="localhost/whereabouts-node/busybox:1.35"
READY_TIMEOUT="${WHEREABOUTS_NODE_READY_TIMEOUT:-180}"

trap report_failure EXIT
# shellcheck source=lib/daemons.sh
source "$ROOT/hack/lib/daemons.sh"

[[ $EUID -eq 0 ]] || { STEP="-"; die "hack/node.sh needs root (containers, mounts, network namespaces)"; }

# --- helpers -----------------------------------------------------------------

lock_dir() {
  mkdir -p "$DIR"
  exec 9<"$DIR"
  flock -w 600 9 || die "another hack/node.sh holds the lock on $DIR"
}


# stop_proc NAME [SECONDS]: TERM, wait, then KILL.
stop_proc() {
  local name="$1" wait="${2:-30}" pid
  pid="$(our_pid "$name")" || { rm -f "$DIR/$name.pid"; return 0; }
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((wait * 10))); do
    our_pid "$name" >/dev/null || break
    sleep 0.1
  done
  if our_pid "$name" >/dev/null; then
    say "$name (pid $pid) ignored SIGTERM for ${wait}s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  our_pid "$name" >/dev/null && die "$name (pid $pid) is still running"
  rm -f "$DIR/$name.pid"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cluster_env() {
  local exports
  exports="$(bash "$ROOT/hack/cluster.sh" ${1:-up} 9<&-)" || die "hack/cluster.sh ${1:-up} failed"
  eval "$exports"
}

api() { # METHOD PATH [BODY]: the control plane as the admin
  curl -sS --fail-with-body --max-time 30 --cacert "$WHEREABOUTS_CA_FILE" \
    -H "Authorization: Bearer $WHEREABOUTS_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -X "$1" "$WHEREABOUTS_APISERVER$2" ${3:+--data-binary "$3"}
}

node_ready() {
  api GET "/api/v1/nodes/$NODE_NAME" 2>/dev/null | python3 -c '
import json, sys
status = json.load(sys.stdin).get("status")
conds = status.get("conditions", []) if isinstance(status, dict) else []
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conds) else 1)'
}

crictl() { "$NODE_BIN/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s "$@"; }
ctr() { "$NODE_BIN/ctr" --address "$SOCK" --namespace k8s.io "$@"; }
docker_() { DOCKER_HOST="unix://$DOCKER_SOCK" docker "$@"; }

find_binaries() {
  step "building or reusing the node's binaries (hack/build-node.sh)"
  local out
  mkdir -p "$CACHE_ROOT"
  out="$(flock "$CACHE_ROOT/.build.lock" bash "$ROOT/hack/build-node.sh" 9<&-)" || die "hack/build-node.sh failed"
  K8S_BIN="$(tail -n2 <<<"$out" | head -n1)"
  NODE_BIN="$(tail -n1 <<<"$out")"
  [[ -x "$K8S_BIN/kubelet" && -x "$K8S_BIN/kubectl" ]] || die "kubelet or kubectl not found in '$K8S_BIN'"
  local b
  for b in containerd containerd-shim-runc-v2 ctr crictl multus pause; do
    [[ -x "$NODE_BIN/$b" ]] || die "$b not found in '$NODE_BIN'"
  done
  RUNC="$(command -v runc || true)"
  [[ -n "$RUNC" ]] || die "runc is missing: hack/setup.sh installs it (Debian's runc)"
  command -v dockerd >/dev/null || die "dockerd is missing: hack/setup.sh installs it (Debian's docker.io)"
  printf 'K8S_BIN=%q\nNODE_BIN=%q\nRUNC=%q\n' "$K8S_BIN" "$NODE_BIN" "$RUNC" >"$DIR/bins"
}

load_bins() {
  # shellcheck disable=SC1091
  [[ -f "$DIR/bins" ]] && source "$DIR/bins"
  NODE_BIN="${NODE_BIN:-}"
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

# --- CNI -----------------------------------------------------------------------

write_cni_config() {
  mkdir -p "$DIR/net.d" "$DIR/multus-cache" "$DIR/host-local"
  (umask 077; cp -f "$WHEREABOUTS_KUBECONFIG" "$DIR/multus.kubeconfig")
  cat >"$DIR/net.d/00-multus.conf.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "multus-cni-network",
  "type": "multus",
  "kubeconfig": "$DIR/multus.kubeconfig",
  "cniDir": "$DIR/multus-cache",
  "binDir": "/opt/cni/bin",
  "logFile": "$DIR/multus.log",
  "logLevel": "verbose",
  "delegates": [{
    "cniVersion": "1.0.0",
    "name": "wbnode",
    "plugins": [
      {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
       "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "dataDir": "$DIR/host-local"}},
      {"type": "firewall", "backend": "iptables"}
    ]
  }]
}
EOF
  mv -f "$DIR/net.d/00-multus.conf.tmp" "$DIR/net.d/00-multus.conf"
}

# Which node paths existed before up: down removes only what appeared since
# (the DaemonSet's plugin and flat file, the hostPath directories it created).
# /opt/containerd: the Docker engine's own containerd makes it (its "opt" plugin).
NODE_PATHS=(/opt/cni/bin/whereabouts /opt/cni/bin/.whereabouts /etc/cni/net.d/whereabouts.d /opt/cni/bin /opt/cni
            /etc/cni/net.d /etc/cni /opt/containerd/bin /opt/containerd/lib /opt/containerd)
record_node_paths() {
  [[ -f "$DIR/preexisting" ]] && return 0
  local p
  for p in "${NODE_PATHS[@]}"; do
    if [[ -e "$p" || -L "$p" ]]; then echo "$p"; fi
  done >"$DIR/preexisting"
  if iptables -w -S CNI-FORWARD >/dev/null 2>&1; then echo "iptables:CNI-FORWARD" >>"$DIR/preexisting"; fi
}

# --- kubelet -------------------------------------------------------------------

write_kubelet_config() {
  local port
  port="$(free_port)"
  mkdir -p "$DIR/kubelet"
  cat >"$DIR/kubelet.yaml" <<EOF
# Written by hack/node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Loopback only; the API server reaches it by the node name ($NODE_NAME), which resolves here.
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzPort: 0
# A one-machine test node: the API server has no client certificate for the kubelet.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
# cgroup v1 with cgroupfs here.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# A small, shared disk: evict only when it is nearly full; never collect our images.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusReportFrequency: 10s
serializeImagePulls: false
resolvConf: /etc/resolv.conf
maxPods: 110
EOF
}

start_kubelet() {
  if our_pid kubelet >/dev/null; then
    if cmp -s "$WHEREABOUTS_KUBECONFIG" "$DIR/kubelet.kubeconfig"; then say "kubelet running"; return 0; fi
    # The control plane was started anew (another port, token and etcd): register again.
    say "the control plane changed since the kubelet started: restarting it"
    stop_proc kubelet
  fi
  [[ -f "$DIR/kubelet.yaml" ]] || write_kubelet_config
  (umask 077; cp -f "$WHEREABOUTS_KUBECONFIG" "$DIR/kubelet.kubeconfig")
  step "starting kubelet $("$K8S_BIN/kubelet" --version | awk '{print $2}') as node $NODE_NAME"
  local taints=()
  [[ -n "${WHEREABOUTS_NODE_TAINTS:-}" ]] && taints=(--register-with-taints="$WHEREABOUTS_NODE_TAINTS")
  launch kubelet "$K8S_BIN/kubelet" \
    --config="$DIR/kubelet.yaml" \
    --kubeconfig="$DIR/kubelet.kubeconfig" \
    --root-dir="$DIR/kubelet" \
    --cert-dir="$DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" \
    --node-labels="whereabouts.test/node=true" \
    "${taints[@]}" \
    --v=1
}

wait_node_ready() {
  step "waiting up to ${READY_TIMEOUT}s for node $NODE_NAME to be Ready"
  local deadline=$((SECONDS + READY_TIMEOUT))
  until node_ready; do
    our_pid kubelet >/dev/null || { show_log kubelet 40; die "kubelet exited"; }
    our_pid containerd >/dev/null || { show_log containerd 40; die "containerd exited"; }
    ((SECONDS < deadline)) || { show_log kubelet 40; die "node $NODE_NAME not Ready after ${READY_TIMEOUT}s"; }
    sleep 1
  done
}

apply_nad_crd() {
  step "applying the NetworkAttachmentDefinition CRD"
  local py="$ROOT/.venv/bin/python"
  [[ -x "$py" ]] || py=python3
  "$py" - "$ROOT/tests/e2e/fixtures/network-attachment-definition-crd.yaml" <<'EOF' | api POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$(cat)" >/dev/null 2>&1 || true
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
EOF
  local deadline=$((SECONDS + 60))
  until api GET /apis/k8s.cni.cncf.io/v1/network-attachment-definitions >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "the NetworkAttachmentDefinition CRD is not served after 60s"
    sleep 0.5
  done
}

write_env() {
  {
    printf 'export WHEREABOUTS_NODE_DIR=%q\n' "$DIR"
    printf 'export WHEREABOUTS_NODE_NAME=%q\n' "$NODE_NAME"
    printf 'export DOCKER_HOST=%q\n' "unix://$DOCKER_SOCK"
    printf 'export CONTAINERD_ADDRESS=%q\n' "$SOCK"
    printf 'export CONTAINER_RUNTIME_ENDPOINT=%q\n' "unix://$SOCK"
    printf 'export WHEREABOUTS_NODE_BIN=%q\n' "$NODE_BIN"
    printf 'export WHEREABOUTS_KUBECTL=%q\n' "$K8S_BIN/kubectl"
    printf 'export WHEREABOUTS_PAUSE_IMAGE=%q\n' "$PAUSE_IMAGE"
    printf 'export WHEREABOUTS_BUSYBOX_IMAGE=%q\n' "$BUSYBOX_IMAGE"
  } >"$DIR/env"
}

# --- commands ------------------------------------------------------------------

prepare() {
  lock_dir
  if [[ -e "$DIR" && ! -f "$MARKER" && -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty and was not made by hack/node.sh: refusing to use it"
  fi
  touch "$MARKER"
  record_node_paths
  find_binaries
}

cmd_dockerd() {
  prepare
  start_dockerd
  write_env
  STEP="-"
  cat "$DIR/env"
}

cmd_up() {
  step "hack/cluster.sh up"
  cluster_env up
  prepare
  start_dockerd
  build_base_images
  start_containerd
  local images=("$PAUSE_IMAGE" "$BUSYBOX_IMAGE") extra
  for extra in ${WHEREABOUTS_NODE_IMAGES:-}; do images+=("$extra"); done
  load_images "${images[@]}"
  ctr images label "$(normalize "$PAUSE_IMAGE")" io.cri-containerd.pinned=pinned >/dev/null 2>&1 || true
  write_cni_config
  apply_nad_crd
  start_kubelet
  wait_node_ready
  write_env
  STEP="-"
  say "node $NODE_NAME Ready"
  say "  kubelet, containerd, dockerd logs   $DIR/*.log (Multus: $DIR/multus.log)"
  say "  images                              $PAUSE_IMAGE $BUSYBOX_IMAGE ${WHEREABOUTS_NODE_IMAGES:-}"
  say "  next: hack/image.sh && hack/node.sh load whereabouts:<version>, then apply doc/install/"
  cat "$DIR/env"
}

cmd_load() {
  (($#)) || die "usage: hack/node.sh load IMAGE..."
  lock_dir
  load_bins
  [[ -n "$NODE_BIN" ]] && our_pid containerd >/dev/null || die "containerd is not running: hack/node.sh up"
  load_images "$@"
  STEP="-"
}

cmd_stop() {
  [[ "${1:-}" == kubelet || "${1:-}" == containerd ]] || die "usage: hack/node.sh stop kubelet|containerd"
  lock_dir
  stop_proc "$1"
  STEP="-"
}

cmd_start() {
  [[ "${1:-}" == kubelet || "${1:-}" == containerd ]] || die "usage: hack/node.sh start kubelet|containerd"
  lock_dir
  load_bins
  [[ -n "$NODE_BIN" ]] || die "no node in $DIR: run hack/node.sh up"
  if [[ "$1" == containerd ]]; then
    start_containerd
  else
    cluster_env env
    start_kubelet
    wait_node_ready
  fi
  STEP="-"
}

# Everything below is best effort but reported: down goes on after a failure
# and exits non-zero if something of ours is left.
remove_pods() {
  our_pid containerd >/dev/null || return 0
  local ids id
  ids="$(crictl pods -q 2>/dev/null || true)"
  for id in $ids; do
    timeout 90 "$NODE_BIN/crictl" --runtime-endpoint "unix://$SOCK" --timeout 60s stopp "$id" >/dev/null 2>&1 \
      || say "could not stop pod sandbox $id cleanly"
    timeout 60 "$NODE_BIN/crictl" --runtime-endpoint "unix://$SOCK" --timeout 30s rmp -f "$id" >/dev/null 2>&1 \
      || say "could not remove pod sandbox $id"
  done
  [[ -z "$ids" ]] || say "removed $(wc -w <<<"$ids") pod sandbox(es)"
  # Whatever the CRI left: kill and delete the tasks and containers.
  local t
  for t in $(ctr tasks ls -q 2>/dev/null || true); do
    ctr tasks kill -s KILL "$t" >/dev/null 2>&1 || true
    ctr tasks delete -f "$t" >/dev/null 2>&1 || true
  done
  for t in $(ctr containers ls -q 2>/dev/null || true); do
    ctr containers delete "$t" >/dev/null 2>&1 || true
  done
}

# Processes whose command line names our state dir (shims name our socket).
our_leftovers() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
    [[ "$cmd" == *"$DIR/"* && "${p#/proc/}" != "$$" && "${p#/proc/}" != "$BASHPID" ]] || continue
    [[ "$cmd" == *"hack/node.sh"* ]] && continue
    echo "${p#/proc/}"
  done
}

unmount_ours() {
  local m
  for _ in 1 2 3; do
    m="$(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)"
    [[ -z "$m" ]] && return 0
    while read -r target; do
      [[ -n "$target" ]] && umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done <<<"$m"
  done
  m="$(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)"
  [[ -z "$m" ]] || { say "mounts left under $DIR: $m"; return 1; }
}

remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$d" ]] && say "cgroup $d still has processes: left in place"
  done
  return 0
}

remove_iptables() {
  local tool rule
  # The firewall plugin's rules for addresses of the cluster network: pods of this
  # node whose sandbox went without a CNI DEL (a test drops one on purpose).
  while read -r rule; do
    [[ -n "$rule" ]] || continue
    # shellcheck disable=SC2086  # a rule as iptables -S prints it
    iptables -w -D ${rule#-A } 2>/dev/null || true
  done < <(iptables -w -S CNI-FORWARD 2>/dev/null | grep -E -- "-[sd] ${POD_CIDR%%.0.0/16}\.[0-9]+\.[0-9]+/32 " || true)
  grep -qx "iptables:CNI-FORWARD" "$DIR/preexisting" 2>/dev/null && return 0
  for tool in iptables ip6tables; do
    "$tool" -w -S CNI-FORWARD >/dev/null 2>&1 || continue
    # Only the firewall plugin's frame (its jump to CNI-ADMIN) may be left; rules
    # for pods of anyone else's would keep the chain.
    if "$tool" -w -S CNI-FORWARD | grep -v -e '^-N CNI-FORWARD' -e '-j CNI-ADMIN' | grep -q .; then
      say "$tool chain CNI-FORWARD still holds rules for other containers: left in place"
      continue
    fi
    while "$tool" -w -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
    "$tool" -w -F CNI-FORWARD 2>/dev/null || true
    "$tool" -w -X CNI-FORWARD 2>/dev/null || say "could not delete $tool chain CNI-FORWARD"
    if "$tool" -w -S CNI-ADMIN 2>/dev/null | grep -v '^-N' | grep -q .; then continue; fi
    "$tool" -w -X CNI-ADMIN 2>/dev/null || true
  done
}

remove_node_paths() {
  local p
  for p in "${NODE_PATHS[@]}"; do
    grep -qxF -- "$p" "$DIR/preexisting" 2>/dev/null && continue
    [[ -e "$p" || -L "$p" ]] || continue
    case "$p" in
      /opt/cni/bin|/opt/cni|/etc/cni/net.d|/etc/cni|/opt/containerd*) rmdir "$p" 2>/dev/null || say "$p is not empty: left in place" ;;
      *) rm -rf "$p" ;;
    esac
  done
}

cmd_down() {
  if [[ ! -d "$DIR" ]]; then say "no node state in $DIR: nothing to stop"; STEP="-"; return 0; fi
  lock_dir
  load_bins
  [[ -f "$MARKER" ]] || die "$DIR was not made by hack/node.sh: leaving it alone"
  local bad=0
  step "stopping kubelet"
  stop_proc kubelet || bad=1
  step "removing the pod sandboxes (CNI DEL through Multus) and containers"
  [[ -n "$NODE_BIN" ]] && remove_pods
  step "stopping containerd and dockerd"
  stop_proc containerd || bad=1
  stop_proc dockerd 60 || bad=1
  step "stopping leftover processes (shims, containers)"
  local pids
  pids="$(our_leftovers)"
  if [[ -n "$pids" ]]; then
    say "killing leftover pids: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 1
  fi
  step "unmounting what is left under $DIR"
  unmount_ours || bad=1
  step "removing interfaces, iptables chains and cgroups of the node"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" || bad=1; fi
  # Bridges of networks on this node named wbn* (the tests' and doc/install.md's).
  local link
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^wbn' || true); do
    ip link delete "$link" 2>/dev/null || { say "could not delete link $link"; bad=1; }
  done
  remove_iptables
  remove_cgroups
  remove_node_paths
  step "deleting the Node object"
  if bash "$ROOT/hack/cluster.sh" status >/dev/null 2>&1; then
    cluster_env env
    api DELETE "/api/v1/nodes/$NODE_NAME" >/dev/null 2>&1 || true
  fi
  step "verifying that nothing of ours is left"
  pids="$(our_leftovers)"
  [[ -z "$pids" ]] || { say "processes still refer to $DIR: $(echo $pids)"; bad=1; }
  if ((bad)); then STEP="down (see above)"; exit 1; fi
  rm -rf "$DIR"
  STEP="-"
  say "node down"
}

cmd_status() {
  STEP="-"
  [[ -f "$MARKER" ]] || { echo "stopped (no state in $DIR)"; return 1; }
  local d c k
  d="$(our_pid dockerd || true)"; c="$(our_pid containerd || true)"; k="$(our_pid kubelet || true)"
  if [[ -n "$c" && -n "$k" ]]; then
    local ready="not Ready"
    if bash "$ROOT/hack/cluster.sh" status >/dev/null 2>&1; then
      cluster_env env
      node_ready && ready="Ready"
    fi
    echo "running: node $NODE_NAME $ready (kubelet pid $k, containerd pid $c, dockerd pid ${d:-none}, state $DIR)"
    [[ "$ready" == Ready ]]
    return
  fi
  echo "stopped: kubelet pid ${k:-none}, containerd pid ${c:-none}, dockerd pid ${d:-none} (state $DIR)"
  return 1
}

cmd_env() {
  STEP="-"
  [[ -f "$DIR/env" ]] || die "no node in $DIR: run hack/node.sh up"
  cat "$DIR/env"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  dockerd) cmd_dockerd ;;
  load) shift; cmd_load "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  start) shift; cmd_start "$@" ;;
  -h|--help|help) STEP="-"; usage ;;
  *) STEP="-"; usage; exit 2 ;;
esac
