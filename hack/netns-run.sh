#!/usr/bin/env bash
# Run a command in a fresh network namespace attached to CNI networks, the
# way a container runtime would attach a pod sandbox:
#
#   hack/netns-run.sh [options] [--] [COMMAND [ARG...]]
#
#   -c FILE   a network config (.conf or .conflist); repeat for more networks,
#             attached as eth0, eth1, ... (default: the configs in NETCONFPATH,
#             default /etc/cni/net.d, in name order)
#   -n NAME   name of the namespace (default wbrun-<random>); must not exist
#   -i ID     container id given to the plugins (default: the namespace name)
#   -a ARGS   CNI_ARGS, e.g. 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0'
#   -r JSON   capability arguments for runtimeConfig, e.g. '{"ips":["10.1.2.3/24"]}'
#             (only plugins whose config declares the capability get them)
#   -p PATH   CNI_PATH (default: our whereabouts plugin, then /usr/lib/cni and
#             /opt/cni/bin)
#   -q        quiet: no progress on stderr
#
# COMMAND runs with `ip netns exec` (default: ip address show). Then DEL runs
# for every network whose ADD was attempted, in reverse order, with the ADD
# result as prevResult (configs of cniVersion 0.4.0 and later), and the
# namespace is deleted. That teardown also runs when an ADD fails half-way,
# when COMMAND fails and on SIGINT/SIGTERM.
#
# Our plugin is the first found of: $WHEREABOUTS_PLUGIN, dist/whereabouts/whereabouts
# (hack/build.sh), .venv/bin/whereabouts (hack/setup.sh).
#
# Exit status: COMMAND's; 125 if the namespace or an ADD failed; 126 if
# COMMAND succeeded but the teardown (a DEL or the namespace delete) failed.
# Needs root, iproute2 and python3.
set -euo pipefail

LOG_TAG="netns-run"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

NAME="" ID="" CONFS=() PATH_ARG=""
CNI_ARGS="${CNI_ARGS:-}" CAP_ARGS="${CAP_ARGS:-}"
while getopts ":c:n:i:a:r:p:qh" opt; do
  case "$opt" in
    c) conf="$(realpath -e -- "$OPTARG" 2>/dev/null)" || { say "FAILED at step: read options: no such config $OPTARG"; exit 125; }
       CONFS+=("$conf") ;;
    n) NAME="$OPTARG" ;;
    i) ID="$OPTARG" ;;
    a) CNI_ARGS="$OPTARG" ;;
    r) CAP_ARGS="$OPTARG" ;;
    p) PATH_ARG="$OPTARG" ;;
    q) QUIET=1 ;;
    h) usage; exit 0 ;;
    *) usage; exit 125 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
(($#)) || set -- ip address show

[[ $EUID -eq 0 ]] || { say "FAILED at step: check for root (network namespaces need it)"; exit 125; }
command -v ip >/dev/null || { say "FAILED at step: find ip (install iproute2)"; exit 125; }

NAME="${NAME:-wbrun-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
ID="${ID:-$NAME}"
WORK="$(mktemp -d -t netns-run.XXXXXX)"
CREATED=0
ADD_STARTED=0

# shellcheck disable=SC2317  # called by the EXIT trap
teardown() {
  local rc=$? failed_step="$STEP" bad=0
  trap - EXIT INT TERM
  [[ $ADD_STARTED -eq 0 ]] || del_networks "$ID" "/var/run/netns/$NAME" || bad=1
  if [[ $CREATED -eq 1 ]]; then
    say "deleting network namespace $NAME"
    ip netns delete "$NAME" || { say "FAILED at step: ip netns delete $NAME"; bad=1; }
  fi
  rm -rf "$WORK"
  exit "$(final_status "$rc" "$failed_step" command "$bad")"
}
# shellcheck source=hack/lib/cni-env.sh
source "$ROOT/hack/lib/cni-env.sh"
trap teardown EXIT
exit_on_signals
setup_cni_env

step "creating network namespace $NAME"
ip netns add "$NAME"
CREATED=1

step "ADD of the networks of $ID"
ADD_STARTED=1
bash "$ROOT/hack/exec-plugins.sh" add "$ID" "/var/run/netns/$NAME" >"$WORK/results.jsonl"

STEP="command"
say "running in $NAME: $*"
set +e
NETNS_RUN_NAME="$NAME" NETNS_RUN_RESULTS="$WORK/results.jsonl" ip netns exec "$NAME" "$@"
rc=$?
set -e
say "command exited with $rc"
exit "$rc"
