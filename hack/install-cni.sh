#!/bin/sh
# The entrypoint of the whereabouts image, run by the DaemonSet on every node
# (doc/install/daemonset.yaml). POSIX sh with GNU coreutils (mv -T, base64 -w0).
#
#   install-cni.sh          install, then watch for a rotated token or CA until SIGTERM
#   install-cni.sh --once   install and exit
#
# Install means:
#  1. The plugin folder: $SRC/.whereabouts/<id>/ is copied to
#     $CNI_BIN_DIR/.whereabouts/<id>/ (under a temporary name, then renamed),
#     checked to answer VERSION, and $CNI_BIN_DIR/whereabouts is pointed at it
#     with one rename, so a runtime sees either the old or the new plugin,
#     never a half-copied one. The previous folder is kept for invocations
#     still running it; older ones are removed.
#  2. $CNI_NET_DIR/whereabouts.d/whereabouts.conf: the flat file that gives every
#     network on the node the kubeconfig path (as the node sees it).
#  3. $CNI_NET_DIR/whereabouts.d/whereabouts.kubeconfig, mode 0600: the API
#     server, the service account's CA and token, and the pod's namespace (where
#     the pools, reservations and Leases live). Rewritten whenever the token, CA,
#     server or namespace changes, and when the file goes missing.
#
# Environment (defaults in brackets):
#   SRC                 the image's CNI bin layout [/opt/whereabouts/cni-bin]
#   CNI_BIN_DIR         node's CNI bin dir as mounted here [/host/opt/cni/bin]
#   CNI_NET_DIR         node's CNI config dir as mounted here [/host/etc/cni/net.d]
#   CNI_NET_DIR_HOST    the same config dir as the node sees it [/etc/cni/net.d]
#   SA_DIR              token, ca.crt and namespace [/var/run/secrets/kubernetes.io/serviceaccount];
#                       doc/install/daemonset.yaml mounts the Secret whereabouts-token there
#                       instead: a token that outlives this pod, for the DELs after it is gone
#   KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT   set by the kubelet;
#   WHEREABOUTS_API_SERVER   overrides them with a URL, e.g. https://10.0.0.1:6443
#   WHEREABOUTS_SYNC_INTERVAL   seconds between rotation checks [10]
#   WHEREABOUTS_LOG_FILE, WHEREABOUTS_LOG_LEVEL   written into whereabouts.conf if set
#   WHEREABOUTS_SINGLE_LEASE   true or false: written into whereabouts.conf if set
#   NODENAME            the Node's name (the DaemonSet passes spec.nodeName): written to
#                       $CNI_NET_DIR/whereabouts.d/nodename, where both plugins look for it
#                       (node_slice_size, block_size); the runtime passes no node name
set -eu

SRC="${SRC:-/opt/whereabouts/cni-bin}"
CNI_BIN_DIR="${CNI_BIN_DIR:-/host/opt/cni/bin}"
CNI_NET_DIR="${CNI_NET_DIR:-/host/etc/cni/net.d}"
CNI_NET_DIR_HOST="${CNI_NET_DIR_HOST:-/etc/cni/net.d}"
SA_DIR="${SA_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}"
INTERVAL="${WHEREABOUTS_SYNC_INTERVAL:-10}"
CONF_DIR="$CNI_NET_DIR/whereabouts.d"
CONF="$CONF_DIR/whereabouts.conf"
KUBECONFIG_FILE="$CONF_DIR/whereabouts.kubeconfig"
KUBECONFIG_HOST="$CNI_NET_DIR_HOST/whereabouts.d/whereabouts.kubeconfig"

say() { echo "[install-cni] $(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >&2; }
fail() { say "FAILED at step: $*"; exit 1; }

case "${WHEREABOUTS_SINGLE_LEASE:-}" in
  ''|true|false) ;;
  *) fail "check the environment: WHEREABOUTS_SINGLE_LEASE must be true or false, not '$WHEREABOUTS_SINGLE_LEASE'" ;;
esac

# --- 1. the plugin folder ---------------------------------------------------------

