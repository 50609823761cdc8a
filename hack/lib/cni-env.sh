# Sourced by hack/netns-run.sh and hack/docker-run.sh: the CNI_* environment for
# hack/exec-plugins.sh. Needs ROOT, WORK, PATH_ARG, QUIET, CONFS (array) and
# STEP/say from the caller; on failure sets STEP and exits 125.

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
