"""botocore exceptions stop here: ``translate`` maps them to the project's error tree with operator advice."""
from __future__ import annotations

from typing import Any

import botocore.exceptions as bx

from hybrid.core.errors import (CloudError, CredentialsError, EmulatorNotRunning, HybridError, NameTakenError,
                                NotFoundError, QuotaError, RegionError, UnreachableError)

CREDENTIAL_CODES = {"InvalidClientTokenId", "AuthFailure", "SignatureDoesNotMatch", "UnrecognizedClientException",
                    "InvalidAccessKeyId", "ExpiredToken", "ExpiredTokenException", "AccessDenied",
                    "AccessDeniedException", "UnauthorizedOperation"}
NAME_TAKEN_CODES = {"BucketAlreadyExists", "InvalidGroup.Duplicate", "InvalidKeyPair.Duplicate",
                    "EntityAlreadyExists", "QueueAlreadyExists", "QueueNameExists"}
QUOTA_CODES = {"TooManyBuckets", "LimitExceeded", "LimitExceededException", "InstanceLimitExceeded",
               "VcpuLimitExceeded", "ResourceLimitExceeded", "RulesPerSecurityGroupLimitExceeded",
               "SecurityGroupLimitExceeded", "KeyPairLimitExceeded", "OverQueueLimit", "Throttling",
               "RequestLimitExceeded", "SlowDown"}
REGION_CODES = {"OptInRequired", "InvalidRegion", "IllegalLocationConstraintException",
                "AuthorizationHeaderMalformed", "PermanentRedirect"}
NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound", "AWS.SimpleQueueService.NonExistentQueue",
                   "QueueDoesNotExist", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound", "InvalidAMIID.NotFound",
                   "InvalidInstanceID.NotFound", "NoSuchEntity", "NoSuchTagSet", "NoSuchTagSetError",
                   "NoSuchPublicAccessBlockConfiguration", "ServerSideEncryptionConfigurationNotFoundError",
                   "InvalidPermission.NotFound"}


def error_code(exc: bx.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, operation: str, target: str) -> HybridError:
    """The project's error for a botocore exception raised by ``operation`` (e.g. ``s3.create_bucket``)."""
    if isinstance(exc, HybridError):
        return exc
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return CredentialsError("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                                "AWS_SECRET_ACCESS_KEY, or run `aws configure`")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError)):
        return _unreachable(exc, target)
    if isinstance(exc, bx.ClientError):
        return _from_client_error(exc, operation)
    if isinstance(exc, bx.BotoCoreError):
        return CloudError(f"{operation}: {exc}")
    raise exc


def _unreachable(exc: Exception, target: str) -> HybridError:
    if target == "emulator":
        return EmulatorNotRunning(f"the local AWS server does not answer ({exc}): start it with "
                                  "`hybrid emulator start`")
    return UnreachableError(f"cannot reach AWS ({exc}): check the network and aws.region")


def _from_client_error(exc: bx.ClientError, operation: str) -> HybridError:
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    for codes, kind, advice in _ADVICE:
        if code in codes:
            return kind(f"{operation}: {message} [{code}]. {advice}".rstrip(". ") + ".", code)
    return CloudError(f"{operation}: {message} [{code}]", code)


def _credentials(message: str, code: str) -> HybridError:
    return CredentialsError(message)


_ADVICE: list[tuple[set[str], Any, str]] = [
    (CREDENTIAL_CODES, _credentials, "Check the AWS credentials in use (`aws sts get-caller-identity`) and their "
                                     "permissions"),
    (NAME_TAKEN_CODES, NameTakenError, "The name belongs to someone else: choose another stack name (--stack)"),
    (QUOTA_CODES, QuotaError, "An account quota or rate limit was hit: free resources, request a quota increase, "
                              "or retry later"),
    (REGION_CODES, RegionError, "Check aws.region: the region must exist and be enabled for this account"),
    (NOT_FOUND_CODES, NotFoundError, ""),
]
