"""The app tier's scaling policy: a pure request -> reply function, kept apart from the loop that acts on it.

Contract. ``decide(observation, scaling, previous)`` takes what the caller observed (the time on its injected clock,
the request queue's visible and in-flight counts, this stack's non-terminated app-tier instances), the scaling
settings, and the ``PolicyState`` returned by the previous decision. It returns a ``Decision``: how many workers
are wanted, how many to launch (one launch, with ``launch_token`` as its idempotency token), which instance
ids to terminate, one human-readable line saying why, and the state to hand back next tick. It reads no clock,
sleeps, draws no random numbers, does no I/O and logs nothing: the same inputs always give an equal decision, and
its inputs are never changed. The loop around it observes, decides, acts, logs ``reason`` and sleeps.

The rules, and why:

- ``desired = ceil((visible + in_flight) / messages_per_worker)``, clamped to ``[min_workers, max_workers]``.
  In-flight messages count: a worker is busy with them, and they come back if it dies.
- Capacity is running + pending instances. A pending instance is a worker that will be serving in a minute;
  not counting it would launch again on every tick of that minute and overshoot.
- ``to_launch = max(0, desired - capacity)``, so capacity never exceeds ``max_workers`` through a launch, and no
  more than new workers could take: in-flight messages are invisible to a new worker, so only visible messages (or
  ``min_workers``) justify a launch, whether workers run or not. A message in flight with no worker running
  belongs to a worker that is gone, or loops (a reply that cannot be sent, a poison message): it is counted once it
  is visible again, never while it is merely in flight. Counting it then launched workers that found nothing.
- Scale-in is left to the workers' idle self-termination: the policy never terminates a running worker because
  the backlog shrank. It cannot see which worker holds a message, so terminating one could abandon work until the
  visibility timeout; a worker that finds no work for ``worker.idle_timeout`` knows it is idle and leaves by
  itself. This also makes a flapping backlog (5, 0, 5, 0...) cause no launch/terminate churn.
- The policy terminates only what is broken or not allowed:
  * instances ``pending`` longer than ``pending_timeout`` (from ``launched_at``): they leave capacity, so their
    replacement is launched in the same decision;
  * leaked instances, in a state the policy does not expect (``stopped``, ``stopping``: a worker that shut its OS
    down without terminating), once seen in it longer than ``pending_timeout`` (``PolicyState.first_seen``;
    ids that are gone or back to normal are forgotten). They are not capacity: a stopped worker serves nothing;
  * capacity beyond ``max_workers`` (max was lowered): the surplus goes pending ones first (they hold no work),
    newest first, then the newest running ones (they have done the least and are the least likely to be mid-batch;
    the policy cannot see who holds a message, and a message abandoned that way is delivered again after its
    visibility timeout).
- ``shutting-down`` instances are on their way out: expected, never capacity, never terminated again.

Times: ``observation.now`` and ``Instance.launched_at`` are both wall-clock epoch seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from hybrid.core.contracts import Instance
from hybrid.core.settings import ScalingSettings

PENDING = "pending"
RUNNING = "running"
SHUTTING_DOWN = "shutting-down"
TERMINATED = "terminated"
EXPECTED_STATES = frozenset({PENDING, RUNNING, SHUTTING_DOWN, TERMINATED})
LAUNCH_TOKEN_PREFIX = "scale"
IDS_SHOWN = 5


@dataclass(frozen=True)
class Observation:
    """What the caller saw this tick. ``now`` comes from its injected clock (epoch seconds)."""

    now: float
    visible: int
    in_flight: int
    instances: tuple[Instance, ...] = ()

    @property
    def backlog(self) -> int:
        return self.visible + self.in_flight


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between ticks; start with ``PolicyState()``, then pass each ``Decision.state``.

    ``launches``: (idempotency token, time) of launch requests made within the last ``pending_timeout``.
    ``first_seen``: (instance id, time) at which each instance was first seen in an unexpected state, by id.
    """

    launches: tuple[tuple[str, float], ...] = ()
    first_seen: tuple[tuple[str, float], ...] = ()

    def first_seen_at(self, instance_id: str) -> float | None:
        return dict(self.first_seen).get(instance_id)


@dataclass(frozen=True)
class Decision:
    """The reply: what to launch and terminate, why (one line), and the state for the next tick."""

    desired: int
    to_launch: int
    to_terminate: tuple[str, ...]
    reason: str
    launch_token: str
    state: PolicyState = field(default_factory=PolicyState)


@dataclass(frozen=True)
class FleetView:
    """The observed instances sorted by what they mean to the policy."""

    running: tuple[Instance, ...]
    pending: tuple[Instance, ...]
    stuck: tuple[Instance, ...]
    leaving: tuple[Instance, ...]
    unexpected: tuple[Instance, ...]

    @property
    def capacity(self) -> int:
        return len(self.running) + len(self.pending)


