"""One typed, frozen settings object: the only code that reads the config file, ``HYBRID_*`` variables and flags.

Precedence, lowest first: the defaults below, the TOML file (``hybrid.toml``, or the path in ``--config`` /
``HYBRID_CONFIG``), environment variables, then command-line flags. Every key lives in a section::

    stack = "demo"                 # top level: HYBRID_STACK
    [aws]   region = "us-east-1"   # HYBRID_AWS_REGION, or the flag --set aws.region=us-east-1

Two keys fall back on their SDK's usual variables when no layer above sets them (``CHAINS``): ``aws.region`` on
``AWS_REGION``, ``AWS_DEFAULT_REGION``, then the AWS profile's own region (looked up by a function the caller hands
in, since reading AWS's files is the SDK's business); ``openstack.cloud`` on ``OS_CLOUD``, then ``envvars`` (the
openrc variables) when ``OS_AUTH_URL`` is set. ``load_with_origins`` says which layer gave each value.

A bad value raises ``ConfigError`` naming the key, the value and what is allowed; an unknown key, also with the
closest known one. ``HYBRID_*`` variables that are no setting (and not in ``OTHER_VARIABLES``) are logged as
warnings. The object is JSON-serialisable (``to_json`` / ``from_json``) so it can travel to instances as user data;
it never holds credentials.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import logging
import re
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from hybrid.core.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_FILE = "hybrid.toml"
ENV_PREFIX = "HYBRID_"
CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"
OTHER_VARIABLES = {
    CONFIG_VARIABLE: "the config file's path (--config)",
    "HYBRID_IMAGE_CACHE": "the baked-disk cache of the local AWS server (hybrid.core.localserver)",
    "HYBRID_UPDATE_SCREENSHOTS": "the tests' switch that refreshes docs/ screenshots",
    "HYBRID_ROLE": "input of images/common/bake.sh on an image builder",
    "HYBRID_EXTRA": "input of images/common/bake.sh on an image builder",
    "HYBRID_UNITS": "input of images/common/bake.sh on an image builder",
    "HYBRID_PROBE": "a test's marker variable",
}
"""The ``HYBRID_*`` variables this project reads that are not settings: no "unknown variable" warning for them."""
DEFAULT_REGION = "us-east-1"
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENVVARS_CLOUD = "envvars"
ORIGIN_DEFAULT, ORIGIN_FLAGS = "default", "command line"
CHAIN_KEYS = ("aws.region", "openstack.cloud")
"""Keys that fall back on their SDK's variables: the example file leaves them commented out, since a value there
would hide AWS_REGION, the profile's region and OS_CLOUD."""
STACK_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]$")


def _opt(default: Any, help: str, **rules: Any) -> Any:
    """A settings field with its help text and validation rules (choices, min, max, check)."""
    return field(default=default, metadata={"help": help, **rules})


def _name_pattern(value: str) -> str | None:
    try:
        filled = value.format(stack="s", n=1)
    except (KeyError, IndexError, ValueError):
        return "a pattern with {n} and optionally {stack}, e.g. '{stack}-app-tier-{n}'"
    if "{n}" not in value or len(filled) > 200:
        return "a pattern with {n} and optionally {stack}, e.g. '{stack}-app-tier-{n}'"
    return None


def _cidr(value: str) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "an IP network such as 203.0.113.7/32, or empty for none"
    return None


