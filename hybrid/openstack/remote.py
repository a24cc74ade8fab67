"""SSH steps on the web-tier server (paramiko): deliver credential files, check the service.

They run only where the cloud's floating IPs are reachable: from this machine (``openstack.routable``), or from
inside a network namespace (``openstack.namespace``; the local fixture's floating IPs exist only in its own), where
the connection is made. paramiko's exceptions stop here and come out as the project's errors. Host keys are trusted
on first use and remembered in a known_hosts file of the stack, so a changed host key is refused.
"""
from __future__ import annotations

import logging
import posixpath
import shlex
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko

from hybrid.core import netns
from hybrid.core.errors import CloudError, CredentialsError, HybridError
from hybrid.core.naming import IMAGE_LOGIN_USER
from hybrid.openstack.compute import WEB_SERVICE

log = logging.getLogger(__name__)
DEFAULT_USER = IMAGE_LOGIN_USER
CONNECT_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0
HEALTH_URL = "http://localhost:8000/healthz"
# The image has Python (the web tier's own) but maybe no curl: the health request is made with the standard library.
FETCH = ("python3 -c 'import sys, urllib.request; "
         "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' ")
SKEW_LIMIT = 2.0
"""Seconds of clock difference between the server and this machine that ``check`` flags."""
LOG_LINES = 10


@dataclass(frozen=True)
class Target:
    """Where to SSH: address, port, login user, the stack's known_hosts file (None: remember nothing) and the
    network namespace the connection is made in (empty: this machine's own)."""

    host: str
    port: int = 22
    user: str = DEFAULT_USER
    known_hosts: Path | None = None
    namespace: str = ""


@dataclass(frozen=True)
class ServiceCheck:
    """What ``check`` found on the server: the unit's state, ``/healthz`` from inside, the clock's offset from this
    machine's (seconds, server minus here) and the unit's last log lines."""

    active: bool
    answering: bool
    detail: str
    skew: float | None = None
    log_lines: tuple[str, ...] = ()

    @property
    def clock_ok(self) -> bool:
        return self.skew is not None and abs(self.skew) <= SKEW_LIMIT

    @property
    def ok(self) -> bool:
        return self.active and self.answering and self.clock_ok

    @property
    def clock_detail(self) -> str:
        if self.skew is None:
            return "clock: not read"
        verdict = "ok" if self.clock_ok else f"DRIFTED (over {SKEW_LIMIT:g} s: fix the server's time source)"
        return f"clock: {self.skew:+.2f} s against this machine, {verdict}"


def as_target(host: str | Target) -> Target:
    return host if isinstance(host, Target) else Target(host)


def open_ssh(host: str | Target, key: Path | paramiko.PKey) -> paramiko.SSHClient:
    """An SSH session authenticated with the stack's private key only (no agent, no other keys)."""
    target = as_target(host)
    client = paramiko.SSHClient()
    if target.known_hosts is not None and target.known_hosts.exists():
        client.load_host_keys(str(target.known_hosts))
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    pkey = key if isinstance(key, paramiko.PKey) else paramiko.PKey.from_path(key)
    try:
        sock = netns.connect(target.host, target.port, CONNECT_TIMEOUT, target.namespace)
        client.connect(target.host, port=target.port, username=target.user, pkey=pkey, timeout=CONNECT_TIMEOUT,
                       allow_agent=False, look_for_keys=False, banner_timeout=CONNECT_TIMEOUT, sock=sock)
    except paramiko.AuthenticationException as exc:
        raise CredentialsError(f"{target.user}@{target.host} refused the stack's key: {exc}") from exc
    except paramiko.BadHostKeyException as exc:
        raise CredentialsError(f"host key of {target.host} changed since it was first seen ({target.known_hosts}): "
                               "if the server was replaced, delete that file") from exc
    except (paramiko.SSHException, OSError) as exc:
        raise CloudError(f"cannot SSH to {target.user}@{target.host}:{target.port}: {exc}") from exc
    if target.known_hosts is not None:
        target.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(target.known_hosts))
    return client


