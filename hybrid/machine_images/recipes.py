"""Image recipes: the cloud-init user data and systemd units of the app-tier and web-tier images.

Two kinds of user data, both ``#cloud-config``:

- **bake** user data (``bake_user_data``) turns a base Debian/Ubuntu instance into a role's image: it installs the
  units, ``images/common/bake.sh`` and a root-only file with the wheelhouse's presigned URL and SHA-256. bake.sh
  fetches the wheelhouse (``hybrid.machine_images.wheelhouse``), installs ``hybrid[<extra>]`` from it into
  ``/opt/hybrid/.venv`` with no package index and no apt, puts the app tier's ONNX model in the worker's cache,
  enables the units, removes what one machine must not share, and reports ``HYBRID-BAKE-READY <role>`` on the serial
  console. It holds no settings and no credentials.
- **boot** user data (``boot_user_data``) gives one instance its settings: ``/etc/hybrid/settings.json`` (mode 0644,
  ``Settings.to_json``: never credentials). The autoscaler launches workers with the raw settings JSON instead; the
  ``hybrid-settings`` unit (``python -m hybrid.machine_images.recipes install-settings``) accepts both and renders
  ``/etc/hybrid/hybrid.toml`` for commands that read a config file. That step needs only the standard library: the
  images have no PyYAML (rendering happens on the operator's machine).

The unit files live in ``images/<role>/`` and ``images/common/`` of the source tree.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from functools import cache
from typing import Any

from hybrid.core.errors import ConfigError, HybridError
from hybrid.core.files import write_atomically
from hybrid.core.naming import ROLE_APP_TIER, ROLE_WEB_TIER, StackNames
from hybrid.core.settings import SECTIONS, Settings

RECIPES_DIR = Path(__file__).resolve().parents[2] / "images"
ROLES = (ROLE_APP_TIER, ROLE_WEB_TIER)
VENV = "/opt/hybrid/.venv"
HYBRID_BIN = f"{VENV}/bin/hybrid"
SETTINGS_PATH = Path("/etc/hybrid/settings.json")
TOML_PATH = Path("/etc/hybrid/hybrid.toml")
CREDENTIALS_PATH = Path("/etc/hybrid/aws-credentials")
CLOUD_INIT_USER_DATA = Path("/var/lib/cloud/instance/user-data.txt")
BAKE_SCRIPT = "/opt/hybrid/bake.sh"
# Where bake.sh finds the wheelhouse's URL and checksum (root only; it deletes the file once read).
WHEELHOUSE_SOURCE = "/root/hybrid-wheelhouse.json"
USER_DATA_LIMIT = 16 * 1024
READY_MARKER = "HYBRID-BAKE-READY"
FAILED_MARKER = "HYBRID-BAKE-FAILED"
_SECRET_PATTERNS = (re.compile(r"AKIA[0-9A-Z]{16}"), re.compile(r"aws_secret_access_key", re.IGNORECASE),
                    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"))


@dataclass(frozen=True)
class ImageFile:
    """A file the recipe puts on the image: where it goes, where its text comes from, its mode."""

    path: str
    source: str
    permissions: str = "0644"


@dataclass(frozen=True)
class Recipe:
    """What one role's image holds: units to enable, extra files, and the pip extra it installs (pyproject.toml)."""

    role: str
    units: tuple[str, ...]
    files: tuple[ImageFile, ...]
    extra: str

    def unit_text(self, unit: str) -> str:
        return read_recipe_file(unit_source(unit))


def unit_source(unit: str) -> str:
    return "common/hybrid-settings.service" if unit == "hybrid-settings.service" else \
        f"{_UNIT_ROLE[unit]}/{unit}"


_UNIT_ROLE = {"hybrid-worker.service": ROLE_APP_TIER, "hybrid-web.service": ROLE_WEB_TIER,
              "hybrid-autoscaler.service": ROLE_WEB_TIER}
_RECIPES = {
    ROLE_APP_TIER: Recipe(ROLE_APP_TIER, ("hybrid-settings.service", "hybrid-worker.service"), (), "worker"),
    ROLE_WEB_TIER: Recipe(ROLE_WEB_TIER, ("hybrid-settings.service", "hybrid-web.service",
                                          "hybrid-autoscaler.service"),
                          (ImageFile("/etc/cloud/cloud.cfg.d/99-hybrid-datasources.cfg",
                                     "web-tier/99-hybrid-datasources.cfg"),), "web"),
}


def recipe(role: str) -> Recipe:
    """The recipe of ``role`` (app-tier or web-tier)."""
    if role not in _RECIPES:
        raise ConfigError(f"role {role!r} has no image recipe (known: {', '.join(ROLES)})")
    return _RECIPES[role]


def image_name(settings: Settings, role: str) -> str:
    """The name of ``role``'s baked image, ``<stack>-<role>``; the app tier follows aws.ami_name, the name
    ``hybrid aws up`` looks for."""
    recipe(role)
    if role == ROLE_APP_TIER:
        return StackNames(settings.stack, settings.aws.ami_name).app_image
    return f"{settings.stack}-{role}"


def read_recipe_file(relative: str) -> str:
    path = RECIPES_DIR / relative
    try:
        return path.read_text()
    except OSError as exc:
        raise HybridError(f"image recipe file {path} is missing ({exc}): run from a source checkout") from None


