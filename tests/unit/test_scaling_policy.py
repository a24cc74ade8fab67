"""The pure scaling policy (``hybrid.autoscale.policy.decide``): tables of observations in, decisions out, and short
simulations of a fleet that boots what is launched and loses what is terminated, on a fake clock."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from hybrid.autoscale import Decision, Observation, PolicyState, decide
from hybrid.autoscale import policy
from hybrid.core.clock import FakeClock
from hybrid.core.contracts import Instance
from hybrid.core.settings import ScalingSettings, load

T0 = 1_700_000_000.0  # wall-clock epoch seconds, as the caller's clock and the cloud's launch times are


def scaling(**values: object) -> ScalingSettings:
    return load(None, {}, {f"scaling.{key}": str(value) for key, value in values.items()}).scaling


def fleet(running: int = 0, pending: int = 0, launched_at: float = T0, **by_state: int) -> tuple[Instance, ...]:
    """``running`` + ``pending`` + other states (``stopped=1``, ``shutting_down=1``), ids naming their state."""
    counts = {"running": running, "pending": pending, **{k.replace("_", "-"): v for k, v in by_state.items()}}
    return tuple(Instance(f"i-{state}-{n}", state, launched_at) for state, count in counts.items()
                 for n in range(count))


def observe(visible: int = 0, in_flight: int = 0, instances: tuple[Instance, ...] = (), now: float = T0) -> Observation:
    return Observation(now=now, visible=visible, in_flight=in_flight, instances=instances)


class SimulatedFleet:
    """Acts on decisions as the cloud would: a launch appears pending, boots after ``boot_seconds`` (ids in
    ``never_boot`` stay pending); a terminated instance shows as shutting-down for one tick, then is gone."""

    def __init__(self, clock: FakeClock, instances: tuple[Instance, ...] = (), boot_seconds: float = 3.0,
                 never_boot: frozenset[str] = frozenset()) -> None:
        self.clock, self.boot_seconds, self.never_boot = clock, boot_seconds, never_boot
        self.instances = {i.id: i for i in instances}
        self.launched = self.terminated = 0

    def observe(self, backlog: int) -> Observation:
        self.instances = {i.id: self._aged(i) for i in self.instances.values() if i.state != "shutting-down"}
        return observe(visible=backlog, instances=tuple(self.instances.values()), now=self.clock.now())

    def apply(self, decision: Decision) -> None:
        for n in range(decision.to_launch):
            new = Instance(f"{decision.launch_token}-{n}", "pending", self.clock.now())
            self.instances[new.id] = new
        for instance_id in decision.to_terminate:
            gone = self.instances[instance_id]
            self.instances[instance_id] = Instance(instance_id, "shutting-down", gone.launched_at)
        self.launched += decision.to_launch
        self.terminated += len(decision.to_terminate)

    def capacity(self) -> int:
        return sum(i.state in ("pending", "running") for i in self.instances.values())

    def _aged(self, instance: Instance) -> Instance:
        booted = (instance.state == "pending" and instance.id not in self.never_boot
                  and self.clock.now() - instance.launched_at >= self.boot_seconds)
        return Instance(instance.id, "running", instance.launched_at) if booted else instance


def run_ticks(sim: SimulatedFleet, backlogs: list[int], settings: ScalingSettings) -> list[Decision]:
    state, decisions = PolicyState(), []
    for backlog in backlogs:
        decision = decide(sim.observe(backlog), settings, state)
        sim.apply(decision)
        state = decision.state
        decisions.append(decision)
        sim.clock.advance(settings.poll_interval)
    return decisions


@pytest.mark.parametrize("settings, observation, desired, to_launch", [
    pytest.param({}, observe(0), 0, 0, id="zero-backlog-min-0"),
    pytest.param({"min_workers": 2}, observe(0), 2, 2, id="zero-backlog-min-2-launches-to-min"),
    pytest.param({"min_workers": 2}, observe(0, instances=fleet(running=2)), 2, 0, id="min-2-already-met"),
    pytest.param({"max_workers": 20}, observe(37), 20, 20, id="capped-at-max"),
    pytest.param({"messages_per_worker": 1}, observe(7), 7, 7, id="one-message-per-worker"),
    pytest.param({"messages_per_worker": 5}, observe(7), 2, 2, id="five-per-worker-rounds-up"),
    pytest.param({"messages_per_worker": 5}, observe(10), 2, 2, id="five-per-worker-exact"),
    pytest.param({"messages_per_worker": 5}, observe(1), 1, 1, id="five-per-worker-one-message"),
    pytest.param({}, observe(3, in_flight=4), 7, 3, id="in-flight-counts-as-backlog-but-launches-nothing"),
    pytest.param({}, observe(5, instances=fleet(pending=3)), 5, 2, id="pending-counts-as-capacity"),
    pytest.param({}, observe(5, instances=fleet(running=2, pending=3)), 5, 0, id="running-plus-pending-enough"),
    pytest.param({}, observe(0, instances=fleet(running=5)), 0, 0, id="backlog-gone-no-scale-in"),
    pytest.param({}, observe(2, instances=fleet(running=5)), 2, 0, id="backlog-below-fleet-no-scale-in"),
    pytest.param({}, observe(4, instances=fleet(running=1, shutting_down=2)), 4, 3,
                 id="shutting-down-is-not-capacity"),
])
def test_desired_and_launches_follow_the_backlog_within_bounds(settings, observation, desired, to_launch):
    decision = decide(observation, scaling(**settings), PolicyState())
    assert (decision.desired, decision.to_launch, decision.to_terminate) == (desired, to_launch, ())


def test_running_workers_are_left_to_idle_self_termination_when_the_backlog_drops():
    decision = decide(observe(0, instances=fleet(running=3)), scaling(), PolicyState())
    assert decision.to_terminate == () and decision.to_launch == 0
    assert "3 above want left to idle self-termination" in decision.reason
    assert decision.reason.endswith("no action")


@pytest.mark.parametrize("running, pending, to_launch", [
    pytest.param(0, 0, 20, id="empty-fleet"),
    pytest.param(3, 2, 15, id="some-running-some-pending"),
    pytest.param(20, 0, 0, id="already-at-max"),
])
def test_a_burst_of_1000_launches_the_rest_up_to_max_at_once(running, pending, to_launch):
    decision = decide(observe(1000, instances=fleet(running, pending)), scaling(max_workers=20), PolicyState())
    assert decision.to_launch == to_launch == 20 - running - pending
    assert "capped at max 20" in decision.reason


def test_capacity_never_exceeds_max_across_a_burst():
    sim = SimulatedFleet(FakeClock(T0), fleet(running=2))
    backlogs = [1000] * 15 + [900] * 5
    decisions = run_ticks(sim, backlogs, scaling(max_workers=20))
    assert [d.to_launch for d in decisions] == [18] + [0] * 19
    assert sim.capacity() == 20 and sim.terminated == 0


def test_capacity_stays_within_max_on_every_tick_of_a_growing_backlog():
    sim, settings, state = SimulatedFleet(FakeClock(T0)), scaling(max_workers=20), PolicyState()
    for backlog in [0, 3, 8, 30, 1000, 1000, 1000, 400, 50, 0]:
        decision = decide(sim.observe(backlog), settings, state)
        sim.apply(decision)
        state = decision.state
        assert sim.capacity() <= 20 and decision.to_terminate == ()
        sim.clock.advance(1.0)
    assert sim.launched == 20


@pytest.mark.parametrize("start, first_need", [
    pytest.param((), 5, id="from-empty"),
    pytest.param(fleet(running=5), 0, id="from-five-running"),
])
def test_a_flapping_backlog_causes_no_launch_or_terminate_churn(start, first_need):
    sim = SimulatedFleet(FakeClock(T0), start)
    decisions = run_ticks(sim, [5, 0] * 10, scaling(poll_interval=1.0))
    assert sim.launched == first_need
    assert sim.terminated == 0
    assert sum(1 for d in decisions if d.to_launch) == (1 if first_need else 0)
    assert sim.capacity() == 5


@pytest.mark.parametrize("age, replaced", [
    pytest.param(10.0, False, id="young"),
    pytest.param(300.0, False, id="exactly-at-timeout"),
    pytest.param(300.5, True, id="past-timeout"),
])
def test_a_stuck_pending_instance_is_replaced_only_after_pending_timeout(age, replaced):
    instances = fleet(running=2) + (Instance("i-stuck", "pending", T0 - age),)
    decision = decide(observe(3, instances=instances), scaling(pending_timeout=300), PolicyState())
    assert decision.to_terminate == (("i-stuck",) if replaced else ())
    assert decision.to_launch == (1 if replaced else 0)
    if replaced:
        assert "replace 1 pending longer than 300s (i-stuck)" in decision.reason
        assert "have 2 (2 running + 0 pending), not counting 1 stuck pending" in decision.reason


def test_a_stuck_instance_is_not_replaced_twice_while_it_shuts_down():
    sim = SimulatedFleet(FakeClock(T0), (Instance("i-stuck", "pending", T0 - 400),), never_boot=frozenset({"i-stuck"}))
    decisions = run_ticks(sim, [1, 1, 1, 1], scaling(pending_timeout=300))
    assert [(d.to_launch, d.to_terminate) for d in decisions] == [(1, ("i-stuck",)), (0, ()), (0, ()), (0, ())]


def at(instance_id: str, state: str, launched_at: float) -> Instance:
    return Instance(instance_id, state, launched_at)


@pytest.mark.parametrize("instances, max_workers, terminated", [
    pytest.param((at("r1", "running", 1), at("r2", "running", 2), at("r3", "running", 3)), 2, ("r3",),
                 id="newest-running"),
    pytest.param((at("r1", "running", 1), at("r2", "running", 2), at("p1", "pending", 0)), 2, ("p1",),
                 id="pending-before-running-even-if-older"),
    pytest.param((at("r1", "running", 1), at("p1", "pending", 5), at("p2", "pending", 6), at("r2", "running", 9)),
                 1, ("p2", "p1", "r2"), id="all-pending-newest-first-then-newest-running"),
    pytest.param((at("r1", "running", 1), at("r2", "running", 2)), 2, (), id="at-max-nothing"),
    pytest.param((at("r1", "running", 1), at("r2", "running", 2), at("s1", "shutting-down", 3)), 2, (),
                 id="shutting-down-not-surplus"),
    pytest.param((at("b", "running", 5), at("a", "running", 5), at("c", "running", 1)), 1, ("b", "a"),
                 id="ties-broken-by-id"),
])
def test_capacity_beyond_a_lowered_max_is_terminated_pending_first_then_newest(instances, max_workers,
                                                                                terminated):
    observation = observe(1000, instances=tuple(Instance(i.id, i.state, T0 + i.launched_at) for i in instances),
                          now=T0 + 10)
    decision = decide(observation, scaling(max_workers=max_workers), PolicyState())
    assert decision.to_terminate == terminated
    assert decision.to_launch == 0 and decision.desired == max_workers
    if terminated:
        assert f"terminate {len(terminated)} beyond max {max_workers}, pending first then newest" in decision.reason


def test_stuck_pending_is_replaced_not_counted_as_surplus_beyond_max():
    instances = (at("r1", "running", T0), at("r2", "running", T0), at("p-old", "pending", T0 - 400))
    decision = decide(observe(9, instances=instances), scaling(max_workers=2, pending_timeout=300), PolicyState())
    assert decision.to_terminate == ("p-old",) and decision.to_launch == 0


@pytest.mark.parametrize("state", ["stopped", "stopping"])
def test_a_leaked_instance_is_terminated_only_after_pending_timeout_in_that_state(state):
    clock, settings, previous = FakeClock(T0), scaling(pending_timeout=300), PolicyState()
    instances = fleet(running=1) + (Instance("i-leak", state, T0 - 10_000),)
    seen = []
    for step in (0.0, 150.0, 150.0, 0.5):
        clock.advance(step)
        decision = decide(observe(1, instances=instances, now=clock.now()), settings, previous)
        seen.append(decision.to_terminate)
        previous = decision.state
    assert seen == [(), (), (), ("i-leak",)]
    assert decision.state.first_seen_at("i-leak") == T0
    assert f"terminate 1 leaked {state} longer than 300s (i-leak)" in decision.reason


def test_a_leaked_instance_is_not_capacity_and_is_watched_until_due():
    instances = fleet(running=1) + (Instance("i-leak", "stopped", T0),)
    decision = decide(observe(2, instances=instances), scaling(), PolicyState())
    assert decision.to_launch == 1 and decision.to_terminate == ()
    assert "not counting 1 stopped" in decision.reason and "watching 1 stopped (i-leak)" in decision.reason


@pytest.mark.parametrize("later", [
    pytest.param((), id="gone"),
    pytest.param((Instance("i-leak", "running", T0),), id="back-to-running"),
])
def test_first_seen_forgets_instances_gone_or_back_to_normal(later):
    settings = scaling(pending_timeout=300)
    first = decide(observe(0, instances=(Instance("i-leak", "stopped", T0),)), settings, PolicyState())
    assert first.state.first_seen == (("i-leak", T0),)
    second = decide(observe(0, instances=later, now=T0 + 100), settings, first.state)
    assert second.state.first_seen == ()
    again = decide(observe(0, instances=(Instance("i-leak", "stopped", T0),), now=T0 + 400), settings, second.state)
    assert again.to_terminate == () and again.state.first_seen == (("i-leak", T0 + 400),)


@pytest.mark.parametrize("observation, settings, numbers", [
    pytest.param(observe(30, 7, fleet(running=10, pending=2)), {"max_workers": 20},
                 ["backlog 37 (30 visible + 7 in flight) / 1 per worker -> want 20 (capped at max 20)",
                  "have 12 (10 running + 2 pending)", "launch 8"], id="burst"),
    pytest.param(observe(0, 0, fleet(running=3)), {},
                 ["backlog 0 (0 visible + 0 in flight)", "want 0", "have 3 (3 running + 0 pending)", "no action"],
                 id="steady-idle"),
    pytest.param(observe(0), {"min_workers": 2}, ["want 2 (raised to min 2)", "launch 2"], id="min"),
    pytest.param(observe(11), {"messages_per_worker": 5}, ["backlog 11", "/ 5 per worker -> want 3", "launch 3"],
                 id="per-worker"),
    pytest.param(observe(2, 0, fleet(running=2)), {}, ["want 2", "have 2 (2 running + 0 pending): no action"],
                 id="steady-busy"),
])
def test_every_decision_has_a_reason_with_its_numbers(observation, settings, numbers):
    reason = decide(observation, scaling(**settings), PolicyState()).reason
    assert reason and "\n" not in reason
    for text in numbers:
        assert text in reason


def test_long_id_lists_are_shortened_in_the_reason():
    decision = decide(observe(0, instances=fleet(running=30)), scaling(max_workers=20), PolicyState())
    assert len(decision.to_terminate) == 10
    assert "and 5 more" in decision.reason


def test_the_launch_token_is_deterministic_and_empty_without_a_launch():
    settings = scaling()
    one, two = decide(observe(3), settings, PolicyState()), decide(observe(3), settings, PolicyState())
    assert one.launch_token == two.launch_token == f"scale-{int(T0 * 1000)}-3"
    assert len(one.launch_token) <= 64
    assert decide(observe(3, now=T0 + 1), settings, PolicyState()).launch_token != one.launch_token
    assert decide(observe(0), settings, PolicyState()).launch_token == ""


def test_launches_are_remembered_for_pending_timeout_then_dropped():
    settings = scaling(pending_timeout=60)
    first = decide(observe(2), settings, PolicyState())
    assert first.state.launches == ((first.launch_token, T0),)
    quiet = decide(observe(0, now=T0 + 60), settings, first.state)
    assert quiet.state.launches == first.state.launches
    assert decide(observe(0, now=T0 + 61), settings, quiet.state).state.launches == ()


def test_decide_is_pure():
    instances = fleet(running=4, pending=2, stopped=1) + (Instance("i-old", "pending", T0 - 999, tags={"k": "v"}),)
    observation, settings = observe(30, 5, instances, now=T0 + 5), scaling(max_workers=5, pending_timeout=300)
    previous = PolicyState(launches=(("scale-1-1", T0),), first_seen=(("i-stopped-0", T0 - 400),))
    copies = copy.deepcopy((observation, settings, previous))
    first, second = decide(observation, settings, previous), decide(observation, settings, previous)
    assert first == second and hash(first.state) == hash(second.state)
    assert (observation, settings, previous) == copies
    assert first.to_terminate == ("i-old", "i-stopped-0", "i-pending-1")


def test_the_policy_module_imports_no_clock_randomness_io_or_logging():
    tree = ast.parse(Path(policy.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "dataclasses", "hybrid"}
    from_hybrid = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module.startswith("hybrid")}
    assert from_hybrid <= {"hybrid.core.contracts", "hybrid.core.settings"}


@pytest.mark.parametrize("observation, desired, to_launch", [
    pytest.param(observe(0, 16, fleet(running=13)), 16, 0, id="in-flight-held-by-running-workers-launches-nothing"),
    pytest.param(observe(2, 16, fleet(running=13)), 18, 2, id="only-visible-messages-justify-launches"),
    pytest.param(observe(0, 4), 4, 0, id="in-flight-with-no-worker-waits-until-visible-again"),
    pytest.param(observe(4, 0), 4, 4, id="the-same-messages-visible-again-launch"),
])
def test_launches_only_for_work_a_new_worker_could_take(observation, desired, to_launch):
    decision = decide(observation, scaling(), PolicyState())
    assert (decision.desired, decision.to_launch, decision.to_terminate) == (desired, to_launch, ())
    if desired - 13 > to_launch and observation.instances:
        assert "held by running workers" in decision.reason


def test_messages_looping_in_flight_with_no_worker_never_launch():
    """The web-process crash of the hardening issue: 46 requests whose replies could not be sent were received and
    released over and over, in flight on every tick, with no worker left; the policy launched 20 every 7 s."""
    sim = SimulatedFleet(FakeClock(T0))
    settings, state, launched = scaling(max_workers=20), PolicyState(), 0
    for _ in range(30):
        decision = decide(Observation(sim.clock.now(), visible=0, in_flight=46), settings, state)
        state, launched = decision.state, launched + decision.to_launch
        assert "no worker now" in decision.reason
        sim.clock.advance(1.0)
    assert launched == 0
