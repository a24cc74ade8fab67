"""Steps every cloud's stack shares: compare a resource with what is there, report it as a status row, and delete it
once the cloud no longer sees a dependency on it."""
from __future__ import annotations

from typing import Any

from hybrid.core.clock import Clock
from hybrid.core.contracts import ACTION_KEEP, ACTION_UPDATE, Change, Observed, Resource, ResourceDriver
from hybrid.core.errors import CloudError
from hybrid.core.wait import Poll, wait_for


def compare(resource: Resource, found: Observed) -> Change:
    """Keep or update: each desired property that differs from what the cloud reports is one difference."""
    if not resource.managed:
        return Change(ACTION_KEEP, resource)
    differences = tuple(f"{key}: {found.properties.get(key, '?')!s} -> {value}"
                        for key, value in resource.properties.items() if found.properties.get(key) != value)
    return Change(ACTION_UPDATE if differences else ACTION_KEEP, resource, differences)


def status_row(resource: Resource, found: Observed | None, detail: str) -> dict[str, Any]:
    """kind, name, id, state (ok, missing, taken, drifted or the cloud's own state) and detail of one resource."""
    if found is None:
        state = "missing"
    elif resource.managed and not found.owned:
        state = "taken (not this stack's)"
    else:
        state = found.state if found.state != "present" else "ok"
        drift = compare(resource, found).differences
        if drift:
            state, detail = "drifted", "; ".join(drift)
    return {"kind": resource.kind, "name": resource.name, "id": found.id if found else "", "state": state,
            "detail": detail}


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
