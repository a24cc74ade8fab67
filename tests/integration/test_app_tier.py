"""App-tier workers as real local instances: the emulator's runner starts `hybrid worker` processes that talk to
the local AWS server over HTTP and classify with the real model."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def expected_labels():
    from app_tier.classifier import load_classifier

    classifier = load_classifier("auto", 1)
    return {name: classifier.classify([photo_bytes(name)])[0].label for name in ("coffee", "chelsea", "rocket")}


def worker_pid(state_dir: Path, instance_id: str) -> int:
    from hybrid.local.instance_folders import worker_processes

    deadline = time.monotonic() + 10
    while instance_id not in worker_processes(state_dir):
        assert time.monotonic() < deadline, f"no worker process for {instance_id}"
        time.sleep(0.05)
    return worker_processes(state_dir)[instance_id]


def test_workers_answer_with_the_models_labels(stack, expected_labels, state_dir):
    rig = stack(worker__idle_timeout="30")
    [instance] = rig.launch()
    ids = {rig.submit(name, photo_bytes(name)): name for name in expected_labels}
    replies = rig.collect(len(ids), timeout=120)
    assert {ids[r.id]: r.label for r in replies} == expected_labels
    assert all(r.ok and len(r.top5) == 5 and r.model.startswith("efficientnet-lite0") for r in replies)
    label = rig.s3.get_object(Bucket=f"{rig.settings.stack}-output", Key="coffee")["Body"].read().decode()
    assert label == expected_labels["coffee"]
    assert (state_dir / "instances" / instance / "worker.log").exists()


def test_bad_images_get_error_replies_and_malformed_messages_reach_the_dead_letter_queue(stack):
    rig = stack(worker__idle_timeout="30")
    rig.launch()
    rig.sqs.send_message(QueueUrl=rig.requests, MessageBody="this is not a request")
    truncated = photo_bytes("coffee")[:3000]
    bad = {rig.submit("text", b"hello, I am not an image"): "text", rig.submit("cut", truncated): "cut"}
    good = rig.submit("coffee", photo_bytes("coffee"))
    replies = {r.id: r for r in rig.collect(3, timeout=120)}
    assert set(replies) == set(bad) | {good}
    assert all(not replies[i].ok and replies[i].error for i in bad) and replies[good].ok
    deadline = time.monotonic() + 60
    while rig.depth(rig.dead_letters)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    [moved] = rig.sqs.receive_message(QueueUrl=rig.dead_letters)["Messages"]
    assert moved["Body"] == "this is not a request"
    assert rig.depth(rig.requests) == (0, 0)


def test_a_worker_killed_mid_batch_loses_nothing(stack, state_dir):
    """Every request is answered. One is answered twice only if the killed worker had already replied to it but died
    before deleting it (at-least-once: the web tier ignores a second reply); the worker replies to each image as soon
    as it is classified and deletes the batch's messages together at its end, so a kill that lands late may find
    some images answered but none deleted."""
    rig = stack(worker__idle_timeout="60", aws__visibility_timeout="4", worker__batch_size="8")
    [first] = rig.launch()
    slow = [photo_bytes("coffee", (4000 + i, 3000), fmt="PNG") for i in range(8)]  # under the 4096² PNG cap
    time.sleep(1)
    ids = [rig.submit(f"big{i}", image) for i, image in enumerate(slow)]
    deadline = time.monotonic() + 120
    while rig.depth(rig.requests)[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(worker_pid(state_dir, first), signal.SIGKILL)
    rig.wait_state(first, "terminated", timeout=10)
    early = rig.collect(len(ids), timeout=1)  # replies the first worker sent before it died
    [second] = rig.launch()
    replies = list(early)
    deadline = time.monotonic() + 150
    while {r.id for r in replies} != set(ids) and time.monotonic() < deadline:
        replies += rig.collect(1, timeout=min(5.0, deadline - time.monotonic()))
    replies += rig.collect(len(ids), timeout=5)  # a second answer still on its way
    answers = Counter(r.id for r in replies)
    assert set(answers) == set(ids), "every request answered"
    answered_before_the_kill = {r.id for r in early}
    again = {request for request, count in answers.items() if count > 1}
    assert again <= answered_before_the_kill, "only what the killed worker answered is answered again"
    assert max(answers.values()) <= 2
    assert len(early) < len(ids), "the kill landed mid-batch"
    assert all(r.ok for r in replies)
    assert second != first


def test_an_idle_worker_terminates_its_instance_on_time(stack):
    rig = stack(worker__idle_timeout="3")
    [instance] = rig.launch()
    request = rig.submit("coffee", photo_bytes("coffee"))
    [reply] = rig.collect(1, timeout=120)
    answered = time.monotonic()
    assert reply.id == request
    terminated = rig.wait_state(instance, "terminated", timeout=30)
    assert terminated - answered <= 3 + 1, f"terminated {terminated - answered:.2f} s after the last answer"
