"""The autoscaler's own metrics: recorded by the loop (against fakes and a fake clock), served over HTTP on a
loopback port, parsed back with prometheus_client's parser."""
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybrid.autoscale import metrics as autoscale_metrics
from hybrid.autoscale.loop import Autoscaler
from hybrid.autoscale.service import serve_metrics
from hybrid.core.clock import FakeClock
from hybrid.core.errors import CloudError, ConfigError
from hybrid.core.settings import load
from tests.fakes import FakeFleet, InMemoryQueue


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(family) -> dict:
    return {tuple(sorted(sample.labels.items())) or sample.name: sample.value for sample in family.samples}


@pytest.fixture
def served():
    servers = []

    def make(bind="127.0.0.1:0"):
        metrics = autoscale_metrics.AutoscaleMetrics()
        url, server = autoscale_metrics.serve(metrics, bind)
        servers.append(server)
        return metrics, url
    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_ticks_launches_and_errors_are_counted_and_served_on_a_loopback_port(served):
    metrics, url = served()
    clock = FakeClock(1_000_000.0)
    queue, fleet = InMemoryQueue("requests", clock), FakeFleet(now=clock.now)
    scaler = Autoscaler(load(None, {}, {"scaling.max_workers": "3"}).scaling, queue, fleet, clock, metrics=metrics)
    queue.send(["a", "b", "c", "d", "e"])
    fleet.fail_launches = 1
    scaler.tick()  # launch of 3 fails
    scaler.tick()  # 3 launched, pending

    def broken_depth():
        raise CloudError("throttled", "Throttling")
    queue.depth, healthy_depth = broken_depth, queue.depth
    scaler.tick()  # cannot observe
    queue.depth = healthy_depth
    fleet.live["i-2-0"] = fleet.live["i-2-0"].__class__("i-2-0", "running", 0.0)
    scaler.tick()

    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics") and ":0/" not in url
    found = scrape(url)
    assert {name: family.type for name, family in found.items()} == {
        "hybrid_autoscale_desired_workers": "gauge", "hybrid_autoscale_workers": "gauge",
        "hybrid_autoscale_backlog_messages": "gauge", "hybrid_autoscale_ticks": "counter",
        "hybrid_autoscale_launched_instances": "counter", "hybrid_autoscale_terminated_instances": "counter",
        "hybrid_autoscale_errors": "counter"}
    assert all(len(family.documentation) > 20 for family in found.values())
    assert values(found["hybrid_autoscale_ticks"]) == {(("result", "ok"),): 3, (("result", "failed"),): 1}
    assert values(found["hybrid_autoscale_errors"]) == {(("action", "observe"),): 1, (("action", "launch"),): 1,
                                                        (("action", "terminate"),): 0}
    assert values(found["hybrid_autoscale_launched_instances"]) == {"hybrid_autoscale_launched_instances_total": 3}
    assert values(found["hybrid_autoscale_desired_workers"]) == {"hybrid_autoscale_desired_workers": 3}
    assert values(found["hybrid_autoscale_workers"]) == {(("state", "pending"),): 2, (("state", "running"),): 1}
    assert values(found["hybrid_autoscale_backlog_messages"]) == {(("state", "visible"),): 5,
                                                                  (("state", "in_flight"),): 0}
    assert scaler.failed_ticks == 1


def test_no_bind_serves_nothing_and_a_taken_port_is_a_clear_error(served):
    assert serve_metrics("") is None
    _, url = served()
    taken = url.split("/")[2]
    with pytest.raises(ConfigError, match=f"scaling.metrics_bind = '{taken}'"):
        serve_metrics(taken)


@pytest.mark.parametrize("bind, ok", [("", True), ("127.0.0.1:9101", True), ("localhost:0", True),
                                      ("[::1]:9101", True), ("0.0.0.0:9101", False), ("10.0.0.5:9101", False),
                                      ("127.0.0.1", False), ("127.0.0.1:99999", False)])
def test_the_metrics_bind_is_empty_or_loopback(bind, ok):
    if ok:
        assert load(None, {}, {"scaling.metrics_bind": bind}).scaling.metrics_bind == bind
    else:
        with pytest.raises(ConfigError, match="scaling.metrics_bind"):
            load(None, {}, {"scaling.metrics_bind": bind})
