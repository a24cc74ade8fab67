"""One typed, frozen settings object: the only code that reads the config file, ``HYBRID_*`` variables and flags.

Precedence, lowest first: the defaults below, the TOML file (``hybrid.toml``, or the path in ``--config`` /
``HYBRID_CONFIG``), environment variables, then command-line flags. Every key lives in a section::

    stack = "demo"                 # top level: HYBRID_STACK
    [aws]   region = "us-east-1"   # HYBRID_AWS_REGION, or the flag --set aws.region=us-east-1

A bad value raises ``ConfigError`` naming the key, the value and what is allowed. The object is JSON-serialisable
(``to_json`` / ``from_json``) so it can travel to instances as user data; it never holds credentials.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hybrid.core.errors import ConfigError

CONFIG_FILE = "hybrid.toml"
ENV_PREFIX = "HYBRID_"
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


@dataclass(frozen=True)
class AwsSettings:
    target: str = _opt("emulator", "where the AWS calls go: the local AWS server started by "
                       "`hybrid emulator start`, or AWS itself", choices=("emulator", "aws"))
    region: str = _opt("us-east-1", "AWS region of every resource of the stack")
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
    cloud: str = _opt(FIXTURE_CLOUD, "name of the cloud in clouds.yaml")
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


def load(config_path: str | Path | None = None, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None, user_data: str | Path | None = None) -> Settings:
    """Builds the settings from the config file, then the environment, then flags (``section.key`` -> value).

    On an instance, ``user_data`` (the JSON settings written at boot) takes the config file's place.
    """
    environ = {} if environ is None else environ
    layered: dict[str, Any] = {}
    if user_data is not None:
        _merge(layered, read_user_data(Path(user_data)))
    else:
        _merge(layered, read_config_file(config_path or environ.get(f"{ENV_PREFIX}CONFIG"),
                                         config_path is not None or f"{ENV_PREFIX}CONFIG" in environ))
    _merge(layered, values_from_environ(environ))
    _merge(layered, values_from_dotted(overrides or {}))
    return build(layered)


def read_config_file(path: str | Path | None, required: bool) -> dict[str, Any]:
    """The TOML file's values; a missing default file is fine, a missing named one is an error."""
    file = Path(path) if path else Path(CONFIG_FILE)
    if not file.exists():
        if required:
            raise ConfigError(f"config file {file} does not exist")
        return {}
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


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


def values_from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """``HYBRID_AWS_REGION`` -> {"aws": {"region": ...}}; ``HYBRID_STACK`` -> {"stack": ...}."""
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        key = name[len(ENV_PREFIX):].lower()
        section, _, rest = key.partition("_")
        if section in SECTIONS and rest:
            values.setdefault(section, {})[rest] = value
        elif key in _top_level_keys():
            values[key] = value
    return values


def values_from_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{"aws.region": "eu-west-1", "stack": "x"} -> nested values; None means the flag was not given."""
    values: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if key:
            values.setdefault(section, {})[key] = value
        else:
            values[section] = value
    return values


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


def _top_level_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(Settings) if f.name not in SECTIONS}


def _build_section(section_type: type, raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(section_type) if f.name not in SECTIONS}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(prefix + name for name in fields)
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known: {known})")
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


def _merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            into[key].update(value)
        elif isinstance(value, Mapping):
            into[key] = dict(value)
        else:
            into[key] = value


def describe() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every setting, for `hybrid config keys` and the example file."""
    rows = [(f.name, f.default, f.metadata["help"]) for f in dataclasses.fields(Settings) if f.name not in SECTIONS]
    for name, section_type in SECTIONS.items():
        rows += [(f"{name}.{f.name}", f.default, f.metadata["help"]) for f in dataclasses.fields(section_type)]
    return rows


def example_toml() -> str:
    """The documented example config: every key with its default and meaning (``hybrid config example``)."""
    lines = ["# hybrid settings: copy to hybrid.toml and change what you need. Every key is optional; these are the",
             "# defaults. Precedence: this file < HYBRID_<SECTION>_<KEY> environment variables < --set SECTION.KEY=VALUE.",
             "# Example: HYBRID_AWS_TARGET=aws hybrid aws plan    or    hybrid --set aws.target=aws aws plan",
             "# No credentials belong here: AWS credentials come from your usual AWS configuration (profile, env).",
             "# Regenerate with: hybrid config example > hybrid.example.toml"]
    current = ""
    for key, default, help_text in describe():
        section, _, name = key.rpartition(".")
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        lines += [f"# {line}" for line in textwrap.wrap(help_text, 110)]
        lines.append(f"{name} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)