def _bind(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return None
    return "HOST:PORT, for example 127.0.0.1:8000"


def _loopback_bind(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if value == "" or (host in ("127.0.0.1", "localhost", "[::1]") and port.isdigit() and int(port) < 65536):
        return None
    return "empty, or a loopback HOST:PORT such as 127.0.0.1:9101 (port 0 for any free one)"


@dataclass(frozen=True)
class AwsSettings:
    target: str = _opt("emulator", "where the AWS calls go: the local AWS server started by "
                       "`hybrid emulator start`, or AWS itself", choices=("emulator", "aws"))
    region: str = _opt(DEFAULT_REGION, "AWS region of every resource of the stack. When neither this file, "
                       "HYBRID_AWS_REGION nor --set gives it: AWS_REGION, then AWS_DEFAULT_REGION, then the AWS "
                       f"profile's region (target aws), else {DEFAULT_REGION}")
    profile: str = _opt("", "AWS profile of ~/.aws/config and ~/.aws/credentials (AWS_CONFIG_FILE, "
                        "AWS_SHARED_CREDENTIALS_FILE) whose credentials and region are used (flag --profile); "
                        "empty: the SDK's default chain (AWS_PROFILE, then the default profile). Target aws only: "
                        "the emulator has fixed test credentials and reads no AWS file")
    max_attempts: int = _opt(5, "attempts of one AWS call, the first included: the SDK's standard retry mode "
                             "retries throttling, 5xx answers and dropped connections with backoff", min=1, max=20)
    endpoint_url: str = _opt("", "send AWS calls to this endpoint instead (overrides target's endpoint)")
    use_instance_metadata: bool = _opt(False, "let boto3 ask the instance metadata service for credentials; "
                                       "true only for code running on an EC2 instance")
    operator_cidr: str = _opt("", "CIDR allowed to SSH into app-tier instances; empty allows no one",
                              check=_cidr)
    instance_type: str = _opt("t3.micro", "EC2 instance type of the app-tier workers")
    ami_id: str = _opt("", "app-tier AMI id; empty finds the image named aws.ami_name (or registers a record "
                       "for it on the emulator)")
    ami_name: str = _opt("", "app-tier AMI name; empty means '<stack>-app-tier'")
    instance_name_pattern: str = _opt("{stack}-app-tier-{n}", "Name tag of app-tier instances: {stack} is the "
                                      "stack, {n} the lowest number (1, 2, ...) no live instance of the stack has; "
                                      "e.g. 'app-tier-instance-{n}'", check=_name_pattern)
    instance_profile: str = _opt("auto", "create the least-privilege IAM identities: the workers' instance "
                                 "profile and the web-tier machine's user <stack>-web-tier (its web tier and "
                                 "autoscaler policies); auto does so on AWS only", choices=("auto", "yes", "no"))
    request_message_bytes: int = _opt(8192, "MaximumMessageSize of the request queue (messages carry S3 keys, "
                                      "never image bytes; S3's batch notifications are 1-2 KB, 4 KB with a long "
                                      "key URL-encoded)", min=1024, max=262144)
    response_message_bytes: int = _opt(2048, "MaximumMessageSize of the response queue", min=1024, max=262144)
    visibility_timeout: int = _opt(30, "seconds a received request stays hidden from other workers",
                                   min=0, max=43200)
    max_receive_count: int = _opt(3, "receives before a message moves to its dead-letter queue", min=1, max=1000)
    retention_seconds: int = _opt(345600, "how long queues keep unprocessed messages", min=60, max=1209600)


FIXTURE_CLOUD = "hybrid-local"
FIXTURE_NAMESPACE = "minicloud-ext"
FIXTURE_KERNEL_IMAGE = "debian-12-base"
FIXTURE_GATEWAY = "172.24.4.1"
"""The local OpenStack fixture (devstack/minicloud.sh): its clouds.yaml entry, the network namespace its floating
IPs live in, the base image whose kernel boots disks baked on the local AWS server, and the namespace's own address
on the external network (where the operator's connections to a floating IP come from)."""


@dataclass(frozen=True)
class OpenStackSettings:
    cloud: str = _opt(FIXTURE_CLOUD, "name of the cloud in clouds.yaml (flag --os-cloud), or 'envvars' for the "
                      "openrc variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...). When neither "
                      "this file, HYBRID_OPENSTACK_CLOUD nor --set gives it: OS_CLOUD, then 'envvars' when "
                      f"OS_AUTH_URL is set, else {FIXTURE_CLOUD!r} (the local fixture)")
    image_name: str = _opt("", "Glance image of the web tier; empty means '<stack>-web-tier'")
    flavor: str = _opt("m1.small", "flavor of the web-tier server")
    network: str = _opt("private", "private network the server boots on")
    external_network: str = _opt("public", "external network floating IPs come from")
    routable: bool = _opt(False, "the cloud's floating IPs are reachable from this machine (enables SSH steps)")
    namespace: str = _opt("auto", "network namespace that reaches the floating IPs (SSH steps, workload): auto "
                          f"means {FIXTURE_NAMESPACE!r}, the local fixture's, when cloud is {FIXTURE_CLOUD!r}; "
                          "empty means this machine's own")
    kernel_image: str = _opt("auto", "Glance image whose kernel and ramdisk boot the web-tier image (images baked "
                             "on the local AWS server have no boot loader); auto means "
                             f"{FIXTURE_KERNEL_IMAGE!r} when aws.target is emulator; empty: the disk boots itself")

    def reach_namespace(self) -> str:
        """The namespace in which floating IPs are reached, or "" for this machine's own."""
        if self.namespace == "auto":
            return FIXTURE_NAMESPACE if self.cloud == FIXTURE_CLOUD else ""
        return self.namespace


@dataclass(frozen=True)
class ScalingSettings:
    min_workers: int = _opt(0, "smallest app-tier fleet", min=0, max=1000)
    max_workers: int = _opt(20, "largest app-tier fleet", min=1, max=1000)
    messages_per_worker: int = _opt(1, "backlog one worker is expected to carry", min=1, max=10000)
    poll_interval: float = _opt(1.0, "seconds between autoscaler ticks", min=0.05, max=300.0)
    pending_timeout: float = _opt(300.0, "seconds an instance may stay pending before it is replaced",
                                  min=1.0, max=86400.0)
    metrics_bind: str = _opt("", "loopback HOST:PORT where `hybrid autoscale` serves Prometheus metrics at /metrics "
                             "(port 0: any free port, logged); empty serves none", check=_loopback_bind)


@dataclass(frozen=True)
class WorkerSettings:
    idle_timeout: float = _opt(5.0, "seconds a worker holding no message waits before it terminates itself",
                               min=0.0, max=86400.0)
    batch_size: int = _opt(8, "requests received and classified together", min=1, max=10)
    wait_seconds: int = _opt(1, "long-poll wait of one receive", min=0, max=20)
    threads: int = _opt(1, "CPU threads per worker process", min=1, max=64)
    runtime: str = _opt("auto", "inference runtime: onnx when available (auto), or force one",
                        choices=("auto", "onnx", "torch"))


@dataclass(frozen=True)
class WebSettings:
    bind: str = _opt("127.0.0.1:8000", "address the web tier listens on (its front, nginx; gunicorn sits behind "
                     "it on a unix socket)", check=_bind)
    max_upload_bytes: int = _opt(10 * 1024 * 1024, "largest accepted request body", min=1024, max=1 << 30)
    request_timeout: float = _opt(60.0, "seconds a request waits for its label before 504", min=0.1, max=3600.0)
    cache_max_entries: int = _opt(100_000, "result-cache entries kept; the least recently used go first",
                                  min=1, max=10_000_000)
    threads: int = _opt(128, "gunicorn threads per process (one per request being answered)", min=1, max=1024)
    client_timeout: float = _opt(10.0, "seconds the front (nginx) waits for a client's headers, and between two "
                                 "reads of its body, before it drops the request", min=1.0, max=600.0)
    connections_per_client: int = _opt(200, "requests in progress that one client address may have (more get 429; "
                                       "the course's workload generators send 100 at once)",
                                       min=1, max=100_000)


@dataclass(frozen=True)
class LogSettings:
    format: str = _opt("text", "log lines of the service processes (hybrid web, worker, autoscale): text, or json "
                       "(one object a line, with the request id of an upload on the web tier's and the worker's "
                       "lines for it)", choices=("text", "json"))


def _check_stack(value: str) -> str | None:
    if STACK_PATTERN.match(value) and "--" not in value:
        return None
    return "3-24 characters: lowercase letters, digits and single hyphens, starting with a letter"


@dataclass(frozen=True)
class Settings:
    stack: str = _opt("hybrid-dev", "stack name: derives every resource name and the hybrid:stack tag",
                      check=_check_stack)
    state_dir: str = _opt(".hybrid", "folder for local state: emulator process, keys, logs")
    aws: AwsSettings = field(default_factory=AwsSettings)
    openstack: OpenStackSettings = field(default_factory=OpenStackSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        if self.scaling.min_workers > self.scaling.max_workers:
            raise ConfigError(f"scaling.min_workers = {self.scaling.min_workers} is above scaling.max_workers = "
                              f"{self.scaling.max_workers}")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def result_cache_path(self) -> Path:
        """The web tier's JSON result cache of this stack."""
        return self.state_path / "web" / f"{self.stack}-cache.json"

    @property
    def timeline_path(self) -> Path:
        """The autoscaler's record of this stack's queue depth and fleet, one JSON line per tick."""
        return self.state_path / "autoscale" / f"{self.stack}-timeline.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        return build(json.loads(text))


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Settings)  # type: ignore[misc]
                             if f.default_factory is not dataclasses.MISSING}


ProfileRegion = Callable[[str], "tuple[str | None, str]"]
"""Given ``aws.profile`` ("" for the SDK's default chain): that profile's region (None if it sets none) and a label
such as ``profile work``; raises ``ConfigError`` when the profile does not exist (``hybrid.aws.session``)."""

Entry = tuple[str, Any, str]
"""One value of one layer: (``section.key``, value, origin), the origin as ``config show --origin`` prints it."""


@dataclass(frozen=True)
class Loaded:
    """The settings and, for every key, where its value came from: ``default``, ``file PATH``, ``user data PATH``,
    ``env NAME`` (a HYBRID_* variable, or AWS_REGION, OS_CLOUD...), ``command line`` or ``profile NAME``."""

    settings: Settings
    origins: Mapping[str, str]

    def rows(self) -> list[tuple[str, Any, str]]:
        """(key, value, origin) for every setting, in ``describe`` order."""
        values = _flatten(self.settings.to_dict())
        return [(key, values[key], self.origins.get(key, ORIGIN_DEFAULT)) for key, _default, _help in describe()]


def load(config_path: str | Path | None = None, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None, user_data: str | Path | None = None,
         profile_region: ProfileRegion | None = None) -> Settings:
    """Builds the settings from the config file, then the environment, then flags (``section.key`` -> value).

    On an instance, ``user_data`` (the JSON settings written at boot) takes the config file's place.
    """
    return load_with_origins(config_path, environ, overrides, user_data, profile_region).settings


def load_with_origins(config_path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                      overrides: Mapping[str, Any] | None = None, user_data: str | Path | None = None,
                      profile_region: ProfileRegion | None = None) -> Loaded:
    """``load``, saying where each value came from; logs a warning for each unknown ``HYBRID_*`` variable."""
    environ = {} if environ is None else environ
    for warning in unknown_variables(environ):
        logger.warning("%s", warning)
    entries = [*_first_layer(config_path, environ, user_data), *entries_from_environ(environ),
               *entries_from_dotted(overrides or {})]
    check_known(entries)
    origins = {key: origin for key, _value, origin in entries}
    settings = build(_nest(entries))
    if user_data is None:
        settings = _with_chains(settings, origins, environ, profile_region)
    return Loaded(settings, origins)


def _first_layer(config_path: str | Path | None, environ: Mapping[str, str],
                 user_data: str | Path | None) -> list[Entry]:
    if user_data is not None:
        values = read_user_data(Path(user_data))
        return [e for e in _entries(values, f"user data {user_data}") if e[0] not in MACHINE_LOCAL]
    path = config_path or environ.get(CONFIG_VARIABLE)
    values = read_config_file(path, config_path is not None or CONFIG_VARIABLE in environ)
    return _entries(values, f"file {path or CONFIG_FILE}")


MACHINE_LOCAL = {"aws.profile"}
"""Keys that mean something only on the machine that wrote them: an instance reading user data ignores them."""


def read_config_file(path: str | Path | None, required: bool) -> dict[str, Any]:
    """The TOML file's values; a missing default file is fine, a missing named one is an error."""
    file = Path(path) if path else Path(CONFIG_FILE)
    if not file.exists():
        if required:
            raise ConfigError(f"config file {file} does not exist")
        return {}
    try:
        return tomllib.loads(_config_text(file))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


def _config_text(file: Path) -> str:
    if file.is_dir():
        raise ConfigError(f"config file {file} is a folder: name the file, e.g. {file / CONFIG_FILE}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {file} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}): save it as UTF-8") from None


def read_user_data(path: Path) -> dict[str, Any]:
    """Settings JSON delivered as instance user data (``Settings.to_json``)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read user data {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"user data {path} is not settings JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"user data {path} is not a JSON object of settings")
    return data


def variable_names() -> dict[str, str]:
    """Every setting's environment variable: ``HYBRID_AWS_REGION`` -> ``aws.region``."""
    return {ENV_PREFIX + key.replace(".", "_").upper(): key for key, _default, _help in describe()}


def entries_from_environ(environ: Mapping[str, str]) -> list[Entry]:
    """The ``HYBRID_*`` variables that are settings, each with its own origin (``env HYBRID_AWS_REGION``)."""
    names = variable_names()
    return [(names[name], value, f"env {name}") for name, value in sorted(environ.items()) if name in names]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``HYBRID_*`` variable that is neither a setting nor in ``OTHER_VARIABLES``."""
    known = [*variable_names(), *OTHER_VARIABLES]
    return [f"{name} is not a setting and is ignored{_did_you_mean(name, known, ENV_PREFIX)} "
            "(`hybrid config keys` lists them)" for name in sorted(environ)
            if name.startswith(ENV_PREFIX) and name not in known]


def entries_from_dotted(overrides: Mapping[str, Any]) -> list[Entry]:
    """{"aws.region": "eu-west-1", "stack": "x"} from flags; None means the flag was not given."""
    return [(key, value, ORIGIN_FLAGS) for key, value in overrides.items() if value is not None]


def check_known(entries: list[Entry]) -> None:
    """Raises ``ConfigError`` for the first key that is no setting, with the closest one and where it was found."""
    known = [key for key, _default, _help in describe()]
    for key, _value, origin in entries:
        if key not in known and key not in SECTIONS:
            raise ConfigError(f"unknown setting {key} ({origin}){_did_you_mean(key, [*known, *SECTIONS])}; "
                              "`hybrid config keys` lists them")


def _did_you_mean(name: str, known: list[str], prefix: str = "") -> str:
    """``: did you mean X?`` for the closest of ``known``, compared without their common ``prefix``; else ""."""
    close = difflib.get_close_matches(name[len(prefix):], [k[len(prefix):] for k in known], n=1, cutoff=0.6)
    return f": did you mean {prefix}{close[0]}?" if close else ""


def _entries(values: Mapping[str, Any], origin: str) -> list[Entry]:
    """A file's nested values as entries; a section that is not a table stays whole, for ``build`` to refuse."""
    entries: list[Entry] = []
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            entries += [(f"{key}.{name}", item, origin) for name, item in value.items()]
        else:
            entries.append((key, value, origin))
    return entries


def _nest(entries: list[Entry]) -> dict[str, Any]:
    """Entries, later ones winning, as the nested values ``build`` takes."""
    values: dict[str, Any] = {}
    for key, value, _origin in entries:
        section, _, name = key.partition(".")
        if not name:
            values[key] = value
            continue
        table = values.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table of settings, got {table!r}")
        table[name] = value
    return values


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def _with_chains(settings: Settings, origins: dict[str, str], environ: Mapping[str, str],
                 profile_region: ProfileRegion | None) -> Settings:
    """Fills aws.region and openstack.cloud from their SDKs' variables and the AWS profile where no layer set them
    (``origins`` gains their origin)."""
    region = region_from_chain(settings, origins, environ, profile_region)
    cloud = cloud_from_chain(origins, environ)
    for key, found in (("aws.region", region), ("openstack.cloud", cloud)):
        if found:
            origins[key] = found[1]
    return dataclasses.replace(
        settings, aws=dataclasses.replace(settings.aws, region=region[0]) if region else settings.aws,
        openstack=dataclasses.replace(settings.openstack, cloud=cloud[0]) if cloud else settings.openstack)


def region_from_chain(settings: Settings, origins: Mapping[str, str], environ: Mapping[str, str],
                      profile_region: ProfileRegion | None) -> tuple[str, str] | None:
    """(region, origin) from AWS_REGION, AWS_DEFAULT_REGION or the profile when no layer set aws.region; None keeps
    the setting. On target aws the profile is looked up even then, so that a profile which does not exist is
    reported now."""
    profile = None
    if settings.aws.target == "aws" and profile_region is not None:
        profile = profile_region(settings.aws.profile)
    if "aws.region" in origins:
        return None
    for name in REGION_VARIABLES:
        if environ.get(name):
            return environ[name], f"env {name}"
    if profile and profile[0]:
        return profile[0], profile[1]
    return None


def cloud_from_chain(origins: Mapping[str, str], environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(cloud, origin) from OS_CLOUD, or envvars when OS_AUTH_URL is set, if no layer set openstack.cloud."""
    if "openstack.cloud" in origins:
        return None
    if environ.get("OS_CLOUD"):
        return environ["OS_CLOUD"], "env OS_CLOUD"
    if environ.get("OS_AUTH_URL"):
        return ENVVARS_CLOUD, "env OS_AUTH_URL (the openrc variables)"
    return None


def parse_assignment(text: str) -> tuple[str, str]:
    """``aws.region=eu-west-1`` -> ("aws.region", "eu-west-1") for the ``--set`` flag."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def build(values: Mapping[str, Any]) -> Settings:
    """Validates nested plain values into ``Settings``; the first bad key raises ``ConfigError``."""
    top = _build_section(Settings, {k: v for k, v in values.items() if k not in SECTIONS}, prefix="")
    sections = {}
    for name, section_type in SECTIONS.items():
        raw = values.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table of settings, got {raw!r}")
        sections[name] = section_type(**_build_section(section_type, raw, prefix=f"{name}."))
    return Settings(**top, **sections)


def _build_section(section_type: type, raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(section_type) if f.name not in SECTIONS}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = [prefix + name for name in fields]
        raise ConfigError(f"unknown setting {prefix}{unknown[0]}{_did_you_mean(prefix + unknown[0], known)} "
                          f"(known: {', '.join(known)})")
    hints = typing.get_type_hints(section_type)
    return {name: _validated(prefix + name, raw[name], hints[name], fields[name].metadata) for name in raw}


def _validated(key: str, value: Any, kind: type, rules: Mapping[str, Any]) -> Any:
    converted = _convert(key, value, kind)
    problem = _rule_problem(converted, rules)
    if problem:
        raise ConfigError(f"{key} = {value!r} is not valid: expected {problem}")
    return converted


def _convert(key: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            return _to_bool(value)
        if kind is int and not isinstance(value, bool):
            return int(value) if not isinstance(value, float) or value.is_integer() else _fail()
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{key} = {value!r} is not valid: expected {kind.__name__}")


def _fail() -> Any:
    raise ValueError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _rule_problem(value: Any, rules: Mapping[str, Any]) -> str | None:
    if "choices" in rules and value not in rules["choices"]:
        return "one of " + ", ".join(rules["choices"])
    if "min" in rules and value < rules["min"]:
        return f"a number >= {rules['min']}"
    if "max" in rules and value > rules["max"]:
        return f"a number <= {rules['max']}"
    if "check" in rules:
        return rules["check"](value)
    return None


def describe() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every setting, for `hybrid config keys` and the example file."""
    rows = [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Settings) if f.name not in SECTIONS]
    for name, section_type in SECTIONS.items():
        rows += [(f"{name}.{f.name}", f.default, f.metadata["help"]) for f in dataclasses.fields(section_type)]
    return rows


def example_toml() -> str:
    """The documented example config: every key with its default and meaning (``hybrid config example``)."""
    lines = ["# hybrid settings: copy to hybrid.toml and change what you need. Every key is optional; these are the",
             "# defaults. Precedence: this file < HYBRID_<SECTION>_<KEY> environment variables < --set "
             "SECTION.KEY=VALUE.",
             "# Example: HYBRID_AWS_TARGET=aws hybrid aws plan    or    hybrid --set aws.target=aws aws plan",
             "# No credentials belong here: AWS credentials come from your usual AWS configuration (profile, env).",
             "# aws.region and openstack.cloud are commented out: unset, they follow AWS_REGION, the AWS profile and",
             "# OS_CLOUD. `hybrid config show --origin` says where each value came from.",
             "# Regenerate with: hybrid config example > hybrid.example.toml"]
    current = ""
    for key, default, help_text in describe():
        section, _, name = key.rpartition(".")
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        lines += [f"# {line}" for line in textwrap.wrap(help_text, 110)]
        lines.append(("# " if key in CHAIN_KEYS else "") + f"{name} = {toml_value(default)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)
