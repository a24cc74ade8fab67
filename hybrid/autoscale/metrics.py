"""The autoscaler's Prometheus metrics, served at ``http://<scaling.metrics_bind>/metrics`` (loopback only; empty
serves none). The loop (``hybrid.autoscale.loop``) records each tick here; the policy knows nothing of them.

    hybrid_autoscale_desired_workers               gauge    workers the last decision wanted
    hybrid_autoscale_workers{state}                gauge    the stack's app-tier instances the last tick saw, by state
    hybrid_autoscale_backlog_messages{state}       gauge    request-queue messages the last tick saw: visible, in_flight
    hybrid_autoscale_ticks_total{result}           counter  ticks: ok, failed (observing or an unexpected error)
    hybrid_autoscale_launched_instances_total      counter  instances launched
    hybrid_autoscale_terminated_instances_total    counter  instances terminated
    hybrid_autoscale_errors_total{action}          counter  failed cloud calls: observe, launch, terminate
"""
from __future__ import annotations

import logging
from typing import Any

from hybrid.autoscale.policy import Decision, Observation
from hybrid.core.errors import ConfigError

log = logging.getLogger(__name__)
STATES_ALWAYS_SHOWN = ("pending", "running")


class AutoscaleMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        disable_created_metrics()  # as the web tier's: no *_created series
        self.registry = CollectorRegistry()
        self.url = ""  # where ``serve`` serves them
        registry = self.registry
        self.desired = Gauge("hybrid_autoscale_desired_workers", "Workers the last decision wanted.",
                             registry=registry)
        self.workers = Gauge("hybrid_autoscale_workers", "The stack's app-tier instances the last tick saw, by "
                             "state.", ["state"], registry=registry)
        self.backlog = Gauge("hybrid_autoscale_backlog_messages", "Request-queue messages the last tick saw, by "
                             "state (visible: waiting; in_flight: taken by a worker).", ["state"], registry=registry)
        self.ticks = Counter("hybrid_autoscale_ticks", "Autoscaler ticks, by result (ok; failed: it could not "
                             "observe, or an unexpected error).", ["result"], registry=registry)
        self.launched = Counter("hybrid_autoscale_launched_instances", "App-tier instances launched.",
                                registry=registry)
        self.terminated = Counter("hybrid_autoscale_terminated_instances", "App-tier instances terminated.",
                                  registry=registry)
        self.errors = Counter("hybrid_autoscale_errors", "Failed cloud calls, by action (observe, launch, "
                              "terminate).", ["action"], registry=registry)
        self._states_shown = set(STATES_ALWAYS_SHOWN)
        for result in ("ok", "failed"):
            self.ticks.labels(result)
        for action in ("observe", "launch", "terminate"):
            self.errors.labels(action)

    def decided(self, observation: Observation, decision: Decision) -> None:
        """A tick that observed and decided."""
        self.ticks.labels("ok").inc()
        self.desired.set(decision.desired)
        self.backlog.labels("visible").set(observation.visible)
        self.backlog.labels("in_flight").set(observation.in_flight)
        states = [instance.state for instance in observation.instances]
        self._states_shown.update(states)  # a state seen once stays, at 0 when no instance is in it
        for state in self._states_shown:
            self.workers.labels(state).set(states.count(state))

    def acted(self, action: str, count: int, error: str) -> None:
        """A launch or terminate of ``count`` instances, failed when ``error`` says why."""
        if error:
            self.errors.labels(action).inc()
        elif action == "launch":
            self.launched.inc(count)
        else:
            self.terminated.inc(count)

    def failed_tick(self, observing: bool) -> None:
        self.ticks.labels("failed").inc()
        if observing:
            self.errors.labels("observe").inc()


def serve(metrics: AutoscaleMetrics, bind: str) -> tuple[str, Any]:
    """Serves ``metrics`` on ``bind`` (HOST:PORT, port 0 for any free one) in a daemon thread; returns the URL of
    /metrics and the server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), host.strip("[]"), registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"scaling.metrics_bind = {bind!r}: the autoscaler cannot serve its metrics there ({exc})")
    metrics.url = f"http://{host}:{server.server_address[1]}/metrics"
    log.info("autoscaler metrics on %s", metrics.url)
    return metrics.url, server
