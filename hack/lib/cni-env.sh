# Sourced by hack/netns-run.sh and hack/docker-run.sh: the CNI_* environment for
# hack/exec-plugins.sh, and the parts of their teardown that they share. Needs
# ROOT, WORK, PATH_ARG, QUIET, CONFS (array) and STEP/say from the caller; on
# failure sets STEP and exits 125.

# shellcheck shell=bash
setup_cni_env() {
  if [[ -n "$PATH_ARG" ]]; then
    CNI_PATH="$PATH_ARG"
  else
    plugin=""
    for cand in "${WHEREABOUTS_PLUGIN:-}" "$ROOT/dist/whereabouts/whereabouts" "$ROOT/.venv/bin/whereabouts"; do
      [[ -n "$cand" && -x "$cand" ]] && { plugin="$cand"; break; }
    done
    if [[ -z "$plugin" ]]; then
      # shellcheck disable=SC2034  # read by the caller's teardown
      STEP="find the whereabouts plugin (run hack/setup.sh or hack/build.sh)"
      exit 125
    fi
    mkdir "$WORK/bin"
    ln -s "$(realpath "$plugin")" "$WORK/bin/whereabouts"
    CNI_PATH="$WORK/bin:/usr/lib/cni:/opt/cni/bin"
    say "whereabouts plugin: $plugin"
  fi
  export CNI_PATH CNI_ARGS CAP_ARGS
  export CNI_CACHE_DIR="$WORK/cache"
  export EXEC_PLUGINS_QUIET="$QUIET"
  if ((${#CONFS[@]})); then
    NETCONF_FILES="$(IFS=:; echo "${CONFS[*]}")"
    export NETCONF_FILES
  fi
}

# DEL of every network of container $1 (network namespace $2) whose ADD was attempted.
del_networks() {
  say "DEL of the networks of $1"
  bash "$ROOT/hack/exec-plugins.sh" del "$1" "$2" && return 0
  say "FAILED at step: DEL of the networks of $1"
  return 1
}

# The exit status after teardown (printed): the workload's own when it ran ($2 is
# $3, its step), or 126 when it succeeded but the teardown failed ($4 = 1);
# otherwise 125 for a failed step, 130/143 when a signal stopped us.
final_status() {
  local rc=$1 failed_step=$2 run_step=$3 teardown_failed=$4
  if [[ $failed_step == "$run_step" ]]; then
    [[ $teardown_failed -eq 1 && $rc -eq 0 ]] && rc=126
  elif [[ $rc -ne 0 ]]; then
    say "FAILED at step: $failed_step (exit $rc)"
    [[ $rc -eq 130 || $rc -eq 143 ]] || rc=125
  fi
  echo "$rc"
}
