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

# The node's parts, by concern.
# shellcheck source=hack/lib/node-runtime.sh
source "$ROOT/hack/lib/node-runtime.sh"
# shellcheck source=hack/lib/node-images.sh
source "$ROOT/hack/lib/node-images.sh"
# shellcheck source=hack/lib/node-kubelet.sh
source "$ROOT/hack/lib/node-kubelet.sh"
# shellcheck source=hack/lib/node-teardown.sh
source "$ROOT/hack/lib/node-teardown.sh"

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
