"""Where the local AWS server of a state folder listens: its record, ``<state_dir>/emulator/emulator.json``.

The local world writes the record when it starts the server (``hybrid.local.awsserver.process``); the AWS adapter
reads it to find the endpoint of ``aws.target = "emulator"``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid.core import procs
from hybrid.core.errors import EmulatorNotRunning

SERVER_MODULE = "hybrid.local.awsserver.server"
# The local AWS server as a VM of that server sees it: QEMU user networking with restrict=on forwards only this
# address and port (guestfwd) to the server on 127.0.0.1. Settings and presigned URLs given to a VM use it.
GUEST_AWS_ADDRESS = "10.0.2.100"
GUEST_AWS_PORT = 80
GUEST_AWS_ENDPOINT = f"http://{GUEST_AWS_ADDRESS}"
IMAGE_CACHE_VARIABLE = "HYBRID_IMAGE_CACHE"
# What the project's clients sign with on the local server. The server accepts any key and checks no signature:
# these are fixed test values, printed by `hybrid emulator env`, not secrets.
TEST_ACCESS_KEY_ID = "emulator"
TEST_SECRET_ACCESS_KEY = "emulator"


@dataclass(frozen=True)
class EmulatorInfo:
    pid: int
    port: int
    started_at: float
    log_path: str
    runner_pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def emulator_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "emulator"


def _record_path(state_dir: Path) -> Path:
    return emulator_dir(state_dir) / "emulator.json"


def read_record(state_dir: Path) -> EmulatorInfo | None:
    try:
        return EmulatorInfo(**json.loads(_record_path(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(state_dir: Path, info: EmulatorInfo) -> None:
    _record_path(state_dir).write_text(json.dumps(asdict(info)))


def remove_record(state_dir: Path) -> None:
    _record_path(state_dir).unlink(missing_ok=True)


def is_emulator_process(pid: int) -> bool:
    """True if ``pid`` is alive and is our emulator (guards against a reused pid)."""
    return procs.runs_module(pid, SERVER_MODULE)


def endpoint_url(state_dir: Path) -> str:
    """The emulator's URL, or ``EmulatorNotRunning`` saying how to start it."""
    info = read_record(state_dir)
    if info is None or not is_emulator_process(info.pid):
        raise EmulatorNotRunning(f"the local AWS server is not running (no live emulator recorded in "
                                 f"{emulator_dir(state_dir)}): start it with `hybrid emulator start`")
    return info.url


def client_environment(state_dir: Path, region: str) -> dict[str, str]:
    """The variables that point any AWS SDK or the AWS CLI at this state folder's local server (what
    `hybrid emulator env` prints), or ``EmulatorNotRunning`` saying how to start it. Instance metadata is turned
    off, so that no client asks 169.254.169.254 for credentials."""
    return {"AWS_ENDPOINT_URL": endpoint_url(state_dir),
            "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true"}


def image_store(state_dir: Path) -> Path:
    """The local server's machine images with bytes: ``<state_dir>/emulator/images/<ami id>/``."""
    return emulator_dir(state_dir) / "images"


def image_cache_dir() -> Path:
    """Baked disks by recipe digest, kept across local servers: ``$HYBRID_IMAGE_CACHE`` or
    ``~/.cache/hybrid/images``."""
    configured = os.environ.get(IMAGE_CACHE_VARIABLE, "")
    return Path(configured) if configured else Path.home() / ".cache" / "hybrid" / "images"
