"""Credentials delivery and the service check, against a paramiko SSH server on 127.0.0.1 started by the test.

The server accepts only the stack's key, answers the check's two commands, and serves SFTP from a temporary folder
(what the server's filesystem would be), so the test sees the files and their modes as the remote side would; like
OpenSSH's sftp-server it creates a file with the mode the OPEN request carries (else 0666), under the umask. The
client is pinned to the server's host key: a server with another key is refused before anything is sent.
"""
from __future__ import annotations

import dataclasses
import io
import os
import socket
import stat
import threading
import time
from pathlib import Path

import paramiko
import pytest

from hybrid.core.errors import CloudError, CredentialsError, HostKeyError
from hybrid.openstack.compute import new_key_pair
from hybrid.openstack.hostkeys import HostKey, fingerprint
from hybrid.openstack.remote import (CREDENTIALS_FILE, CREDENTIALS_STAGING, FETCH, HEALTH_URL, INSTALL_CREDENTIALS,
                                     Target, check, deliver_credentials, install_credentials)

IS_ACTIVE = "sudo systemctl is-active hybrid-web.service"
HEALTH = FETCH + HEALTH_URL
JOURNAL = "sudo journalctl -u hybrid-web.service -n 10 --no-pager -o short-iso"
ANSWERS = {IS_ACTIVE: (b"active\n", 0),
           INSTALL_CREDENTIALS: (b"", 0),
           HEALTH: (b"ok", 0),
           JOURNAL: (b"Dec 07 web[1]: hybrid web tier ready: stack s on http://0.0.0.0:8000/\n"
                     b"Dec 07 web[1]: POST / 200\n", 0)}
CLOCK_OFFSET = {"seconds": 0.0}
"""How far the server's clock is ahead of this machine's (its answer to ``date +%s.%N``)."""


class Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    def chattr(self, attr):
        if attr.st_mode is not None:
            os.chmod(self.filename, stat.S_IMODE(attr.st_mode))
        return paramiko.sftp.SFTP_OK


class RootedSFTP(paramiko.SFTPServerInterface):
    """SFTP rooted in a folder: '/x' and 'x' (the home folder) both map under it."""

    root: Path = Path("/nonexistent")
    honours_mode = True
    created: dict[str, int] = {}
    """Each file this server created: its mode the moment it existed, before any write or chmod."""

    def _real(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def stat(self, path):
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def mkdir(self, path, attr):
        try:
            os.mkdir(self._real(path), stat.S_IMODE(attr.st_mode) if attr.st_mode else 0o777)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return paramiko.sftp.SFTP_OK

    def remove(self, path):
        try:
            os.remove(self._real(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return paramiko.sftp.SFTP_OK

    def open(self, path, flags, attr):
        real = self._real(path)
        mode = stat.S_IMODE(attr.st_mode) if self.honours_mode and attr.st_mode is not None else 0o666
        try:
            existed = os.path.lexists(real)
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), mode)
            if not existed:
                self.created[path] = stat.S_IMODE(os.fstat(fd).st_mode)
            handle = Handle(flags)
            handle.filename = real
            handle.readfile = handle.writefile = os.fdopen(fd, "rb+" if flags & os.O_RDWR else
                                                           "wb" if flags & os.O_WRONLY else "rb")
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return handle


class Server(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed, self.commands, self.logins = allowed, [], []

    def check_auth_publickey(self, username, key):
        self.logins.append(username)
        ok = key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        self.commands.append(command.decode())
        if command == b"date +%s.%N":
            output, status = f"{time.time() + CLOCK_OFFSET['seconds']:.9f}\n".encode(), 0
        else:
            output, status = ANSWERS.get(command.decode(), (b"", 127))

        def answer():  # EOF, not close: a close can overtake the reply to the exec request
            channel.sendall(output)
            channel.send_exit_status(status)
            channel.shutdown_write()

        threading.Thread(target=answer, daemon=True).start()
        return True


def pin(key: paramiko.PKey) -> HostKey:
    return HostKey(key.get_name(), fingerprint(key.asbytes()), key.get_base64())


@pytest.fixture
def ssh_server(tmp_path, monkeypatch):
    """A local SSH server; yields (target pinned to its host key, stack key path, served root, server interface)."""
    private, _ = new_key_pair("hybrid:stack=ssh")
    key_path = tmp_path / "stack.pem"
    key_path.write_text(private)
    stack_key = paramiko.PKey.from_path(key_path)
    root = tmp_path / "remote"
    root.mkdir()
    monkeypatch.setattr(RootedSFTP, "root", root)
    monkeypatch.setattr(RootedSFTP, "created", {})
    interface = Server(stack_key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(new_key_pair("host")[0]))
    transports = []

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(client)
            transport.add_server_key(host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, RootedSFTP)
            transports.append(transport)
            try:
                transport.start_server(server=interface)
            except (paramiko.SSHException, OSError):  # a client that refused our host key hung up mid-handshake
                continue

    threading.Thread(target=serve, daemon=True).start()
    target = Target("127.0.0.1", listener.getsockname()[1], "debian", (pin(host_key),))
    yield target, key_path, root, interface
    listener.close()
    for transport in transports:
        transport.close()


def test_credentials_land_with_mode_0600(ssh_server):
    target, key, root, _ = ssh_server
    written = deliver_credentials(target, key, {".aws/credentials": b"[default]\naws_access_key_id = AKIA\n",
                                               "/etc/hybrid/extra.json": b"{}"})
    assert written == [".aws/credentials", "/etc/hybrid/extra.json"]
    credentials = root / ".aws" / "credentials"
    assert credentials.read_bytes() == b"[default]\naws_access_key_id = AKIA\n"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc" / "hybrid" / "extra.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".aws").stat().st_mode) == 0o700
    assert RootedSFTP.created == {".aws/credentials": 0o600, "/etc/hybrid/extra.json": 0o600}, "0600 from creation"


