#!/usr/bin/env bash
# Run a Docker container attached to CNI networks instead of Docker's own:
#
#   hack/docker-run.sh [options] [--] [DOCKER RUN ARGS...] IMAGE [COMMAND...]
#
# A pause container is started with --net=none; ADD runs for each network
# config against its network namespace; then `docker run --net=container:<pause>
# DOCKER RUN ARGS...` runs your container in that namespace. Afterwards DEL runs
# for every network whose ADD was attempted, in reverse order with the ADD
# result as prevResult (cniVersion 0.4.0 and later), and the pause container is
# removed - also when an ADD fails half-way, when the container fails and on
# SIGINT/SIGTERM.
#
#   -c FILE   a network config (.conf or .conflist); repeat for more networks
#             (default: the configs in NETCONFPATH, default /etc/cni/net.d)
#   -a ARGS   CNI_ARGS, e.g. 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0'
#   -r JSON   capability arguments for runtimeConfig, e.g. '{"ips":["10.1.2.3/24"]}'
#   -p PATH   CNI_PATH (default: our whereabouts plugin, then /usr/lib/cni and
#             /opt/cni/bin)
#   -q        quiet: no progress on stderr
#
# PAUSE_IMAGE (default busybox:stable) is the image of the pause container.
# Our plugin is the first found of: $WHEREABOUTS_PLUGIN, dist/whereabouts/whereabouts
# (hack/build.sh), .venv/bin/whereabouts (hack/setup.sh).
#
# Exit status: the container's; 125 if the pause container or an ADD failed;
# 126 if the container succeeded but the teardown failed. Needs root (or a
# user allowed to enter the container's network namespace), docker, python3.
set -euo pipefail

LOG_TAG="docker-run"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

CONFS=() PATH_ARG=""
CNI_ARGS="${CNI_ARGS:-}" CAP_ARGS="${CAP_ARGS:-}"
PAUSE_IMAGE="${PAUSE_IMAGE:-busybox:stable}"
while getopts ":c:a:r:p:qh" opt; do
  case "$opt" in
    c) conf="$(realpath -e -- "$OPTARG" 2>/dev/null)" || { say "FAILED at step: read options: no such config $OPTARG"; exit 125; }
       CONFS+=("$conf") ;;
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
(($#)) || { usage; exit 125; }

command -v docker >/dev/null || { say "FAILED at step: find docker"; exit 125; }

WORK="$(mktemp -d -t docker-run.XXXXXX)"
PAUSE=""
NETNS=""
ADD_STARTED=0

# shellcheck disable=SC2317  # called by the EXIT trap
teardown() {
  local rc=$? failed_step="$STEP" bad=0
  trap - EXIT INT TERM
  [[ $ADD_STARTED -eq 0 ]] || del_networks "$PAUSE" "$NETNS" || bad=1
  if [[ -n "$PAUSE" ]]; then
    say "removing pause container ${PAUSE:0:12}"
    docker rm -f "$PAUSE" >/dev/null || { say "FAILED at step: docker rm -f $PAUSE"; bad=1; }
  fi
  rm -rf "$WORK"
  exit "$(final_status "$rc" "$failed_step" container "$bad")"
}
# shellcheck source=hack/lib/cni-env.sh
source "$ROOT/hack/lib/cni-env.sh"
trap teardown EXIT
exit_on_signals
setup_cni_env

step "starting the pause container ($PAUSE_IMAGE, --net=none)"
PAUSE="$(docker run -d --net=none --label whereabouts.hack/docker-run=pause "$PAUSE_IMAGE" sleep 2147483647)"
pid="$(docker inspect -f '{{ .State.Pid }}' "$PAUSE")"
[[ "$pid" =~ ^[1-9][0-9]*$ ]] || { STEP="read the pid of the pause container (got '$pid')"; exit 125; }
NETNS="/proc/$pid/ns/net"

step "ADD of the networks of ${PAUSE:0:12}"
ADD_STARTED=1
bash "$ROOT/hack/exec-plugins.sh" add "$PAUSE" "$NETNS" >"$WORK/results.jsonl"

STEP="container"
say "docker run --net=container:${PAUSE:0:12} $*"
set +e
docker run --rm --net="container:$PAUSE" "$@"
rc=$?
set -e
say "container exited with $rc"
exit "$rc"
