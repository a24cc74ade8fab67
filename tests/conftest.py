"""Shared fixtures. Nothing here may reach any address but loopback: IMDS is off and AWS variables are cleared."""
from __future__ import annotations

import os
import uuid

import pytest

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
              "AWS_DEFAULT_REGION", "AWS_REGION"):
    os.environ.pop(_name, None)
for _name in [n for n in os.environ if n.startswith("HYBRID_")]:
    os.environ.pop(_name)


@pytest.fixture
def stack_name() -> str:
    """A fresh stack name, so tests sharing one emulator never see each other's resources."""
    return f"t-{uuid.uuid4().hex[:10]}"
