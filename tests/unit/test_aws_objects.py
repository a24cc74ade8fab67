"""S3 objects through botocore's Stubber: listings page on and every page's error comes out as the project's."""
from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from hybrid.aws.objects import S3Objects
from hybrid.aws.session import MappedClient
from hybrid.core.errors import NotFoundError


@pytest.fixture
def stubbed():
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield S3Objects(MappedClient(client, "aws")), stub
        stub.assert_no_pending_responses()


def page(keys: list[str], next_token: str = "") -> dict:
    reply = {"Contents": [{"Key": key} for key in keys], "KeyCount": len(keys), "IsTruncated": bool(next_token)}
    return {**reply, "NextContinuationToken": next_token} if next_token else reply


def test_keys_follow_the_continuation_token_to_the_last_page(stubbed):
    objects, stub = stubbed
    asked = {"Bucket": "in", "Prefix": "batch/"}
    stub.add_response("list_objects_v2", page(["batch/a/1.jpg", "batch/b/2.jpg"], "t1"), asked)
    stub.add_response("list_objects_v2", page(["batch/c/3.jpg"]), {**asked, "ContinuationToken": "t1"})
    assert list(objects.keys("in", "batch/")) == ["batch/a/1.jpg", "batch/b/2.jpg", "batch/c/3.jpg"]


def test_a_listing_that_fails_on_a_later_page_raises_the_projects_error(stubbed):
    objects, stub = stubbed
    stub.add_response("list_objects_v2", page(["batch/a/1.jpg"], "t1"), {"Bucket": "in", "Prefix": "batch/"})
    stub.add_client_error("list_objects_v2", "NoSuchBucket", "The specified bucket does not exist")
    keys = objects.keys("in", "batch/")
    assert next(keys) == "batch/a/1.jpg"
    with pytest.raises(NotFoundError, match="s3.list_objects_v2: The specified bucket does not exist"):
        next(keys)


def test_any_under_asks_for_one_key(stubbed):
    objects, stub = stubbed
    stub.add_response("list_objects_v2", page([]), {"Bucket": "in", "Prefix": "batch/ab/", "MaxKeys": 1})
    stub.add_response("list_objects_v2", page(["batch/ab/x.jpg"]), {"Bucket": "in", "Prefix": "batch/ab/",
                                                                      "MaxKeys": 1})
    assert (objects.any_under("in", "batch/ab/"), objects.any_under("in", "batch/ab/")) == (False, True)
