"""Where settings come from: each layer over the next, the SDKs' own variables as fallbacks, and clear errors."""
import logging

import pytest

from hybrid.core import settings as s
from hybrid.core.errors import ConfigError

AWS = {"aws.target": "aws"}


def profile_says(region):
    """A stand-in for hybrid.aws.session.profile_region: every profile sets ``region``."""
    calls = []

    def profile_region(profile):
        calls.append(profile)
        return region, f"profile {profile or 'default'}"

    profile_region.calls = calls
    return profile_region


def region_and_origin(config=None, environ=None, overrides=None, profile_region=None):
    loaded = s.load_with_origins(config, environ or {}, overrides or {}, profile_region=profile_region)
    return loaded.settings.aws.region, loaded.origins.get("aws.region", "default")


def test_region_chain_each_layer_wins_over_the_next(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text('[aws]\nregion = "eu-west-1"\n')
    environ = {"HYBRID_AWS_REGION": "eu-west-2", "AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "eu-central-1"}
    profile = profile_says("ap-south-1")
    assert region_and_origin(config, environ, {**AWS, "aws.region": "eu-north-1"}, profile) == (
        "eu-north-1", "command line")
    assert region_and_origin(config, environ, AWS, profile) == ("eu-west-2", "env HYBRID_AWS_REGION")
    del environ["HYBRID_AWS_REGION"]
    assert region_and_origin(config, environ, AWS, profile) == ("eu-west-1", f"file {config}")
    assert region_and_origin(None, environ, AWS, profile) == ("eu-west-3", "env AWS_REGION")
    del environ["AWS_REGION"]
    assert region_and_origin(None, environ, AWS, profile) == ("eu-central-1", "env AWS_DEFAULT_REGION")
    assert region_and_origin(None, {}, AWS, profile) == ("ap-south-1", "profile default")
    assert region_and_origin(None, {}, AWS, profile_says(None)) == ("us-east-1", "default")
    assert region_and_origin(None, {}, AWS) == ("us-east-1", "default")


def test_the_named_profile_is_asked_even_when_the_region_is_set_so_a_missing_one_is_reported():
    profile = profile_says("ap-south-1")
    assert region_and_origin(None, {}, {**AWS, "aws.region": "eu-west-1", "aws.profile": "work"}, profile) == (
        "eu-west-1", "command line")
    assert profile.calls == ["work"]


def test_on_the_emulator_the_profile_is_not_asked_but_aws_region_still_names_the_region():
    profile = profile_says("ap-south-1")
    assert region_and_origin(None, {"AWS_REGION": "eu-west-3"}, {}, profile) == ("eu-west-3", "env AWS_REGION")
    assert region_and_origin(None, {}, {}, profile) == ("us-east-1", "default")
    assert profile.calls == []


def test_a_missing_profile_is_the_resolvers_config_error():
    def missing(profile):
        raise ConfigError(f"AWS profile {profile!r} (aws.profile) is in neither ~/.aws/config nor ~/.aws/credentials")

    with pytest.raises(ConfigError, match="'nope'"):
        s.load(None, {}, {**AWS, "aws.profile": "nope"}, profile_region=missing)


def test_user_data_keeps_its_region_and_drops_the_writers_profile(tmp_path):
    written = s.load(None, {}, {**AWS, "aws.region": "eu-west-1", "aws.profile": "laptop"})
    user_data = tmp_path / "settings.json"
    user_data.write_text(written.to_json())
    profile = profile_says("ap-south-1")
    loaded = s.load_with_origins(None, {"AWS_REGION": "us-west-2"}, user_data=user_data, profile_region=profile)
    assert (loaded.settings.aws.region, loaded.settings.aws.profile) == ("eu-west-1", "")
    assert loaded.origins["aws.region"] == f"user data {user_data}" and profile.calls == []


@pytest.mark.parametrize("environ, overrides, expected", [
    ({}, {}, ("hybrid-local", "default")),
    ({"OS_CLOUD": "work"}, {}, ("work", "env OS_CLOUD")),
    ({"OS_AUTH_URL": "https://keystone.example/v3"}, {}, ("envvars", "env OS_AUTH_URL (the openrc variables)")),
    ({"OS_CLOUD": "work", "OS_AUTH_URL": "https://keystone.example/v3"}, {}, ("work", "env OS_CLOUD")),
    ({"OS_CLOUD": "work", "HYBRID_OPENSTACK_CLOUD": "lab"}, {}, ("lab", "env HYBRID_OPENSTACK_CLOUD")),
    ({"OS_CLOUD": "work"}, {"openstack.cloud": "flagged"}, ("flagged", "command line")),
])
def test_cloud_chain(environ, overrides, expected):
    loaded = s.load_with_origins(None, environ, overrides)
    assert (loaded.settings.openstack.cloud, loaded.origins.get("openstack.cloud", "default")) == expected


def test_every_key_has_an_origin_row(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text('stack = "from-file"\n[worker]\nthreads = 2\n')
    loaded = s.load_with_origins(config, {"HYBRID_WEB_THREADS": "4"}, {"scaling.max_workers": "9"})
    rows = {key: (value, origin) for key, value, origin in loaded.rows()}
    assert set(rows) == {key for key, _default, _help in s.describe()}
    assert rows["stack"] == ("from-file", f"file {config}")
    assert rows["worker.threads"] == (2, f"file {config}")
    assert rows["web.threads"] == (4, "env HYBRID_WEB_THREADS")
    assert rows["scaling.max_workers"] == (9, "command line")
    assert rows["state_dir"] == (".hybrid", "default")


def test_a_config_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        s.load(tmp_path, {})


def test_a_default_config_that_is_a_folder_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "hybrid.toml").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="hybrid.toml is a folder"):
        s.load(None, {})


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_bytes('stack = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 12\)"):
        s.load(config, {})


def test_an_unreadable_config_is_a_config_error(tmp_path, monkeypatch):
    config = tmp_path / "hybrid.toml"
    config.write_text('stack = "x"\n')

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(config), "read_bytes", refused)  # chmod 0 does not stop root, who runs some CIs
    with pytest.raises(ConfigError, match=f"cannot read config file {config}: Permission denied"):
        s.load(config, {})


def test_a_missing_config_named_by_the_environment_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        s.load(None, {"HYBRID_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("source", ["file", "flag"])
def test_an_unknown_key_suggests_the_closest_and_says_where_it_was(tmp_path, source):
    config = tmp_path / "hybrid.toml"
    config.write_text('[aws]\nregoin = "eu-west-1"\n' if source == "file" else "")
    overrides = {"aws.regoin": "eu-west-1"} if source == "flag" else {}
    with pytest.raises(ConfigError) as error:
        s.load(config, {}, overrides)
    where = f"file {config}" if source == "file" else "command line"
    assert str(error.value) == (f"unknown setting aws.regoin ({where}): did you mean aws.region?; "
                                "`hybrid config keys` lists them")


def test_an_unknown_section_suggests_the_closest(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text('[awz]\nregion = "eu-west-1"\n')
    with pytest.raises(ConfigError, match="unknown setting awz .*did you mean aws"):
        s.load(config, {})


def test_unknown_hybrid_variables_are_warned_about_with_a_suggestion_and_ignored(caplog):
    environ = {"HYBRID_AWS_REGON": "eu-west-1", "HYBRID_STAK": "x", "HYBRID_ZZZ": "1", "HYBRID_STACK": "fine",
               "HYBRID_UPDATE_SCREENSHOTS": "1", "HYBRID_IMAGE_CACHE": "/tmp/c", "HYBRID_CONFIG_X": "",
               "PATH": "/bin"}
    with caplog.at_level(logging.WARNING, logger="hybrid.core.settings"):
        settings = s.load(None, environ)
    assert settings.stack == "fine" and settings.aws.region == "us-east-1"
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        "HYBRID_AWS_REGON is not a setting and is ignored: did you mean HYBRID_AWS_REGION? "
        "(`hybrid config keys` lists them)",
        "HYBRID_CONFIG_X is not a setting and is ignored: did you mean HYBRID_CONFIG? "
        "(`hybrid config keys` lists them)",
        "HYBRID_STAK is not a setting and is ignored: did you mean HYBRID_STACK? (`hybrid config keys` lists them)",
        "HYBRID_ZZZ is not a setting and is ignored (`hybrid config keys` lists them)",
    ]


def test_every_setting_has_its_variable_and_none_collides_with_the_other_variables():
    names = s.variable_names()
    assert names["HYBRID_AWS_REGION"] == "aws.region" and names["HYBRID_STATE_DIR"] == "state_dir"
    assert len(names) == len(s.describe()) and not set(names) & set(s.OTHER_VARIABLES)


def test_the_example_file_leaves_the_chained_keys_unset_so_they_follow_the_environment(tmp_path):
    config = tmp_path / "hybrid.toml"
    config.write_text(s.example_toml())
    settings = s.load(config, {"AWS_REGION": "eu-west-3", "OS_CLOUD": "work"})
    assert (settings.aws.region, settings.openstack.cloud) == ("eu-west-3", "work")
