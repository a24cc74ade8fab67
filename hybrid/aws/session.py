"""boto3 clients for a stack: the same code for AWS and the local server, only the endpoint differs.

Every client is wrapped so that any botocore exception a call raises comes out as the project's own error, and so
are its paginators: a page fetched while iterating raises the project's error too. Every client retries in botocore's
standard mode (``aws.max_attempts``). On AWS the credentials and the region's fallback come from ``aws.profile`` (or
the SDK's own chain, AWS_PROFILE); the emulator uses fixed test credentials and reads none of AWS's files.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator

import boto3
import botocore.config
import botocore.configprovider
import botocore.exceptions as bx
import botocore.loaders
import botocore.session

from hybrid.aws.errors import translate
from hybrid.core.errors import ConfigError, RegionError
from hybrid.core.localserver import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from hybrid.core.localserver import endpoint_url as emulator_endpoint
from hybrid.core.settings import AwsSettings, Settings

EMULATOR_CREDENTIALS = {"aws_access_key_id": TEST_ACCESS_KEY_ID, "aws_secret_access_key": TEST_SECRET_ACCESS_KEY}
PROFILE_VARIABLES = ("AWS_DEFAULT_PROFILE", "AWS_PROFILE")
"""botocore's own order: the first one set names the profile when aws.profile is empty."""


def client_config(max_attempts: int) -> botocore.config.Config:
    """Every client's config: botocore's standard retries (throttling, 5xx, dropped connections) with ``max_attempts``
    attempts in all, the first included (botocore's ``total_max_attempts``; its ``max_attempts`` counts retries only),
    and timeouts."""
    return botocore.config.Config(retries={"total_max_attempts": max_attempts, "mode": "standard"},
                                  connect_timeout=5, read_timeout=30, max_pool_connections=64)


# One loader per process: the service descriptions it has parsed (a large JSON file per service) are reused by every
# client this process makes, and by processes forked from it.
SHARED_LOADER = botocore.loaders.create_loader()


