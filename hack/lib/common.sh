# shellcheck shell=bash
# Sourced first by every hack script (but hack/install-cni.sh, which the image carries alone):
# the repo root, the cache root, messages and the report of a failed step.
# Set LOG_TAG (the prefix of the script's messages) before sourcing it; QUIET=1 silences `say`.

# shellcheck disable=SC2034  # used by the scripts that source this
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Downloads and builds kept between runs (Go sources and binaries, base images, Docker's layers).
# shellcheck disable=SC2034
# HOME may be unset (a runtime or a test runs a hack script with a bare environment): the user's home then.
CACHE_ROOT="${WHEREABOUTS_CACHE:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/whereabouts-testenv}"
QUIET=0
STEP="start"

say() { [[ $QUIET -eq 1 ]] || echo "[$LOG_TAG] $*" >&2; }
step() { STEP="$*"; say "$*"; }
die() { say "$*"; exit 1; }
fail() { say "FAILED at step: $*"; exit 1; }
# The script's header comment, up to its `set` line, as its usage.
usage() { sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[-1]}" | sed 's/^# \{0,1\}//' >&2; }

# report_failure [RC]: an EXIT trap's report of the step a failure stopped at (STEP "-": nothing to report).
report_failure() {
  local rc="${1:-$?}"
  if [[ $rc -ne 0 && $STEP != "-" ]]; then say "FAILED at step: $STEP (exit $rc)"; fi
}

# INT and TERM exit (130, 143), so that the EXIT trap cleans up.
exit_on_signals() { trap 'exit 130' INT; trap 'exit 143' TERM; }
