"""The web tier's Prometheus metrics (``prometheus_client``): counted in every server process, read as one.

gunicorn's server processes share no memory, so under `hybrid web` prometheus_client's multiprocess mode counts for
them: ``web_tier.server`` gives each run a private folder (``use_multiprocess_dir``: 0700, emptied at start) and
names it in ``PROMETHEUS_MULTIPROC_DIR`` before any server process imports prometheus_client (this module imports
it only inside its functions, so gunicorn's master, which imports the app's modules, does not fix the mode first),
and gunicorn's ``child_exit`` calls ``process_died``. Counters and histograms add up over every process of the run,
living or dead; ``hybrid_web_requests_in_progress`` sums the living ones. Whichever process answers a scrape reads
the folder. Without the variable (one process: tests, ``create_app`` alone) the metrics live in the process.

What the cloud knows is asked at scrape time, as ``/status`` does (``WebRuntime.gauges``): the request queue's depth
and the stack's app-tier instances by state; ``hybrid_web_cloud_up`` is 0 for what did not answer (its family is
then left out).

    hybrid_web_responses_total{outcome,status}    counter    answers to uploads (outcome: hit, miss, shared,
                                                             bad_request, rejected, timeout, unavailable)
    hybrid_web_request_seconds                    histogram  time to answer an upload
    hybrid_web_upload_bytes                       histogram  size of the images read whole
    hybrid_web_cache_lookups_total{result}        counter    result-cache look-ups: hit, miss
    hybrid_web_late_replies_total                 counter    replies after their request gave up (they fill the cache)
    hybrid_web_requests_in_progress               gauge      uploads being answered, over the living processes
    hybrid_web_request_queue_messages{state}      gauge      request queue: visible (waiting), in_flight (at a worker)
    hybrid_app_tier_instances{state}              gauge      the stack's app-tier instances by state
    hybrid_web_cache_entries                      gauge      result-cache entries (the answering process's view)
    hybrid_web_cloud_up{what}                     gauge      1 when request_queue / fleet answered this scrape
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UPLOAD_BUCKETS = tuple(kib * 1024 for kib in (1, 10, 50, 100, 250, 500, 1024, 2048, 5120, 10240, 51200))


@dataclass(frozen=True)
class GaugeFigure:
    """A gauge read at scrape time: ``values`` by its one label's value ("" when it has no label)."""

    name: str
    help: str
    label: str = ""
    values: dict[str, float] = field(default_factory=dict)

    def family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.help, labels=[self.label] if self.label else None)
        for value_of_label, value in self.values.items():
            family.add_metric([value_of_label] if self.label else [], value)
        return family


class WebMetrics:
    """One process's counters, histograms and gauges; ``render`` answers a scrape for the whole run."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: multiprocess mode has none, so one process has none either
        self.shared_dir = os.environ.get(MULTIPROCESS_ENV, "")
        self.own = CollectorRegistry()
        registry = None if self.shared_dir else self.own  # multiprocess: the folder holds them, not a registry
        self.responses = Counter("hybrid_web_responses", "Uploads answered, by outcome and HTTP status.",
                                 ["outcome", "status"], registry=registry)
        self.latency = Histogram("hybrid_web_request_seconds", "Time to answer an upload.",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.upload_bytes = Histogram("hybrid_web_upload_bytes", "Size of the uploaded images read whole, in bytes.",
                                      buckets=UPLOAD_BUCKETS, registry=registry)
        self.cache_lookups = Counter("hybrid_web_cache_lookups", "Result-cache look-ups of uploaded images, by "
                                     "result (hit: answered from the cache; miss: asked the app tier).",
                                     ["result"], registry=registry)
        self.late_replies = Counter("hybrid_web_late_replies", "Replies that came after their request gave up "
                                    "(504); they fill the cache.", registry=registry)
        self.in_progress = Gauge("hybrid_web_requests_in_progress", "Uploads being answered now, over the living "
                                 "server processes.", multiprocess_mode="livesum", registry=registry)

    def observe(self, outcome: str, status: int, seconds: float) -> None:
        self.responses.labels(outcome, str(status)).inc()
        self.latency.observe(seconds)

    def count_lookup(self, hit: bool) -> None:
        self.cache_lookups.labels("hit" if hit else "miss").inc()

    def render(self, gauges: list[GaugeFigure]) -> bytes:
        """The Prometheus text of a scrape: this run's counted metrics and the gauges read now."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(_Scrape(self._counted(), gauges))
        return generate_latest(registry)

    def _counted(self) -> Any:
        if not self.shared_dir:
            return self.own
        from prometheus_client.multiprocess import MultiProcessCollector

        return MultiProcessCollector(None, path=self.shared_dir)


@dataclass(eq=False)
class _Scrape:
    counted: Any
    gauges: list[GaugeFigure]

    def collect(self) -> Iterator[Any]:
        yield from self.counted.collect()
        for gauge in self.gauges:
            yield gauge.family()


def use_multiprocess_dir(folder: Path) -> None:
    """Makes ``folder`` this run's private, empty multiprocess folder and names it for the processes to come; call
    it in gunicorn's master before it forks."""
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    elif folder.is_symlink() or folder.exists():
        folder.unlink()
    folder.mkdir(mode=0o700, parents=True)
    folder.chmod(0o700)
    os.environ[MULTIPROCESS_ENV] = str(folder)


def process_died(pid: int) -> None:
    """gunicorn's child_exit: the process's live gauges (in progress) stop counting."""
    if os.environ.get(MULTIPROCESS_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