@dataclass(frozen=True)
class Plan:
    """What one decision does, before it is put into words."""

    fleet: FleetView
    desired: int
    leaked: tuple[Instance, ...]
    surplus: tuple[Instance, ...]
    to_launch: int
    takeable: int = 0

    @property
    def to_terminate(self) -> tuple[Instance, ...]:
        return self.fleet.stuck + self.leaked + self.surplus


def decide(observation: Observation, scaling: ScalingSettings, previous: PolicyState) -> Decision:
    """One tick of the policy (see the module docstring for the rules)."""
    fleet = view_fleet(observation, scaling.pending_timeout)
    first_seen = remember_unexpected(fleet.unexpected, previous.first_seen, observation.now)
    desired = desired_workers(observation.backlog, scaling)
    plan = Plan(fleet, desired,
                leaked=overdue_leaks(fleet.unexpected, first_seen, observation.now, scaling.pending_timeout),
                surplus=surplus_beyond_max(fleet, scaling.max_workers),
                to_launch=launch_count(desired, fleet.capacity, scaling.max_workers),
                takeable=takeable_launches(observation, fleet, scaling))
    plan = replace(plan, to_launch=min(plan.to_launch, plan.takeable))
    token = launch_token(observation.now, plan.to_launch)
    state = PolicyState(recent_launches(previous.launches, token, observation.now, scaling.pending_timeout),
                        first_seen)
    return Decision(desired, plan.to_launch, ids(plan.to_terminate), describe(observation, scaling, plan), token,
                    state)


def desired_workers(backlog: int, scaling: ScalingSettings) -> int:
    """ceil(backlog / messages_per_worker), clamped to [min_workers, max_workers] (max wins if they cross)."""
    wanted = math.ceil(max(0, backlog) / scaling.messages_per_worker)
    return min(max(wanted, scaling.min_workers), scaling.max_workers)


def launch_count(desired: int, capacity: int, max_workers: int) -> int:
    """Workers to launch now: the shortfall, never taking capacity above max."""
    return max(0, min(desired, max_workers) - capacity)


def takeable_launches(observation: Observation, fleet: FleetView, scaling: ScalingSettings) -> int:
    """How many new workers could get work: in-flight messages are invisible to a new worker, so only visible
    messages (or the minimum fleet) justify a launch. With workers running, in-flight messages are theirs; with none
    running, they belong to workers that are gone (or are looping: a reply that cannot be sent, a poison message)
    and are counted once they are visible again. Counting them sooner replaced workers that idled out while others
    finished their batches, and launched workers by the score for messages that no new worker could receive."""
    return max(math.ceil(max(0, observation.visible) / scaling.messages_per_worker),
               scaling.min_workers - fleet.capacity, 0)


def launch_token(now: float, to_launch: int) -> str:
    """Idempotency token of this decision's launch ("" when none): deterministic, at most 64 characters."""
    return f"{LAUNCH_TOKEN_PREFIX}-{int(now * 1000)}-{to_launch}" if to_launch > 0 else ""


def view_fleet(observation: Observation, pending_timeout: float) -> FleetView:
    """Sorts instances into running, pending (capacity), stuck pending, leaving and unexpected ones."""
    def in_state(*wanted: str) -> tuple[Instance, ...]:
        return tuple(i for i in observation.instances if i.state in wanted)

    pending = in_state(PENDING)
    overdue = [observation.now - i.launched_at > pending_timeout for i in pending]
    unexpected = tuple(i for i in observation.instances if i.state not in EXPECTED_STATES)
    return FleetView(running=in_state(RUNNING),
                     pending=tuple(i for i, late in zip(pending, overdue) if not late),
                     stuck=tuple(i for i, late in zip(pending, overdue) if late),
                     leaving=in_state(SHUTTING_DOWN), unexpected=unexpected)


def remember_unexpected(unexpected: tuple[Instance, ...], earlier: tuple[tuple[str, float], ...],
                        now: float) -> tuple[tuple[str, float], ...]:
    """first_seen for the instances in an unexpected state now; ids gone or back to normal drop out."""
    known = dict(earlier)
    return tuple(sorted((i.id, known.get(i.id, now)) for i in unexpected))


def overdue_leaks(unexpected: tuple[Instance, ...], first_seen: tuple[tuple[str, float], ...], now: float,
                  timeout: float) -> tuple[Instance, ...]:
    """Unexpected instances seen in that state for longer than ``timeout``."""
    since = dict(first_seen)
    return tuple(i for i in unexpected if now - since[i.id] > timeout)


