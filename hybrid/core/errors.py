"""The project's one exception tree.

SDK exceptions (botocore, openstacksdk, ...) stop at the adapter that called the SDK and are mapped to one of these,
with a message an operator can act on. Each carries the CLI's exit code (0 ok, 1 failure, 2 usage or settings,
3 not running or not found)::

    HybridError                 anything this project raises on purpose; the CLI prints it and exits 1
    ├── ConfigError             a bad setting: names the key, the value and what is allowed (exit 2)
    ├── CredentialsError        no credentials, or credentials the cloud rejected
    │   └── HostKeyError        a server's SSH host key is not the one its console printed (or none is known)
    ├── EmulatorNotRunning      the local AWS server is not up (start it with `hybrid emulator start`) (exit 3)
    ├── CloudError              any other error a cloud API returned
    │   ├── NameTakenError      a resource name is owned by someone else (e.g. a global S3 bucket name)
    │   ├── QuotaError          an account limit or quota was hit
    │   ├── RegionError         the region is unknown or not enabled for this account (exit 2)
    │   ├── NotFoundError       the resource is not there (exit 3)
    │   └── UnreachableError    the cloud's endpoint does not answer (exit 3)
    ├── TooLargeError           an object or upload is over its size limit
    └── WaitTimeout             a wait gave up; says what it waited for and the last state seen
"""
from __future__ import annotations


class HybridError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(HybridError):
    """A setting has a bad value or type."""

    exit_code = 2


class CredentialsError(HybridError):
    """No usable cloud credentials."""


class HostKeyError(CredentialsError):
    """A server's SSH host key differs from the one pinned for it (its console's), or none is pinned: nothing is
    sent to it."""


class EmulatorNotRunning(HybridError):
    """The local AWS server is not running."""

    exit_code = 3


class CloudError(HybridError):
    """A cloud API returned an error."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NameTakenError(CloudError):
    """A resource name belongs to someone else."""


class QuotaError(CloudError):
    """An account limit was reached."""


class RegionError(CloudError):
    """The region is not valid for this account: a setting to fix."""

    exit_code = 2


class NotFoundError(CloudError):
    """The resource does not exist."""

    exit_code = 3


class UnreachableError(CloudError):
    """The cloud's endpoint does not answer: it is not running, or not reachable from here."""

    exit_code = 3


class TooLargeError(HybridError):
    """An object or upload is over its size limit."""


class WaitTimeout(HybridError):
    """A wait ran out of time."""