class MappedClient:
    """A boto3 client whose calls raise the project's errors instead of botocore's."""

    def __init__(self, client: Any, target: str) -> None:
        self._client = client
        self._target = target

    @property
    def raw(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        operation = f"{self._client.meta.service_model.service_name}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translate re-raises what it does not know
                raise translate(exc, operation, self._target) from exc

        return call

    def get_paginator(self, operation_name: str) -> "MappedPaginator":
        """The client's paginator, whose pages raise the project's errors (botocore fetches them while iterating,
        outside any client call this class wraps)."""
        service = self._client.meta.service_model.service_name
        paginator = self.__getattr__("get_paginator")(operation_name)
        return MappedPaginator(paginator, f"{service}.{operation_name}", self._target)


class MappedPaginator:
    """A botocore paginator whose ``paginate`` yields pages and raises the project's errors."""

    def __init__(self, paginator: Any, operation: str, target: str) -> None:
        self._paginator, self._operation, self._target = paginator, operation, target

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        try:
            yield from self._paginator.paginate(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translate re-raises what it does not know
            raise translate(exc, self._operation, self._target) from exc


@dataclass(frozen=True)
class AwsClients:
    """Lazily built clients of one stack's account and region."""

    settings: Settings

    @cached_property
    def _session(self) -> boto3.session.Session:
        aws = self.settings.aws
        if not aws.use_instance_metadata:
            os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        core = sdk_session(aws)
        if aws.target == "aws" and not aws.endpoint_url:
            check_region(aws.region)
        credentials = EMULATOR_CREDENTIALS if aws.target == "emulator" else {}
        core.register_component("data_loader", SHARED_LOADER)
        return boto3.session.Session(botocore_session=core, region_name=aws.region, **credentials)

    @cached_property
    def _config(self) -> botocore.config.Config:
        return client_config(self.settings.aws.max_attempts)

    @cached_property
    def endpoint_url(self) -> str | None:
        aws = self.settings.aws
        if aws.endpoint_url:
            return aws.endpoint_url
        if aws.target == "emulator":
            return emulator_endpoint(self.settings.state_path)
        return None

    def client(self, service: str) -> MappedClient:
        raw = self._session.client(service, endpoint_url=self.endpoint_url, config=self._config)
        return MappedClient(raw, self.settings.aws.target)

    @cached_property
    def s3(self) -> MappedClient:
        return self.client("s3")

    @cached_property
    def s3_presigner(self) -> MappedClient:
        """An S3 client for presigned URLs: SigV4 (botocore presigns with SigV2 unless told, which S3 refuses for
        buckets created since June 2020) on the bucket's regional host (a new bucket outside us-east-1 answers its
        global name with a redirect to a host the signature does not cover); path style on an IP endpoint."""
        config = self._config.merge(botocore.config.Config(signature_version="s3v4",
                                                           s3={"addressing_style": "virtual"}))
        raw = self._session.client("s3", endpoint_url=self.endpoint_url, config=config)
        return MappedClient(raw, self.settings.aws.target)

    @cached_property
    def sqs(self) -> MappedClient:
        return self.client("sqs")

    @cached_property
    def ec2(self) -> MappedClient:
        return self.client("ec2")

    @cached_property
    def iam(self) -> MappedClient:
        return self.client("iam")


def warm_service_models(services: tuple[str, ...] = ("s3", "sqs", "ec2")) -> None:
    """Parses these services' descriptions into the shared loader (no call is made), for processes forked later."""
    core = _isolated_session()
    core.register_component("data_loader", SHARED_LOADER)
    session = boto3.session.Session(botocore_session=core, region_name="us-east-1", **EMULATOR_CREDENTIALS)
    for service in services:
        session.client(service, endpoint_url="http://127.0.0.1:9")


def check_region(region: str) -> None:
    """Rejects a region name AWS does not have, before any call is made."""
    known = sorted(_isolated_session().get_available_regions("ec2"))
    if region not in known:
        close = _closest_region(region, known)
        hint = f"did you mean {close}?" if close else f"known: {', '.join(known)}"
        raise RegionError(f"aws.region = {region!r} is not an AWS region ({hint})")


def _closest_region(region: str, known: list[str]) -> str | None:
    """The region with the same letters (a transposition: us-esat-1), else the most similar one, if any is close."""
    same_letters = [name for name in known if sorted(name) == sorted(region)]
    return (same_letters or difflib.get_close_matches(region, known, n=1) or [None])[0]


def sdk_session(aws: AwsSettings) -> botocore.session.Session:
    """A botocore session: on AWS, of ``aws.profile`` (checked to exist), else of the SDK's default chain; on the
    emulator, one that reads no AWS file and no AWS_PROFILE, so that nothing of the operator's AWS setup applies."""
    if aws.target == "emulator":
        return _isolated_session()
    core = botocore.session.Session(profile=aws.profile or None)
    _profile_config(core, aws.profile)
    return core


def profile_region(profile: str) -> tuple[str | None, str]:
    """The region ``profile`` ("" for the SDK's default chain) sets, if any, and a label such as ``profile work``,
    for the settings' region chain (``hybrid.core.settings.ProfileRegion``). A profile that does not exist raises
    ``ConfigError``."""
    core = botocore.session.Session(profile=profile or None)
    region = _profile_config(core, profile).get("region")
    return (str(region) if region else None), f"profile {core.profile or 'default'}"


def _profile_config(core: botocore.session.Session, profile: str) -> dict[str, Any]:
    try:
        return core.get_scoped_config()
    except bx.ProfileNotFound:
        raise ConfigError(_missing_profile(core, profile)) from None
    except (bx.ConfigParseError, bx.ConfigNotFound) as exc:
        raise ConfigError(f"the AWS config files cannot be read: {exc}") from None


def _missing_profile(core: botocore.session.Session, profile: str) -> str:
    source = "aws.profile" if profile else next((v for v in PROFILE_VARIABLES if os.environ.get(v)), "AWS_PROFILE")
    files = " nor ".join(os.path.expanduser(core.get_config_variable(name)) for name in ("config_file",
                                                                                         "credentials_file"))
    return (f"AWS profile {core.get_config_variable('profile')!r} ({source}) is in neither {files}: "
            "`aws configure list-profiles` lists the profiles; name one with --profile or aws.profile")


def _isolated_session() -> botocore.session.Session:
    core = botocore.session.Session()
    store = core.get_component("config_store")
    for name, value in (("profile", None), ("config_file", os.devnull), ("credentials_file", os.devnull)):
        store.set_config_provider(name, botocore.configprovider.ConstantProvider(value))
    return core
