"""The AWS client wrapper maps botocore's errors to the project's, for paginated calls too."""
import botocore.exceptions as bx
import pytest

from hybrid.aws.session import MappedClient
from hybrid.core.errors import EmulatorNotRunning


class Meta:
    class service_model:  # noqa: N801 - botocore's attribute name
        service_name = "ec2"


class PagesThenDown:
    """A botocore paginator stand-in: one page, then the server is gone."""

    def paginate(self, **kwargs):
        yield {"Reservations": []}
        raise bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


class RawClient:
    meta = Meta

    def get_paginator(self, name):
        assert name == "describe_instances"
        return PagesThenDown()


def test_a_page_that_fails_raises_the_projects_error_not_botocores():
    pages = MappedClient(RawClient(), "emulator").get_paginator("describe_instances").paginate(Filters=[])
    assert next(pages) == {"Reservations": []}
    with pytest.raises(EmulatorNotRunning, match="does not answer"):
        next(pages)
