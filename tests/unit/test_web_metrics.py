"""/metrics in the Prometheus text format (parsed back with prometheus_client's own parser), and X-Request-Id: the
web tier's app on fakes of the queues, bucket and fleet, with a stand-in app tier."""
import io
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybrid.core.errors import EmulatorNotRunning
from hybrid.core.settings import load
from tests.fakes import BlockingQueue, FakeFleet, InMemoryStore
from tests.unit.test_web_service import StandInAppTier
from web_tier.cache import ResultCache
from web_tier.runtime import assemble


class DownQueue(BlockingQueue):
    def depth(self):
        raise EmulatorNotRunning("the local AWS server does not answer")


@pytest.fixture
def web(tmp_path, monkeypatch):
    """The app, its stand-in app tier and the fleet; one process, so no multiprocess folder. The stand-in's "images"
    are text (label-n), so the upload check (tested on its own) lets anything through."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr("web_tier.app.check_image", lambda data: None)
    from web_tier.app import create_app

    made = []

    def make(requests=None):
        inputs, replies = InMemoryStore("in"), BlockingQueue("replies")
        requests = requests or BlockingQueue("requests")
        fleet = FakeFleet()
        cache = ResultCache(tmp_path / f"cache{len(made)}.json", 1000, flush_interval=None)
        runtime = assemble(inputs, requests, replies, cache, 5.0, fleet=fleet, wait_seconds=1)
        app_tier = StandInAppTier(requests, replies, inputs)
        app_tier.start()
        made.append((runtime, app_tier))
        return create_app(load(None, {}, {}), runtime).test_client(), app_tier, fleet
    yield make
    for runtime, app_tier in made:
        app_tier.stop.set()
        runtime.close()


def post(client, data: bytes, name="img.jpg", headers=None):
    return client.post("/", data={"inputFile": (io.BytesIO(data), name)}, headers=headers or {},
                       content_type="multipart/form-data")


def families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def samples(family) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in family.samples}


def test_metrics_count_uploads_by_outcome_with_types_and_help(web):
    client, _, fleet = web()
    fleet.add("i-1", "running"), fleet.add("i-2", "pending"), fleet.add("i-3", "running")
    for data in (b"cat-1", b"dog-1", b"cat-1"):
        assert post(client, data).status_code == 200
    assert client.post("/", data={"note": "no file"}).status_code == 400
    found = families(client)
    kinds = {name: found[name].type for name in found}
    assert kinds == {"hybrid_web_responses": "counter", "hybrid_web_request_seconds": "histogram",
                     "hybrid_web_upload_bytes": "histogram", "hybrid_web_cache_lookups": "counter",
                     "hybrid_web_late_replies": "counter", "hybrid_web_requests_in_progress": "gauge",
                     "hybrid_web_cache_entries": "gauge", "hybrid_web_cloud_up": "gauge",
                     "hybrid_web_request_queue_messages": "gauge", "hybrid_app_tier_instances": "gauge"}
    assert all(len(family.documentation) > 20 for family in found.values()), "every family has its HELP"
    responses = samples(found["hybrid_web_responses"])
    assert responses[("hybrid_web_responses_total", (("outcome", "miss"), ("status", "200")))] == 2
    assert responses[("hybrid_web_responses_total", (("outcome", "hit"), ("status", "200")))] == 1
    assert responses[("hybrid_web_responses_total", (("outcome", "bad_request"), ("status", "400")))] == 1
    assert samples(found["hybrid_web_request_seconds"])[("hybrid_web_request_seconds_count", ())] == 4
    upload_bytes = samples(found["hybrid_web_upload_bytes"])
    assert (upload_bytes[("hybrid_web_upload_bytes_count", ())], upload_bytes[("hybrid_web_upload_bytes_sum", ())]) \
        == (3, 15)
    lookups = samples(found["hybrid_web_cache_lookups"])
    assert (lookups[("hybrid_web_cache_lookups_total", (("result", "hit"),))],
            lookups[("hybrid_web_cache_lookups_total", (("result", "miss"),))]) == (1, 2)
    assert samples(found["hybrid_app_tier_instances"]) == {
        ("hybrid_app_tier_instances", (("state", "pending"),)): 1,
        ("hybrid_app_tier_instances", (("state", "running"),)): 2}
    assert samples(found["hybrid_web_request_queue_messages"]) == {
        ("hybrid_web_request_queue_messages", (("state", "visible"),)): 0,
        ("hybrid_web_request_queue_messages", (("state", "in_flight"),)): 0}
    assert samples(found["hybrid_web_cache_entries"]) == {("hybrid_web_cache_entries", ()): 2}
    assert samples(found["hybrid_web_requests_in_progress"]) == {("hybrid_web_requests_in_progress", ()): 0}


def test_what_the_cloud_does_not_answer_is_left_out_and_said_so(web):
    client, *_ = web(requests=DownQueue("requests"))
    found = families(client)
    assert "hybrid_web_request_queue_messages" not in found and "hybrid_app_tier_instances" in found
    assert samples(found["hybrid_web_cloud_up"]) == {("hybrid_web_cloud_up", (("what", "request_queue"),)): 0,
                                                     ("hybrid_web_cloud_up", (("what", "fleet"),)): 1}


def test_a_sane_incoming_request_id_is_kept_returned_and_sent_to_the_app_tier(web):
    client, app_tier, _ = web()
    kept = post(client, b"cat-2", headers={"X-Request-Id": "client-req.42"})
    assert kept.status_code == 200 and kept.headers["X-Request-Id"] == "client-req.42"
    made = post(client, b"dog-2", headers={"X-Request-Id": "no spaces allowed"})
    assert made.headers["X-Request-Id"] != "no spaces allowed" and len(made.headers["X-Request-Id"]) == 32
    assert [r.request_id for r in app_tier.handled] == ["client-req.42", made.headers["X-Request-Id"]]
    assert client.get("/healthz").headers["X-Request-Id"], "every answer carries one"


def test_gunicorn_s_master_does_not_import_prometheus_client_so_its_processes_can_count_together():
    """prometheus_client picks its mode once, when first imported: the master imports the app's modules before it
    names the multiprocess folder, so they must not import it."""
    probe = "import sys, web_tier.server, web_tier.app, web_tier.runtime; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
