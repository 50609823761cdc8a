#!/usr/bin/env bash
# The quick start, for real: on a local control plane, three network namespaces
# attached to one bridge by the reference `bridge` plugin get distinct
# addresses from one range through whereabouts, ping each other, and the IPPool
# that records them is printed. Then everything is removed again: the
# attachments (DEL), the namespaces, the bridge, the Kubernetes namespace used,
# and the control plane if this script started it.
#
#   hack/quickstart.sh
#
# Needs root (network namespaces) on Debian; hack/setup.sh installs the rest.
# WHEREABOUTS_CLUSTER_DIR picks the control plane's state dir as in hack/cluster.sh.
set -euo pipefail

LOG_TAG="quickstart"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"

show() { printf '%s\n' "$*"; }

[[ $EUID -eq 0 ]] || { say "FAILED at step: check for root (network namespaces need it; try sudo)"; exit 1; }

SUFFIX="$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BRIDGE="wbqs$SUFFIX"
RANGE="10.123.100.0/24"
POOL="10.123.100.0-24"
KNS="whereabouts-quickstart-$SUFFIX"
NETNS=("qs-a-$SUFFIX" "qs-b-$SUFFIX" "qs-c-$SUFFIX")
WORK="$(mktemp -d -t quickstart.XXXXXX)"
STARTED_CLUSTER=0
CREATED_NETNS=()
ATTACHED=()
KNS_CREATED=0

api() { # METHOD PATH [BODY]
  curl -sS --fail-with-body --cacert "$WHEREABOUTS_CA_FILE" -H "Authorization: Bearer $WHEREABOUTS_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -X "$1" "$WHEREABOUTS_APISERVER$2" ${3:+--data "$3"}
}

print_pool() {
  api GET "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/$KNS/ippools/$POOL" | python3 -c '
import json, sys
pool = json.load(sys.stdin)
print(json.dumps({"metadata": {"name": pool["metadata"]["name"], "namespace": pool["metadata"]["namespace"]},
                  "spec": pool["spec"]}, indent=2))'
}

