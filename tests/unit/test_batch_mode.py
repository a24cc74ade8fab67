"""Batch mode's pure parts and the worker's batch path, against the fakes: any key under batch/, one record per key,
classification shared by content, failures recorded with their reason."""
import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest

from app_tier.worker import MAX_IMAGE_BYTES, RESULTS_PREFIX
from hybrid.core.messages import (BatchRecord, ClassifyReply, MalformedMessage, requests_from_body, requeue_body,
                                  result_key)
from hybrid.tools.batch import display_name, label_path
from tests.unit.test_worker import Rig


def s3_event(*keys: str) -> str:
    """An S3 event as S3 sends it: keys URL-encoded, ``+`` for a space."""
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                    "s3": {"object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": 1}}}
                                   for key in keys]})


def test_any_key_under_batch_is_a_request_and_keys_are_url_decoded():
    keys = ["batch/x.jpg", "batch/my folder/deep/a+b c.JPG", f"batch/{'0' * 64}/cat", "batch/no-extension"]
    requests = requests_from_body(s3_event(*keys))
    assert [r.key for r in requests] == keys
    assert [r.name for r in requests] == ["x", "a+b c", "cat", "no-extension"]
    assert all(r.reply_to == "" for r in requests)


def test_a_folder_marker_is_no_request_and_a_key_outside_batch_is_malformed():
    assert requests_from_body(s3_event("batch/photos/")) == []
    with pytest.raises(MalformedMessage, match="outside batch/"):
        requests_from_body(s3_event("elsewhere/x.jpg"))


def test_requeue_sends_the_shape_of_the_s3_event():
    [request] = requests_from_body(requeue_body("batch/a b/c+d%.jpg"))
    assert request.key == "batch/a b/c+d%.jpg"


def test_result_key_is_the_input_key_plus_json_unless_too_long():
    assert result_key("batch/a/b.jpg") == "batch/a/b.jpg.json"
    long_key = "batch/" + "x" * 1018
    assert result_key(long_key) == f"batch/.long/{hashlib.sha256(long_key.encode()).hexdigest()}.json"


def test_a_record_round_trips():
    record = BatchRecord("batch/a.jpg", "ab" * 32, "tabby", (("tabby", 0.61234),), "m@1")
    assert BatchRecord.from_body(record.to_body()) == BatchRecord("batch/a.jpg", "ab" * 32, "tabby",
                                                                  (("tabby", 0.6123),), "m@1")


def test_names_and_label_paths():
    assert display_name(f"batch/{'f' * 64}/cat") == "cat"
    assert display_name("batch/any/where/cat.jpg") == "any/where/cat.jpg"
    assert label_path(Path("/out"), "any/where/cat.jpg") == Path("/out/any/where/cat.jpg.txt")
    assert label_path(Path("/out"), "../../etc/x") == Path("/out/_/_/etc/x.txt")


class BatchRig(Rig):
    def upload(self, key: str, data: bytes) -> None:
        self.inputs.objects[key] = data
        self.requests.send([s3_event(key)])

    def record(self, key: str) -> BatchRecord:
        return BatchRecord.from_body(self.outputs.objects[result_key(key)].decode())


def test_each_key_gets_its_record_and_same_bytes_are_classified_once():
    rig = BatchRig()
    rig.upload("batch/a/cat.jpg", b"cat-1")
    rig.upload("batch/b/cat copy.jpg", b"cat-1")
    rig.upload("batch/dog.jpg", b"dog-2")
    rig.drain()
    assert rig.worker.classifier.batches == [1, 1], "the copy is answered from the first"
    digest = hashlib.sha256(b"cat-1").hexdigest()
    for key in ("batch/a/cat.jpg", "batch/b/cat copy.jpg"):
        assert rig.record(key) == BatchRecord(key, digest, "cat", (("cat", 0.9), ("other", 0.05)), "fake-model@1")
    assert rig.record("batch/dog.jpg").label == "dog"
    assert json.loads(rig.outputs.objects[f"{RESULTS_PREFIX}{digest}.json"])["label"] == "cat"
    assert rig.outputs.objects["cat"] == b"cat", "the label under the image name, as for the web tier"
    assert rig.requests.messages == {} and rig.replies.log == [], "deleted, replying to no one"


def test_bytes_with_a_stored_result_are_answered_from_it():
    rig = BatchRig()
    digest = hashlib.sha256(b"cat-1").hexdigest()
    rig.outputs.objects[f"{RESULTS_PREFIX}{digest}.json"] = \
        ClassifyReply("web-1", "kitty", "tabby", (("tabby", 0.7),), "fake-model@1").to_body().encode()
    rig.upload("batch/again.jpg", b"cat-1")
    rig.drain()
    assert rig.worker.classifier.batches == []
    assert rig.record("batch/again.jpg") == BatchRecord("batch/again.jpg", digest, "tabby", (("tabby", 0.7),),
                                                        "fake-model@1")


def test_an_object_that_cannot_be_classified_gets_a_record_with_the_reason():
    rig = BatchRig()
    rig.upload("batch/notes.txt", b"bad-not an image")
    rig.upload("batch/huge.jpg", b"cat-" + b"\0" * MAX_IMAGE_BYTES)
    rig.requests.send([s3_event("batch/gone.jpg")])
    rig.drain()
    assert rig.record("batch/notes.txt").error.startswith("not a usable image")
    assert rig.record("batch/notes.txt").sha256 == hashlib.sha256(b"bad-not an image").hexdigest()
    assert "too large" in rig.record("batch/huge.jpg").error and rig.record("batch/huge.jpg").sha256 == ""
    assert "not in the input bucket" in rig.record("batch/gone.jpg").error
    assert rig.requests.messages == {} and rig.dlq.messages == {}
    assert not any(key.startswith(RESULTS_PREFIX) for key in rig.outputs.objects), "no failure is shared"
