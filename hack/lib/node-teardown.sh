# shellcheck shell=bash
# Sourced by hack/node.sh: what `down` removes: pods, leftovers, mounts, cgroups, iptables chains, paths.
# Uses its variables (DIR, SOCK, NODE_BIN, ...) and hack/lib/common.sh.

# Everything below is best effort but reported: down goes on after a failure
# and exits non-zero if something of ours is left.
remove_pods() {
  our_pid containerd >/dev/null || return 0
  local ids id
  ids="$(crictl pods -q 2>/dev/null || true)"
  for id in $ids; do
    timeout 90 "$NODE_BIN/crictl" --runtime-endpoint "unix://$SOCK" --timeout 60s stopp "$id" >/dev/null 2>&1 \
      || say "could not stop pod sandbox $id cleanly"
    timeout 60 "$NODE_BIN/crictl" --runtime-endpoint "unix://$SOCK" --timeout 30s rmp -f "$id" >/dev/null 2>&1 \
      || say "could not remove pod sandbox $id"
  done
  [[ -z "$ids" ]] || say "removed $(wc -w <<<"$ids") pod sandbox(es)"
  # Whatever the CRI left: kill and delete the tasks and containers.
  local t
  for t in $(ctr tasks ls -q 2>/dev/null || true); do
    ctr tasks kill -s KILL "$t" >/dev/null 2>&1 || true
    ctr tasks delete -f "$t" >/dev/null 2>&1 || true
  done
  for t in $(ctr containers ls -q 2>/dev/null || true); do
    ctr containers delete "$t" >/dev/null 2>&1 || true
  done
}

# Processes whose command line names our state dir (shims name our socket).
our_leftovers() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline" || true)"
    [[ "$cmd" == *"$DIR/"* && "${p#/proc/}" != "$$" && "${p#/proc/}" != "$BASHPID" ]] || continue
    [[ "$cmd" == *"hack/node.sh"* ]] && continue
    echo "${p#/proc/}"
  done
}

unmount_ours() {
  local m
  for _ in 1 2 3; do
    m="$(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)"
    [[ -z "$m" ]] && return 0
    while read -r target; do
      [[ -n "$target" ]] && umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done <<<"$m"
  done
  m="$(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)"
  [[ -z "$m" ]] || { say "mounts left under $DIR: $m"; return 1; }
}

remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$d" ]] && say "cgroup $d still has processes: left in place"
  done
  return 0
}

remove_iptables() {
  local tool rule
  # The firewall plugin's rules for addresses of the cluster network: pods of this
  # node whose sandbox went without a CNI DEL (a test drops one on purpose).
  while read -r rule; do
    [[ -n "$rule" ]] || continue
    # shellcheck disable=SC2086  # a rule as iptables -S prints it
    iptables -w -D ${rule#-A } 2>/dev/null || true
  done < <(iptables -w -S CNI-FORWARD 2>/dev/null | grep -E -- "-[sd] ${POD_CIDR%%.0.0/16}\.[0-9]+\.[0-9]+/32 " || true)
  grep -qx "iptables:CNI-FORWARD" "$DIR/preexisting" 2>/dev/null && return 0
  for tool in iptables ip6tables; do
    "$tool" -w -S CNI-FORWARD >/dev/null 2>&1 || continue
    # Only the firewall plugin's frame (its jump to CNI-ADMIN) may be left; rules
    # for pods of anyone else's would keep the chain.
    if "$tool" -w -S CNI-FORWARD | grep -v -e '^-N CNI-FORWARD' -e '-j CNI-ADMIN' | grep -q .; then
      say "$tool chain CNI-FORWARD still holds rules for other containers: left in place"
      continue
    fi
    while "$tool" -w -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
    "$tool" -w -F CNI-FORWARD 2>/dev/null || true
    "$tool" -w -X CNI-FORWARD 2>/dev/null || say "could not delete $tool chain CNI-FORWARD"
    if "$tool" -w -S CNI-ADMIN 2>/dev/null | grep -v '^-N' | grep -q .; then continue; fi
    "$tool" -w -X CNI-ADMIN 2>/dev/null || true
  done
}

remove_node_paths() {
  local p
  for p in "${NODE_PATHS[@]}"; do
    grep -qxF -- "$p" "$DIR/preexisting" 2>/dev/null && continue
    [[ -e "$p" || -L "$p" ]] || continue
    case "$p" in
      /opt/cni/bin|/opt/cni|/etc/cni/net.d|/etc/cni|/opt/containerd*) rmdir "$p" 2>/dev/null || say "$p is not empty: left in place" ;;
      *) rm -rf "$p" ;;
    esac
  done
}
