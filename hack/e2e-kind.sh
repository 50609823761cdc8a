#!/usr/bin/env bash
# End to end on a real cluster, for machines with Docker: a kind cluster (one
# control plane, two workers) with Multus, the image built from this
# repository's Dockerfile loaded into it, doc/crds and doc/install applied, and
# then the checks:
#   - the DaemonSet installed the plugin and a 0600 kubeconfig on every node;
#   - two pods, one on each worker, attached to a macvlan network with
#     whereabouts, get distinct addresses from one range, recorded in one IPPool,
#     and reach each other over it;
#   - deleting the pods releases both addresses (pool and reservations empty);
#   - a reconciler run (a Job from the CronJob) completes with the same image.
#
#   hack/e2e-kind.sh [--keep]     --keep leaves the cluster for inspection
#
# Environment: KIND_CLUSTER [whereabouts-e2e], IMAGE [whereabouts:e2e],
# MULTUS_VERSION [v4.1.4], CNI_PLUGINS_VERSION [v1.6.2], TEST_IMAGE [busybox:stable],
# E2E_RANGE [10.200.0.0/24]. Needs docker, kind, kubectl and curl; not root.
set -euo pipefail

LOG_TAG="e2e-kind"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
CLUSTER="${KIND_CLUSTER:-whereabouts-e2e}"
IMAGE="${IMAGE:-whereabouts:e2e}"
MULTUS_VERSION="${MULTUS_VERSION:-v4.1.4}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.6.2}"
TEST_IMAGE="${TEST_IMAGE:-busybox:stable}"
RANGE="${E2E_RANGE:-10.200.0.0/24}"
POOL="$(echo "$RANGE" | tr ':/' '--')"
NS=kube-system
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1

WORK="$(mktemp -d -t e2e-kind.XXXXXX)"
CREATED=0

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $rc -ne 0 ]]; then
    say "FAILED at step: $STEP (exit $rc)"
    if [[ $CREATED -eq 1 ]]; then
      say "state at failure:"
      kubectl --context "kind-$CLUSTER" get pods -A -o wide >&2 || true
      kubectl --context "kind-$CLUSTER" -n "$NS" logs ds/whereabouts --tail=20 >&2 || true
    fi
  fi
  rm -rf "$WORK"
  if [[ $CREATED -eq 1 && $KEEP -eq 0 ]]; then
    say "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || say "kind delete cluster failed"
  elif [[ $CREATED -eq 1 ]]; then
    say "keeping the cluster: kind delete cluster --name $CLUSTER"
  fi
  exit "$rc"
}
trap cleanup EXIT
exit_on_signals

k() { kubectl --context "kind-$CLUSTER" "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { say "timed out after waiting for: $what"; return 1; }
    sleep 2
  done
}

step "checking tools"
for tool in docker kind kubectl curl; do
  command -v "$tool" >/dev/null || { say "missing: $tool"; exit 1; }
