"""How a worker ends its own instance: through the EC2 API, with an OS shutdown as the fallback on AWS.

Which instance: the one given (``--instance-id``: the local instance runner gives its process workers theirs), else
the one cloud-init recorded for this machine (``/var/lib/cloud/data/instance-id``: on EC2 from the metadata service,
on the local server's VMs from the config drive), else, on AWS only, the instance metadata service (IMDSv2: a
session token, then the id). On an image the worker's unit powers the machine off once the worker exits 0
(``SuccessAction=poweroff``), and app-tier instances are launched with ``InstanceInitiatedShutdownBehavior=terminate``,
so a power-off also ends the instance (and its billing) if the API call failed.
"""
from __future__ import annotations

import logging
import subprocess
import urllib.request
from pathlib import Path
from typing import Callable

from hybrid.core.errors import HybridError

log = logging.getLogger(__name__)
IMDS_URL = "http://169.254.169.254"
CLOUD_INIT_INSTANCE_ID = Path("/var/lib/cloud/data/instance-id")


def instance_id_from_cloud_init(path: Path = CLOUD_INIT_INSTANCE_ID) -> str:
    """The id cloud-init recorded for this machine's current instance, or "" where cloud-init has not run."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def instance_id_from_metadata(base_url: str = IMDS_URL, timeout: float = 2.0) -> str:
    """The instance id from IMDSv2. Call only on an EC2 instance (``aws.use_instance_metadata``)."""
    token_request = urllib.request.Request(f"{base_url}/latest/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    try:
        with urllib.request.urlopen(token_request, timeout=timeout) as reply:
            token = reply.read().decode()
        id_request = urllib.request.Request(f"{base_url}/latest/meta-data/instance-id",
                                            headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(id_request, timeout=timeout) as reply:
            return reply.read().decode().strip()
    except OSError as exc:
        raise HybridError(f"cannot read the instance id from the instance metadata service ({exc}): "
                          "is this an EC2 instance?") from None


def shutdown_now() -> None:
    subprocess.run(["shutdown", "-h", "now"], check=False)


class SelfTerminator:
    """Terminates one instance; if the API call fails and an OS fallback is given, shuts the machine down."""

    def __init__(self, terminate: Callable[[list[str]], None], instance_id: str,
                 os_fallback: Callable[[], None] | None = None) -> None:
        self.terminate, self.instance_id, self.os_fallback = terminate, instance_id, os_fallback

    def __call__(self) -> None:
        try:
            self.terminate([self.instance_id])
            log.info("asked to terminate instance %s", self.instance_id)
        except HybridError as exc:
            if self.os_fallback is None:
                raise
            log.error("terminating %s through the API failed (%s): shutting the OS down", self.instance_id, exc)
            self.os_fallback()


def no_instance() -> None:
    log.info("idle: no instance to terminate (worker started without an instance id)")