# The firewall plugin's DEL removes its per-namespace rules but leaves its
# chains: remove them if this run made them and nobody else's rules are in them.
FIREWALL_CHAINS_BEFORE="$(iptables -w -S CNI-FORWARD >/dev/null 2>&1 && echo yes || echo no)"
# shellcheck disable=SC2317  # called by the EXIT trap
remove_firewall_chains() {
  [[ "$FIREWALL_CHAINS_BEFORE" == no ]] || return 0
  iptables -w -S CNI-FORWARD >/dev/null 2>&1 || return 0
  if iptables -w -S CNI-FORWARD | grep -v -e '^-N CNI-FORWARD' -e '-j CNI-ADMIN' | grep -q .; then
    return 0
  fi
  while iptables -w -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
  iptables -w -F CNI-FORWARD && iptables -w -X CNI-FORWARD || say "could not remove the iptables chain CNI-FORWARD"
  if ! iptables -w -S CNI-ADMIN 2>/dev/null | grep -v '^-N' | grep -q .; then
    iptables -w -X CNI-ADMIN 2>/dev/null || true
  fi
}

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$? ns failed=0
  trap - EXIT INT TERM
  [[ $rc -ne 0 ]] && say "FAILED at step: $STEP (exit $rc)"
  say "cleaning up"
  for ((i = ${#ATTACHED[@]} - 1; i >= 0; i--)); do
    ns="${ATTACHED[$i]}"
    bash "$ROOT/hack/exec-plugins.sh" del "$ns" "/var/run/netns/$ns" || { say "DEL of $ns failed"; failed=1; }
  done
  if ((${#ATTACHED[@]})) && [[ $failed -eq 0 && $KNS_CREATED -eq 1 ]]; then
    show ""
    show "== after DEL: the pool holds no address =="
    print_pool || true
  fi
  for ns in "${CREATED_NETNS[@]}"; do
    ip netns delete "$ns" 2>/dev/null || { say "could not delete netns $ns"; failed=1; }
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" || { say "could not delete bridge $BRIDGE"; failed=1; }
  fi
  remove_firewall_chains
  local lingering=""
  if [[ $KNS_CREATED -eq 1 && $STARTED_CLUSTER -eq 0 ]]; then
    # A control plane without a namespace controller never finishes deleting a namespace:
    # delete our objects in it first, then the namespace, and say so if it lingers.
    for res in whereabouts.cni.cncf.io/v1alpha1/namespaces/$KNS/ippools \
               whereabouts.cni.cncf.io/v1alpha1/namespaces/$KNS/overlappingrangeipreservations \
               coordination.k8s.io/v1/namespaces/$KNS/leases; do
      api DELETE "/apis/$res" >/dev/null || { say "could not delete /apis/$res"; failed=1; }
    done
    api DELETE "/api/v1/namespaces/$KNS" >/dev/null || { say "could not delete namespace $KNS"; failed=1; }
    for _ in $(seq 1 30); do
      api GET "/api/v1/namespaces/$KNS" >/dev/null 2>&1 || break
      sleep 1
    done
    if api GET "/api/v1/namespaces/$KNS" >/dev/null 2>&1; then
      lingering="$KNS"
      say "namespace $KNS is empty but still Terminating: this control plane runs no namespace controller"
    fi
  fi
  if [[ $STARTED_CLUSTER -eq 1 ]]; then
    bash "$ROOT/hack/cluster.sh" down || { say "hack/cluster.sh down failed"; failed=1; }
  fi
  rm -rf "$WORK"
  [[ $failed -eq 1 && $rc -eq 0 ]] && rc=1
  if [[ $rc -eq 0 && -n $lingering ]]; then
    say "done: everything removed but the empty namespace $lingering, which stays Terminating"
  elif [[ $rc -eq 0 ]]; then
    say "done: everything removed"
  fi
  exit "$rc"
}
trap cleanup EXIT
exit_on_signals

step "hack/setup.sh (system packages, .venv, control-plane binaries)"
bash "$ROOT/hack/setup.sh"

step "hack/cluster.sh up"
if bash "$ROOT/hack/cluster.sh" status >/dev/null 2>&1; then
  say "a control plane is already running: using it and leaving it running"
else
  STARTED_CLUSTER=1
fi
exports="$(bash "$ROOT/hack/cluster.sh" up)"
eval "$exports"

step "creating Kubernetes namespace $KNS for the pools"
api POST /api/v1/namespaces "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$KNS\"}}" >/dev/null
KNS_CREATED=1

step "writing a kubeconfig and the network config"
(umask 077
 cat >"$WORK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $WHEREABOUTS_APISERVER
    certificate-authority: $WHEREABOUTS_CA_FILE
users:
- name: admin
  user:
    token: $WHEREABOUTS_ADMIN_TOKEN
contexts:
- name: quickstart
  context:
    cluster: local
    user: admin
    namespace: $KNS
current-context: quickstart
EOF
)
# bridge, then the `firewall` plugin: it accepts each namespace's traffic in the
# host's FORWARD chain. Without it, on a machine where Docker has run (FORWARD
# policy DROP, br_netfilter passing bridged frames through iptables) the
# namespaces on the bridge could not reach each other.
cat >"$WORK/10-quickstart.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "quickstart",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "ipam": {
        "type": "whereabouts",
        "range": "$RANGE",
        "kubernetes": {"kubeconfig": "$WORK/kubeconfig"},
        "configuration_path": "$WORK/no-flat-file.conf",
        "node_lock_dir": "$WORK/locks"
      }
    },
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF
mkdir "$WORK/bin"
ln -s "$ROOT/.venv/bin/whereabouts" "$WORK/bin/whereabouts"
export CNI_PATH="$WORK/bin:/usr/lib/cni:/opt/cni/bin"
export NETCONF_FILES="$WORK/10-quickstart.conflist"
export CNI_CACHE_DIR="$WORK/cache"
export EXEC_PLUGINS_QUIET=1

show "== the network config (the main plugin is bridge; ipam is whereabouts; then firewall) =="
cat "$WORK/10-quickstart.conflist"
show ""
show "== ADD: three network namespaces on bridge $BRIDGE =="
declare -A ADDR
for ns in "${NETNS[@]}"; do
  step "ip netns add $ns"
  ip netns add "$ns"
  CREATED_NETNS+=("$ns")
  step "ADD $ns (bridge -> whereabouts)"
  ATTACHED+=("$ns")
  CNI_ARGS="K8S_POD_NAMESPACE=quickstart;K8S_POD_NAME=$ns" \
    bash "$ROOT/hack/exec-plugins.sh" add "$ns" "/var/run/netns/$ns" >"$WORK/$ns.json"
  ADDR[$ns]="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["result"]["ips"][0]["address"])' "$WORK/$ns.json")"
  show "  $ns  eth0  ${ADDR[$ns]}"
done

step "checking the addresses are distinct"
[[ "$(printf '%s\n' "${ADDR[@]}" | sort -u | wc -l)" -eq 3 ]] || { say "duplicate addresses: ${ADDR[*]}"; exit 1; }

show ""
show "== ping between every pair =="
for src in "${NETNS[@]}"; do
  for dst in "${NETNS[@]}"; do
    [[ "$src" == "$dst" ]] && continue
    ip="${ADDR[$dst]%/*}"
    step "ping from $src to $ip"
    ip netns exec "$src" ping -c1 -W2 "$ip" >/dev/null
    show "  $src -> $ip  ok"
  done
done

show ""
show "== the IPPool that records them (namespace $KNS) =="
step "reading IPPool $POOL"
print_pool
STEP="cleanup"
