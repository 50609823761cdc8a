#!/usr/bin/env bash
# Run CNI network configs against one network namespace the way a runtime
# (libcni) does. The engine behind hack/netns-run.sh and hack/docker-run.sh.
#
#   hack/exec-plugins.sh add   CONTAINERID NETNSPATH
#   hack/exec-plugins.sh check CONTAINERID NETNSPATH
#   hack/exec-plugins.sh del   CONTAINERID NETNSPATH
#
# Network configs: every *.conf, *.conflist and *.json in NETCONFPATH
# (default /etc/cni/net.d) in name order, or the files listed in NETCONF_FILES
# (':'-separated), each attached as eth0, eth1, ... A .conflist runs its
# plugins in order, each getting the previous one's result as prevResult.
#
# What ADD did is kept in CNI_CACHE_DIR (default /var/lib/cni/whereabouts-hack):
# which configs were attempted, on which interface, and their results. DEL
# uses that record, so it works like a runtime's DEL:
#   - it runs for every config whose ADD was attempted, also one that failed;
#   - in reverse order, plugins of a list in reverse order too;
#   - with the config ADD used and, for cniVersion 0.4.0 and later, the ADD
#     result as prevResult (libcni does not send one to 0.3.x configs);
#   - it keeps going after a failure and reports every failed DEL.
# Without a record for the container, DEL falls back to the configs found now.
# CHECK (configs of 0.4.0 and later) uses the record in ADD order.
#
# Other environment:
#   CNI_PATH   where plugins are looked up (default /opt/cni/bin:/usr/lib/cni)
#   CNI_ARGS   passed to every plugin, with IgnoreUnknown=1 put first when it
#              is missing, as runtimes do (the reference plugins refuse unknown
#              keys such as K8S_POD_NAME otherwise)
#   CAP_ARGS   a JSON object of capability arguments, e.g. '{"ips":["10.1.2.3/24"]}';
#              each key is put into runtimeConfig of the plugins whose config
#              declares that capability ("capabilities": {"ips": true})
#   PYTHON     the interpreter for the JSON handling (default python3)
#   EXEC_PLUGINS_QUIET=1  report failures only
#
# Progress and results go to stderr; exit status 0 only if every step succeeded.
set -euo pipefail

LOG_TAG="exec-plugins"
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"


