"""What an operator reads, from the real thing: `hybrid web --processes 2` (gunicorn, nginx in front) on the local
AWS server with a real worker on a local instance. /metrics is parsed with prometheus_client's own parser and its
counts add up over both server processes; with log.format = json the web tier's and the worker's log lines parse,
and one upload's lines carry the same request id on both tiers."""
from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hybrid.local.instance_folders import instance_folder
from tests.integration.rig import photo_bytes
from tests.integration.test_web_tier import WebServer
from web_tier.runtime import CACHE_FLUSH_SECONDS

pytestmark = [pytest.mark.timeout(400), pytest.mark.emulator]
UPLOADS = 24


@pytest.fixture
def json_stack(stack, state_dir, tmp_path):
    """A stack whose settings (and so its workers' user data) ask for JSON logs, one worker, and its web tier with
    two server processes."""
    rig = stack(worker__idle_timeout="120", log__format="json")
    [instance] = rig.launch(1)
    server = WebServer(rig, state_dir, tmp_path / "web.log", log__format="json")
    server.command = ["web", "--processes", "2"]
    yield rig, server.start(), instance_folder(state_dir, instance) / "worker.log"
    server.stop()


def scrape(url: str) -> dict:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family, **labels) -> float:
    return sum(s.value for s in family.samples if s.labels == labels and not s.name.endswith(("_bucket", "_sum")))


def json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_metrics_add_up_over_both_server_processes(json_stack):
    rig, server, _ = json_stack
    images = {f"img{i}": photo_bytes("coffee", (200 + 3 * i, 150 + 2 * i)) for i in range(UPLOADS // 2)}
    with ThreadPoolExecutor(UPLOADS) as pool:  # every image twice at once: a miss or a shared flight each
        answers = list(pool.map(lambda name: server.post(f"{name}.jpg", images[name]), [*images, *images]))
    assert [a.status_code for a in answers] == [200] * UPLOADS
    time.sleep(CACHE_FLUSH_SECONDS + 1)  # both processes' caches have appended their answers: either one hits
    again = server.post("img0.jpg", images["img0"])  # now a cache hit
    assert again.status_code == 200

    served_by = {line["process"] for line in json_lines(server.log_path)
                 if line["logger"] == "web_tier.requests" and line["message"].startswith("POST / 200")}
    assert len(served_by) == 2, f"both server processes answered uploads ({served_by})"
    for _ in range(6):  # whichever process answers the scrape, it counts every process's uploads
        found = scrape(server.url)
        assert found["hybrid_web_responses"].type == "counter"
        answered = {outcome: value(found["hybrid_web_responses"], outcome=outcome, status="200")
                    for outcome in ("miss", "shared", "hit")}
        assert sum(answered.values()) == UPLOADS + 1 and answered["hit"] >= 1 and answered["miss"] >= UPLOADS // 2
        assert value(found["hybrid_web_request_seconds"]) == UPLOADS + 1
        assert value(found["hybrid_web_upload_bytes"]) == UPLOADS + 1
        assert found["hybrid_web_request_seconds"].type == "histogram"
        lookups = found["hybrid_web_cache_lookups"]
        assert value(lookups, result="hit") + value(lookups, result="miss") == UPLOADS + 1
        assert value(found["hybrid_web_requests_in_progress"]) == 0
        assert found["hybrid_web_requests_in_progress"].documentation
        assert value(found["hybrid_web_request_queue_messages"], state="visible") == 0
        assert value(found["hybrid_app_tier_instances"], state="running") == 1
        assert all(family.documentation for family in found.values())


def test_one_upload_s_request_id_is_on_the_web_tier_s_and_the_worker_s_json_lines(json_stack):
    rig, server, worker_log = json_stack
    request_id = f"it-{uuid.uuid4().hex[:12]}"
    answer = requests.post(server.url, files={"inputFile": ("rocket.jpg", photo_bytes("rocket", (321, 243)))},
                           headers={"X-Request-Id": request_id}, timeout=120)
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == request_id
    deadline = time.monotonic() + 20
    while not any(line.get("request_id") == request_id for line in json_lines(worker_log)):
        assert time.monotonic() < deadline, f"no worker line for {request_id}:\n{worker_log.read_text()[-2000:]}"
        time.sleep(0.2)
    web_lines = [line for line in json_lines(server.log_path) if line.get("request_id") == request_id]
    worker_lines = [line for line in json_lines(worker_log) if line.get("request_id") == request_id]
    assert [line["message"].split()[:3] for line in web_lines][-1] == ["POST", "/", "200"], web_lines
    assert len({line["process"] for line in web_lines}) == 1, "one server process answered it"
    assert any(line["message"].startswith("answered rocket (sha256/") for line in worker_lines), worker_lines
    assert {line["level"] for line in web_lines + worker_lines} <= {"INFO", "WARNING"}
    generated = requests.post(server.url, files={"inputFile": ("rocket.jpg", photo_bytes("rocket", (321, 243)))},
                              timeout=60)
    assert len(generated.headers["X-Request-Id"]) == 32 and generated.headers["X-Request-Id"] != request_id
    plain = [line for line in server.log_path.read_text().splitlines() if line and not line.startswith("{")]
    nginx = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[")  # the front's own lines stay nginx's
    assert all(line.startswith(("hybrid web tier ready", "web tier of stack")) or nginx.match(line)
               for line in plain), plain


def test_the_autoscaler_serves_what_its_tick_saw_and_did(stack):
    from hybrid.autoscale.service import build_autoscaler

    rig = stack(scaling__max_workers="2", scaling__metrics_bind="127.0.0.1:0", worker__idle_timeout="2")
    scaler = build_autoscaler(rig.settings, None)
    for i in range(3):
        rig.submit(f"coffee-{i}", photo_bytes("coffee", (120 + i, 90)))
    decision = scaler.tick()
    assert decision.to_launch == 2
    text = requests.get(scaler.metrics.url, timeout=5).text
    found = {family.name: family for family in text_string_to_metric_families(text)}
    assert value(found["hybrid_autoscale_backlog_messages"], state="visible") == 3
    assert value(found["hybrid_autoscale_desired_workers"]) == 2
    assert value(found["hybrid_autoscale_launched_instances"]) == 2
    assert value(found["hybrid_autoscale_ticks"], result="ok") == 1
    assert value(found["hybrid_autoscale_errors"], action="launch") == 0
    assert found["hybrid_autoscale_ticks"].type == "counter" and found["hybrid_autoscale_workers"].type == "gauge"
    assert len(rig.collect(3, timeout=120)) == 3, "the launched workers answer"
