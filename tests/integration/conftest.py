"""Integration fixtures: the project's own emulator launcher starts one local AWS server for the session."""
from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from app_tier import classifier as classifier_module
from hybrid.core.settings import Settings, load
from hybrid.local.awsserver import start_emulator, stop_emulator
from tests.integration.rig import Stack


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    """A test module's own cache of the exported ONNX model."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def run_in_process(onnx_cache, monkeypatch):
    """Runs a click command in-process against the module's export cache, never the user's."""
    monkeypatch.setattr(classifier_module, "DEFAULT_CACHE_DIR", onnx_cache)

    def run(command, *args: object):
        return CliRunner().invoke(command, [str(a) for a in args])
    return run


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    info = start_emulator(state_dir)
    yield info, state_dir
    stop_emulator(state_dir)


@pytest.fixture
def state_dir(emulator) -> Path:
    return emulator[1]


@pytest.fixture
def endpoint(emulator) -> str:
    return emulator[0].url


@pytest.fixture
def raw_client(endpoint):
    """Plain boto3 clients on the emulator, for arranging and checking things beside the project's code."""
    def make(service: str):
        return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")
    return make


@pytest.fixture
def settings_for(state_dir):
    def make(stack: str, **overrides: str) -> Settings:
        dotted = {key.replace("__", "."): value for key, value in overrides.items()}
        return load(None, {}, {"stack": stack, "state_dir": str(state_dir), **dotted})
    return make


@pytest.fixture
def stack(settings_for, stack_name, raw_client):
    def make(**overrides):
        made.append(Stack(settings_for(stack_name, **overrides), raw_client))
        return made[-1]
    made = []
    yield make
    for each in made:
        each.aws.down(report=lambda line: None)


LOCAL_CLOUD = "hybrid-local"


@pytest.fixture(scope="session")
def local_cloud():
    """A plain openstacksdk connection to the local OpenStack fixture (devstack/minicloud.sh), for arranging and
    checking beside the project's code; skips, with the reason, when the fixture is not up."""
    import openstack

    try:
        conn = openstack.connect(cloud=LOCAL_CLOUD, api_timeout=10)
        conn.identity.get_token()
    except Exception as exc:  # noqa: BLE001 - any failure means the fixture is not there
        pytest.skip(f"cloud {LOCAL_CLOUD!r} is not reachable ({type(exc).__name__}: {str(exc)[:120]}): "
                    "start it with `devstack/minicloud.sh up`")
    yield conn
    conn.close()
