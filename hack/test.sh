#!/usr/bin/env bash
# Run the test suite against a local control plane:
#   hack/setup.sh, hack/cluster.sh up, pytest "$@", hack/cluster.sh down.
# tests/node (marker node) brings up a real node with hack/node.sh and stops it
# again; should pytest die first, the node is stopped here (unless it was
# running before, or WHEREABOUTS_KEEP_NODE=1).
# The cluster is stopped on exit unless WHEREABOUTS_KEEP_CLUSTER=1 (a cluster
# that was already running is reused and then also kept). Exits with pytest's
# exit code.
set -euo pipefail

LOG_TAG="test"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"


started=0
node_before=1
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && $STEP != "pytest" ]]; then say "FAILED at step: $STEP (exit $rc)"; fi
  if [[ $node_before -eq 0 && "${WHEREABOUTS_KEEP_NODE:-}" != "1" && -d "${WHEREABOUTS_NODE_DIR:-$ROOT/.node}" ]]; then
    say "hack/node.sh down (a node that the tests left)"
    bash "$ROOT/hack/node.sh" down || say "FAILED at step: hack/node.sh down"
  fi
  if [[ $started -eq 1 && "${WHEREABOUTS_KEEP_CLUSTER:-}" != "1" ]]; then
    say "hack/cluster.sh down"
    bash "$ROOT/hack/cluster.sh" down || say "FAILED at step: hack/cluster.sh down"
  elif [[ $started -eq 1 ]]; then
    say "keeping the cluster (WHEREABOUTS_KEEP_CLUSTER=1): hack/cluster.sh down stops it"
  fi
  exit "$rc"
}
trap cleanup EXIT

step "hack/setup.sh"
bash "$ROOT/hack/setup.sh"

if [[ $EUID -eq 0 ]] && ! bash "$ROOT/hack/node.sh" status >/dev/null 2>&1; then node_before=0; fi

step "hack/cluster.sh up"
if bash "$ROOT/hack/cluster.sh" status >/dev/null 2>&1; then
  say "a cluster is already running: reusing it and leaving it running"
else
  started=1
fi
exports="$(bash "$ROOT/hack/cluster.sh" up)"
eval "$exports"
export WHEREABOUTS_KUBECONFIG WHEREABOUTS_APISERVER WHEREABOUTS_ADMIN_TOKEN WHEREABOUTS_CA_FILE

step "pytest $*"
set +e
"$ROOT/.venv/bin/python" -m pytest "$@"
rc=$?
set -e
say "pytest exited with $rc"
STEP="pytest"
exit "$rc"
