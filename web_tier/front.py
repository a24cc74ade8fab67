"""The web tier's front: nginx on ``web.bind``, gunicorn behind it on a unix socket that only nginx reaches.

gunicorn's threaded workers give each connection a thread while they read its request, so clients that send a
byte a second hold every thread and nobody else is answered; gunicorn's deployment guide asks for a buffering proxy
in front. nginx reads each request whole before gunicorn sees it:

- headers within ``web.client_timeout`` seconds (else 408), at most 8 KiB per header line and 32 KiB in all;
- a body of at most ``web.max_upload_bytes`` plus the multipart overhead (else 413), each read within
  ``web.client_timeout`` of the last;
- at most ``web.connections_per_client`` requests in progress per client address (else 429);
- ``/status`` and ``/metrics`` only from this machine (127.0.0.1 or ::1; else 403): the queues, the fleet and the
  counters are the operator's, not the public's.

Thousands of idle or slow connections cost nginx a few KiB each, and gunicorn's threads only ever serve whole
requests. nginx's own answers are plain text like the app's (``error: ...``).

The ``hybrid web`` process (gunicorn's master) starts nginx when its socket is bound and stops it when it exits;
nginx gets SIGTERM from the kernel if that process dies (``PR_SET_PDEATHSIG``), and the master exits if nginx dies,
so the two live and die together (systemd, or ``hybrid local up``, starts them again).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hybrid.core import nginx, procs
from hybrid.core.errors import HybridError
from hybrid.core.settings import Settings
from web_tier.app import MULTIPART_OVERHEAD

log = logging.getLogger(__name__)
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with its NUL
SHORT_SOCKETS = "/tmp/hybrid-web-{uid}"  # where sockets go whose state folder is too deep
START_TIMEOUT = 10.0
STOP_PATIENCE = 5.0
PR_SET_PDEATHSIG = 1
LOCAL_ONLY = ("status", "metrics")
NGINX_ERRORS = {  # status -> the plain-text answer nginx gives itself
    403: "this path answers only on the web tier's own machine (127.0.0.1)",
    408: "the request was not sent within the time allowed",
    413: "the request body is larger than the {limit}-byte limit",
    429: "too many requests in progress from your address; try again later",
    502: "the web tier is restarting; try again in a few seconds",
    504: "the web tier did not answer in time",
}


class FrontError(HybridError):
    """nginx would not start, or stopped."""


@dataclass(frozen=True)
class FrontPaths:
    """nginx's prefix folder (its configuration, pid and request-body buffers) and gunicorn's socket: in the prefix,
    or, where that path is too long for a unix socket (108 bytes), in a folder of this user's under /tmp, named by
    the prefix's hash."""

    prefix: Path
    socket: Path

    @property
    def config(self) -> Path:
        return self.prefix / "nginx.conf"


def front_paths(settings: Settings) -> FrontPaths:
    """One folder per stack and listening port under the state folder, so two web tiers never share one."""
    port = settings.web.bind.rpartition(":")[2]
    prefix = settings.state_path.resolve() / "web" / f"front-{settings.stack}-{port}"
    socket_path = prefix / "gunicorn.sock"
    if len(str(socket_path)) > UNIX_PATH_MAX:
        digest = hashlib.sha256(str(prefix).encode()).hexdigest()[:16]
        socket_path = Path(SHORT_SOCKETS.format(uid=os.getuid())) / f"{digest}.sock"
    return FrontPaths(prefix, socket_path)


def body_limit(settings: Settings) -> int:
    return settings.web.max_upload_bytes + MULTIPART_OVERHEAD


