#!/usr/bin/env bash
# A throw-away Kubernetes control plane on loopback: one etcd, one
# kube-apiserver (ServiceAccount admission on, so pods get projected tokens),
# one kube-scheduler and one kube-controller-manager (namespace deletion,
# Deployments, DaemonSets, Jobs and CronJobs, garbage collection, service
# accounts). No kubelet: hack/node.sh adds one. Used by the tests and the
# quick start.
#
#   hack/cluster.sh up       start (or reuse) the cluster, apply doc/crds/*.yaml and the NAD CRD,
#                            print shell exports on stdout
#   hack/cluster.sh down     stop what `up` started and remove the state dir
#   hack/cluster.sh status   "running ..." (exit 0) or "stopped" (exit 1)
#   hack/cluster.sh env      print the shell exports of the running cluster
#   hack/cluster.sh restart etcd|kube-apiserver|kube-scheduler|kube-controller-manager [SECONDS]
#                            stop one server, wait SECONDS, start it again (fault tests)
#
# State lives in .cluster/ at the repo root (WHEREABOUTS_CLUSTER_DIR overrides):
# pid files, logs, etcd data, certificates, admin.kubeconfig and env.
# WHEREABOUTS_BIN_DIR skips hack/build-control-plane.sh and uses the binaries
# found there; WHEREABOUTS_READY_TIMEOUT (seconds, default 90)
# bounds the wait for the API server.
set -euo pipefail

LOG_TAG="cluster"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
DIR="$(realpath -m "${WHEREABOUTS_CLUSTER_DIR:-$ROOT/.cluster}")"
READY_TIMEOUT="${WHEREABOUTS_READY_TIMEOUT:-90}"
MARKER="$DIR/.whereabouts-cluster"
SA_ISSUER="https://kubernetes.default.svc.cluster.local"

trap report_failure EXIT
# shellcheck source=lib/daemons.sh
source "$ROOT/hack/lib/daemons.sh"


# --- helpers -----------------------------------------------------------------

# Serialise up/down on the state directory itself (fd 9, never inherited by
# the daemons). The lock must be on the directory that is there now: `down`
# may have removed the one we opened.
lock_dir() {
  for _ in 1 2 3 4 5; do
    mkdir -p "$DIR"
    exec 9<"$DIR"
    flock -w "${WHEREABOUTS_LOCK_TIMEOUT:-300}" 9 \
      || die "another hack/cluster.sh holds the lock on $DIR (waited ${WHEREABOUTS_LOCK_TIMEOUT:-300}s)"
    if [[ "$(stat -c %d:%i "$DIR" 2>/dev/null)" == "$(stat -L -c %d:%i /dev/fd/9)" ]]; then
      return 0
    fi
    exec 9<&-
  done
  die "could not lock $DIR"
}

load_state() {
  ETCD_CLIENT_PORT="" ETCD_PEER_PORT="" APISERVER_PORT="" BIN_DIR_USED=""
  # shellcheck disable=SC1091
  [[ -f "$DIR/state" ]] && source "$DIR/state"
  TOKEN="$(cat "$DIR/admin.token" 2>/dev/null || true)"
}