source_id() {
  target="$(readlink "$SRC/whereabouts")" || fail "read $SRC/whereabouts (not a symlink into .whereabouts/)"
  case "$target" in
    .whereabouts/*/whereabouts) ;;
    *) fail "read $SRC/whereabouts: unexpected target $target" ;;
  esac
  id="${target#.whereabouts/}"
  echo "${id%/whereabouts}"
}

installed_id() {
  target="$(readlink "$CNI_BIN_DIR/whereabouts" 2>/dev/null)" || return 0
  case "$target" in
    .whereabouts/*/whereabouts) id="${target#.whereabouts/}"; echo "${id%/whereabouts}" ;;
  esac
}

answers_version() {
  out="$(echo '{"cniVersion":"1.0.0"}' | env -i CNI_COMMAND=VERSION "$1" 2>&1)" || return 1
  case "$out" in *supportedVersions*) return 0 ;; esac
  return 1
}

install_plugin() {
  id="$(source_id)"
  [ -x "$SRC/.whereabouts/$id/whereabouts" ] || fail "find the plugin folder $SRC/.whereabouts/$id"
  [ -d "$CNI_BIN_DIR" ] || fail "find the CNI bin dir $CNI_BIN_DIR (is the hostPath mounted?)"
  store="$CNI_BIN_DIR/.whereabouts"
  mkdir -p "$store"
  previous="$(installed_id)"
  # Copy unless an identical folder is there. The executable is compared too:
  # another installer that copies a plain file onto `whereabouts` (the Go
  # plugin's does) writes through the symlink into our folder.
  if [ ! -x "$store/$id/whereabouts" ] || ! cmp -s "$SRC/.whereabouts/$id/whereabouts" "$store/$id/whereabouts"; then
    say "copying the plugin $id into $CNI_BIN_DIR"
    tmp="$store/.tmp-$id-$$"
    rm -rf "$tmp"
    cp -a "$SRC/.whereabouts/$id" "$tmp" || { rm -rf "$tmp"; fail "copy $SRC/.whereabouts/$id to $tmp"; }
    rm -rf "${store:?}/${id:?}"
    mv "$tmp" "$store/$id" || fail "rename $tmp to $store/$id"
  fi
  answers_version "$store/$id/whereabouts" || fail "run $store/$id/whereabouts: it does not answer VERSION"
  if [ "$previous" != "$id" ]; then
    link="$CNI_BIN_DIR/.whereabouts-link-$$"
    rm -f "$link"
    ln -s ".whereabouts/$id/whereabouts" "$link"
    mv -f -T "$link" "$CNI_BIN_DIR/whereabouts" || { rm -f "$link"; fail "point $CNI_BIN_DIR/whereabouts at $id"; }
    say "$CNI_BIN_DIR/whereabouts -> .whereabouts/$id/whereabouts${previous:+ (was $previous)}"
  else
    say "plugin $id already installed"
  fi
  # Keep the current and the previous folder; an invocation that started just
  # before the swap may still be loading files from the previous one.
  for dir in "$store"/* "$store"/.tmp-*; do
    [ -e "$dir" ] || continue
    name="${dir##*/}"
    case "$name" in
      "$id"|"$previous") ;;
      .tmp-*-"$$") ;;
      *) say "removing old plugin folder $name"; rm -rf "$dir" ;;
    esac
  done
}

# --- 2. + 3. the flat file and the kubeconfig --------------------------------------

json_string() {
  # A JSON string literal for a value without control characters.
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

api_server() {
  if [ -n "${WHEREABOUTS_API_SERVER:-}" ]; then
    echo "$WHEREABOUTS_API_SERVER"
    return
  fi
  host="${KUBERNETES_SERVICE_HOST:-}"
  port="${KUBERNETES_SERVICE_PORT:-443}"
  [ -n "$host" ] || fail "find the API server (KUBERNETES_SERVICE_HOST is not set; set WHEREABOUTS_API_SERVER)"
  case "$host" in *:*) host="[$host]" ;; esac
  echo "https://$host:$port"
}

# Write $2 (content on stdin) to $1 atomically with mode $3.
write_file() {
  dest="$1" mode="$2"
  tmp="$dest.tmp.$$"
  (umask 077; cat >"$tmp") || { rm -f "$tmp"; fail "write $tmp"; }
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest" || { rm -f "$tmp"; fail "rename $tmp to $dest"; }
}

