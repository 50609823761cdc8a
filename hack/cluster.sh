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
    local cache="${WHEREABOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whereabouts-testenv}"
    mkdir -p "$cache"
    BIN_DIR="$(flock "$cache/.build.lock" bash "$ROOT/hack/build-control-plane.sh" 9<&-)"
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

# --- starting ----------------------------------------------------------------

start_etcd() {
  step "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT (peer $ETCD_PEER_PORT)"
  launch etcd "$BIN_DIR/etcd" \
    --name=whereabouts-test \
    --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="whereabouts-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level=warn
  step "waiting for etcd health"
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    our_pid etcd >/dev/null || { show_log etcd; return 1; }
    if curl -s --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; then
      return 0
    fi
    sleep 0.3
  done
  show_log etcd
  return 1
}

start_apiserver() {
  step "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  launch kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --advertise-address=127.0.0.1 \
    --cert-dir="$DIR/certs" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --authorization-mode=RBAC \
    --token-auth-file="$DIR/tokens.csv" \
    --client-ca-file="$DIR/client-ca.crt" \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$DIR/sa.key" \
    --service-account-signing-key-file="$DIR/sa.key" \
    --profiling=false
  step "waiting up to ${READY_TIMEOUT}s for kube-apiserver /readyz"
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    our_pid kube-apiserver >/dev/null || { say "kube-apiserver exited"; show_log kube-apiserver 40; return 1; }
    apiserver_ready && return 0
    sleep 0.5
  done
  say "kube-apiserver not ready after ${READY_TIMEOUT}s; /readyz?verbose says:"
  curl -sk --max-time 5 -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$APISERVER_PORT/readyz?verbose" 2>&1 | grep -v '^\[+\]' | sed 's/^/[cluster]   /' >&2 || true
  show_log kube-apiserver 40
  show_log etcd 10
  return 1
}

# The scheduler and the controller manager act as the admin (system:masters)
# through their own kubeconfig file, which they read once at start.
write_controllers_kubeconfig() {
  write_kubeconfig "$DIR/controllers.kubeconfig" "certificate-authority: $DIR/ca.crt"
}

# write_kubeconfig PATH CA-FIELD: the admin user's kubeconfig for this cluster (mode 0600),
# with CA-FIELD as the cluster's certificate authority line.
write_kubeconfig() {
  (umask 077
   cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: whereabouts-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    $2
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: admin
  context:
    cluster: whereabouts-test
    user: admin
current-context: admin
EOF
   mv -f "$1.tmp" "$1")
}

start_controller() {
  local name="$1"
  # The API server writes its self-signed serving certificate (with its CA) here;
  # the controller manager publishes it to every namespace (kube-root-ca.crt).
  cp -f "$DIR/certs/apiserver.crt" "$DIR/ca.crt"
  write_controllers_kubeconfig
  step "starting $name"
  case "$name" in
    kube-scheduler)
      launch kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig="$DIR/controllers.kubeconfig" \
        --authentication-kubeconfig="$DIR/controllers.kubeconfig" \
        --authorization-kubeconfig="$DIR/controllers.kubeconfig" \
        --leader-elect=false \
        --bind-address=127.0.0.1 \
        --secure-port=0 ;;
    kube-controller-manager)
      launch kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig="$DIR/controllers.kubeconfig" \
        --authentication-kubeconfig="$DIR/controllers.kubeconfig" \
        --authorization-kubeconfig="$DIR/controllers.kubeconfig" \
        --service-account-private-key-file="$DIR/sa.key" \
        --root-ca-file="$DIR/ca.crt" \
        --use-service-account-credentials=false \
        --leader-elect=false \
        --bind-address=127.0.0.1 \
        --secure-port=0 ;;
  esac
  # A bad flag makes it exit at once: give it a moment to show that.
  sleep 1
  our_pid "$name" >/dev/null || { show_log "$name" 30; die "$name exited at start"; }
}

# Start the scheduler and the controller manager where they are not running
# (a cluster started by an older hack/cluster.sh, or one that crashed), and
# restart an API server that runs without ServiceAccount admission, on the
# same port with the same data and credentials.
ensure_controllers() {
  local pid
  if pid="$(our_pid kube-apiserver)" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- '--disable-admission-plugins=ServiceAccount'; then
    say "kube-apiserver runs without ServiceAccount admission: restarting it on the same port"
    [[ -n "${BIN_DIR:-}" ]] || find_binaries
    stop_proc kube-apiserver
    start_apiserver
  fi
  local name
  for name in "${CONTROLLERS[@]}"; do
    if ! our_pid "$name" >/dev/null; then
      [[ -n "${BIN_DIR:-}" ]] || find_binaries
      start_controller "$name"
    fi
  done
}

start_fresh() {
  step "preparing $DIR"
  if [[ -e "$DIR" && ! -f "$MARKER" ]] && [[ -n "$(ls -A "$DIR")" ]]; then
    die "$DIR is not empty and was not made by hack/cluster.sh: refusing to use it"
  fi
  # Clear a dead cluster's leftovers but keep the directory we hold locked.
  stop_proc kube-controller-manager
  stop_proc kube-scheduler
  stop_proc kube-apiserver
  stop_proc etcd
  find "$DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  touch "$MARKER"
  mkdir -p "$DIR/certs"

  find_binaries

  step "generating the admin token and the service-account key"
  TOKEN="$(openssl rand -hex 24)"
  (umask 077
   echo "$TOKEN" >"$DIR/admin.token"
   echo "$TOKEN,admin,admin,system:masters" >"$DIR/tokens.csv"
   openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
   # A client CA and an admin client certificate, so client-certificate kubeconfigs are tested for real.
   openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=whereabouts-test-client-ca" \
     -keyout "$DIR/client-ca.key" -out "$DIR/client-ca.crt" 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin-cert" \
     -keyout "$DIR/admin-client.key" -out "$DIR/admin-client.csr" 2>/dev/null
   openssl x509 -req -in "$DIR/admin-client.csr" -CA "$DIR/client-ca.crt" -CAkey "$DIR/client-ca.key" \
     -CAcreateserial -days 30 -out "$DIR/admin-client.crt" 2>/dev/null)

  local attempt
  for attempt in 1 2 3; do
    step "picking free loopback ports (attempt $attempt)"
    local ports
    ports="$(free_ports 3)"
    read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT <<<"$ports"
    [[ -n "$APISERVER_PORT" ]] || die "could not pick free ports"
    cat >"$DIR/state" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
BIN_DIR_USED=$BIN_DIR
EOF
    if start_etcd && start_apiserver; then
      return 0
    fi
    # Most likely a port was taken in between: clean up and try new ports.
    STEP="start the control plane (attempt $attempt)"
    stop_proc kube-apiserver
    stop_proc etcd
    rm -rf "$DIR/etcd-data"
    mv -f "$DIR/etcd.log" "$DIR/etcd.log.$attempt" 2>/dev/null || true
    mv -f "$DIR/kube-apiserver.log" "$DIR/kube-apiserver.log.$attempt" 2>/dev/null || true
  done
  die "the control plane did not come up (logs: $DIR/*.log.*)"
}

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