if [[ $# -ne 3 || ! "$1" =~ ^(add|check|del)$ ]]; then
  usage
  exit 2
fi

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { say "FAILED at step: find $PY (needed for the JSON handling)"; exit 2; }

exec "$PY" - "$@" <<'PYEOF'
import json
import os
import re
import subprocess
import sys
import time

verb, container_id, netns = sys.argv[1], sys.argv[2], sys.argv[3]
cache_dir = os.environ.get("CNI_CACHE_DIR") or "/var/lib/cni/whereabouts-hack"
cni_path = os.environ.get("CNI_PATH") or "/opt/cni/bin:/usr/lib/cni"
cni_args = os.environ.get("CNI_ARGS", "")
if cni_args and not any(p.split("=", 1)[0] == "IgnoreUnknown" for p in cni_args.split(";")):
    cni_args = "IgnoreUnknown=1;" + cni_args


quiet = os.environ.get("EXEC_PLUGINS_QUIET") == "1"


def say(msg, always=False):
    if always or not quiet:
        print(f"[exec-plugins] {msg}", file=sys.stderr, flush=True)


def die(msg, code=1):
    say(f"FAILED: {msg}", always=True)
    sys.exit(code)


def version_tuple(v):
    try:
        return tuple(int(p) for p in str(v).split("."))
    except ValueError:
        return (0,)


try:
    cap_args = json.loads(os.environ.get("CAP_ARGS") or "{}")
except ValueError as e:
    die(f"CAP_ARGS is not valid JSON: {e}", 2)
if not isinstance(cap_args, dict):
    die("CAP_ARGS must be a JSON object", 2)

if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$", container_id):
    die(f"container id {container_id!r} is not valid (letters, digits, '_', '.', '-')", 2)


# --- configs ---------------------------------------------------------------------------


def config_files():
    listed = os.environ.get("NETCONF_FILES")
    if listed:
        return [p for p in listed.split(":") if p]
    d = os.environ.get("NETCONFPATH") or "/etc/cni/net.d"
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        die(f"cannot list NETCONFPATH {d}: {e.strerror}", 2)
    return [os.path.join(d, n) for n in names if n.endswith((".conf", ".conflist", ".json"))]


def load(path):
    """(kind, name, version, plugins) of one file; a .conf is a list of one plugin."""
    try:
        with open(path, "rb") as f:
            conf = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read network config {path}: {e}", 2)
    if not isinstance(conf, dict):
        die(f"{path}: a network config must be a JSON object", 2)
    if isinstance(conf.get("plugins"), list):
        name, version = conf.get("name"), conf.get("cniVersion")
        plugins = []
        for p in conf["plugins"]:
            # libcni gives every plugin of a list the list's name and version.
            p = dict(p, name=name, cniVersion=version)
            plugins.append(p)
        kind = "conflist"
    else:
        name, version, plugins, kind = conf.get("name"), conf.get("cniVersion"), [conf], "conf"
    if not name or not version:
        die(f"{path}: 'name' and 'cniVersion' are required", 2)
    for p in plugins:
        if not p.get("type"):
            die(f"{path}: a plugin config without 'type'", 2)
        caps = p.get("capabilities") or {}
        runtime = {k: v for k, v in cap_args.items() if caps.get(k)}
        if runtime:
            p["runtimeConfig"] = runtime
    return {"kind": kind, "name": name, "cniVersion": version, "plugins": plugins, "file": path}


# --- running a plugin ----------------------------------------------------------------------


def find_plugin(ptype):
    for d in cni_path.split(":"):
        p = os.path.join(d, ptype)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def invoke(command, plugin_conf, ifname):
    """Run one plugin. (ok, parsed stdout, text to report)."""
    ptype = plugin_conf["type"]
    exe = find_plugin(ptype)
    if exe is None:
        return False, None, f"plugin {ptype!r} not found in CNI_PATH={cni_path}"
    env = dict(os.environ)
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": cni_path,
        "PATH": cni_path + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    })
    started = time.monotonic()
    proc = subprocess.run([exe], input=json.dumps(plugin_conf).encode(), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    out = proc.stdout.decode("utf-8", "replace").strip()
    err = proc.stderr.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(out) if out else None
    except ValueError:
        parsed = None
    if proc.returncode == 0:
        if command == "ADD" and not isinstance(parsed, dict):
            return False, None, f"{ptype}: exit 0 but no JSON result on stdout ({took}): {out[:300]!r}"
        return True, parsed, took
    if isinstance(parsed, dict) and "code" in parsed:
        text = f"{ptype}: error code {parsed.get('code')}: {parsed.get('msg')}"
        if parsed.get("details"):
            text += f" ({parsed['details']})"
    else:
        text = f"{ptype}: exit {proc.returncode}: {out[:500] or '(no output)'}"
    if err:
        text += f"; stderr: {err[:500]}"
    return False, parsed, text + f" ({took})"


# --- the cache of what ADD did --------------------------------------------------------------


def entry_path(seq, name, ifname):
    return os.path.join(cache_dir, f"{container_id}--{seq:03d}--{name}--{ifname}.json")


def write_entry(path, entry):
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(entry, f, indent=1)
    os.replace(tmp, path)


def read_entries():
    """This container's records, in ADD order."""
    out = []
    prefix = f"{container_id}--"
    try:
        names = sorted(n for n in os.listdir(cache_dir) if n.startswith(prefix) and n.endswith(".json"))
    except FileNotFoundError:
        return []
    for n in names:
        path = os.path.join(cache_dir, n)
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError) as e:
            say(f"skipping unreadable record {path}: {e}")
            continue
        entry["_path"] = path
        out.append(entry)
    return out


