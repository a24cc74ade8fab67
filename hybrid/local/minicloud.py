"""Reaching the local OpenStack fixture's floating IPs (devstack/minicloud.sh), which exist only inside its network
namespace ``minicloud-ext``.

Every probe runs as a child process through the fixture's one entry, ``devstack/minicloud.sh exec -- CMD``: this
module re-runs itself there (``python -m hybrid.local.minicloud REQUEST``) and prints one JSON answer. The SSH probe
logs in with the project's own client (``hybrid.openstack.remote.open_ssh``: paramiko, the stack's key only, the host
key pinned to those the caller read from the server's console). The calling process itself never sends a packet to a
floating IP (``tcp_from_here`` only where the fixture made the range ``unreachable`` in the root namespace). Used by
the tests and benchmarks; needs root (``ip netns exec``) and a checkout (the script lives in ``devstack/``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hybrid.core.settings import FIXTURE_NAMESPACE
from hybrid.core.wait import Poll, wait_for
from hybrid.openstack.hostkeys import HostKey

ROOT = Path(__file__).resolve().parents[2]
MINICLOUD = ROOT / "devstack" / "minicloud.sh"
NAMESPACE = FIXTURE_NAMESPACE
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at ")
"""cloud-init's last line on a server's console (its final stage is done)."""


def unavailable_reason() -> str:
    """Why the floating IPs cannot be reached from here (empty when they can)."""
    if not MINICLOUD.exists():
        return f"{MINICLOUD} not found: the fixture's script comes with a checkout of the project"
    if os.geteuid() != 0:
        return "entering the fixture's namespace needs root (devstack/minicloud.sh exec)"
    if not Path("/run/netns", NAMESPACE).exists():
        return (f"the fixture has no namespace {NAMESPACE}: it runs without real compute (MINICLOUD_COMPUTE=fake) "
                "or is not up")
    return ""


def in_namespace(request: dict, timeout: float = 60.0) -> dict:
    """Runs one probe inside the fixture's namespace; returns its JSON answer."""
    done = subprocess.run(["bash", str(MINICLOUD), "exec", "--", sys.executable, "-m", "hybrid.local.minicloud",
                           json.dumps(request)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"probe {request['probe']} exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ssh(host: str, key: Path, command: str, host_keys: Sequence[HostKey], user: str = "debian") -> dict:
    """``{"ok": bool, "output": str, "code": int, "error": str}`` of ``command`` run over SSH as ``user``, to a
    server whose host key is one of ``host_keys`` (``hybrid.openstack.hostkeys``: from its console)."""
    return in_namespace({"probe": "ssh", "host": host, "key": str(key), "command": command, "user": user,
                         "host_keys": [dataclasses.asdict(k) for k in host_keys]})


def wait_for_ssh(host: str, key: Path, host_keys: Sequence[HostKey], timeout: float, interval: float = 2.0,
                 user: str = "debian") -> str:
    """Tries ``hostname`` over SSH every ``interval`` seconds until a login succeeds; returns its output. Raises
    ``WaitTimeout`` with the last answer after ``timeout`` seconds."""
    def probe() -> Poll[str]:
        answer = ssh(host, key, "hostname", host_keys, user)
        ok = answer["ok"] and answer["code"] == 0
        return Poll(answer["output"], ok, state=answer["error"] or f"exit {answer['code']}")

    return wait_for(f"an SSH login at {host}", probe, timeout, interval)


def tcp(host: str, port: int, timeout: float = 3.0) -> str:
    """``connected``, ``refused``, ``timeout`` or ``error: ...`` for one TCP connection attempt."""
    return in_namespace({"probe": "tcp", "host": host, "port": port, "timeout": timeout})["result"]


def tcp_from_here(host: str, port: int, timeout: float = 3.0) -> str:
    """The same attempt from this process's own (root) namespace: only where that range is ``unreachable`` there."""
    return _tcp({"host": host, "port": port, "timeout": timeout})["result"]


def _tcp(request: dict) -> dict:
    try:
        with socket.create_connection((request["host"], request["port"]), timeout=request["timeout"]):
            return {"result": "connected"}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except TimeoutError:
        return {"result": "timeout"}
    except OSError as exc:
        return {"result": f"error: {exc.strerror or exc}"}


def _ssh(request: dict) -> dict:
    from hybrid.core.errors import HybridError
    from hybrid.openstack.remote import Target, open_ssh, run

    try:
        pinned = tuple(HostKey(**each) for each in request["host_keys"])
        client = open_ssh(Target(request["host"], user=request["user"], host_keys=pinned), Path(request["key"]))
    except HybridError as exc:
        return {"ok": False, "output": "", "code": -1, "error": f"{type(exc).__name__}: {exc}"}
    try:
        output, code = run(client, request["command"])
    finally:
        client.close()
    return {"ok": True, "output": output, "code": code, "error": ""}


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    answer = {"ssh": _ssh, "tcp": _tcp}[request["probe"]](request)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
