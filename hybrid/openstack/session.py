"""A connection to one cloud of clouds.yaml whose calls raise the project's errors, never openstacksdk's.

openstacksdk authenticates lazily, so a wrong password or a cloud that does not answer shows up on the first call,
not at ``connect``: every call made through ``MappedConnection`` (and every item of a listing it returns) goes
through ``translate``, the one place where openstacksdk and keystoneauth exceptions are mapped.
"""
from __future__ import annotations

import os
import types
from collections.abc import Iterator
from typing import Any

import keystoneauth1.exceptions as ksa
import openstack
import openstack.exceptions as osx

from hybrid.core.errors import (CloudError, ConfigError, CredentialsError, HybridError, NotFoundError,
                               QuotaError, UnreachableError, WaitTimeout)
from hybrid.core.settings import ENVVARS_CLOUD

API_TIMEOUT = 60.0
QUOTA_WORDS = ("quota", "overquota", "limit exceeded")


def connect(cloud: str) -> MappedConnection:
    """The named cloud of clouds.yaml (``~/.config/openstack``, ``/etc/openstack`` or ``OS_CLIENT_CONFIG_FILE``), or
    with ``envvars`` the openrc variables (``OS_AUTH_URL``, ``OS_USERNAME``, ...). Which cloud is the settings'
    business (``openstack.cloud``, then ``OS_CLOUD``): openstacksdk is always told, never left to guess."""
    try:
        connection = openstack.connect(cloud=cloud, api_timeout=API_TIMEOUT)
    except Exception as exc:
        raise translate(exc, "connect", cloud) from exc
    return MappedConnection(connection, cloud)


class MappedConnection:
    """An openstacksdk connection (or proxy) whose calls raise the project's errors.

    Attributes that are proxies (``compute``, ``network``, ``image``, ``identity``) come back wrapped too, and
    generators (listings, which call the API while iterated) are wrapped item by item.
    """

    def __init__(self, target: Any, cloud: str, path: str = "") -> None:
        self._target, self._cloud, self._path = target, cloud, path

    @property
    def raw(self) -> Any:
        return self._target

    @property
    def cloud(self) -> str:
        return self._cloud

    def __getattr__(self, name: str) -> Any:
        operation = f"{self._path}.{name}" if self._path else name
        try:
            attribute = getattr(self._target, name)
        except AttributeError:
            raise
        except Exception as exc:
            raise translate(exc, operation, self._cloud) from exc
        if _is_proxy(attribute):
            return MappedConnection(attribute, self._cloud, operation)
        if not callable(attribute):
            return attribute
        return self._mapped_call(attribute, operation)

    def _mapped_call(self, function: Any, operation: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                raise translate(exc, operation, self._cloud) from exc
            if isinstance(result, (types.GeneratorType, Iterator)) and not isinstance(result, (str, bytes)):
                return self._mapped_items(result, operation)
            return result

        return call

    def _mapped_items(self, items: Iterator[Any], operation: str) -> Iterator[Any]:
        try:
            yield from items
        except Exception as exc:
            raise translate(exc, operation, self._cloud) from exc


def _is_proxy(value: Any) -> bool:
    from openstack.proxy import Proxy

    return isinstance(value, Proxy) or getattr(value, "is_fake_proxy", False)


def translate(exc: Exception, operation: str, cloud: str) -> HybridError:
    """The project's error for an openstacksdk or keystoneauth exception raised by ``operation``."""
    if isinstance(exc, HybridError):
        return exc
    if isinstance(exc, (osx.ConfigException, ksa.MissingRequiredOptions, ksa.MissingAuthPlugin)):
        return _config_error(exc, cloud)
    if isinstance(exc, (ksa.ConnectFailure, ksa.ConnectTimeout, ksa.UnknownConnectionError)):
        return UnreachableError(f"the endpoint of cloud {cloud!r} does not answer ({_first_line(exc)}): is the "
                                "cloud up? (locally: `devstack/minicloud.sh status`)", "unreachable")
    if isinstance(exc, ksa.Unauthorized):
        return _credentials_error(exc, operation, cloud)
    status = _status_of(exc)
    if status is not None:
        return _from_status(exc, status, operation, cloud)
    if isinstance(exc, osx.ResourceTimeout):
        return WaitTimeout(f"{operation}: {exc}")
    if isinstance(exc, osx.EndpointNotFound):
        return CloudError(f"{operation}: cloud {cloud!r} has no such service in its catalog ({exc})")
    if isinstance(exc, (osx.SDKException, ksa.ClientException)):
        return CloudError(f"{operation}: {_first_line(exc)}")
    raise exc


def _config_error(exc: Exception, cloud: str) -> HybridError:
    text = _first_line(exc)
    if cloud == ENVVARS_CLOUD:
        return ConfigError(f"openstack.cloud = {ENVVARS_CLOUD!r} takes the cloud from the openrc variables "
                           "(OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...), which are "
                           f"{_envvars_state()}: source your openrc file, or name a cloud of clouds.yaml with "
                           "--os-cloud or OS_CLOUD")
    if "was not found" in text:
        return ConfigError(f"cloud {cloud!r} is not in clouds.yaml: add it (~/.config/openstack/clouds.yaml, "
                           "/etc/openstack/clouds.yaml or the file named by OS_CLIENT_CONFIG_FILE), "
                           "or name one that is (openstack.cloud, --os-cloud or OS_CLOUD)")
    return ConfigError(f"cloud {cloud!r} in clouds.yaml is not usable: {text}")


def _envvars_state() -> str:
    return "incomplete" if os.environ.get("OS_AUTH_URL") else "not set (no OS_AUTH_URL)"


def _credentials_error(exc: Exception, operation: str, cloud: str) -> HybridError:
    return CredentialsError(f"cloud {cloud!r} rejected the credentials in clouds.yaml ({operation}: "
                            f"{_first_line(exc)}): check its auth section (user, password, project, domain)")


def _status_of(exc: Exception) -> int | None:
    for name in ("status_code", "http_status"):
        value = getattr(exc, name, None)
        if isinstance(value, int):
            return value
    return None


def _from_status(exc: Exception, status: int, operation: str, cloud: str) -> HybridError:
    message = f"{operation}: {_details(exc)}"
    if status == 401:
        return _credentials_error(exc, operation, cloud)
    if status == 413 or (status in (403, 409) and _mentions_quota(exc)):
        return QuotaError(f"{message}. A project quota was hit: free resources or ask for a larger quota "
                          "(`openstack quota show`)", str(status))
    if status == 403:
        return CredentialsError(f"{message}. The user of cloud {cloud!r} is not allowed to do this: check its "
                                "role in the project")
    if status == 404:
        return NotFoundError(message, "404")
    if status == 409:
        return CloudError(f"{message} (conflict: the resource is in use or in a state that does not allow this)",
                          "409")
    return CloudError(message, str(status))


def _mentions_quota(exc: Exception) -> bool:
    text = f"{_details(exc)} {type(exc).__name__}".lower()
    return any(word in text for word in QUOTA_WORDS)


def _details(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details) if details else _first_line(exc)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