def summary(result):
    ips = [ip.get("address") for ip in (result or {}).get("ips") or [] if isinstance(ip, dict)]
    return ", ".join(ips) or "no address"


def with_prev(plugin_conf, version, result):
    conf = dict(plugin_conf)
    if result is not None and version_tuple(version) >= (0, 4, 0):
        conf["prevResult"] = result
    return conf


# --- verbs --------------------------------------------------------------------------------


def do_add():
    if read_entries():
        die(f"container {container_id} already has attachments recorded in {cache_dir}: run del first", 2)
    files = config_files()
    if not files:
        die("no network configs found (set NETCONFPATH or NETCONF_FILES)", 2)
    nets = [load(p) for p in files]
    for i, net in enumerate(nets):
        ifname = f"eth{i}"
        path = entry_path(i, net["name"], ifname)
        entry = {"containerID": container_id, "netns": netns, "ifname": ifname, "name": net["name"],
                 "cniVersion": net["cniVersion"], "kind": net["kind"], "file": net["file"],
                 "plugins": net["plugins"], "result": None}
        # Recorded before the ADD runs: a failed or interrupted ADD still gets its DEL.
        write_entry(path, entry)
        prev = None
        for plugin in net["plugins"]:
            conf = plugin if prev is None else dict(plugin, prevResult=prev)
            ok, result, text = invoke("ADD", conf, ifname)
            if not ok:
                die(f"ADD of network {net['name']!r} ({net['file']}) on {ifname}: {text}")
            prev = result
        entry["result"] = prev
        write_entry(path, entry)
        say(f"ADD {net['name']} ({'/'.join(p['type'] for p in net['plugins'])}) {ifname}: {summary(prev)}")
        print(json.dumps({"name": net["name"], "ifname": ifname, "result": prev}), flush=True)


def do_check():
    entries = read_entries()
    if not entries:
        die(f"no attachments recorded for container {container_id} in {cache_dir}", 2)
    failed = 0
    for e in entries:
        if version_tuple(e["cniVersion"]) < (0, 4, 0):
            say(f"CHECK {e['name']} {e['ifname']}: skipped (cniVersion {e['cniVersion']} has no CHECK)")
            continue
        for plugin in e["plugins"]:
            ok, _, text = invoke("CHECK", with_prev(plugin, e["cniVersion"], e["result"]), e["ifname"])
            if not ok:
                failed += 1
                say(f"CHECK of network {e['name']!r} on {e['ifname']} failed: {text}", always=True)
                break
        else:
            say(f"CHECK {e['name']} {e['ifname']}: ok")
    if failed:
        die(f"{failed} CHECK(s) failed")


def do_del():
    entries = read_entries()
    if not entries:
        say(f"no record for container {container_id}: DEL of the configs found now, in reverse order")
        entries = [{"name": n["name"], "cniVersion": n["cniVersion"], "plugins": n["plugins"], "ifname": f"eth{i}",
                    "result": None, "_path": None} for i, n in enumerate(load(p) for p in config_files())]
    failed = []
    for e in reversed(entries):
        ok_all = True
        for plugin in reversed(e["plugins"]):
            ok, _, text = invoke("DEL", with_prev(plugin, e["cniVersion"], e["result"]), e["ifname"])
            if not ok:
                ok_all = False
                failed.append(f"network {e['name']!r} on {e['ifname']}: {text}")
        if ok_all:
            say(f"DEL {e['name']} {e['ifname']}: ok")
            if e.get("_path"):
                os.unlink(e["_path"])
    if failed:
        for f in failed:
            say(f"DEL failed: {f}", always=True)
        die(f"{len(failed)} DEL(s) failed; their records stay in {cache_dir} for a retry")


{"add": do_add, "check": do_check, "del": do_del}[verb]()
PYEOF
