"""The control loop around the pure policy: observe, decide, act, log one line, record, sleep (injected clock).

Any error of a tick is logged and counted (``failed_ticks``), and the loop goes on: a failed tick changes nothing and
the next one sees the truth again. Cloud errors (the project's ``HybridError``) are expected (the local AWS server
restarting, a throttled call) and logged as one warning line; anything else also gets its traceback. With
``metrics`` (``hybrid.autoscale.metrics``), each tick, launch, terminate and failure is counted there too.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid.autoscale.metrics import AutoscaleMetrics
from hybrid.autoscale.policy import Decision, Observation, PolicyState, decide
from hybrid.core.clock import Clock
from hybrid.core.contracts import Fleet, MessageQueue
from hybrid.core.errors import HybridError
from hybrid.core.settings import ScalingSettings

log = logging.getLogger(__name__)


@dataclass
class Timeline:
    """One JSON line per tick: time, queue depth, fleet by state, and the decision."""

    path: Path

    def record(self, observation: Observation, decision: Decision | None, error: str = "") -> None:
        states = [i.state for i in observation.instances]
        row: dict[str, Any] = {"t": round(observation.now, 3), "visible": observation.visible,
                               "in_flight": observation.in_flight, "pending": states.count("pending"),
                               "running": states.count("running")}
        if decision:
            row.update(desired=decision.desired, launch=decision.to_launch,
                       terminate=list(decision.to_terminate), reason=decision.reason)
        if error:
            row["error"] = error
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def read_timeline(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Autoscaler:
    scaling: ScalingSettings
    requests: MessageQueue
    fleet: Fleet
    clock: Clock
    timeline: Timeline | None = None
    state: PolicyState = field(default_factory=PolicyState)
    ticks: int = 0
    failed_ticks: int = 0
    metrics: AutoscaleMetrics | None = None

    def tick(self) -> Decision | None:
        """One round; returns the decision, or None when observing failed."""
        self.ticks += 1
        try:
            observation = self.observe()
        except HybridError as exc:
            self._failed(observing=True)
            log.warning("tick %d: cannot observe (%s); trying again next tick", self.ticks, exc)
            return None
        decision = decide(observation, self.scaling, self.state)
        self.state = decision.state
        if self.metrics:
            self.metrics.decided(observation, decision)
        error = self.act(decision)
        log.info("tick %d: %s%s", self.ticks, decision.reason, f" [error: {error}]" if error else "")
        if self.timeline:
            self.timeline.record(observation, decision, error)
        return decision

    def observe(self) -> Observation:
        depth = self.requests.depth()
        return Observation(self.clock.now(), depth.visible, depth.in_flight, tuple(self.fleet.instances()))

    def act(self, decision: Decision) -> str:
        """Launches and terminates as decided; returns the error text of a failed cloud call, else ''."""
        errors = []
        if decision.to_launch:
            errors.append(self._try(lambda: self.fleet.launch(decision.to_launch, decision.launch_token), "launch",
                                    decision.to_launch))
        if decision.to_terminate:
            errors.append(self._try(lambda: self.fleet.terminate(list(decision.to_terminate)), "terminate",
                                    len(decision.to_terminate)))
        return "; ".join(e for e in errors if e)

    def _try(self, action: Any, what: str, count: int) -> str:
        error = ""
        try:
            action()
        except HybridError as exc:
            log.warning("%s failed: %s", what, exc)
            error = f"{what}: {exc}"
        if self.metrics:
            self.metrics.acted(what, count, error)
        return error

    def _failed(self, observing: bool = False) -> None:
        self.failed_ticks += 1
        if self.metrics:
            self.metrics.failed_tick(observing)

    def survive_tick(self) -> Decision | None:
        """``tick``, with any error it raises logged and counted instead of ending the loop."""
        try:
            return self.tick()
        except HybridError as exc:
            self._failed()
            log.warning("tick %d failed (%s); %d failed so far, going on", self.ticks, exc, self.failed_ticks)
        except Exception:  # noqa: BLE001 - the loop must outlive any one tick
            self._failed()
            log.exception("tick %d failed; %d failed so far, going on", self.ticks, self.failed_ticks)
        return None

    def run(self, stop: threading.Event, max_ticks: int | None = None) -> None:
        """Ticks every ``poll_interval`` until ``stop`` is set (or ``max_ticks`` ran)."""
        while not stop.is_set() and (max_ticks is None or self.ticks < max_ticks):
            started = self.clock.now()
            self.survive_tick()
            self.clock.sleep(self.scaling.poll_interval - (self.clock.now() - started))