done
docker info >/dev/null 2>&1 || { say "the Docker engine is not reachable"; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "a kind cluster named $CLUSTER exists already: delete it or set KIND_CLUSTER"
  exit 1
fi

step "building the image $IMAGE (docker build $ROOT)"
docker build -t "$IMAGE" "$ROOT" >&2

step "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
cat >"$WORK/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
- role: worker
EOF
CREATED=1
kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 180s >&2
mapfile -t WORKERS < <(kind get nodes --name "$CLUSTER" | grep -v control-plane | sort)
((${#WORKERS[@]} == 2)) || { say "expected 2 workers, got: ${WORKERS[*]}"; exit 1; }

step "adding the reference CNI plugins $CNI_PLUGINS_VERSION (macvlan) to every node"
arch="$(docker exec "${WORKERS[0]}" uname -m)"
case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
curl -fsSL -o "$WORK/cni-plugins.tgz" \
  "https://github.com/containernetworking/plugins/releases/download/$CNI_PLUGINS_VERSION/cni-plugins-linux-$arch-$CNI_PLUGINS_VERSION.tgz"
for node in $(kind get nodes --name "$CLUSTER"); do
  docker cp "$WORK/cni-plugins.tgz" "$node:/tmp/cni-plugins.tgz"
  docker exec "$node" tar -xzf /tmp/cni-plugins.tgz -C /opt/cni/bin ./macvlan ./ipvlan ./bridge
done

step "loading $IMAGE and $TEST_IMAGE into the nodes"
docker pull -q "$TEST_IMAGE" >/dev/null
kind load docker-image --name "$CLUSTER" "$IMAGE" "$TEST_IMAGE" >&2

step "installing Multus $MULTUS_VERSION"
curl -fsSL "https://raw.githubusercontent.com/k8snetworkplumbingwg/multus-cni/$MULTUS_VERSION/deployments/multus-daemonset.yml" \
  | sed "s#multus-cni:snapshot#multus-cni:$MULTUS_VERSION#" >"$WORK/multus.yaml"
k apply -f "$WORK/multus.yaml" >&2
k -n kube-system rollout status ds/kube-multus-ds --timeout=300s >&2

step "applying doc/crds and doc/install (image $IMAGE)"
k apply -f "$ROOT/doc/crds/" >&2
k apply -f "$ROOT/doc/install/rbac.yaml" >&2
for f in daemonset.yaml reconciler-cronjob.yaml; do
  sed "s#image: whereabouts:[^ ]*#image: $IMAGE#" "$ROOT/doc/install/$f" >"$WORK/$f"
  k apply -f "$WORK/$f" >&2
done
k -n "$NS" rollout status ds/whereabouts --timeout=180s >&2

step "checking the installation on every node"
for node in $(kind get nodes --name "$CLUSTER"); do
  target="$(docker exec "$node" readlink /opt/cni/bin/whereabouts)"
  [[ "$target" == .whereabouts/*/whereabouts ]] || { say "$node: /opt/cni/bin/whereabouts -> '$target'"; exit 1; }
  answer="$(docker exec "$node" sh -c 'echo "{\"cniVersion\":\"1.0.0\"}" | CNI_COMMAND=VERSION /opt/cni/bin/whereabouts')"
  [[ "$answer" == *supportedVersions* ]] || { say "$node: VERSION answered '$answer'"; exit 1; }
  mode="$(docker exec "$node" stat -c %a /etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig)"
  [[ "$mode" == 600 ]] || { say "$node: kubeconfig mode $mode, want 600"; exit 1; }
  say "  $node: plugin $target, kubeconfig 0600"
done

step "creating the macvlan network and two pods, one per worker"
cat >"$WORK/pods.yaml" <<EOF
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: e2e-macvlan
  namespace: default
spec:
  config: |
    {"cniVersion": "1.0.0", "name": "e2e-macvlan", "type": "macvlan", "master": "eth0", "mode": "bridge",
     "ipam": {"type": "whereabouts", "range": "$RANGE"}}
EOF
for i in 0 1; do
  cat >>"$WORK/pods.yaml" <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: wb-e2e-$i
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/networks: e2e-macvlan
spec:
  nodeName: ${WORKERS[$i]}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $TEST_IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
EOF
done
k apply -f "$WORK/pods.yaml" >&2
k -n default wait --for=condition=Ready pod/wb-e2e-0 pod/wb-e2e-1 --timeout=180s >&2

net1_ip() {
  k -n default get pod "$1" -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}' \
    | python3 -c 'import json,sys; print(next(n["ips"][0] for n in json.load(sys.stdin) if n.get("interface") == "net1"))'
}

step "checking the addresses"
ip0="$(net1_ip wb-e2e-0)"
ip1="$(net1_ip wb-e2e-1)"
say "  wb-e2e-0 on ${WORKERS[0]}: $ip0"
say "  wb-e2e-1 on ${WORKERS[1]}: $ip1"
[[ "$ip0" != "$ip1" ]] || { say "both pods got $ip0"; exit 1; }
python3 -c 'import ipaddress,sys; n=ipaddress.ip_network(sys.argv[1]); sys.exit(0 if all(ipaddress.ip_address(a) in n for a in sys.argv[2:]) else 1)' \
  "$RANGE" "$ip0" "$ip1" || { say "$ip0 / $ip1 not both in $RANGE"; exit 1; }
allocated="$(k -n "$NS" get ippools.whereabouts.cni.cncf.io "$POOL" -o json \
  | python3 -c 'import json,sys; print(" ".join(sorted(a["podref"] for a in (json.load(sys.stdin)["spec"].get("allocations") or {}).values())))')"
[[ "$allocated" == "default/wb-e2e-0 default/wb-e2e-1" ]] || { say "IPPool $POOL holds: '$allocated'"; exit 1; }

step "ping from wb-e2e-0 to $ip1 over net1"
k -n default exec wb-e2e-0 -- ping -c3 -W2 "$ip1" >&2

step "deleting the pods: their addresses must be released"
k -n default delete pod wb-e2e-0 wb-e2e-1 --wait=true --timeout=120s >&2
pool_empty() {
  [[ "$(k -n "$NS" get ippools.whereabouts.cni.cncf.io "$POOL" -o jsonpath='{.spec.allocations}')" =~ ^(\{\})?$ ]] &&
    [[ -z "$(k -n "$NS" get overlappingrangeipreservations.whereabouts.cni.cncf.io -o name)" ]]
}
wait_for 60 "IPPool $POOL and the reservations to be empty" pool_empty

step "running the reconciler once (a Job from the CronJob)"
k -n "$NS" create job --from=cronjob/whereabouts-reconciler wb-e2e-reconcile >&2
k -n "$NS" wait --for=condition=Complete job/wb-e2e-reconcile --timeout=180s >&2
k -n "$NS" logs job/wb-e2e-reconcile >&2

STEP="done"
say "PASSED: distinct addresses from $RANGE on two nodes, reachable, released on deletion"
