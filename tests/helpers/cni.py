"""Run the plugin the way a runtime does: a process, CNI_* env vars, the config on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

PLUGIN = [sys.executable, "-m", "whereabouts"]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    @property
    def ips(self) -> list[str]:
        return [ip["address"] for ip in self.json["ips"]]

    def ok(self) -> "Run":
        assert self.rc == 0, f"plugin failed: rc={self.rc} stdout={self.stdout} stderr={self.stderr}"
        return self

    def error(self, code: int) -> dict[str, Any]:
        assert self.rc != 0, f"expected failure, got {self.stdout}"
        assert "Traceback" not in self.stderr, self.stderr
        err = self.json
        assert err["code"] == code, err
        return err


def cni_env(command: str, container_id: str = "c1", ifname: str = "net1", netns: str = "/var/run/netns/test",
            pod: str | None = "pod-a", pod_namespace: str = "default", extra_args: str = "",
            env: dict[str, str] | None = None) -> dict[str, str]:
    args = "IgnoreUnknown=1"
    if pod is not None:
        args += f";K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container_id}"
    if extra_args:
        args += ";" + extra_args
    out = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_IFNAME": ifname, "CNI_NETNS": netns, "CNI_ARGS": args, "CNI_PATH": "/usr/lib/cni",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out.update(env or {})
    return out


def start(conf: Any, command: str = "ADD", plugin: list[str] | None = None, **kw: Any) -> subprocess.Popen:
    """Start one invocation without waiting (for concurrency tests).

    ``plugin`` is the command line to run (default: ours, ``PLUGIN``); the
    compatibility tests pass the Go plugin's binary here.
    """
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    proc = subprocess.Popen(plugin or PLUGIN, env=cni_env(command, **kw), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(stdin)
        proc.stdin.close()
    except BrokenPipeError:  # the plugin stopped reading an oversized config, as it should
        pass
    proc.stdin = None
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> Run:
    out, err = proc.communicate(timeout=timeout)
    return Run(proc.returncode, out.decode(), err.decode())


def run(conf: Any, command: str = "ADD", **kw: Any) -> Run:
    return finish(start(conf, command, **kw))