def bake_user_data(role: str, wheelhouse_url: str, wheelhouse_sha256: str) -> str:
    """The ``#cloud-config`` that turns a base instance into ``role``'s image from the wheelhouse at
    ``wheelhouse_url`` (a presigned GET) with that SHA-256. No settings, no credentials, no package index."""
    chosen = recipe(role)
    files = [_write_file(f"/etc/systemd/system/{unit}", chosen.unit_text(unit)) for unit in chosen.units]
    files += [_write_file(f.path, read_recipe_file(f.source), f.permissions) for f in chosen.files]
    files.append(_write_file(BAKE_SCRIPT, read_recipe_file("common/bake.sh"), "0755"))
    source = json.dumps({"url": wheelhouse_url, "sha256": wheelhouse_sha256})
    files.append(_write_file(WHEELHOUSE_SOURCE, source + "\n", "0600"))
    command = ["env", f"HYBRID_ROLE={role}", f"HYBRID_EXTRA={chosen.extra}", f"HYBRID_UNITS={' '.join(chosen.units)}",
               "bash", BAKE_SCRIPT]
    config = {"write_files": files, "runcmd": [command]}
    return render_cloud_config(config, f"hybrid {role} image: bake recipe", presigned=(wheelhouse_url,))


def boot_user_data(settings: Settings) -> str:
    """The ``#cloud-config`` that gives one instance its settings in ``/etc/hybrid/settings.json`` (0644)."""
    config = {"write_files": [_write_file(str(SETTINGS_PATH), settings.to_json() + "\n")]}
    return render_cloud_config(config, f"hybrid stack {settings.stack}: instance settings (no credentials)")


def _write_file(path: str, content: str, permissions: str = "0644") -> dict[str, str]:
    return {"path": path, "content": content, "owner": "root:root", "permissions": permissions}


def render_cloud_config(config: dict[str, Any], title: str, presigned: Sequence[str] = ()) -> str:
    """``config`` as cloud-config YAML with its header; refuses credentials and user data over EC2's 16 KB.

    ``presigned``: presigned URLs in ``config``, left out of the credentials check. On AWS such a URL names the
    signer's access key id (never the secret); it allows one GET of one object until it expires, and bake.sh
    deletes it and cloud-init's copy of the user data before the image is taken.
    """
    import yaml  # the operator's machine renders; an image only installs settings (no PyYAML there)

    text = f"#cloud-config\n# {title}\n" + yaml.dump(config, Dumper=_block_dumper(), sort_keys=False, width=120)
    checked = text
    for url in filter(None, presigned):
        checked = checked.replace(url, "<presigned URL>")
    check_no_credentials(checked)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise HybridError(f"user data is {len(text.encode())} bytes, over EC2's limit of {USER_DATA_LIMIT}")
    return text


def check_no_credentials(text: str) -> None:
    """Raises if ``text`` looks like it holds a credential (an access key id, a secret key, a private key)."""
    for pattern in _SECRET_PATTERNS:
        if pattern.search(text):
            raise HybridError(f"refusing to put credentials into an image or user data (matched {pattern.pattern})")


@cache
def _block_dumper() -> type:
    """A YAML dumper that writes multi-line strings (unit files, scripts) as readable ``|`` blocks."""
    import yaml

    class BlockDumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, represent_str)
    return BlockDumper


# ---------------------------------------------------------------- on the instance: the hybrid-settings unit

def settings_toml(settings: Settings) -> str:
    """The settings as a TOML config file (what ``HYBRID_CONFIG`` points at), equal to ``settings``."""
    values = settings.to_dict()
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items() if key not in SECTIONS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"] + [f"{key} = {_toml_value(v)}" for key, v in values[section].items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def install_settings(cloud_user_data: Path = CLOUD_INIT_USER_DATA, settings_path: Path = SETTINGS_PATH,
                     toml_path: Path = TOML_PATH) -> Settings:
    """Copies raw settings JSON user data to ``settings_path`` (cloud-config user data wrote it already),
    validates it and writes ``toml_path``. Both files 0644: they hold no credentials."""
    raw = _settings_from_user_data(cloud_user_data)
    if raw is not None:
        write_public_file(settings_path, raw.to_json() + "\n")
    if not settings_path.exists():
        raise ConfigError(f"no settings: {settings_path} is missing and the user data is not settings JSON")
    settings = Settings.from_json(settings_path.read_text())
    write_public_file(toml_path, settings_toml(settings))
    return settings


def _settings_from_user_data(path: Path) -> Settings | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.lstrip().startswith("{"):
        return None
    return Settings.from_json(text)


def write_public_file(path: Path, text: str) -> None:
    """Writes ``text`` atomically with mode 0644 (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode(), mode=0o644)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hybrid.machine_images.recipes install-settings``: what the hybrid-settings unit runs at boot."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["install-settings"]:
        print("usage: python -m hybrid.machine_images.recipes install-settings", file=sys.stderr)
        return 2
    try:
        settings = install_settings()
    except HybridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"settings of stack {settings.stack} installed in {SETTINGS_PATH} and {TOML_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
