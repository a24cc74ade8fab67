"""`pip install .` of this checkout into a clean virtual environment: the core dependencies only (boto3, botocore,
click, tqdm) give a working command line, `--help` of every command included, and none of the extras' packages
(the local AWS server, the model's PyTorch, plots, the tiers' numpy, Pillow, Flask) comes along.

About 6 s on a loaded 2-core machine: the venv is made without pip (ensurepip alone took 4-13 s) and
this environment's pip installs into it (`pip --python`) without compiling bytecode; it builds the wheel from a copy
of the package files (the checkout is never written) and takes the rest from its cache and the local index.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.machine_images.wheelhouse import CHECKOUT, SKIPPED, WHEEL_INPUTS

EXTRAS_ONLY = ("moto", "torch", "matplotlib", "numpy", "PIL", "onnxruntime", "flask", "requests", "openstack")
CORE = {"boto3", "botocore", "click", "tqdm"}

EVERY_HELP = """
import sys
import click
from hybrid.cli import main

def walk(command, path):
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, path + [name])

failed = []
for path in walk(main, []):
    try:
        main.main([*path, "--help"], prog_name="hybrid", standalone_mode=False)
    except Exception as exc:
        failed.append(f"hybrid {' '.join(path)} --help: {type(exc).__name__}: {exc}")
print("\\n".join(failed) or "all", file=sys.stderr)
sys.exit(1 if failed else 0)
"""


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def pip(venv: Path) -> list[str | Path]:
    """This environment's pip, acting on ``venv``."""
    return [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install <copy of this checkout>`, and nothing else."""
    scratch = tmp_path_factory.mktemp("clean-install")
    source = scratch / "source"
    for name in WHEEL_INPUTS:
        if (CHECKOUT / name).is_dir():
            shutil.copytree(CHECKOUT / name, source / name, ignore=shutil.ignore_patterns(*SKIPPED))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(CHECKOUT / name, source / name)
    venv = scratch / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    installed = run(*pip(venv), "install", "--quiet", "--no-compile", source)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def test_hybrid_help_works_with_the_core_only(clean_venv):
    shown = run(clean_venv / "bin" / "hybrid", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "Commands:" in shown.stdout and "autoscale" in shown.stdout


def test_every_command_s_help_works_with_the_core_only(clean_venv):
    shown = run(clean_venv / "bin" / "python", "-c", EVERY_HELP)
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("package", EXTRAS_ONLY)
def test_no_extra_s_package_is_installed(clean_venv, package):
    imported = run(clean_venv / "bin" / "python", "-c", f"import {package}")
    assert imported.returncode != 0 and "ModuleNotFoundError" in imported.stderr


def test_the_distributions_are_the_core_and_what_it_needs(clean_venv):
    listed = run(*pip(clean_venv), "list", "--format=freeze")
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert CORE | {"hybrid"} <= names
    assert not names & {"moto", "torch", "matplotlib", "numpy", "pillow", "flask", "onnxruntime"}, sorted(names)