@pytest.fixture
def umask_022():
    """The usual umask: a file created without a mode in its OPEN request would be 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_credentials_are_staged_0600_from_creation_then_installed_for_the_service(ssh_server, umask_022):
    target, key, root, interface = ssh_server
    staged = root / CREDENTIALS_STAGING
    staged.write_bytes(b"left by an earlier run")
    staged.chmod(0o644)
    assert install_credentials(target, key, b"[default]\naws_access_key_id = AKIA\n") == CREDENTIALS_FILE
    assert RootedSFTP.created == {CREDENTIALS_STAGING: 0o600}, "a new file, 0600 the moment it existed"
    assert stat.S_IMODE(staged.stat().st_mode) == 0o600
    assert staged.read_bytes() == b"[default]\naws_access_key_id = AKIA\n"
    assert interface.commands == [INSTALL_CREDENTIALS]


def test_a_server_that_ignores_the_mode_gets_no_credentials(ssh_server, umask_022, monkeypatch):
    target, key, root, _ = ssh_server
    monkeypatch.setattr(RootedSFTP, "honours_mode", False)
    with pytest.raises(CloudError, match="created .hybrid-aws-credentials with mode 0644, not 0600"):
        install_credentials(target, key, b"[default]\naws_access_key_id = AKIA\n")
    assert not (root / CREDENTIALS_STAGING).exists()


def test_a_server_with_another_host_key_is_refused_before_anything_is_sent(ssh_server):
    target, key, root, interface = ssh_server
    impostor = paramiko.Ed25519Key.from_private_key(io.StringIO(new_key_pair("impostor")[0]))
    pinned_elsewhere = dataclasses.replace(target, host_keys=(pin(impostor),))
    with pytest.raises(HostKeyError) as refused:
        install_credentials(pinned_elsewhere, key, b"[default]\naws_access_key_id = AKIA\n")
    assert fingerprint(impostor.asbytes()) in str(refused.value)
    assert target.host_keys[0].fingerprint in str(refused.value)
    assert interface.logins == [] and interface.commands == [], "no login attempted, no command run"
    assert list(root.iterdir()) == [], "no file written"


def test_no_pinned_host_key_no_connection(ssh_server):
    target, key, _, interface = ssh_server
    with pytest.raises(HostKeyError, match="no host key is pinned for 127.0.0.1"):
        check(dataclasses.replace(target, host_keys=()), key)
    assert interface.logins == []


def test_check_reports_the_service_active_answering_on_time_and_its_last_log_lines(ssh_server):
    target, key, _, interface = ssh_server
    result = check(target, key)
    assert result.ok and result.active and result.answering and result.clock_ok
    assert result.detail == f"hybrid-web.service: active; {HEALTH_URL}: ok"
    assert abs(result.skew) < 0.5, result.skew
    assert result.log_lines[0].endswith("hybrid web tier ready: stack s on http://0.0.0.0:8000/")
    assert interface.commands == [IS_ACTIVE, HEALTH, "date +%s.%N", JOURNAL]


def test_check_flags_a_clock_more_than_two_seconds_off(ssh_server, monkeypatch):
    target, key, _, _ = ssh_server
    monkeypatch.setitem(CLOCK_OFFSET, "seconds", -5.0)
    result = check(target, key)
    assert result.active and result.answering and not result.clock_ok and not result.ok
    assert -5.5 < result.skew < -4.5
    assert "DRIFTED (over 2 s" in result.clock_detail


def test_check_reports_a_service_that_does_not_answer(ssh_server, monkeypatch):
    target, key, _, _ = ssh_server
    monkeypatch.setitem(ANSWERS, IS_ACTIVE, (b"failed\n", 3))
    monkeypatch.setitem(ANSWERS, HEALTH, (b"", 1))
    result = check(target, key)
    assert not result.ok
    assert result.detail == f"hybrid-web.service: failed; {HEALTH_URL}: no answer (exit 1: )"


def test_another_key_is_refused(ssh_server, tmp_path):
    target, _, _, _ = ssh_server
    other = tmp_path / "other.pem"
    other.write_text(new_key_pair("other")[0])
    with pytest.raises(CredentialsError, match="refused the stack's key"):
        check(target, other)
