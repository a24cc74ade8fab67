"""SSH steps on the web-tier server (paramiko): deliver credential files, check the service.

They run only where the cloud's floating IPs are reachable: from this machine (``openstack.routable``), or from
inside a network namespace (``openstack.namespace``; the local fixture's floating IPs exist only in its own), where
the connection is made. paramiko's exceptions stop here and come out as the project's errors.

Host keys are pinned, never trusted on first use: a ``Target`` carries the server's host keys as its console printed
them (``hybrid.openstack.hostkeys``), SSH offers only those key types, and ``PinnedHostKeys`` refuses any other key
before authentication, so nothing (no login, no credentials) reaches a server that is not the one the cloud booted.
"""
from __future__ import annotations

import logging
import posixpath
import shlex
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE

from hybrid.core import netns
from hybrid.core.errors import CloudError, CredentialsError, HostKeyError, HybridError
from hybrid.core.naming import IMAGE_LOGIN_USER
from hybrid.openstack.compute import WEB_SERVICE
from hybrid.openstack.hostkeys import HostKey, fingerprint, host_key_algorithms

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
HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                       "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-dss")
"""Every host key algorithm paramiko may negotiate: those no pinned key proves are disabled for the connection."""
PRIVATE_MODE = 0o600


@dataclass(frozen=True)
class Target:
    """Where to SSH: address, port, login user, the server's pinned host keys (from its console; none: every
    connection is refused) and the network namespace the connection is made in (empty: this machine's own)."""

    host: str
    port: int = 22
    user: str = DEFAULT_USER
    host_keys: tuple[HostKey, ...] = ()
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


class PinnedHostKeys(paramiko.MissingHostKeyPolicy):
    """Accepts the server's host key only when it is one of the pinned keys; raises ``HostKeyError`` otherwise.

    SSHClient asks this policy about every key, since no known_hosts is loaded. Raising here aborts the connection
    after the key exchange and before authentication: nothing has been sent but the handshake."""

    def __init__(self, pinned: Sequence[HostKey]) -> None:
        self.pinned = tuple(pinned)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        check_host_key(hostname, self.pinned, key.get_name(), key.asbytes())


def check_host_key(hostname: str, pinned: Sequence[HostKey], key_type: str, blob: bytes) -> None:
    """Returns when the offered key (type name and wire blob) is one of ``pinned``; raises ``HostKeyError`` naming
    both fingerprints otherwise."""
    if any(pin.matches(key_type, blob) for pin in pinned):
        log.debug("host key of %s matches its console's: %s %s", hostname, key_type, fingerprint(blob))
        return
    expected = ", ".join(pin.describe() for pin in pinned) or "none"
    raise HostKeyError(f"host key of {hostname} is {key_type} {fingerprint(blob)}, but the server's console printed "
                       f"{expected}: refusing to connect (another machine answers at that address, or the key "
                       "changed after boot); nothing was sent")


def open_ssh(host: str | Target, key: Path | paramiko.PKey) -> paramiko.SSHClient:
    """An SSH session authenticated with the stack's private key only (no agent, no other keys), to a server whose
    host key is one of the target's pinned keys."""
    target = as_target(host)
    if not target.host_keys:
        raise HostKeyError(f"no host key is pinned for {target.host}: refusing to connect (its keys come from the "
                           "server's console: `OpenStackStack.ssh_target`)")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKeys(target.host_keys))
    pkey = key if isinstance(key, paramiko.PKey) else paramiko.PKey.from_path(key)
    try:
        sock = netns.connect(target.host, target.port, CONNECT_TIMEOUT, target.namespace)
        client.connect(target.host, port=target.port, username=target.user, pkey=pkey, timeout=CONNECT_TIMEOUT,
                       allow_agent=False, look_for_keys=False, banner_timeout=CONNECT_TIMEOUT, sock=sock,
                       disabled_algorithms={"keys": unpinned_algorithms(target.host_keys)})
    except HostKeyError:
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        raise CredentialsError(f"{target.user}@{target.host} refused the stack's key: {exc}") from exc
    except (paramiko.SSHException, OSError) as exc:
        raise CloudError(f"cannot SSH to {target.user}@{target.host}:{target.port}: {exc}") from exc
    return client


def unpinned_algorithms(pinned: Sequence[HostKey]) -> list[str]:
    """paramiko's host key algorithms that no pinned key proves: disabled, so the server must show a pinned type."""
    allowed = host_key_algorithms(pinned)
    return [name for name in HOST_KEY_ALGORITHMS if name not in allowed]


def deliver_credentials(host: str | Target, key: Path | paramiko.PKey, files: Mapping[str, bytes]) -> list[str]:
    """Writes each ``remote path -> content`` over SFTP into a new file created with mode 0600 (``create_private``);
    returns the paths.

    Relative paths are under the login user's home. Parent folders are made with mode 0700.
    """
    target = as_target(host)
    client = open_ssh(target, key)
    try:
        sftp = client.open_sftp()
        for path, content in files.items():
            _make_parents(sftp, posixpath.dirname(path))
            with create_private(sftp, path) as handle:
                handle.write(content)
            log.info("wrote %s on %s (mode 0600 from its creation)", path, target.host)
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


def create_private(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
    """A new, empty file at ``path``, open for writing, that has mode 0600 from the moment it exists.

    The mode travels in the SFTP OPEN request itself (OpenSSH's sftp-server hands it to ``open(2)``, under its umask,
    which only narrows it); ``SFTPClient.open`` sends no mode, so the file would be made with the server's default
    and narrowed only afterwards. A file already at ``path`` is removed first (opening it would keep its mode), and
    the create is exclusive, so a link planted there is never followed. A server that did not apply the mode gets
    the file removed before a byte is written."""
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass
    attributes = paramiko.SFTPAttributes()
    attributes.st_mode = PRIVATE_MODE
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
    kind, message = sftp._request(CMD_OPEN, sftp._adjust_cwd(path), flags, attributes)  # no public call sends a mode
    if kind != CMD_HANDLE:
        raise CloudError(f"the SFTP server answered OPEN of {path} with message type {kind}")
    handle = paramiko.SFTPFile(sftp, message.get_binary(), "wb")
    mode = stat.S_IMODE(handle.stat().st_mode or 0)
    if mode & ~PRIVATE_MODE:
        handle.close()
        sftp.remove(path)
        raise CloudError(f"the SFTP server created {path} with mode {mode:04o}, not {PRIVATE_MODE:04o}: nothing "
                         "was written to it")
    return handle


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