write_conf() {
  mkdir -p "$CONF_DIR"
  chmod 0755 "$CONF_DIR"
  {
    printf '{\n  "datastore": "kubernetes",\n  "kubernetes": {"kubeconfig": %s}' "$(json_string "$KUBECONFIG_HOST")"
    # The directory of the nodename file, as the Go plugin reads it from the flat file.
    printf ',\n  "configuration_path": %s' "$(json_string "${KUBECONFIG_HOST%/*}")"
    [ -n "${WHEREABOUTS_LOG_FILE:-}" ] && printf ',\n  "log_file": %s' "$(json_string "$WHEREABOUTS_LOG_FILE")"
    [ -n "${WHEREABOUTS_LOG_LEVEL:-}" ] && printf ',\n  "log_level": %s' "$(json_string "$WHEREABOUTS_LOG_LEVEL")"
    [ -n "${WHEREABOUTS_SINGLE_LEASE:-}" ] && printf ',\n  "single_lease": %s' "$WHEREABOUTS_SINGLE_LEASE"
    printf '\n}\n'
  } | write_file "$CONF.new" 0644
  if [ -f "$CONF" ] && cmp -s "$CONF.new" "$CONF"; then
    rm -f "$CONF.new"
  else
    mv -f "$CONF.new" "$CONF"
    say "wrote $CONF"
  fi
  if [ -n "${NODENAME:-}" ]; then
    printf '%s\n' "$NODENAME" | write_file "$CONF_DIR/nodename" 0644
  fi
}

# The inputs of the kubeconfig, hashed: the token is never logged or kept elsewhere.
fingerprint() {
  { cat "$SA_DIR/token" "$SA_DIR/ca.crt" "$SA_DIR/namespace"; api_server; } | sha256sum | cut -d' ' -f1
}

LAST=""
write_kubeconfig() {
  for f in token ca.crt namespace; do
    [ -s "$SA_DIR/$f" ] || fail "read $SA_DIR/$f (is the service-account token mounted?)"
  done
  now="$(fingerprint)"
  if [ "$now" = "$LAST" ] && [ -s "$KUBECONFIG_FILE" ]; then
    return 0
  fi
  server="$(api_server)"
  namespace="$(cat "$SA_DIR/namespace")"
  mkdir -p "$CONF_DIR"
  # JSON (which every kubeconfig reader takes as YAML): the plugin then parses it without importing a
  # YAML library, which saves ~15 ms on every pod attach. Written by this script; rewritten on rotation.
  {
    printf '{"apiVersion": "v1", "kind": "Config",\n'
    printf ' "clusters": [{"name": "whereabouts-cluster", "cluster": {"server": %s, "certificate-authority-data": "%s"}}],\n' \
      "$(json_string "$server")" "$(base64 -w0 <"$SA_DIR/ca.crt")"
    printf ' "users": [{"name": "whereabouts", "user": {"token": %s}}],\n' "$(json_string "$(cat "$SA_DIR/token")")"
    printf ' "contexts": [{"name": "whereabouts-context", "context": {"cluster": "whereabouts-cluster", "user": "whereabouts", "namespace": %s}}],\n' \
      "$(json_string "$namespace")"
    printf ' "current-context": "whereabouts-context"}\n'
  } | write_file "$KUBECONFIG_FILE" 0600
  if [ -z "$LAST" ]; then
    say "wrote $KUBECONFIG_FILE (server $server, namespace $namespace)"
  else
    say "token, CA, server or namespace changed: rewrote $KUBECONFIG_FILE"
  fi
  LAST="$now"
}

# --- main ---------------------------------------------------------------------------

case "${1:-}" in
  ""|--once) ;;
  *) echo "usage: install-cni.sh [--once]" >&2; exit 2 ;;
esac
case "$INTERVAL" in
  ''|*[!0-9]*|0) fail "read WHEREABOUTS_SYNC_INTERVAL: '$INTERVAL' is not a whole number of seconds > 0" ;;
esac

install_plugin
write_conf
write_kubeconfig
say "installed; the plugin reads $CNI_NET_DIR_HOST/whereabouts.d/whereabouts.conf"
[ "${1:-}" = "--once" ] && exit 0

trap 'say "stopping"; exit 0' TERM INT
while :; do
  sleep "$INTERVAL" &
  wait $! || true
  [ -L "$CNI_BIN_DIR/whereabouts" ] || { say "$CNI_BIN_DIR/whereabouts went missing: reinstalling"; install_plugin; }
  [ -s "$CONF" ] || write_conf
  write_kubeconfig
done