apiserver_ready() {
  [[ -n "${APISERVER_PORT:-}" && -n "${TOKEN:-}" ]] || return 1
  [[ "$(curl -sk --max-time 5 -H "Authorization: Bearer $TOKEN" \
        "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null || true)" == "ok" ]]
}

# etcd and the API server answer (the controllers are checked by ensure_controllers).
alive_and_ready() {
  [[ -f "$MARKER" ]] || return 1
  load_state
  our_pid etcd >/dev/null && our_pid kube-apiserver >/dev/null && apiserver_ready
}

CONTROLLERS=(kube-scheduler kube-controller-manager)

python_with_yaml() {
  local py
  for py in "$ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import yaml' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  die "no python with PyYAML found: run hack/setup.sh first"
}

find_binaries() {
  step "locating the control-plane binaries"
  if [[ -n "${WHEREABOUTS_BIN_DIR:-}" ]]; then
    BIN_DIR="$WHEREABOUTS_BIN_DIR"
  else
    mkdir -p "$CACHE_ROOT"
    BIN_DIR="$(flock "$CACHE_ROOT/.build.lock" bash "$ROOT/hack/build-control-plane.sh" 9<&-)"
    BIN_DIR="${BIN_DIR##*$'\n'}"
  fi
  local b
  for b in etcd kube-apiserver "${CONTROLLERS[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || die "$b not found in '$BIN_DIR'"
  done
}


free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# stop NAME: TERM, wait up to 20 s, then KILL; fails if it is still there.
stop_proc() {
  local name="$1" pid
  pid="$(our_pid "$name")" || { rm -f "$DIR/$name.pid"; return 0; }
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    our_pid "$name" >/dev/null || break
    sleep 0.1
  done
  if our_pid "$name" >/dev/null; then
    say "$name (pid $pid) ignored SIGTERM: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      our_pid "$name" >/dev/null || break
      sleep 0.1
    done
  fi
  if our_pid "$name" >/dev/null; then die "$name (pid $pid) is still running"; fi
  rm -f "$DIR/$name.pid"
}

# Starting the daemons, by concern.
# shellcheck source=hack/lib/cluster-start.sh
source "$ROOT/hack/lib/cluster-start.sh"

# --- after start: CRDs, kubeconfig, env ----------------------------------------

apply_crds() {
  local py
  py="$(python_with_yaml)"
  # Multus's NetworkAttachmentDefinition CRD too: the node-slice controller watches
  # NADs (hack/node.sh also posts it, tolerating one that exists).
  step "applying doc/crds/*.yaml and the NetworkAttachmentDefinition CRD, waiting until Established"
  "$py" - "https://127.0.0.1:$APISERVER_PORT" "$TOKEN" "$DIR/ca.crt" "$ROOT"/doc/crds/*.yaml \
    "$ROOT/tests/e2e/fixtures/network-attachment-definition-crd.yaml" <<'EOF'
import json, ssl, sys, time, urllib.error, urllib.request
import yaml

server, token, cafile, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
ctx = ssl.create_default_context(cafile=cafile)
base = server + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "Bearer " + token,
        "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")

names = []
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        name = doc["metadata"]["name"]
        names.append(name)
        for _ in range(5):
            code, cur = call("GET", f"{base}/{name}")
            if code == 404:
                code, out = call("POST", base, doc)
                verb = "created"
            elif code == 200:
                doc["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
                code, out = call("PUT", f"{base}/{name}", doc)
                verb = "updated"
            else:
                sys.exit(f"GET {name}: HTTP {code}: {cur.get('message')}")
            if code in (200, 201):
                print(f"[cluster]   {name}: {verb}", file=sys.stderr)
                break
            if code != 409:
                sys.exit(f"{verb[:-1]} {name} from {path}: HTTP {code}: {out.get('message')}")
        else:
            sys.exit(f"{name}: kept conflicting")

deadline = time.time() + 60
pending = set(names)
while pending and time.time() < deadline:
    for name in sorted(pending):
        code, cur = call("GET", f"{base}/{name}")
        conds = (cur.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
            pending.discard(name)
    if pending:
        time.sleep(0.3)
if pending:
    sys.exit("not Established after 60s: " + ", ".join(sorted(pending)))
print(f"[cluster]   {len(names)} CRDs Established", file=sys.stderr)
EOF
}

write_client_files() {
  step "writing $DIR/admin.kubeconfig and $DIR/env"
  local server="https://127.0.0.1:$APISERVER_PORT"
  write_kubeconfig "$DIR/admin.kubeconfig" "certificate-authority-data: $(base64 -w0 <"$DIR/ca.crt")"
  (umask 077
   {
     printf 'export WHEREABOUTS_CLUSTER_DIR=%q\n' "$DIR"
     printf 'export WHEREABOUTS_KUBECONFIG=%q\n' "$DIR/admin.kubeconfig"
     printf 'export WHEREABOUTS_APISERVER=%q\n' "$server"
     printf 'export WHEREABOUTS_ADMIN_TOKEN=%q\n' "$TOKEN"
     printf 'export WHEREABOUTS_CA_FILE=%q\n' "$DIR/ca.crt"
     printf 'export WHEREABOUTS_ETCD=%q\n' "http://127.0.0.1:$ETCD_CLIENT_PORT"
     printf 'export WHEREABOUTS_BIN_DIR=%q\n' "$BIN_DIR_USED"
   } >"$DIR/env.tmp"
   mv -f "$DIR/env.tmp" "$DIR/env")
}

# --- commands ------------------------------------------------------------------

cmd_up() {
  step "locking $DIR"
  lock_dir
  BIN_DIR=""
  if alive_and_ready; then
    say "reusing the running cluster in $DIR (https://127.0.0.1:$APISERVER_PORT)"
  else
    [[ -f "$MARKER" ]] && say "no live cluster in $DIR: starting a new one"
    start_fresh
    load_state
  fi
  ensure_controllers
  apply_crds
  write_client_files
  STEP="-"
  say "cluster up: https://127.0.0.1:$APISERVER_PORT"
  say "  kubeconfig  $DIR/admin.kubeconfig"
  say "  logs        $DIR/etcd.log $DIR/kube-apiserver.log"
  say "  env         source $DIR/env   (or: eval \"\$(hack/cluster.sh env)\")"
  cat "$DIR/env"
}

cmd_down() {
  if [[ ! -d "$DIR" ]]; then
    say "no cluster state in $DIR: nothing to stop"
    return 0
  fi
  step "locking $DIR"
  lock_dir
  step "stopping the processes recorded in $DIR"
  stop_proc kube-controller-manager
  stop_proc kube-scheduler
  stop_proc kube-apiserver
  stop_proc etcd
  step "verifying that nothing of ours is left"
  local name
  for name in kube-controller-manager kube-scheduler kube-apiserver etcd; do
    if our_pid "$name" >/dev/null; then die "$name still running"; fi
  done
  local left
  left="$(pgrep -f -- "(etcd|kube-apiserver|kube-scheduler|kube-controller-manager) .*$DIR/" | tr '\n' ' ' || true)"
  [[ -z "$left" ]] || die "processes still refer to $DIR: pids $left"
  if [[ -f "$MARKER" ]] || [[ -z "$(ls -A "$DIR")" ]]; then
    step "removing $DIR"
    rm -rf "$DIR"
  else
    say "$DIR was not made by hack/cluster.sh: leaving it in place"
  fi
  STEP="-"
  say "cluster down"
}

# Stop one server, wait, and start it again on the same port and data: for fault tests.
cmd_restart() {
  local name="${1:-}" down="${2:-0}"
  case "$name" in
    etcd|kube-apiserver|kube-scheduler|kube-controller-manager) ;;
    *) die "usage: hack/cluster.sh restart etcd|kube-apiserver|kube-scheduler|kube-controller-manager [seconds down]" ;;
  esac
  step "locking $DIR"
  lock_dir
  load_state
  [[ -n "$APISERVER_PORT" ]] || die "no cluster recorded in $DIR"
  BIN_DIR="$BIN_DIR_USED"
  stop_proc "$name"
  sleep "$down"
  case "$name" in
    etcd) start_etcd ;;
    kube-apiserver) start_apiserver ;;
    *) start_controller "$name" ;;
  esac
  STEP="-"
  say "$name restarted"
}

cmd_status() {
  STEP="-"
  if [[ ! -f "$MARKER" ]]; then echo "stopped (no state in $DIR)"; return 1; fi
  load_state
  local ep ap sp cp
  ep="$(our_pid etcd || true)"; ap="$(our_pid kube-apiserver || true)"
  sp="$(our_pid kube-scheduler || true)"; cp="$(our_pid kube-controller-manager || true)"
  if [[ -n "$ep" && -n "$ap" && -n "$sp" && -n "$cp" ]] && apiserver_ready; then
    echo "running: https://127.0.0.1:$APISERVER_PORT (etcd pid $ep, kube-apiserver pid $ap," \
      "kube-scheduler pid $sp, kube-controller-manager pid $cp, state $DIR)"
    return 0
  fi
  if [[ -n "$ep" && -n "$ap" ]] && apiserver_ready; then
    echo "incomplete: https://127.0.0.1:$APISERVER_PORT answers, but kube-scheduler pid ${sp:-none}," \
      "kube-controller-manager pid ${cp:-none} (hack/cluster.sh up starts them)"
    return 1
  fi
  if [[ -n "$ep" || -n "$ap" ]]; then
    echo "not ready: etcd pid ${ep:-none}, kube-apiserver pid ${ap:-none} (state $DIR)"
  else
    echo "stopped (stale state in $DIR)"
  fi
  return 1
}

cmd_env() {
  STEP="-"
  if alive_and_ready && [[ -f "$DIR/env" ]]; then
    cat "$DIR/env"
  else
    die "no running cluster in $DIR: run hack/cluster.sh up"
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) shift; cmd_restart "$@" ;;
  env) cmd_env ;;
  -h|--help|help) STEP="-"; usage ;;
  *) STEP="-"; usage; exit 2 ;;
esac
