import botocore.exceptions as bx
import pytest

from hybrid.aws.errors import translate
from hybrid.core.clock import FakeClock
from hybrid.core.errors import (CloudError, CredentialsError, EmulatorNotRunning, HybridError, NameTakenError,
                                NotFoundError, QuotaError, RegionError, UnreachableError, WaitTimeout)
from hybrid.core.wait import Poll, wait_for


def client_error(code, message="boom"):
    return bx.ClientError({"Error": {"Code": code, "Message": message}}, "CreateBucket")


@pytest.mark.parametrize("code, kind", [
    ("BucketAlreadyExists", NameTakenError),
    ("InvalidKeyPair.Duplicate", NameTakenError),
    ("TooManyBuckets", QuotaError),
    ("InstanceLimitExceeded", QuotaError),
    ("OptInRequired", RegionError),
    ("InvalidClientTokenId", CredentialsError),
    ("AuthFailure", CredentialsError),
    ("NoSuchBucket", NotFoundError),
    ("AWS.SimpleQueueService.NonExistentQueue", NotFoundError),
    ("InternalError", CloudError),
])
def test_client_errors_map_to_the_project_tree(code, kind):
    error = translate(client_error(code), "s3.create_bucket", "aws")
    assert type(error) is kind
    assert "s3.create_bucket" in str(error) or kind is CredentialsError
    if isinstance(error, CloudError):
        assert error.code == code


def test_advice_is_actionable():
    assert "--stack" in str(translate(client_error("BucketAlreadyExists"), "s3.create_bucket", "aws"))
    assert "quota" in str(translate(client_error("TooManyBuckets"), "s3.create_bucket", "aws"))
    assert "aws.region" in str(translate(client_error("OptInRequired"), "ec2.run_instances", "aws"))


def test_missing_credentials_and_unreachable_emulator():
    assert isinstance(translate(bx.NoCredentialsError(), "sqs.list_queues", "aws"), CredentialsError)
    unreachable = bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    error = translate(unreachable, "sqs.list_queues", "emulator")
    assert isinstance(error, EmulatorNotRunning) and "hybrid emulator start" in str(error)
    error = translate(unreachable, "sqs.list_queues", "aws")
    assert type(error) is UnreachableError and error.exit_code == 3


def test_unknown_exceptions_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        translate(ZeroDivisionError(), "x", "aws")


def test_wait_returns_when_done_and_sleeps_on_the_clock():
    clock, seen = FakeClock(), []
    states = iter([Poll(0, False, state="a"), Poll(1, False, state="b"), Poll(2, True)])
    assert wait_for("thing", lambda: next(states), timeout=10, interval=2, clock=clock, on_poll=seen.append) == 2
    assert clock.sleeps == [2, 2]
    assert [p.state for p in seen] == ["a", "b", ""]


def test_wait_times_out_with_the_last_state():
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match=r"thing after 5 s \(last state: stuck\)"):
        wait_for("thing", lambda: Poll(None, False, state="stuck"), timeout=5, interval=1, clock=clock)
    assert clock.now() == 5


def test_wait_stops_on_a_failure_state():
    with pytest.raises(HybridError, match="thing failed: ERROR state"):
        wait_for("thing", lambda: Poll(None, False, failed="ERROR state"), timeout=5, clock=FakeClock())