def surplus_beyond_max(fleet: FleetView, max_workers: int) -> tuple[Instance, ...]:
    """Capacity above max to terminate: pending ones first, then running ones, newest first within each."""
    surplus = fleet.capacity - max_workers
    if surplus <= 0:
        return ()
    return (newest_first(fleet.pending) + newest_first(fleet.running))[:surplus]


def newest_first(instances: tuple[Instance, ...]) -> tuple[Instance, ...]:
    return tuple(sorted(instances, key=lambda i: (i.launched_at, i.id), reverse=True))


def recent_launches(launches: tuple[tuple[str, float], ...], token: str, now: float,
                    horizon: float) -> tuple[tuple[str, float], ...]:
    """The launch record kept in state: this decision's launch added, those older than ``horizon`` dropped."""
    kept = tuple((t, at) for t, at in launches if now - at <= horizon)
    return kept + ((token, now),) if token else kept


def ids(instances: tuple[Instance, ...]) -> tuple[str, ...]:
    return tuple(i.id for i in instances)


def describe(observation: Observation, scaling: ScalingSettings, plan: Plan) -> str:
    """The decision's one-line reason: backlog -> want; have; what is done and what is left alone."""
    notes = watch_notes(plan, scaling) + idle_notes(plan.fleet.capacity - len(plan.surplus), plan.desired)
    notes += held_notes(plan)
    steps = cleanup_steps(plan, scaling) + ([f"launch {plan.to_launch}"] if plan.to_launch else [])
    actions = "; ".join(notes + [", ".join(steps) or "no action"])
    return f"{describe_want(observation, scaling)}; {describe_have(plan.fleet)}: {actions}"


def describe_want(observation: Observation, scaling: ScalingSettings) -> str:
    raw = math.ceil(max(0, observation.backlog) / scaling.messages_per_worker)
    desired = desired_workers(observation.backlog, scaling)
    bound = ""
    if desired < raw:
        bound = f" (capped at max {scaling.max_workers})"
    elif desired > raw:
        bound = f" (raised to min {scaling.min_workers})"
    return (f"backlog {observation.backlog} ({observation.visible} visible + {observation.in_flight} in flight) "
            f"/ {scaling.messages_per_worker} per worker -> want {desired}{bound}")


def describe_have(fleet: FleetView) -> str:
    uncounted = [f"{len(fleet.stuck)} stuck pending"] if fleet.stuck else []
    uncounted += [f"{len(fleet.leaving)} shutting down"] if fleet.leaving else []
    uncounted += [f"{len(fleet.unexpected)} {states(fleet.unexpected)}"] if fleet.unexpected else []
    extra = f", not counting {', '.join(uncounted)}" if uncounted else ""
    return f"have {fleet.capacity} ({len(fleet.running)} running + {len(fleet.pending)} pending){extra}"


def cleanup_steps(plan: Plan, scaling: ScalingSettings) -> list[str]:
    timeout, stuck, leaked, surplus = f"{scaling.pending_timeout:g}s", plan.fleet.stuck, plan.leaked, plan.surplus
    steps = [f"replace {len(stuck)} pending longer than {timeout} ({shown(stuck)})"] if stuck else []
    if leaked:
        steps.append(f"terminate {len(leaked)} leaked {states(leaked)} longer than {timeout} ({shown(leaked)})")
    if surplus:
        steps.append(f"terminate {len(surplus)} beyond max {scaling.max_workers}, pending first then newest "
                     f"({shown(surplus)})")
    return steps


def watch_notes(plan: Plan, scaling: ScalingSettings) -> list[str]:
    leaked = set(ids(plan.leaked))
    waiting = tuple(i for i in plan.fleet.unexpected if i.id not in leaked)
    if not waiting:
        return []
    return [f"watching {len(waiting)} {states(waiting)} ({shown(waiting)}), terminated once "
            f"over {scaling.pending_timeout:g}s in that state"]


def held_notes(plan: Plan) -> list[str]:
    short = plan.desired - plan.fleet.capacity
    if short > plan.to_launch and plan.to_launch == plan.takeable:
        holder = "running workers" if plan.fleet.running else "no worker now: launched for once visible again"
        return [f"{short - plan.to_launch} short, but in-flight work is held by {holder}: no launch for it"]
    return []


def idle_notes(capacity_kept: int, desired: int) -> list[str]:
    above = capacity_kept - desired
    return [f"{above} above want left to idle self-termination"] if above > 0 else []


def states(instances: tuple[Instance, ...]) -> str:
    return "/".join(sorted({i.state for i in instances}))


def shown(instances: tuple[Instance, ...]) -> str:
    """Instance ids for a reason line, the first few only."""
    names = [i.id for i in instances[:IDS_SHOWN]]
    more = len(instances) - IDS_SHOWN
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
