# shellcheck shell=bash
# Sourced by hack/build-control-plane.sh and hack/build-node.sh: what building one binary from the
# Go module proxy shares. Uses hack/lib/common.sh; the caller sets BIN_DIR.

# shellcheck disable=SC2034  # used by the builds of the caller
NICE=(nice -n 19)
command -v go >/dev/null || fail "find go (install Go 1.25 or newer)"

# timed NAME CMD...: run CMD, then log how long it took.
timed() {
  local name="$1" start=$SECONDS; shift
  "$@" || return
  local took=$((SECONDS - start))
  say "$name built in ${took}s"
  echo "$(date -u +%FT%TZ) $name ${took}s" >>"$CACHE_ROOT/build-times.log"
}

# scratch_module NAME DIR: cd into DIR, a module of its own (testenv-NAME) that only requires the
# upstream module, so the upstream go.mod's local replace lines do not apply.
scratch_module() {
  mkdir -p "$2"; cd "$2" || fail "$1: cd $2"
  [[ -f go.mod ]] || go mod init "testenv-$1" >/dev/null 2>&1 || fail "$1: go mod init"
}
