"""`hybrid submit archive.zip` and `api.upload(zip)` end to end on the local server; a zip bomb or a path trick is
one error line and exit 1, with nothing uploaded."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import pytest

from hybrid.tools import api
from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(300)
PHOTOS = ("coffee", "chelsea", "rocket")


def hybrid(rig, *args):
    """The console command as an operator runs it: a subprocess, its exit code and output."""
    return subprocess.run([sys.executable, "-m", "hybrid", "--state-dir", str(rig.settings.state_path), "--stack",
                           rig.settings.stack, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})


def batch_keys(rig):
    listed = rig.s3.list_objects_v2(Bucket=f"{rig.settings.stack}-input", Prefix="batch/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def photos_zip(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in PHOTOS:
            archive.writestr(f"trip/{name}.jpg", photo_bytes(name))
        archive.writestr("__MACOSX/trip/._coffee.jpg", b"resource fork")
        archive.writestr("trip/notes.txt", "not an image")
    return path


def test_submit_a_zip_then_collect_its_labels(stack, tmp_path):
    from app_tier.classifier import load_classifier

    classifier = load_classifier("auto", 1)
    expected = {f"trip_{name}": classifier.classify([photo_bytes(name)])[0].label for name in PHOTOS}
    rig = stack(worker__idle_timeout="60")
    done = hybrid(rig, "submit", photos_zip(tmp_path / "photos.zip"))
    assert done.returncode == 0, done.stderr
    assert "submitted 3 image(s)" in done.stdout
    rig.launch(1)
    api.init(rig.settings)
    deadline = time.monotonic() + 120
    while not all(r.ready for r in api.list_results()):
        assert time.monotonic() < deadline, api.list_results()
        time.sleep(0.5)
    assert {r.name: r.label for r in api.list_results()} == expected


def test_a_zip_bomb_is_one_error_line_exit_1_and_nothing_uploaded(stack, tmp_path):
    rig = stack()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ok.jpg", photo_bytes("coffee"))
        archive.writestr("bomb.jpg", bytes(20 * 1024 * 1024))
    done = hybrid(rig, "submit", bomb)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and "bomb.jpg" in done.stderr and "zip bomb" in done.stderr
    assert batch_keys(rig) == [], "a refused archive uploads nothing, not even its good images"


def test_a_path_trick_is_refused_the_same_way(stack, tmp_path):
    rig = stack()
    trick = tmp_path / "trick.zip"
    with zipfile.ZipFile(trick, "w") as archive:
        archive.writestr("ok.jpg", photo_bytes("coffee"))
        archive.writestr("../../etc/evil.jpg", photo_bytes("rocket"))
    done = hybrid(rig, "submit", trick)
    assert (done.returncode, "Traceback" in done.stderr) == (1, False)
    assert "'..' part" in done.stderr and batch_keys(rig) == []


def test_the_python_api_takes_a_zip(stack, tmp_path):
    rig = stack()
    api.init(rig.settings)
    submitted = api.upload(photos_zip(tmp_path / "photos.zip"))
    assert [s.path.name for s in submitted] == [f"trip_{name}.jpg" for name in PHOTOS]
    assert all(s.uploaded for s in submitted)
    assert not any(s.uploaded for s in api.upload_zip(tmp_path / "photos.zip")), "same bytes: skipped"
    assert len(batch_keys(rig)) == 3
