# shellcheck shell=bash
# Sourced by hack/cluster.sh: starting etcd, the kube-apiserver and the controllers, fresh or again.
# Uses its variables (DIR, BIN_DIR, ports, ...), hack/lib/common.sh and hack/lib/daemons.sh.

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
    # shellcheck disable=SC2034  # read by the EXIT trap (hack/lib/common.sh)
    STEP="start the control plane (attempt $attempt)"
    stop_proc kube-apiserver
    stop_proc etcd
    rm -rf "$DIR/etcd-data"
    mv -f "$DIR/etcd.log" "$DIR/etcd.log.$attempt" 2>/dev/null || true
    mv -f "$DIR/kube-apiserver.log" "$DIR/kube-apiserver.log.$attempt" 2>/dev/null || true
  done
  die "the control plane did not come up (logs: $DIR/*.log.*)"
}
