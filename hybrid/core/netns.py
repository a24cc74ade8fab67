"""Sockets in a named network namespace (``ip netns``), for addresses that exist only there.

The local OpenStack fixture's floating IPs live inside its namespace ``minicloud-ext`` and nowhere else, so whatever
reaches them runs there. A network namespace belongs to a thread, not to a process: ``entered`` moves the calling
thread in and back out, and a socket keeps the namespace it was made in. So one process can open a connection to a
floating IP, and keep talking to the local AWS server on its own loopback, at the same time. Needs root
(CAP_SYS_ADMIN), like ``ip netns exec``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hybrid.core.errors import ConfigError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def namespace_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return namespace_path(name).exists()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def check_can_enter(name: str) -> None:
    """Raises ConfigError, saying why, unless this process can enter namespace ``name``."""
    if not exists(name):
        raise ConfigError(f"network namespace {name!r} does not exist ({namespace_path(name)}): is the local "
                          "OpenStack fixture up with real compute (devstack/minicloud.sh up)?")
    if os.geteuid() != 0:
        raise ConfigError(f"entering network namespace {name!r} needs root (run with sudo)")


@contextmanager
def entered(name: str) -> Iterator[None]:
    """The calling thread inside namespace ``name`` for the block, then back in its own (even on error)."""
    check_can_enter(name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(namespace_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def enter_for_good(name: str) -> None:
    """Moves the calling thread into ``name`` and leaves it there (a worker thread that only talks inside it)."""
    check_can_enter(name)
    target = os.open(namespace_path(name), os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)


def connect(host: str, port: int, timeout: float, namespace: str = "") -> socket.socket:
    """A TCP connection to ``host:port`` made inside ``namespace`` (this thread's own when empty)."""
    if not namespace:
        return socket.create_connection((host, port), timeout=timeout)
    with entered(namespace):
        return socket.create_connection((host, port), timeout=timeout)


def listen(host: str, port: int, namespace: str = "", backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` inside ``namespace`` (this thread's own when empty)."""
    def bound() -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(backlog)
        return server

    if not namespace:
        return bound()
    with entered(namespace):
        return bound()
