"""How the AWS session is set up: the profile (its region, a missing one), the emulator's isolation from the
operator's AWS files, the region check, and botocore's standard retries counted against a loopback server."""
import http.server
import threading

import pytest

from hybrid.aws.session import AwsClients, check_region, profile_region
from hybrid.core import settings as s
from hybrid.core.errors import CloudError, ConfigError, RegionError
from hybrid.core.localserver import TEST_ACCESS_KEY_ID


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """AWS config and credentials files of this test only; AWS_PROFILE unset."""
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text("[default]\nregion = eu-north-1\n[profile work]\nregion = ap-south-1\n"
                      "[profile plain]\noutput = json\n")
    credentials.write_text("[work]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n"
                           "[keys-only]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    return config, credentials


def test_a_profiles_region(aws_files, monkeypatch):
    assert profile_region("work") == ("ap-south-1", "profile work")
    assert profile_region("plain") == (None, "profile plain")
    assert profile_region("keys-only") == (None, "profile keys-only")
    assert profile_region("") == ("eu-north-1", "profile default")
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert profile_region("") == ("ap-south-1", "profile work")


def test_the_profiles_region_is_the_settings_region_unless_one_is_set(aws_files, monkeypatch):
    aws = {"aws.target": "aws", "aws.profile": "work"}
    loaded = s.load_with_origins(None, {}, aws, profile_region=profile_region)
    assert (loaded.settings.aws.region, loaded.origins["aws.region"]) == ("ap-south-1", "profile work")
    assert s.load(None, {"AWS_DEFAULT_REGION": "eu-west-2"}, aws, profile_region=profile_region).aws.region == (
        "eu-west-2")


def test_a_missing_profile_is_one_line_naming_it_and_the_files(aws_files):
    config, credentials = aws_files
    with pytest.raises(ConfigError) as error:
        profile_region("nope")
    assert str(error.value) == (f"AWS profile 'nope' (aws.profile) is in neither {config} nor {credentials}: "
                                "`aws configure list-profiles` lists the profiles; name one with --profile or "
                                "aws.profile")


def test_a_bad_aws_profile_variable_is_named_as_such(aws_files, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "typo")
    with pytest.raises(ConfigError, match=r"^AWS profile 'typo' \(AWS_PROFILE\) is in neither"):
        profile_region("")
    with pytest.raises(ConfigError, match="'typo'"):
        AwsClients(s.load(None, {}, {"aws.target": "aws"})).client("sqs")


def test_the_session_uses_the_profile_on_aws(aws_files):
    settings = s.load(None, {}, {"aws.target": "aws", "aws.profile": "work", "aws.region": "eu-west-1"})
    credentials = AwsClients(settings)._session.get_credentials()
    assert credentials.access_key == "AKIDEXAMPLE"


def test_the_emulator_ignores_aws_profile_and_the_operators_files(aws_files, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "typo")
    settings = s.load(None, {}, {"aws.endpoint_url": "http://127.0.0.1:9"})
    client = AwsClients(settings).client("sqs")
    assert client.meta.region_name == "us-east-1"
    assert client.raw._request_signer._credentials.access_key == TEST_ACCESS_KEY_ID


def test_a_region_typo_suggests_the_closest_region():
    with pytest.raises(RegionError, match=r"aws.region = 'us-esat-1' is not an AWS region \(did you mean us-east-1"):
        check_region("us-esat-1")
    with pytest.raises(RegionError, match=r"\(did you mean eu-west-1\?\)"):
        check_region("eu-wset-1")
    with pytest.raises(RegionError, match=r"\(did you mean us-west-2\?\)"):
        check_region("us-west2")
    assert RegionError("x").exit_code == 2


class Failing(http.server.BaseHTTPRequestHandler):
    """Answers every request 500 and counts them."""

    count = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        type(self).count += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server():
    Failing.count = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("attempts", [1, 3])
def test_every_client_makes_aws_max_attempts_attempts_in_standard_retry_mode(failing_server, attempts):
    settings = s.load(None, {}, {"aws.endpoint_url": failing_server, "aws.max_attempts": str(attempts)})
    sqs = AwsClients(settings).sqs
    assert sqs.meta.config.retries == {"total_max_attempts": attempts, "mode": "standard"}
    with pytest.raises(CloudError):
        sqs.list_queues()
    assert Failing.count == attempts


def test_the_default_is_five_attempts():
    assert AwsClients(s.load(None, {})).settings.aws.max_attempts == 5