def render_config(settings: Settings, paths: FrontPaths, run_as_root: bool = False) -> str:
    """nginx.conf of the front; pure, so the limits can be read and tested."""
    web, prefix = settings.web, paths.prefix
    temp = "\n".join(f"    {kind}_temp_path {prefix / 'tmp' / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# Written by hybrid web at each start: edits are lost.
{"user root;" if run_as_root else ""}
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {prefix / 'nginx.pid'};
error_log stderr warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    server_tokens off;
{temp}
    client_header_timeout {web.client_timeout:g}s;
    client_body_timeout {web.client_timeout:g}s;
    send_timeout {web.client_timeout:g}s;
    keepalive_timeout 5s;
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    client_max_body_size {body_limit(settings)};
    client_body_buffer_size 1m;
    limit_conn_zone $binary_remote_addr zone=per_client:10m;
    limit_conn per_client {web.connections_per_client};
    limit_conn_status 429;
    limit_conn_log_level warn;
    upstream gunicorn {{ server unix:{paths.socket}; keepalive 32; }}
    server {{
        listen {web.bind} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_read_timeout {int(web.request_timeout) + 30}s;
        proxy_request_buffering on;
{_error_pages(settings)}
        location ~ ^/({"|".join(LOCAL_ONLY)})/?$ {{
            allow 127.0.0.1;
            allow ::1;
            deny all;
            proxy_pass http://gunicorn;
        }}
        location / {{ proxy_pass http://gunicorn; }}
    }}
}}
"""


def _error_pages(settings: Settings) -> str:
    lines = []
    for status, text in NGINX_ERRORS.items():
        message = text.format(limit=settings.web.max_upload_bytes).replace('"', "'")
        lines.append(f"        error_page {status} @error{status};\n"
                     f"        location @error{status} {{ default_type text/plain; "
                     f"return {status} \"error: {message}\\n\"; }}")
    return "\n".join(lines)


def start(settings: Settings, paths: FrontPaths) -> subprocess.Popen:
    """Writes the configuration, checks it (``nginx -t``), starts nginx and waits until it accepts connections."""
    binary = nginx.binary()
    _require_free(settings.web.bind)
    _prepare(settings, paths)
    _check_config(binary, paths)
    process = subprocess.Popen(_command(binary, paths), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    _wait_listening(settings.web.bind, process)
    log.info("front (nginx %s) on %s, pid %d, gunicorn on unix:%s", binary, settings.web.bind, process.pid,
             paths.socket)
    return process


def stop(process: subprocess.Popen) -> None:
    """Graceful stop (SIGQUIT: requests in progress finish), then SIGKILL after ``STOP_PATIENCE`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGQUIT)
    try:
        process.wait(STOP_PATIENCE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_folder(paths: FrontPaths) -> None:
    """The prefix folder, before gunicorn binds its socket there: mode 0700, so the socket is reachable by this
    user only, that is through nginx."""
    for folder in dict.fromkeys((paths.prefix, paths.socket.parent)):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _require_own_private(folder)
    (paths.prefix / "tmp").mkdir(exist_ok=True)


def _require_own_private(folder: Path) -> None:
    """Mode 0700 and owned by this user: a folder under /tmp that someone else made first is refused, not used."""
    info = folder.lstat()
    if info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode):
        folder.chmod(0o700)
        info = folder.lstat()
    if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o077:
        raise FrontError(f"{folder} is not a private folder of this user (owner uid {info.st_uid}, mode "
                         f"{oct(info.st_mode & 0o777)}): remove it, or set state_dir to a shorter path")


def _prepare(settings: Settings, paths: FrontPaths) -> None:
    make_folder(paths)
    paths.config.write_text(render_config(settings, paths, run_as_root=os.geteuid() == 0))


def _command(binary: Path, paths: FrontPaths) -> list[str]:
    return [str(binary), "-p", str(paths.prefix), "-c", str(paths.config), "-e", "stderr"]


def _check_config(binary: Path, paths: FrontPaths) -> None:
    done = subprocess.run([*_command(binary, paths), "-t", "-q"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FrontError(f"nginx refused its configuration {paths.config}: {done.stderr.strip()[-400:]}")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _address(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _require_free(bind: str) -> None:
    """A clear error when something else listens on ``web.bind`` (nginx would retry for 2.5 s, then exit)."""
    error = procs.bind_error(*_address(bind))
    if error:
        raise FrontError(f"cannot listen on web.bind {bind}: {error} (another web tier or program listens there?)")


def _wait_listening(bind: str, process: subprocess.Popen) -> None:
    host, port = _address(bind)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FrontError(f"nginx exited with status {process.returncode} at start (its messages are above): "
                             f"is {bind} already in use?")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise FrontError(f"nginx did not listen on {bind} within {START_TIMEOUT:g} s")
