"""The stack engine every cloud shares.

A stack is its desired resources (``Resource``), in creation order, and one driver per kind (``ResourceDriver``).
The engine finds each resource again through its driver; plans (create, update or keep, or one refusal naming every
resource whose name is taken or that the stack only refers to and is missing); applies a plan in order, optionally
rolling back what the run created when a step fails; deletes what the stack owns in reverse order, tolerant of what
is already gone and retrying while the cloud says a dependency is still being released; and reports one status row
per resource.

A cloud's stack module supplies its desired resources, its drivers and its own steps; the cloud's words (how to
provide a missing resource, how a resource that is not the stack's is described, why a driver keeps one) come in as
data: ``Resource.hint`` and the ``StackEngine`` fields.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid.core.clock import Clock
from hybrid.core.contracts import (ACTION_CREATE, ACTION_KEEP, ACTION_UPDATE, Change, Observed, Resource,
                                   ResourceDriver)
from hybrid.core.errors import CloudError, NameTakenError, NotFoundError
from hybrid.core.wait import Poll, wait_for

Report = Callable[[str], None]
Detail = Callable[[Resource, "Observed | None"], str]
Key = tuple[str, str]
STATE_MISSING = "missing"
STATE_TAKEN = "taken (not this stack's)"
MAX_DUPLICATES = 20


def compare(resource: Resource, found: Observed) -> Change:
    """Keep or update: each desired property that differs from what the cloud reports is one difference."""
    if not resource.managed:
        return Change(ACTION_KEEP, resource)
    differences = tuple(f"{key}: {found.properties.get(key, '?')!s} -> {value}"
                        for key, value in resource.properties.items() if found.properties.get(key) != value)
    return Change(ACTION_UPDATE if differences else ACTION_KEEP, resource, differences)


def plan(desired: Sequence[Resource], observed: Mapping[Key, Observed | None]) -> list[Change]:
    """What ``up`` would do. Raises one error listing every resource that blocks the stack: ``NameTakenError`` when
    any name is taken, else ``NotFoundError`` (resources the stack only refers to are missing)."""
    changes: list[Change] = []
    refusals: list[CloudError] = []
    for resource in desired:
        found = observed.get((resource.kind, resource.name))
        refusal = refusal_of(resource, found)
        if refusal is not None:
            refusals.append(refusal)
        elif found is None:
            changes.append(Change(ACTION_CREATE, resource))
        else:
            changes.append(compare(resource, found))
    if refusals:
        error = NameTakenError if any(isinstance(r, NameTakenError) for r in refusals) else NotFoundError
        raise error("the stack cannot be set up:\n  - " + "\n  - ".join(str(r) for r in refusals))
    return changes


def refusal_of(resource: Resource, found: Observed | None) -> CloudError | None:
    """Why the stack cannot go on with this resource (one it only refers to is missing, or its name is someone
    else's); None when it can."""
    what = f"{resource.kind} {resource.name}"
    if not resource.managed and found is None:
        return NotFoundError(f"{what} does not exist" + (f": {resource.hint}" if resource.hint else ""))
    if resource.managed and found is not None and not found.owned:
        state = f" ({found.state})" if found.state != "present" else ""
        return NameTakenError(f"{what} exists but is not tagged for this stack{state}: the name is taken; "
                              "choose another stack name (--stack) or remove it")
    return None


def status_row(resource: Resource, found: Observed | None, detail: str) -> dict[str, Any]:
    """kind, name, id, state (ok, missing, taken, drifted or the cloud's own state) and detail of one resource."""
    if found is None:
        state = STATE_MISSING
    elif resource.managed and not found.owned:
        state = STATE_TAKEN
    else:
        state = found.state if found.state != "present" else "ok"
        drift = compare(resource, found).differences
        if drift:
            state, detail = "drifted", "; ".join(drift)
    return {"kind": resource.kind, "name": resource.name, "id": found.id if found else "", "state": state,
            "detail": detail}


def notes_of(resource: Resource, found: Observed | None) -> str:
    """The driver's notes on what it found, as one status detail."""
    return "; ".join(found.notes) if found else ""


def anything_missing(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when a status has a row that is missing or whose name is taken: the stack is not (fully) set up."""
    return any(row["state"] in (STATE_MISSING, STATE_TAKEN) for row in rows)


def delete_when_free(driver: ResourceDriver, found: Observed, busy_code: str, clock: Clock,
                     timeout: float) -> bool:
    """Deletes, retrying while the cloud answers ``busy_code`` (a dependency still being released, such as a
    security group of an instance or server that is going away)."""
    def attempt() -> Poll[bool]:
        try:
            return Poll(driver.delete(found), done=True)
        except CloudError as exc:
            if exc.code != busy_code:
                raise
            return Poll(False, done=False, state=str(exc))

    return wait_for(f"{found.kind} {found.name} to be free to delete", attempt, timeout=timeout, interval=2.0,
                    clock=clock)


@dataclass(frozen=True)
class StackEngine:
    """One stack's desired resources, acted on through their drivers.

    ``busy_code``: the error code the cloud answers while something a resource depends on is still being released;
    deletes retry on it for up to ``busy_timeout`` seconds. ``not_ours``: how a resource of the stack's name that
    the stack does not own is described. ``kept_because``: per kind, why its driver keeps an owned resource it
    declines to delete.
    """

    desired: Sequence[Resource]
    drivers: Mapping[str, ResourceDriver]
    clock: Clock
    busy_code: str
    busy_timeout: float
    not_ours: str = "not this stack's"
    kept_because: Mapping[str, str] = field(default_factory=dict)

    def find(self, resource: Resource) -> Observed | None:
        """The resource as the cloud reports it now, or None."""
        return self.drivers[resource.kind].observe(resource)

    def found_each(self) -> list[tuple[Resource, Observed | None]]:
        return [(resource, self.find(resource)) for resource in self.desired]

    def observe(self) -> dict[Key, Observed | None]:
        return {(resource.kind, resource.name): found for resource, found in self.found_each()}

    def plan(self) -> list[Change]:
        return plan(self.desired, self.observe())

    def apply(self, changes: Sequence[Change], report: Report, roll_back: bool = False) -> list[Change]:
        """Creates and converges in order; returns the changes made. With ``roll_back``, a failing step first
        deletes what this run created (the one that failed included), then the error is raised."""
        created: list[Resource] = []
        try:
            for change in changes:
                self._apply(change, created)
                if change.action != ACTION_KEEP:
                    report(f"{change.describe()}: done")
        except Exception:
            if roll_back:
                self._roll_back(created, report)
            raise
        return [c for c in changes if c.action != ACTION_KEEP]

    def _apply(self, change: Change, created: list[Resource]) -> None:
        driver = self.drivers[change.resource.kind]
        if change.action == ACTION_CREATE:
            created.append(change.resource)
            driver.create(change.resource)
        elif change.action == ACTION_UPDATE:
            found = driver.observe(change.resource)
            driver.update(change.resource, found)  # type: ignore[arg-type]

    def _roll_back(self, created: list[Resource], report: Report) -> None:
        if not created:
            return
        report(f"up failed: removing the {len(created)} resource(s) this run created")
        for resource in reversed(created):
            try:
                report(f"rolled back: {self.delete_every(resource)}")
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
                report(f"could not roll back {resource.kind} {resource.name}: {exc}")

    def delete_in_reverse(self, report: Report, delete: Callable[[Resource], str] | None = None) -> list[str]:
        """Deletes the desired resources in reverse order with ``delete`` (default: ``self.delete``); returns and
        reports one line per resource."""
        delete_one = delete or self.delete
        outcomes = []
        for resource in reversed(self.desired):
            outcomes.append(delete_one(resource))
            report(outcomes[-1])
        return outcomes

    def delete(self, resource: Resource) -> str:
        """Deletes the resource if the stack owns it; one the stack only refers to is kept."""
        if not resource.managed:
            return f"{resource.kind} {resource.name}: kept (referenced by id, not owned)"
        return self.delete_observed(resource, self.find(resource))

    def delete_observed(self, resource: Resource, found: Observed | None) -> str:
        """Deletes what was found of ``resource``, if the stack owns it."""
        what = f"{resource.kind} {resource.name}"
        if found is None:
            return f"{what}: already absent"
        if not found.owned:
            return f"{what}: left alone ({self.not_ours})"
        return f"{what}: deleted" if self._delete_when_free(resource, found) else self._kept(resource)

    def delete_every(self, resource: Resource) -> str:
        """Deletes every resource of that name the stack owns (where a cloud allows several of one name), up to
        ``MAX_DUPLICATES``; never one it does not own."""
        what, deleted = f"{resource.kind} {resource.name}", 0
        for _ in range(MAX_DUPLICATES):
            found = self.find(resource)
            if found is None:
                break
            if not found.owned:
                return (f"{what}: left alone ({self.not_ours})" if not deleted else
                        f"{what}: {deleted} deleted; another of that name is {self.not_ours} and was left alone")
            if not self._delete_when_free(resource, found):
                return self._kept(resource)
            deleted += 1
        return f"{what}: deleted" + (f" ({deleted})" if deleted > 1 else "") if deleted else f"{what}: already absent"

    def _delete_when_free(self, resource: Resource, found: Observed) -> bool:
        return delete_when_free(self.drivers[resource.kind], found, self.busy_code, self.clock, self.busy_timeout)

    def _kept(self, resource: Resource) -> str:
        reason = self.kept_because.get(resource.kind, "")
        return f"{resource.kind} {resource.name}: kept" + (f" ({reason})" if reason else "")

    def deletion_preview(self, found_each: Sequence[tuple[Resource, Observed | None]],
                         detail: Detail | None = None) -> list[str]:
        """What deleting these resources would do, one line each, changing nothing: those the stack owns would be
        deleted (with ``detail``, e.g. a bucket's object count), the others kept or left alone; absent ones are not
        listed."""
        lines = []
        for resource, found in found_each:
            what = f"{resource.kind} {resource.name}"
            if found is None:
                continue
            if not resource.managed:
                lines.append(f"keep {what} (referenced by id, not owned)")
            elif not found.owned:
                lines.append(f"leave alone {what} ({self.not_ours})")
            else:
                extra = detail(resource, found) if detail else ""
                lines.append(f"delete {what}" + (f" ({extra})" if extra else ""))
        return lines

    def status(self, detail: Detail = notes_of) -> list[dict[str, Any]]:
        """One status row per desired resource, its detail from ``detail`` (default: the driver's notes)."""
        return [status_row(resource, found, detail(resource, found)) for resource, found in self.found_each()]
