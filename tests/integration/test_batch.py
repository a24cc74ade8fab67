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


# Batch mode for any upload under batch/: the bucket notification comes from `aws up`, keys need no layout.

def results_cli(rig, *args: str):
    """`hybrid results ...` in-process on the rig's stack; returns the click result (exit code and output)."""
    from click.testing import CliRunner

    from hybrid.cli import main

    return CliRunner().invoke(main, ["--state-dir", str(rig.settings.state_path), "--stack", rig.settings.stack,
                                     "results", *args])


def lines_of(output: str) -> dict[str, str]:
    """``name:label`` / ``name: failed: reason`` / ``name: state`` lines, by name."""
    return dict(line.split(":", 1) for line in output.splitlines() if ":" in line and not line.startswith("wrote"))


def test_aws_up_sets_the_notification_filtered_to_the_batch_prefix(stack):
    rig = stack()
    [config] = rig.s3.get_bucket_notification_configuration(Bucket=f"{rig.settings.stack}-input")[
        "QueueConfigurations"]
    assert config["QueueArn"].endswith(f":{rig.settings.stack}-requests")
    assert [(rule["Name"].lower(), rule["Value"]) for rule in config["Filter"]["Key"]["FilterRules"]] == \
        [("prefix", "batch/")]
    assert all(change.action == "keep" for change in rig.aws.plan()), "a second up changes nothing"
    assert rig.depth(rig.requests) == (0, 0), "S3's test event is taken off: no backlog for the autoscaler"


def test_any_upload_under_batch_is_classified_and_failures_have_reasons(stack):
    from app_tier.classifier import load_classifier

    classifier = load_classifier("auto", 1)
    images = {f"batch/any/where/{photo}/shot {i}{'+1' if i == 2 else ''}.jpg": photo_bytes(photo, (96 + 16 * i, 80))
              for photo in ("coffee", "chelsea", "rocket", "astronaut") for i in range(5)}
    expected = {key: classifier.classify([data])[0].label for key, data in images.items()}
    rig = stack(worker__idle_timeout="60")
    bucket = f"{rig.settings.stack}-input"
    for key, data in images.items():
        rig.s3.put_object(Bucket=bucket, Key=key, Body=data)  # stands in for `aws s3 cp --recursive`
    twin = next(iter(images))
    rig.s3.put_object(Bucket=bucket, Key="batch/flat.jpg", Body=images[twin])
    rig.s3.put_object(Bucket=bucket, Key="batch/readme.txt", Body=b"not an image")
    rig.s3.put_object(Bucket=bucket, Key="batch/any/notes.txt", Body=b"nor this")
    rig.s3.put_object(Bucket=bucket, Key="batch/any/huge.jpg", Body=b"\0" * (64 * 1024 * 1024 + 1))
    rig.s3.put_object(Bucket=bucket, Key="batch/any/where/", Body=b"")  # a folder marker: not an image to list
    rig.launch(1)

    done = results_cli(rig, "--wait", "180")
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    listed = lines_of(done.stdout)
    assert {f"{k[len('batch/'):]}": listed.get(k[len('batch/'):]) for k in images} == \
        {k[len("batch/"):]: v for k, v in expected.items()}, "20 right labels"
    assert listed["flat.jpg"] == expected[twin], "a flat key; same bytes share one classification"
    assert listed["readme.txt"].startswith(" failed: not a usable image")
    assert listed["any/notes.txt"].startswith(" failed: not a usable image")
    assert "over the" in listed["any/huge.jpg"] and listed["any/huge.jpg"].startswith(" failed:")
    assert "any/where/" not in listed and "Traceback" not in done.output
    assert done.exit_code == 0, "every image has its answer"
    records = {r.key: r for r in api.init(rig.settings).list_results()}
    assert records["batch/flat.jpg"].digest == records[twin].digest and records[twin].state == "done"
    assert rig.depth(rig.dead_letters) == (0, 0), "nothing dead-lettered"
    assert rig.depth(rig.requests) == (0, 0)


def test_resubmitting_bytes_the_web_tier_answered_lists_them(stack, tmp_path):
    rig = stack(worker__idle_timeout="60")
    rig.launch(1)
    image = photo_bytes("chelsea", (120, 90))
    rig.submit("chelsea", image)
    [reply] = rig.collect(1, timeout=120)
    (tmp_path / "again.jpg").write_bytes(image)
    api.init(rig.settings)
    assert api.upload(tmp_path / "again.jpg").uploaded, "known to the web tier, not to batch mode: uploaded"
    results = api.wait(120)
    assert [(r.name, r.state, r.label) for r in results] == [("again", "done", reply.label)]
    assert not api.upload(tmp_path / "again.jpg").uploaded, "submitted before: skipped, and listed already"


def test_a_never_notified_object_is_not_queued_until_requeued(stack, monkeypatch):
    from app_tier.classifier import load_classifier
    from hybrid.tools import batch

    monkeypatch.setattr(batch, "NOTIFY_GRACE_S", 0.0)
    rig = stack(worker__idle_timeout="60")
    bucket, image = f"{rig.settings.stack}-input", photo_bytes("chelsea", (100, 80))
    rig.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    rig.s3.put_object(Bucket=bucket, Key="batch/late/cat.jpg", Body=image)
    assert [c.resource.kind for c in rig.aws.up(report=lambda line: None)] == ["notification"], \
        "up puts the notification back"

    started = time.monotonic()
    lost = results_cli(rig, "--wait", "30")
    assert time.monotonic() - started < 20, "nothing pending: --wait ends at once"
    assert lost.exit_code == 3 and "Traceback" not in lost.output
    assert lines_of(lost.stdout)["late/cat.jpg"].startswith(" not queued")

    pending = results_cli(rig, "--requeue", "--wait", "2")  # no worker yet: it stays pending
    assert pending.exit_code == 3 and "requeued 1 image(s)" in pending.output
    assert lines_of(pending.stdout)["late/cat.jpg"] == " pending"

    rig.launch(1)
    done = results_cli(rig, "--wait", "120")
    assert done.exit_code == 0, done.output
    assert lines_of(done.stdout)["late/cat.jpg"] == load_classifier("auto", 1).classify([image])[0].label
    assert rig.depth(rig.dead_letters) == (0, 0)
