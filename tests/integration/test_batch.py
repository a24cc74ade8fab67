"""Batch mode end to end on the local server: submit a folder, workers fed by the bucket notification, collect."""
from __future__ import annotations

import csv
import time

import pytest

from hybrid.tools import api
from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(300)


def test_submit_then_collect_and_resubmitting_changes_nothing(stack, tmp_path):
    from app_tier.classifier import load_classifier

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        (folder / f"{name}.jpg").write_bytes(photo_bytes(name))
    (folder / "zz-coffee-copy.jpg").write_bytes(photo_bytes("coffee"))
    (folder / "notes.txt").write_text("not an image, not submitted")
    classifier = load_classifier("auto", 1)
    expected = {p.stem: classifier.classify([p.read_bytes()])[0].label for p in folder.glob("*.jpg")}

    rig = stack(worker__idle_timeout="60")
    api.init(rig.settings)
    submitted = [api.upload(path) for path in sorted(folder.glob("*.jpg"))]
    assert sum(s.uploaded for s in submitted) == 3, "the copy of coffee has the same bytes: skipped"
    rig.launch(1)
    deadline = time.monotonic() + 120
    while not all(r.ready for r in api.list_results()):
        assert time.monotonic() < deadline, api.list_results()
        time.sleep(0.5)
    results = {r.name: r.label for r in api.list_results()}
    assert results == {name: expected[name] for name in ("coffee", "chelsea", "rocket")}
    assert rig.s3.get_object(Bucket=f"{rig.settings.stack}-output", Key="rocket")["Body"].read().decode() == \
        expected["rocket"]

    again = [api.upload(path) for path in sorted(folder.glob("*.jpg"))]
    assert not any(s.uploaded for s in again), "nothing is uploaded twice"
    time.sleep(1)
    assert rig.depth(rig.requests) == (0, 0), "and nothing is classified twice"
    assert rig.depth(rig.dead_letters) == (0, 0), "the S3 test event was skipped, not dead-lettered"

    out = tmp_path / "labels"
    api.download(out)
    rows = {row["name"]: row["label"] for row in csv.DictReader(open(out / "results.csv"))}
    assert rows == results
    assert (out / "chelsea.txt").read_text().strip() == expected["chelsea"]
