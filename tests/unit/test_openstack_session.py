"""openstacksdk and keystoneauth errors come out as the project's errors, from one place."""
import keystoneauth1.exceptions as ksa
import openstack.exceptions as osx
import pytest

from hybrid.core.errors import (CloudError, ConfigError, CredentialsError, NotFoundError, QuotaError,
                                UnreachableError, WaitTimeout)
from hybrid.openstack.session import MappedConnection, connect, translate
from tests.openstack_fakes import FakeCloud, http_error


@pytest.mark.parametrize("exc, kind, text", [
    (osx.ConfigException("Cloud nowhere was not found."), ConfigError, "cloud 'c1' is not in clouds.yaml"),
    (ksa.Unauthorized("The request you have made requires authentication."), CredentialsError,
     "rejected the credentials"),
    (http_error(osx.HttpException, 401, "unauthorized"), CredentialsError, "rejected the credentials"),
    (http_error(osx.HttpException, 413, "Maximum number of servers exceeded"), QuotaError, "quota"),
    (http_error(osx.ForbiddenException, 403, "Quota exceeded for cores: Requested 4, but already used 20"),
     QuotaError, "Quota exceeded for cores"),
    (http_error(osx.ConflictException, 409, "Quota exceeded for resources: ['floatingip']."), QuotaError,
     "floatingip"),
    (http_error(osx.ForbiddenException, 403, "Policy doesn't allow os_compute_api:servers:create"),
     CredentialsError, "not allowed"),
    (http_error(osx.NotFoundException, 404, "No Server found for x"), NotFoundError, "No Server found"),
    (http_error(osx.ConflictException, 409, "Security Group sg-1 in use."), CloudError, "conflict"),
    (ksa.ConnectFailure("Unable to establish connection to http://127.0.0.1:1/v3"), UnreachableError,
     "endpoint of cloud 'c1' does not answer"),
    (osx.ResourceTimeout("Timeout waiting for the server to come up."), WaitTimeout, "Timeout"),
    (osx.SDKException("odd"), CloudError, "odd"),
])
def test_translate_maps_each_sdk_error(exc, kind, text):
    error = translate(exc, "compute.create_server", "c1")
    assert type(error) is kind
    assert text in str(error)


def test_a_conflict_keeps_its_status_as_the_code():
    assert translate(http_error(osx.ConflictException, 409, "in use"), "op", "c1").code == "409"


def test_unknown_exceptions_are_not_swallowed():
    with pytest.raises(KeyError):
        translate(KeyError("x"), "op", "c1")


def test_calls_and_listings_through_the_mapped_connection_raise_project_errors():
    conn = MappedConnection(FakeCloud(), "c1")
    with pytest.raises(NotFoundError, match="compute.find_flavor: m9 could not be found"):
        conn.compute.find_flavor("m9", ignore_missing=False)

    class Failing:
        is_fake_proxy = True

        def servers(self):
            yield from ()
            raise ksa.ConnectFailure("refused")

    with pytest.raises(CloudError, match="does not answer"):
        list(MappedConnection(type("C", (), {"compute": Failing()})(), "c1").compute.servers())


@pytest.fixture
def clouds_yaml(tmp_path, monkeypatch):
    path = tmp_path / "clouds.yaml"
    path.write_text("""clouds:
  refused:
    auth:
      auth_url: http://127.0.0.1:9/v3
      username: u
      password: p
      project_name: p
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
""")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    for name in ("OS_CLOUD", "OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_a_cloud_missing_from_clouds_yaml_is_a_config_error_naming_it(clouds_yaml):
    with pytest.raises(ConfigError, match="cloud 'nowhere' is not in clouds.yaml"):
        connect("nowhere")


def test_a_cloud_that_does_not_answer_is_named(clouds_yaml):
    conn = connect("refused")
    with pytest.raises(CloudError, match="the endpoint of cloud 'refused' does not answer"):
        conn.identity.get_token()