def deliver_credentials(host: str | Target, key: Path | paramiko.PKey, files: Mapping[str, bytes]) -> list[str]:
    """Writes each ``remote path -> content`` over SFTP, mode 0600 before any byte is written; returns the paths.

    Relative paths are under the login user's home. Parent folders are made with mode 0700.
    """
    target = as_target(host)
    client = open_ssh(target, key)
    try:
        sftp = client.open_sftp()
        for path, content in files.items():
            _make_parents(sftp, posixpath.dirname(path))
            with sftp.open(path, "wb") as handle:
                handle.chmod(0o600)
                handle.write(content)
            log.info("wrote %s on %s (mode 0600)", path, target.host)
        sftp.close()
    except (paramiko.SSHException, OSError) as exc:
        raise CloudError(f"cannot write files on {target.host} over SFTP: {exc}") from exc
    finally:
        client.close()
    return list(files)


CREDENTIALS_STAGING = ".hybrid-aws-credentials"
CREDENTIALS_FILE = "/etc/hybrid/aws-credentials"
INSTALL_CREDENTIALS = (f"sudo install -o hybrid -g hybrid -m 0600 {CREDENTIALS_STAGING} {CREDENTIALS_FILE} && "
                       f"rm -f {CREDENTIALS_STAGING} && sudo systemctl try-restart hybrid-web hybrid-autoscaler")


def install_credentials(host: str | Target, key: Path | paramiko.PKey, content: bytes) -> str:
    """Puts the web tier's AWS credentials where its services read them (the image's units point
    AWS_SHARED_CREDENTIALS_FILE there): staged over SFTP with mode 0600, installed for the service user, and the
    services restarted. Returns the installed path."""
    deliver_credentials(host, key, {CREDENTIALS_STAGING: content})
    client = open_ssh(host, key)
    try:
        output, status = run(client, INSTALL_CREDENTIALS)
    finally:
        client.close()
    if status != 0:
        raise CloudError(f"installing {CREDENTIALS_FILE} failed (exit {status}): {output[:200]}")
    return CREDENTIALS_FILE


def _make_parents(sftp: paramiko.SFTPClient, folder: str) -> None:
    if folder in ("", "/", "."):
        return
    try:
        if stat.S_ISDIR(sftp.stat(folder).st_mode or 0):
            return
        raise HybridError(f"{folder} exists on the server and is not a folder")
    except FileNotFoundError:
        _make_parents(sftp, posixpath.dirname(folder))
        sftp.mkdir(folder, 0o700)


def check(host: str | Target, key: Path | paramiko.PKey, service: str = WEB_SERVICE,
          health_url: str = HEALTH_URL) -> ServiceCheck:
    """SSHes in and asks systemd whether the web tier's service is active, requests its health endpoint from
    inside, reads the server's clock against this machine's, and takes the unit's last log lines. systemctl and
    journalctl run with sudo: the login user is not in the journal's group, and without D-Bus only root reaches
    systemd."""
    client = open_ssh(host, key)
    try:
        state, _ = run(client, f"sudo systemctl is-active {shlex.quote(service)}")
        body, code = run(client, FETCH + shlex.quote(health_url))
        skew = clock_skew(client)
        lines, _ = run(client, f"sudo journalctl -u {shlex.quote(service)} -n {LOG_LINES} --no-pager -o short-iso")
    finally:
        client.close()
    active, answering = state == "active", code == 0 and bool(body)
    detail = (f"{service}: {state or 'unknown'}; {health_url}: "
              + (body if answering else f"no answer (exit {code}: {body[-200:]})"))
    return ServiceCheck(active, answering, detail, skew, tuple(lines.splitlines()))


def clock_skew(client: paramiko.SSHClient) -> float | None:
    """The server's clock minus this machine's, in seconds: its ``date +%s.%N`` against the middle of the round
    trip here (so the SSH delay counts only half, and at most by half the round trip)."""
    before = time.time()
    output, code = run(client, "date +%s.%N")
    after = time.time()
    try:
        return float(output) - (before + after) / 2 if code == 0 else None
    except ValueError:
        return None


def run(client: paramiko.SSHClient, command: str) -> tuple[str, int]:
    """Runs one command; returns its stripped output and exit status."""
    try:
        _, stdout, _ = client.exec_command(command, timeout=COMMAND_TIMEOUT)
        output = stdout.read().decode(errors="replace").strip()
        return output, stdout.channel.recv_exit_status()
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        raise CloudError(f"`{command}` over SSH failed: {exc}") from exc
