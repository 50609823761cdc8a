# Sourced by hack/cluster.sh and hack/node.sh: the daemons they start and stop. Needs DIR
# (the state dir), LOG_TAG (the prefix of their messages), say and die from the caller.

# shellcheck shell=bash

# Print the pid recorded in $DIR/<name>.pid if that process is alive and is one of ours (its
# command line names our state dir). Zombies have an empty command line, so they count as gone.
our_pid() {
  local pid argv0 cmd
  pid="$(cat "$DIR/$1.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  argv0="$(head -z -n1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0' || true)"
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  [[ "${argv0##*/}" == "$1" && "$cmd" == *"$DIR/"* ]] || return 1
  echo "$pid"
}

# launch NAME ARGV...: start ARGV detached (own session, immune to SIGHUP, stdio on
# $DIR/NAME.log) and record its pid in $DIR/NAME.pid. The pid is written by the process itself
# right before it execs, so it is exact even if setsid has to fork.
launch() {
  local name="$1"; shift
  rm -f "$DIR/$name.pid"
  # shellcheck disable=SC2016  # expanded by the inner bash
  setsid nohup bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$DIR/$name.pid" "$@" >>"$DIR/$name.log" 2>&1 </dev/null 9<&- &
  # Wait for the pid file, then for the exec (until then argv[0] is bash).
  for _ in $(seq 100); do
    our_pid "$name" >/dev/null && return 0
    sleep 0.1
  done
  die "$name did not start (see $DIR/$name.log)"
}

show_log() {
  say "last lines of $DIR/$1.log:"
  tail -n "${2:-25}" "$DIR/$1.log" 2>/dev/null | sed "s/^/[$LOG_TAG]   $1| /" >&2 || true
}
