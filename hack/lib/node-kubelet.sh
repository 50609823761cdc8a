# shellcheck shell=bash
# Sourced by hack/node.sh: the CNI config of the node and the kubelet, its config, start-up and readiness.
# Uses its variables (DIR, SOCK, NODE_BIN, ...) and hack/lib/common.sh.

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
