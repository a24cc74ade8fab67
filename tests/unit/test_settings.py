import dataclasses
import json

import pytest

from hybrid.core import settings as s
from hybrid.core.errors import ConfigError
from hybrid.core.naming import ROLE_REQUESTS, STACK_TAG, ROLE_TAG, StackNames


def test_defaults_describe_the_embedded_default():
    settings = s.load(config_path=None, environ={})
    assert settings.aws.target == "emulator"
    assert settings.scaling.min_workers == 0 and settings.scaling.max_workers == 20
    assert settings.web.bind == "127.0.0.1:8000"
    assert settings.aws.request_message_bytes == 8192


def test_file_then_environment_then_flags(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text('stack = "from-file"\n[aws]\nregion = "eu-west-1"\nvisibility_timeout = 45\n'
                      '[scaling]\nmax_workers = 5\n')
    environ = {"HYBRID_AWS_REGION": "eu-central-1", "HYBRID_SCALING_MAX_WORKERS": "7", "OTHER": "x"}
    settings = s.load(config, environ, {"scaling.max_workers": "9", "stack": None})
    assert settings.stack == "from-file"
    assert settings.aws.visibility_timeout == 45
    assert settings.aws.region == "eu-central-1"
    assert settings.scaling.max_workers == 9


def test_config_path_from_environment(tmp_path):
    config = tmp_path / "other.toml"
    config.write_text('stack = "via-env"\n')
    assert s.load(None, {"HYBRID_CONFIG": str(config)}).stack == "via-env"


def test_named_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        s.load(tmp_path / "missing.toml", {})


@pytest.mark.parametrize("overrides, key", [
    ({"scaling.max_workers": "twenty"}, "scaling.max_workers"),
    ({"scaling.max_workers": "0"}, "scaling.max_workers"),
    ({"aws.target": "gcp"}, "aws.target"),
    ({"aws.operator_cidr": "10.0.0.1/33"}, "aws.operator_cidr"),
    ({"web.bind": "8000"}, "web.bind"),
    ({"worker.threads": "1.5"}, "worker.threads"),
    ({"openstack.routable": "maybe"}, "openstack.routable"),
    ({"stack": "Bad_Name"}, "stack"),
    ({"stack": "a--b"}, "stack"),
    ({"aws.colour": "blue"}, "aws.colour"),
])
def test_a_bad_value_names_its_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        s.load(None, {}, overrides)
    assert key in str(error.value)


def test_bad_toml_is_a_config_error(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text("stack = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        s.load(config, {})


def test_min_above_max_is_rejected():
    with pytest.raises(ConfigError, match="min_workers"):
        s.load(None, {}, {"scaling.min_workers": "5", "scaling.max_workers": "3"})


def test_settings_are_frozen_and_travel_as_json():
    settings = s.load(None, {}, {"stack": "travel", "worker.idle_timeout": "2.5", "openstack.routable": "true"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.stack = "other"  # type: ignore[misc]
    text = settings.to_json()
    assert json.loads(text)["worker"]["idle_timeout"] == 2.5
    assert s.Settings.from_json(text) == settings


def test_set_flag_parsing():
    assert s.parse_assignment("aws.region = eu-west-1") == ("aws.region", "eu-west-1")
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        s.parse_assignment("aws.region")


def test_the_committed_example_file_is_current_and_loads_to_the_defaults():
    from pathlib import Path

    example = (Path(__file__).parents[2] / "hybrid.example.toml").read_text()
    assert example == s.example_toml(), "regenerate: hybrid config example > hybrid.example.toml"
    assert all(help_text for _key, _default, help_text in s.describe())
    assert s.build(_toml(example)) == s.Settings()


def _toml(text):
    import tomllib

    return tomllib.loads(text)


def test_names_and_tags_derive_from_the_stack():
    names = StackNames("shop")
    assert (names.input_bucket, names.output_bucket) == ("shop-input", "shop-output")
    assert names.dead_letter_queue(names.request_queue) == "shop-requests-dlq"
    assert names.tags(ROLE_REQUESTS) == {STACK_TAG: "shop", ROLE_TAG: ROLE_REQUESTS}
    assert StackNames("shop", "custom-ami").app_image == "custom-ami"
